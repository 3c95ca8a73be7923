import { X509Certificate, type webcrypto } from 'node:crypto';
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { ApiClient } from '../client/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { generateCsr, generateKeyPair, privateKeyToPem } from '../pki/index.ts';
import { formatSpiffeId, type SpiffeId } from '../spiffe/index.ts';
import { TLS_CLIENT_OPTIONS, TLS_SERVER_OPTIONS } from '../tls/index.ts';
import type { Evidence } from '../attest/index.ts';

/** The control plane's response to an enrollment or a renewal. */
export interface SvidResponse {
  instanceId: string;
  spiffeId: string;
  certificatePem: string;
  chainPem: string;
  notAfter: string;
  bundle: string[];
  trustDomain: string;
}

/**
 * One SVID with every TLS context built from it. Contexts are built once per certificate, never per
 * connection, and the PEM copy of the private key is zeroed as soon as they exist.
 */
export interface SvidContexts {
  spiffeId: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  bundle: string[];
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
  ttlSeconds?: number;
  evidence?: Evidence;
}

/**
 * Creates a key pair in memory and a CSR for `identity`. The private key never leaves this process:
 * only the CSR is sent.
 */
async function newKeyAndCsr(identity: SpiffeId): Promise<{ keys: webcrypto.CryptoKeyPair; csr: string }> {
  const keys = await generateKeyPair();
  const csr = await generateCsr(formatSpiffeId(identity), keys);
  return { keys, csr };
}

/**
 * Builds the SVID's TLS contexts. Node.js 24's `tls.createSecureContext` takes a private key only as
 * PEM text: a KeyObject fails with ERR_INVALID_ARG_TYPE and DER fails to decode. The key therefore
 * passes as a PEM Buffer, never a string, and the Buffer is zeroed once OpenSSL has parsed it.
 */
async function buildContexts(keys: webcrypto.CryptoKeyPair, response: SvidResponse, controlCa: string[]): Promise<SvidContexts> {
  const leaf = new X509Certificate(response.certificatePem);
  const keyPem = await privateKeyToPem(keys.privateKey);
  try {
    const inboundOptions: SecureContextOptions = { ...TLS_SERVER_OPTIONS, key: keyPem, cert: response.chainPem, ca: response.bundle };
    const outbound = createSecureContext({ ...TLS_CLIENT_OPTIONS, key: keyPem, cert: response.chainPem, ca: response.bundle });
    const control = createSecureContext({ ...TLS_CLIENT_OPTIONS, key: keyPem, cert: response.chainPem, ca: [...new Set([...controlCa, ...response.bundle])] });
    // The inbound listener builds its own context from `inboundOptions`; hand it a private copy of the
    // key so that this buffer can be zeroed now.
    inboundOptions.key = Buffer.from(keyPem);
    return {
      spiffeId: response.spiffeId,
      serial: leaf.serialNumber,
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(response.notAfter),
      bundle: response.bundle,
      inboundOptions,
      outbound,
      control,
    };
  } finally {
    keyPem.fill(0);
  }
}

/** Enrolls with a join token and returns the first SVID. */
export async function enroll(
  client: ApiClient,
  identity: SpiffeId,
  request: EnrollRequest,
  controlCa: string[],
): Promise<{ response: SvidResponse; contexts: SvidContexts }> {
  const { keys, csr } = await newKeyAndCsr(identity);
  const response = await client.with({ token: request.joinToken }).post<SvidResponse>('/v1/svid/enroll', {
    csr,
    address: request.address,
    port: request.port,
    upstreams: request.upstreams,
    ...(request.ttlSeconds !== undefined ? { ttlSeconds: request.ttlSeconds } : {}),
    ...(request.evidence !== undefined ? { evidence: request.evidence } : {}),
  });
  if (response.spiffeId !== formatSpiffeId({ ...identity, trustDomain: response.trustDomain })) {
    throw new SealmeshError(
      'SEALMESH_ERR_ENROLLMENT_FAILED',
      `the server issued ${response.spiffeId}, but this proxy serves ${identity.namespace}/${identity.service}; check --service and the join token's service`,
    );
  }
  return { response, contexts: await buildContexts(keys, response, controlCa) };
}

/** Renews over mTLS with the current SVID, with a new key pair. */
export async function renew(
  client: ApiClient,
  current: SvidContexts,
  identity: SpiffeId,
  instanceId: string,
  controlCa: string[],
  ttlSeconds?: number,
): Promise<{ response: SvidResponse; contexts: SvidContexts }> {
  const { keys, csr } = await newKeyAndCsr(identity);
  const response = await client.with({ secureContext: current.control, token: undefined }).post<SvidResponse>('/v1/svid/renew', {
    csr,
    instanceId,
    ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
  });
  return { response, contexts: await buildContexts(keys, response, controlCa) };
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
