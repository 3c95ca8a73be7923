import { createHash, X509Certificate, webcrypto } from 'node:crypto';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { ApiClient } from '../client/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../pki/workload.ts';
import { formatSpiffeId, type SpiffeId } from '../spiffe/index.ts';
import { TLS_CLIENT_OPTIONS, TLS_SERVER_OPTIONS } from '../tls/index.ts';
import { enrollmentReportData, type Evidence, type EvidenceProvider } from '../attest/index.ts';
import type { TokenTlsKey } from './token-key.ts';
import type { RunMode } from '../hardening/production.ts';

/** The control plane's response to an enrollment or a renewal. */
export interface SvidResponse {
  instanceId: string;
  spiffeId: string;
  certificatePem: string;
  chainPem: string;
  notAfter: string;
  bundle: string[];
  trustDomain: string;
  /** The server's record of the evidence, when the request carried some. */
  attestation?: { provider: string; insecure: boolean; policy: 'enforced' | 'unpinned' };
}

/**
 * One SVID with every TLS context built from it. Contexts are built once per certificate and trust
 * bundle, never per connection, and the PEM copy of the private key is zeroed as soon as they exist.
 */
export interface SvidContexts {
  spiffeId: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Hex SHA-256 of the leaf certificate (DER), the `Hash` that peers put in x-forwarded-client-cert. */
  certificateSha256: string;
  bundle: string[];
  certificatePem: string;
  /** The leaf, its intermediate and, during a root rotation, the cross-signed root. */
  chainPem: string;
  /**
   * The private key, kept so that the contexts can be rebuilt when the trust bundle changes
   * without a new SVID. OpenSSL keeps a copy of an in-memory key in each context anyway; a token
   * key stays in its token.
   */
  privateKey: webcrypto.CryptoKey | TokenTlsKey;
  /** Options for `tls.Server#setSecureContext` of the inbound listener. */
  inboundOptions: SecureContextOptions;
  /** Client context for connections to other proxies. */
  outbound: SecureContext;
  /** Client context for mTLS calls to the control plane. */
  control: SecureContext;
}

export interface EnrollRequest {
  joinToken: string;
  address: string;
  port: number;
  upstreams: string[];
  /** Application protocol of the service; the server stores `tcp` when absent. */
  protocol?: string;
  ttlSeconds?: number;
  /** Produces evidence bound to the new key and a fresh server nonce; none is sent when absent. */
  evidenceProvider?: EvidenceProvider;
  /** A key pair in a PKCS#11 token to use in place of a new in-memory key. */
  tokenKey?: TokenTlsKey;
  /** The proxy's run mode, which the server checks against the manifest before it uses the token. */
  mode: RunMode;
}

/**
 * Asks the server for a nonce with `client`'s credential and returns evidence whose report data is
 * SHA-512 over the CSR's public key and the nonce, so that the evidence is valid for this key and
 * this request only.
 */
async function collectEvidence(client: ApiClient, provider: EvidenceProvider, publicKey: webcrypto.CryptoKey): Promise<{ nonce: string; evidence: Evidence }> {
  const { nonce } = await client.post<{ nonce: string; expiresAt: string }>('/v1/svid/nonce', {});
  const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', publicKey));
  const evidence = await provider.collect(enrollmentReportData(spki, Buffer.from(nonce, 'base64url')));
  return { nonce, evidence };
}

/**
 * Creates a key pair in memory, or takes `tokenKey`, and a CSR for `identity`. The private key
 * never leaves this process or the token: only the CSR is sent.
 */
async function newKeyAndCsr(identity: SpiffeId, tokenKey?: TokenTlsKey): Promise<{ publicKey: webcrypto.CryptoKey; privateKey: webcrypto.CryptoKey | TokenTlsKey; csr: string }> {
  if (tokenKey !== undefined) {
    return { publicKey: tokenKey.publicKey, privateKey: tokenKey, csr: await tokenKey.csr(formatSpiffeId(identity)) };
  }
  const keys = await generateKeyPair();
  const csr = await generateCsr(formatSpiffeId(identity), keys);
  return { publicKey: keys.publicKey, privateKey: keys.privateKey, csr };
}

/**
 * Builds the SVID's TLS contexts. Node.js 24's `tls.createSecureContext` takes an in-memory private
 * key only as PEM text: a KeyObject fails with ERR_INVALID_ARG_TYPE and DER fails to decode. The key
 * therefore passes as a PEM Buffer, never a string, and the Buffer is zeroed once OpenSSL has
 * parsed it. A key in a PKCS#11 token passes as the engine and key identifier instead.
 */
async function buildContexts(privateKey: webcrypto.CryptoKey | TokenTlsKey, response: Pick<SvidResponse, 'spiffeId' | 'certificatePem' | 'chainPem' | 'notAfter' | 'bundle'>, controlCa: string[]): Promise<SvidContexts> {
  const leaf = new X509Certificate(response.certificatePem);
  const keyPem = 'engineOptions' in privateKey ? undefined : await privateKeyToPem(privateKey);
  const key: SecureContextOptions = keyPem !== undefined ? { key: keyPem } : (privateKey as TokenTlsKey).engineOptions();
  try {
    const inboundOptions: SecureContextOptions = { ...TLS_SERVER_OPTIONS, ...key, cert: response.chainPem, ca: response.bundle };
    const outbound = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...key, cert: response.chainPem, ca: response.bundle });
    const control = createSecureContext({ ...TLS_CLIENT_OPTIONS, ...key, cert: response.chainPem, ca: [...new Set([...controlCa, ...response.bundle])] });
    // The inbound listener builds its own context from `inboundOptions`; hand it a private copy of the
    // key so that this buffer can be zeroed now.
    if (keyPem !== undefined) inboundOptions.key = Buffer.from(keyPem);
    return {
      spiffeId: response.spiffeId,
      serial: leaf.serialNumber,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(response.notAfter),
      certificateSha256: createHash('sha256').update(leaf.raw).digest('hex'),
      bundle: response.bundle,
      chainPem: response.chainPem,
      privateKey,
      certificatePem: response.certificatePem,
      inboundOptions,
      outbound,
      control,
    };
  } finally {
    keyPem?.fill(0);
  }
}

