/**
 * The limits, the result types and the small helpers of the CA, apart from the class itself.
 */
import type { Store } from '../store/types.ts';
import { SealmeshError } from '../errors/index.ts';
import type { KeyCustody } from './custody.ts';
import type { x509 } from './x509.ts';

/** Shortest SVID lifetime a caller may request, in seconds (5 minutes). */
export const MIN_SVID_TTL_SECONDS = 5 * 60;
/** Longest SVID lifetime a caller may request, in seconds (7 days). */
export const MAX_SVID_TTL_SECONDS = 7 * 24 * 3600;
/** SVID lifetime when the caller requests none, in seconds (24 hours). */
export const DEFAULT_SVID_TTL_SECONDS = 24 * 3600;
/**
 * Seconds by which every certificate's notBefore precedes its issue time, so that a peer whose
 * clock runs slightly behind the CA's still accepts a certificate issued a moment ago.
 */
export const CLOCK_SKEW_SECONDS = 60;

/** Validity of a root certificate, in years. */
export const ROOT_VALIDITY_YEARS = 10;
/** Validity of an intermediate certificate, in seconds (365 days). */
export const INTERMEDIATE_VALIDITY_SECONDS = 365 * 24 * 3600;
/** An intermediate whose remaining validity is at most this is replaced. */
export const INTERMEDIATE_RENEWAL_SECONDS = 30 * 24 * 3600;

/** An SVID issued by `CertificateAuthority.issueSvid`. */
export interface IssuedSvid {
  spiffeId: string;
  certificatePem: string;
  /**
   * The leaf followed by the intermediate, the chain a TLS endpoint presents. During a root
   * rotation the new root cross-signed by the retired one follows, so that peers which trust only
   * the retired root still verify the chain.
   */
  chainPem: string;
  /** Lowercase hex. */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

/** A certificate issued by `CertificateAuthority.issueServerCertificate`. */
export type IssuedCertificate = Omit<IssuedSvid, 'spiffeId'>;

/** One root of the trust bundle, as `CertificateAuthority.status` reports it. */
export interface RootStatus {
  serialNumber: string;
  fingerprintSha256: string;
  notBefore: string;
  notAfter: string;
  /** `signing` signs intermediates now; `retiring` was replaced by a rotation and awaits its prune. */
  state: 'signing' | 'retiring';
}

/** The CA's roots, intermediate, custody and rotation state. */
export interface CaStatus {
  custody: string;
  roots: RootStatus[];
  intermediate: { serialNumber: string; notAfter: string };
  /** Present while a rotation's retired root is still in the bundle. */
  rotation: { retiredRootSerial: string; rotatedAt: string; prunableAfter: string } | null;
}

/** The outcome of `CertificateAuthority.rotateRoot`. */
export interface RootRotation {
  retiredRoot: { serialNumber: string; fingerprintSha256: string };
  root: { serialNumber: string; fingerprintSha256: string; notAfter: string };
  intermediate: { serialNumber: string; notAfter: string };
  /** The earliest time the retired root can leave the bundle, from the leaves issued so far. */
  prunableAfter: string;
}

/** The outcome of `CertificateAuthority.pruneRetiredRoot`. */
export interface RootPrune {
  pruned: boolean;
  /** The retired root, when a rotation is pending or was just pruned. */
  retiredRootSerial?: string;
  /** When the pending rotation can be pruned; absent once pruned or without a rotation. */
  prunableAfter?: string;
  /** Labels of the retired keys destroyed in the custody after the prune. */
  destroyedKeys?: string[];
  /** Labels of retired keys that the custody failed to destroy; they stay unused. */
  keysNotDestroyed?: string[];
}

/** Options of `CertificateAuthority.open`. */
export interface CertificateAuthorityOptions {
  store: Store;
  custody: KeyCustody;
  trustDomain: string;
  /** Clock used for every validity period; `() => new Date()` when absent. */
  now?: () => Date;
}

/** Returns `ttlSeconds` or the default, or throws SEALMESH_ERR_TTL_OUT_OF_BOUNDS. */
export function checkTtl(ttlSeconds: number | undefined): number {
  const ttl = ttlSeconds ?? DEFAULT_SVID_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < MIN_SVID_TTL_SECONDS || ttl > MAX_SVID_TTL_SECONDS) {
    throw new SealmeshError(
      'SEALMESH_ERR_TTL_OUT_OF_BOUNDS',
      `certificate TTL ${String(ttlSeconds)} is out of bounds: request an integer number of seconds from ${MIN_SVID_TTL_SECONDS} to ${MAX_SVID_TTL_SECONDS}`,
    );
  }
  return ttl;
}

/** X.509 validity has a resolution of one second, so issue times are cut to whole seconds. */
export function truncateToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

/** Returns the PEM of a certificate, ending with a line break so PEMs can be concatenated. */
export function toPem(certificate: x509.X509Certificate): string {
  const pem = certificate.toString('pem');
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}


