import type { Http2ServerRequest } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { SealmeshError } from '../errors/index.ts';
import { spiffeIdFromPeerCertificate } from '../pki/index.ts';
import type { SpiffeId } from '../spiffe/index.ts';

/** Returns a certificate serial number as lowercase hex without leading zero bytes, as DER may add one. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^(00)+(?=.)/, '');
}

/** The SVID a proxy presented over mTLS: its SPIFFE ID, the certificate's serial number and its notAfter. */
export interface PeerSvid {
  id: SpiffeId;
  serial: string;
  /** The certificate's notAfter, in ms since the epoch. */
  notAfterMs: number;
}

/**
 * The SVID of each connection, keyed on the TLS socket (HTTP/1.1) or the HTTP/2 session, so that
 * the requests of a long-lived connection parse its client certificate once.
 */
const connectionSvids = new WeakMap<object, PeerSvid>();

/**
 * Returns the connection a request arrived on: a key that is the same object for every request of
 * that connection, and its TLS socket. An HTTP/2 request's `socket` is a proxy object made per
 * stream, so the key is the HTTP/2 session instead.
 */
export function requestConnection(request: FastifyRequest): { key: object; socket: TLSSocket } {
  const raw = request.raw as FastifyRequest['raw'] | Http2ServerRequest;
  if ('stream' in raw && raw.stream.session !== undefined) {
    return { key: raw.stream.session, socket: raw.stream.session.socket as TLSSocket };
  }
  return { key: raw.socket, socket: raw.socket as TLSSocket };
}

/**
 * Returns the SPIFFE ID, serial number and notAfter of the SVID the caller presented as the client
 * certificate of its connection. Node has already verified the chain against the trust bundle when
 * `authorized` is set, and this adds the SVID name checks once per connection. Because a connection
 * may outlive its certificate, every request checks notAfter against `now` again and fails with
 * SEALMESH_ERR_PEER_CERT_EXPIRED once it has passed.
 */
export function peerSvid(request: FastifyRequest, trustDomain: string, now: Date): PeerSvid {
  const { key, socket } = requestConnection(request);
  let svid = connectionSvids.get(key);
  if (svid === undefined) {
    const certificate = socket.getPeerX509Certificate?.();
    if (certificate === undefined) {
      throw new SealmeshError('SEALMESH_ERR_PEER_NO_CERTIFICATE', 'this endpoint requires the caller\'s SVID as a TLS client certificate');
    }
    if (!socket.authorized) {
      throw new SealmeshError('SEALMESH_ERR_PEER_CERT_UNTRUSTED', `the client certificate was rejected: ${String(socket.authorizationError)}`);
    }
    svid = {
      id: spiffeIdFromPeerCertificate(certificate, trustDomain),
      serial: normalizeSerial(certificate.serialNumber),
      notAfterMs: Date.parse(certificate.validTo),
    };
    connectionSvids.set(key, svid);
  }
  if (!(now.getTime() < svid.notAfterMs)) {
    throw new SealmeshError(
      'SEALMESH_ERR_PEER_CERT_EXPIRED',
      `the client certificate (serial ${svid.serial}) of this connection expired at ${new Date(svid.notAfterMs).toISOString()}; open a new connection with the renewed SVID`,
    );
  }
  return svid;
}
