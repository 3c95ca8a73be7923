import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SealmeshError } from '../../errors/index.ts';
import { silentLogger, type Logger } from '../../log/index.ts';
import type { Evidence, EvidenceProvider } from '../index.ts';
import { errnoCode, hostFilesystem, type TeeFilesystem } from './filesystem.ts';
import { checkReportData } from './report-data.ts';

/** Mount point of configfs-tsm (Linux 6.7 and later; Documentation/ABI/testing/configfs-tsm in the kernel tree). */
export const DEFAULT_TSM_ROOT = '/sys/kernel/config/tsm';

/** The evidence provider name for each configfs-tsm `provider` value. */
export const TSM_PROVIDERS = { sev_guest: 'sev-snp', tdx_guest: 'tdx' } as const;
export type TsmProviderName = (typeof TSM_PROVIDERS)[keyof typeof TSM_PROVIDERS];

/** Attempts before a report entry that keeps changing under a concurrent writer is given up. */
const DEFAULT_MAX_ATTEMPTS = 3;

export interface ConfigfsTsmOptions {
  /** `sev-snp` expects the `sev_guest` provider, `tdx` expects `tdx_guest`. */
  provider: TsmProviderName;
  /** Mount point of configfs-tsm. Default `/sys/kernel/config/tsm`. */
  root?: string;
  /** SEV-SNP only: the VMPL (`privlevel`) to request the report at; the kernel's default when absent. */
  privlevel?: number;
  /** Attempts when another writer changes the entry meanwhile. Default 3. */
  maxAttempts?: number;
  fs?: TeeFilesystem;
  log?: Logger;
}

function reportFailed(action: string, path: string, error: unknown): SealmeshError {
  const code = errnoCode(error);
  const hint = code === 'EACCES' || code === 'EPERM' ? '; configfs-tsm needs root or CAP_SYS_ADMIN' : '';
  return new SealmeshError('SEALMESH_ERR_ATTESTATION_REPORT_FAILED', `cannot ${action} ${path}: ${code ?? String(error)}${hint}`, { cause: error });
}

/** Reads a decimal attribute such as `generation`. */
function parseCounter(text: string, path: string): number {
  const value = Number.parseInt(text.trim(), 10);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value)) {
    throw new SealmeshError('SEALMESH_ERR_ATTESTATION_REPORT_FAILED', `${path} contains ${JSON.stringify(text.trim())}, not a decimal counter`);
  }
  return value;
}

/**
 * SEV-SNP reports and TDX quotes through the kernel's configfs-tsm interface. Each collection
 * creates a report entry `<root>/report/<name>`, writes the report data to `inblob` and reads the
 * report or quote from `outblob` (and the SEV-SNP certificate table from `auxblob`), then removes
 * the entry.
 *
 * The kernel counts every write to the entry's attributes in `generation`. When `generation` moved
 * by more than this provider's own writes between the first read and the last, another writer
 * changed the entry in between and the blobs may answer its request, so the attempt is discarded
 * and retried in a new entry, at most `maxAttempts` times (SEALMESH_ERR_ATTESTATION_REPORT_CONTENDED).
 */
export class ConfigfsTsmProvider implements EvidenceProvider {
  readonly name: TsmProviderName;
  readonly insecure = false;
  readonly root: string;
  readonly #options: ConfigfsTsmOptions;
  readonly #fs: TeeFilesystem;
  readonly #log: Logger;

