/**
 * Key custody: where the CA's private keys live and how they sign.
 *
 * The CA never touches key bytes itself; it asks a custody for a signing key by label and passes
 * the returned WebCrypto keys and provider to the certificate generator. An in-process custody
 * returns node:crypto keys; an HSM custody returns keys whose `privateKey` is a handle into the
 * token and whose `crypto` provider signs inside it.
 */
import type { webcrypto } from 'node:crypto';

// The project compiles without the DOM library, so the WebCrypto types come from @types/node.
type CryptoKey = webcrypto.CryptoKey;
type Crypto = webcrypto.Crypto;

export interface CaSigningKey {
  label: string;
  /** ECDSA P-256 public key. */
  publicKey: CryptoKey;
  /** ECDSA P-256 private key, usable only with `crypto`. It may be a handle that cannot be exported. */
  privateKey: CryptoKey;
  /** The WebCrypto implementation that signs with `privateKey`. */
  crypto: Crypto;
}

export interface KeyCustody {
  /** Short name shown in logs and status, such as `store`. */
  readonly name: string;
  /** Creates a new key pair under `label` and persists it; fails if the label exists. */
  generate(label: string): Promise<CaSigningKey>;
  /** Loads the key pair stored under `label`, or returns undefined when there is none. */
  load(label: string): Promise<CaSigningKey | undefined>;
}
