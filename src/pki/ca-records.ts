/**
 * Store records of the CA certificates, and the checks applied when reading them back.
 */
import type { StoreRecord } from '../store/types.ts';
import { SealmeshError } from '../errors/index.ts';
import { x509 } from './x509.ts';

/** Store keys of the CA state. Private keys live in the custody, under labels named here. */
export const STORE_KEYS = {
  /** `ca/roots/<serial hex>`: PEM of each root in the trust bundle. */
  rootPrefix: 'ca/roots/',
  /** JSON `{ serialNumber, keyLabel }` of the root that signs intermediates. */
  signingRoot: 'ca/root',
  /** JSON `{ certificatePem, keyLabel }` of the intermediate that signs leaves. */
  intermediate: 'ca/intermediate',
  /** JSON `{ name }` of the key custody the CA was created with; absent in clusters older than it, which used `sealed`. */
  custody: 'ca/custody',
  /** JSON `RotationRecord`, present while a root retired by a rotation is still in the bundle. */
  rotation: 'ca/rotation',
  /** `ca/leaf-horizon/<root serial hex>`: JSON `{ notAfter }`, a bound on the notAfter of every leaf under that root. */
  horizonPrefix: 'ca/leaf-horizon/',
} as const;

export interface SigningRootRecord {
  serialNumber: string;
  keyLabel: string;
}

export interface IntermediateRecord {
  certificatePem: string;
  keyLabel: string;
}

export interface CustodyRecord {
  name: string;
}

/** The state of a rotation whose retired root is still in the trust bundle. */
export interface RotationRecord {
  retiredRootSerial: string;
  retiredRootKeyLabel: string;
  /** Key label of the intermediate that signed under the retired root when it was retired. */
  retiredIntermediateKeyLabel: string;
  /** ISO 8601 time of the rotation. */
  rotatedAt: string;
  /** The new root cross-signed by the retired root, appended to every chain until the prune. */
  crossCertificatePem: string;
}

export interface HorizonRecord {
  /** ISO 8601; no leaf under the root has a later notAfter. */
  notAfter: string;
}

/** Returns the error for CA state in the store that is incomplete or contradicts itself. */
export function inconsistent(detail: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_INTERNAL', `CA state in the store is inconsistent: ${detail}. Restore the store from a backup`);
}

export function parseCertificate(pem: string, storeKey: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (error) {
    throw inconsistent(`${storeKey} does not hold a valid certificate (${(error as Error).message})`);
  }
}

export function encodeRecord(value: SigningRootRecord | IntermediateRecord | CustodyRecord | RotationRecord | HorizonRecord): Uint8Array {
  return Buffer.from(JSON.stringify(value));
}

export function decodeRecord<T>(record: StoreRecord, fields: (keyof T & string)[]): T {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(record.value).toString('utf8'));
  } catch (error) {
    throw inconsistent(`${record.key} is not valid JSON (${(error as Error).message})`);
  }
  for (const field of fields) {
    if (typeof value !== 'object' || value === null || typeof (value as Record<string, unknown>)[field] !== 'string') {
      throw inconsistent(`${record.key} has no string field ${field}`);
    }
  }
  return value as T;
}
