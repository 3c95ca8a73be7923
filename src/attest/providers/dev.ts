import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import { DEV_EVIDENCE_FORMAT, DEV_PROVIDER, devEvidenceSigningInput, type DevEvidenceDocument } from '../dev.ts';
import type { Evidence, EvidenceProvider } from '../index.ts';
import { checkReportData } from './report-data.ts';

/** The measurement the dev provider claims when none is configured: SHA-384 of `sealmesh-dev-provider`. */
export const DEFAULT_DEV_MEASUREMENT = createHash('sha384').update('sealmesh-dev-provider').digest('hex');

/**
 * Software evidence for development (see `src/attest/dev.ts` for the format). Each instance makes
 * its own Ed25519 key, which exists only in this process and which nothing vouches for, so the
 * evidence is `insecure`: it shows that the enrollment flow works, not what code runs.
 */
export class DevEvidenceProvider implements EvidenceProvider {
  readonly name = DEV_PROVIDER;
  readonly insecure = true;
  /** The 48-byte measurement this provider claims, lowercase hex. */
  readonly measurement: string;
  readonly #privateKey: KeyObject;
  readonly #publicKeyBase64: string;

  constructor(options: { measurement?: string } = {}) {
    const measurement = (options.measurement ?? DEFAULT_DEV_MEASUREMENT).toLowerCase();
    if (!/^[0-9a-f]{96}$/.test(measurement)) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `dev measurement ${JSON.stringify(options.measurement)} is not 96 hex digits (48 bytes)`);
    }
    this.measurement = measurement;
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    this.#privateKey = privateKey;
    this.#publicKeyBase64 = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  }

  async collect(reportData: Uint8Array): Promise<Evidence> {
    checkReportData(reportData);
    const unsigned = { publicKey: this.#publicKeyBase64, measurement: this.measurement, reportData: Buffer.from(reportData).toString('hex') };
    const document: DevEvidenceDocument = {
      format: DEV_EVIDENCE_FORMAT,
      ...unsigned,
      signature: sign(null, devEvidenceSigningInput(unsigned), this.#privateKey).toString('base64'),
    };
    return { provider: DEV_PROVIDER, data: Buffer.from(JSON.stringify(document), 'utf8').toString('base64') };
  }
}
