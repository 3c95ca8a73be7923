import { join } from 'node:path';
import { SealmeshError } from '../../errors/index.ts';
import type { Evidence, EvidenceProvider } from '../index.ts';
import { errnoCode, hostFilesystem, type TeeFilesystem } from './filesystem.ts';
import { checkReportData } from './report-data.ts';

/** Directory of Gramine's attestation pseudo-files inside an SGX enclave. */
export const DEFAULT_GRAMINE_ROOT = '/dev/attestation';

export interface GramineSgxOptions {
  /** Directory of Gramine's attestation pseudo-files. Default `/dev/attestation`. */
  root?: string;
  fs?: TeeFilesystem;
}

function failed(action: string, path: string, error: unknown): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_ATTESTATION_REPORT_FAILED', `cannot ${action} ${path}: ${errnoCode(error) ?? String(error)}`, { cause: error });
}

/** Reads Gramine's `attestation_type` (`none`, `epid` or `dcap`); undefined when the file is absent. */
export async function readGramineAttestationType(root: string = DEFAULT_GRAMINE_ROOT, fs: TeeFilesystem = hostFilesystem): Promise<string | undefined> {
  try {
    return (await fs.readFile(join(root, 'attestation_type'))).toString('utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * SGX DCAP quotes through Gramine's `/dev/attestation`: the report data is written to
 * `user_report_data` and Gramine's quoting enclave returns the quote in `quote`. The manifest of
 * the Gramine application must set `sgx.remote_attestation = "dcap"`; with `none` or `epid`
 * collection fails with SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE.
 */
export class GramineSgxProvider implements EvidenceProvider {
  readonly name = 'sgx';
  readonly insecure = false;
  readonly root: string;
  readonly #fs: TeeFilesystem;

  constructor(options: GramineSgxOptions = {}) {
    this.root = options.root ?? DEFAULT_GRAMINE_ROOT;
    this.#fs = options.fs ?? hostFilesystem;
  }

  async collect(reportData: Uint8Array): Promise<Evidence> {
    checkReportData(reportData);
    const type = await readGramineAttestationType(this.root, this.#fs);
    if (type !== 'dcap') {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE',
        type === undefined
          ? `${join(this.root, 'attestation_type')} does not exist: this process does not run under Gramine-SGX`
          : `Gramine's attestation type is ${JSON.stringify(type)}, not dcap; set sgx.remote_attestation = "dcap" in the Gramine manifest`,
      );
    }
    const reportDataPath = join(this.root, 'user_report_data');
    try {
      await this.#fs.writeFile(reportDataPath, reportData);
    } catch (error) {
      throw failed('write', reportDataPath, error);
    }
    const quotePath = join(this.root, 'quote');
    let quote: Buffer;
    try {
      quote = await this.#fs.readFile(quotePath);
    } catch (error) {
      throw failed('read', quotePath, error);
    }
    if (quote.length === 0) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_REPORT_FAILED', `${quotePath} is empty: Gramine returned no quote; check the AESM service and the quoting enclave`);
    }
    return { provider: this.name, data: quote.toString('base64') };
  }
}