  constructor(options: ConfigfsTsmOptions) {
    this.name = options.provider;
    this.root = options.root ?? DEFAULT_TSM_ROOT;
    this.#options = options;
    this.#fs = options.fs ?? hostFilesystem;
    this.#log = options.log ?? silentLogger();
    if (options.privlevel !== undefined && (options.provider !== 'sev-snp' || !Number.isInteger(options.privlevel) || options.privlevel < 0 || options.privlevel > 3)) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `privlevel ${options.privlevel} is invalid: it applies only to sev-snp and must be 0 to 3`);
    }
  }

  async collect(reportData: Uint8Array): Promise<Evidence> {
    checkReportData(reportData);
    const maxAttempts = this.#options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
      const evidence = await this.#withEntry((entry) => this.#attempt(entry, reportData));
      if (evidence !== undefined) return evidence;
      this.#log.warn({ provider: this.name, attempt, maxAttempts }, 'configfs-tsm report entry was changed by another writer; retrying in a new entry');
    }
    throw new SealmeshError(
      'SEALMESH_ERR_ATTESTATION_REPORT_CONTENDED',
      `another writer changed the configfs-tsm report entry during each of ${maxAttempts} attempts; find the other process writing under ${join(this.root, 'report')}`,
    );
  }

  /** Reads the entry's `provider` attribute, such as `sev_guest`. */
  async readKernelProvider(entry: string): Promise<string> {
    const path = join(entry, 'provider');
    try {
      return (await this.#fs.readFile(path)).toString('utf8').trim();
    } catch (error) {
      throw reportFailed('read', path, error);
    }
  }

  /** Creates a report entry, runs `use` on it and removes it again, whatever `use` did. */
  async #withEntry<T>(use: (entry: string) => Promise<T>): Promise<T> {
    const entry = join(this.root, 'report', `sealmesh-${process.pid}-${randomBytes(6).toString('hex')}`);
    try {
      await this.#fs.mkdir(entry);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') {
        throw new SealmeshError(
          'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE',
          `configfs-tsm is not mounted at ${this.root}: this host is not an SEV-SNP or TDX guest with a kernel of 6.7 or later, or configfs is not mounted`,
          { cause: error },
        );
      }
      throw reportFailed('create the report entry', entry, error);
    }
    try {
      return await use(entry);
    } finally {
      try {
        await this.#fs.rmdir(entry);
      } catch (error) {
        this.#log.warn({ entry, reason: errnoCode(error) ?? String(error) }, 'failed to remove the configfs-tsm report entry');
      }
    }
  }

  /** One attempt; returns undefined when a concurrent writer changed the entry. */
  async #attempt(entry: string, reportData: Uint8Array): Promise<Evidence | undefined> {
    const kernelProvider = await this.readKernelProvider(entry);
    const expected = Object.entries(TSM_PROVIDERS).find(([, name]) => name === this.name)?.[0];
    if (kernelProvider !== expected) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_PROVIDER_MISMATCH',
        `configfs-tsm at ${this.root} is served by ${JSON.stringify(kernelProvider)}, not ${String(expected)}, so this host cannot produce ${this.name} evidence; use --attestation auto`,
      );
    }
    const before = await this.#readGeneration(entry);
    let writes = 0;
    if (this.#options.privlevel !== undefined) {
      await this.#write(join(entry, 'privlevel'), Buffer.from(`${this.#options.privlevel}\n`));
      writes += 1;
    }
    await this.#write(join(entry, 'inblob'), reportData);
    writes += 1;
    const outblob = await this.#read(join(entry, 'outblob'));
    const auxblob = this.name === 'sev-snp' ? await this.#readOptional(join(entry, 'auxblob')) : undefined;
    const after = await this.#readGeneration(entry);
    if (after - before !== writes) return undefined;
    if (outblob.length === 0) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_REPORT_FAILED', `${join(entry, 'outblob')} is empty: the ${kernelProvider} driver returned no report`);
    }
    return {
      provider: this.name,
      data: outblob.toString('base64'),
      ...(auxblob !== undefined && auxblob.length > 0 ? { aux: auxblob.toString('base64') } : {}),
    };
  }

  async #readGeneration(entry: string): Promise<number> {
    const path = join(entry, 'generation');
    return parseCounter((await this.#read(path)).toString('utf8'), path);
  }

  async #read(path: string): Promise<Buffer> {
    try {
      return await this.#fs.readFile(path);
    } catch (error) {
      throw reportFailed('read', path, error);
    }
  }

  /** Reads an attribute that older kernels lack, such as `auxblob`; undefined when it is absent. */
  async #readOptional(path: string): Promise<Buffer | undefined> {
    try {
      return await this.#fs.readFile(path);
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw reportFailed('read', path, error);
    }
  }

  async #write(path: string, data: Uint8Array): Promise<void> {
    try {
      await this.#fs.writeFile(path, data);
    } catch (error) {
      throw reportFailed('write', path, error);
    }
  }
}

/**
 * Returns the evidence provider that configfs-tsm at `root` serves (`sev-snp` or `tdx`), or
 * undefined when configfs-tsm is absent or served by another driver. It creates and removes a
 * probe entry to read the `provider` attribute.
 */
export async function detectTsmProvider(root: string = DEFAULT_TSM_ROOT, fs: TeeFilesystem = hostFilesystem): Promise<TsmProviderName | undefined> {
  const entry = join(root, 'report', `sealmesh-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await fs.mkdir(entry);
  } catch {
    return undefined;
  }
  try {
    const kernelProvider = (await fs.readFile(join(entry, 'provider'))).toString('utf8').trim();
    return Object.hasOwn(TSM_PROVIDERS, kernelProvider) ? TSM_PROVIDERS[kernelProvider as keyof typeof TSM_PROVIDERS] : undefined;
  } catch {
    return undefined;
  } finally {
    await fs.rmdir(entry).catch(() => undefined);
  }
}
