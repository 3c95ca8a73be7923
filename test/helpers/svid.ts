/**
 * SVIDs issued by a test's own CA, and real mTLS handshakes between two of them on 127.0.0.1.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { generateCsr, generateKeyPair, privateKeyToPem, type CertificateAuthority, type IssuedSvid } from '../../src/pki/index.ts';
import { formatSpiffeId } from '../../src/spiffe/index.ts';

/** A private key (PEM in a Buffer) with its SVID. */
export interface TestSvid {
  key: Buffer;
  svid: IssuedSvid;
}

/** Issues an SVID for `service` in the default namespace to a fresh key pair. */
export async function issueTestSvid(ca: CertificateAuthority, service: string, ttlSeconds?: number): Promise<TestSvid> {
  const keys = await generateKeyPair();
  const entitled = { trustDomain: ca.trustDomain, namespace: 'default', service };
  const csrPem = await generateCsr(formatSpiffeId(entitled), keys);
  const svid = await ca.issueSvid({ csrPem, entitled, ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) });
  return { key: await privateKeyToPem(keys.privateKey), svid };
}

/** How each side of a handshake judged the other's chain. */
export interface HandshakeOutcome {
  /** The server's verdict on the client's chain. */
  serverAuthorized: boolean;
  serverError: string | null;
  /** The client's verdict on the server's chain. */
  clientAuthorized: boolean;
  clientError: string | null;
}

/**
 * Runs one TLS 1.3 handshake on 127.0.0.1 in which each side presents its SVID chain and checks
 * the other's against its own trusted roots. Both sides complete the handshake whatever the
 * verdict, so that the outcome reports each side's OpenSSL result (`authorized` and
 * `authorizationError`) instead of a closed socket.
 */
export async function mtlsHandshake(server: TestSvid & { ca: string[] }, client: TestSvid & { ca: string[] }): Promise<HandshakeOutcome> {
  const listener = createServer({ key: server.key, cert: server.svid.chainPem, ca: server.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  const accepted = once(listener, 'secureConnection') as Promise<[TLSSocket]>;
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const socket = connect({
    host: '127.0.0.1',
    port: (listener.address() as AddressInfo).port,
    key: client.key,
    cert: client.svid.chainPem,
    ca: client.ca,
    minVersion: 'TLSv1.3',
    rejectUnauthorized: false,
    // An SVID names a SPIFFE ID, not a host, so only the chain is judged here.
    checkServerIdentity: () => undefined,
  });
  try {
    await once(socket, 'secureConnect');
    const [serverSide] = await accepted;
    const outcome = {
      serverAuthorized: serverSide.authorized,
      serverError: serverSide.authorized ? null : String(serverSide.authorizationError),
      clientAuthorized: socket.authorized,
      clientError: socket.authorized ? null : String(socket.authorizationError),
    };
    serverSide.destroy();
    return outcome;
  } finally {
    socket.destroy();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  }
}
