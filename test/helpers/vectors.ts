import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The folder of real TEE evidence and vendor certificates used as test inputs. It is not part of
 * the repository: set SEALMESH_ATTESTATION_VECTORS to its path, or place it as
 * `shared/attestation-vectors` beside the checkout.
 */
export function vectorsDir(): string {
  const candidates = [
    process.env.SEALMESH_ATTESTATION_VECTORS,
    join(repositoryRoot, '..', 'shared', 'attestation-vectors'),
    '/work/shared/attestation-vectors',
  ].filter((path): path is string => path !== undefined && path !== '');
  for (const candidate of candidates) {
    if (existsSync(join(candidate, 'README.md'))) {
      return candidate;
    }
  }
  throw new Error(`attestation test vectors not found; set SEALMESH_ATTESTATION_VECTORS (looked in ${candidates.join(', ')})`);
}

/** Reads one vector file, such as `sev-snp/gosevguest-milan-report.bin`. */
export function readVector(relativePath: string): Buffer {
  return readFileSync(join(vectorsDir(), relativePath));
}
