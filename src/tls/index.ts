import type { SecureContextOptions } from 'node:tls';

/**
 * Key-exchange groups in order of preference: the hybrid post-quantum group X25519MLKEM768 first
 * (OpenSSL 3.5, which Node 24 ships, implements it), then the classical X25519 and P-256 for
 * peers that lack it.
 */
export const KEY_EXCHANGE_GROUPS = 'X25519MLKEM768:X25519:P-256';

/** TLS settings shared by every sealmesh listener and client: TLS 1.3 only. */
export const TLS_SERVER_OPTIONS = {
  minVersion: 'TLSv1.3',
  ecdhCurve: KEY_EXCHANGE_GROUPS,
} as const satisfies SecureContextOptions;

export const TLS_CLIENT_OPTIONS = TLS_SERVER_OPTIONS;