/**
 * Rebuilds every context of the current SVID to trust `bundle`, the roots that the latest snapshot
 * carries. A root rotation adds a root to the bundle and its prune removes the retired one, and
 * both reach a proxy this way without a new SVID.
 */
export async function withTrustBundle(current: SvidContexts, bundle: string[], controlCa: string[]): Promise<SvidContexts> {
  return buildContexts(
    current.privateKey,
    { spiffeId: current.spiffeId, certificatePem: current.certificatePem, chainPem: current.chainPem, notAfter: current.notAfter.toISOString(), bundle },
    controlCa,
  );
}

/** Enrolls with a join token and returns the first SVID. */
export async function enroll(
  client: ApiClient,
  identity: SpiffeId,
  request: EnrollRequest,
  controlCa: string[],
): Promise<{ response: SvidResponse; contexts: SvidContexts }> {
  const { publicKey, privateKey, csr } = await newKeyAndCsr(identity, request.tokenKey);
  const joinClient = client.with({ token: request.joinToken });
  const attested = request.evidenceProvider === undefined ? undefined : await collectEvidence(joinClient, request.evidenceProvider, publicKey);
  const response = await joinClient
    .post<SvidResponse>('/v1/svid/enroll', {
      csr,
      address: request.address,
      port: request.port,
      upstreams: request.upstreams,
      mode: request.mode,
      ...(request.protocol !== undefined ? { protocol: request.protocol } : {}),
      ...(request.ttlSeconds !== undefined ? { ttlSeconds: request.ttlSeconds } : {}),
      ...(attested !== undefined ? attested : {}),
    })
    .catch((error: unknown) => {
      throw explainEnrollError(error, identity);
    });
  if (response.spiffeId !== formatSpiffeId({ ...identity, trustDomain: response.trustDomain })) {
    throw new SealmeshError(
      'SEALMESH_ERR_ENROLLMENT_FAILED',
      `the server issued ${response.spiffeId}, but this proxy serves ${identity.namespace}/${identity.service}; check --service and the join token's service`,
    );
  }
  return { response, contexts: await buildContexts(privateKey, response, controlCa) };
}

/**
 * Restates a CSR identity mismatch at enrollment in the proxy's terms. The proxy writes its CSR
 * for --service itself, so the server's advice to change the URI SAN does not apply. The cause is
 * a join token created for another service.
 */
function explainEnrollError(error: unknown, identity: SpiffeId): unknown {
  if (!(error instanceof SealmeshError) || error.code !== 'SEALMESH_ERR_CSR_IDENTITY_MISMATCH') return error;
  const service = identity.namespace === 'default' ? identity.service : `${identity.namespace}/${identity.service}`;
  // The server's message names the identity the token entitles; without it the cause stays generic.
  const entitled = /entitled only to (spiffe:\/\/[^\s:]+)/.exec(error.message)?.[1];
  return new SealmeshError(
    'SEALMESH_ERR_CSR_IDENTITY_MISMATCH',
    `the join token is bound to ${entitled ?? 'another service'}, not to service ${service}; create a join token with \`sealmesh token create --service ${service}\`, or start the proxy with --service set to the token's service`,
    { cause: error },
  );
}

/**
 * Renews over mTLS with the current SVID, with a new key pair (or the same token key) and, with a
 * provider, fresh evidence. With a `connection` in `client`, the request goes over that persistent
 * connection, whose client certificate must be the current SVID; without one it opens a connection
 * with `current.control`.
 */
export async function renew(
  client: ApiClient,
  current: SvidContexts,
  identity: SpiffeId,
  instanceId: string,
  controlCa: string[],
  ttlSeconds?: number,
  evidenceProvider?: EvidenceProvider,
  tokenKey?: TokenTlsKey,
): Promise<{ response: SvidResponse; contexts: SvidContexts }> {
  const { publicKey, privateKey, csr } = await newKeyAndCsr(identity, tokenKey);
  const mtlsClient = client.options.connection !== undefined ? client.with({ token: undefined }) : client.with({ secureContext: current.control, token: undefined });
  const attested = evidenceProvider === undefined ? undefined : await collectEvidence(mtlsClient, evidenceProvider, publicKey);
  const response = await mtlsClient.post<SvidResponse>('/v1/svid/renew', {
    csr,
    instanceId,
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    ...(attested !== undefined ? attested : {}),
  });
  return { response, contexts: await buildContexts(privateKey, response, controlCa) };
}

/**
 * Returns the delay until the next renewal: half the SVID's lifetime, moved by up to ±10% at
 * random so that proxies enrolled together do not renew together.
 */
export function renewalDelayMs(contexts: Pick<SvidContexts, 'notBefore' | 'notAfter'>, now = Date.now()): number {
  const lifetime = contexts.notAfter.getTime() - contexts.notBefore.getTime();
  const jitter = (Math.random() * 0.2 - 0.1) * lifetime * 0.5;
  const at = contexts.notBefore.getTime() + lifetime / 2 + jitter;
  return Math.max(0, at - now);
}
