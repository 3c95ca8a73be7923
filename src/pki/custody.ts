/**
 * Key custody: where the CA's private keys live and how they sign.
 *
 * The CA never touches key bytes itself. It asks a custody for a signing key by label, and the key
 * signs the to-be-signed bytes of a certificate where it lives: in process from a node:crypto
 * KeyObject (`SealedKeyCustody`), or inside a PKCS#11 token (`Pkcs11KeyCustody`).
 */
import { SealmeshError } from '../errors/index.ts';

/** Names of the custodies, as `--ca-custody` takes them and `GET /v1/status` shows them. */
export type KeyCustodyName = 'sealed' | 'pkcs11';

export interface CaSigningKey {
  readonly label: string;
  /** DER SubjectPublicKeyInfo of the ECDSA P-256 public key. */
  readonly spki: Uint8Array;
  /**
   * Signs `data` with ECDSA P-256 over its SHA-256 digest and returns the signature as r || s,
   * 64 bytes (the IEEE P1363 form WebCrypto uses).
   */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface KeyCustody {
  readonly name: KeyCustodyName;
  /** Creates a new key pair under `label` and persists it; fails if the label exists. */
  generate(label: string): Promise<CaSigningKey>;
  /** Loads the key pair stored under `label`, or returns undefined when there is none. */
  load(label: string): Promise<CaSigningKey | undefined>;
  /** Destroys the key pair under `label`. Returns false when there was none. */
  destroy(label: string): Promise<boolean>;
  /** Releases what the custody holds open, such as an HSM session. Idempotent. */
  close(): Promise<void>;
}

const LABEL_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/**
 * Throws SEALMESH_ERR_INVALID_ARGUMENT unless `label` is 1 to 128 lowercase letters, digits, '.',
 * '-' and '_', starting with a letter or digit. Both custodies put the label into a name (a store
 * key, a CKA_LABEL), so nothing else is accepted.
 */
export function assertKeyLabel(label: string): void {
  if (!LABEL_PATTERN.test(label)) {
    throw new SealmeshError(
      'SEALMESH_ERR_INVALID_ARGUMENT',
      `CA key label ${JSON.stringify(label)} is invalid: use 1 to 128 lowercase letters, digits, '.', '-' and '_', starting with a letter or digit`,
    );
  }
}
