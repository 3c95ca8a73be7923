import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { parseSpiffeId, type SpiffeId } from '../spiffe/index.ts';

const URI_PREFIX = 'URI:';

/**
 * Returns the SPIFFE ID of a TLS peer from its leaf certificate, after Node has verified the chain
 * against the trust bundle. This runs on every accepted connection, so it reads only the
 * subjectAltName string that Node already decoded and does no ASN.1 parsing of its own.
 *
 * Implements the leaf checks of SPIFFE X509-SVID §5.2 that chain verification does not cover:
 * - SEALMESH_ERR_PEER_NO_CERTIFICATE: `cert` is the empty object `getPeerCertificate()` returns
 *   when the peer sent no certificate.
 * - SEALMESH_ERR_PEER_CERT_UNTRUSTED: the certificate is a CA certificate.
 * - SEALMESH_ERR_PEER_SAN_INVALID: the subjectAltName contains no URI or more than one (X509-SVID §2),
 *   the URI is not a sealmesh SPIFFE ID, or any entry is quoted. Node quotes an entry whose value
 *   contains a comma, quote or control character. sealmesh never issues such names, and a quoted
 *   entry could hide a second URI from a plain split on ', '. DNS and IP entries are allowed next
 *   to the one URI, as X509-SVID §2 permits, because the control plane's certificate has them.
 * - SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN: the SPIFFE ID is in a trust domain other than `trustDomain`.
 */
export function spiffeIdFromPeerCertificate(cert: PeerCertificate | X509Certificate, trustDomain: string): SpiffeId {
  let altNames: string | undefined;
  if (cert instanceof X509Certificate) {
    altNames = cert.subjectAltName;
  } else {
    if (cert.raw === undefined) {
      throw new SealmeshError('SEALMESH_ERR_PEER_NO_CERTIFICATE', 'the peer presented no certificate: configure its SVID as the TLS certificate');
    }
    altNames = cert.subjectaltname;
  }
  if (cert.ca) {
    throw new SealmeshError('SEALMESH_ERR_PEER_CERT_UNTRUSTED', 'the peer presented a CA certificate as its leaf: present an SVID leaf certificate');
  }
  if (altNames === undefined || altNames === '') {
    throw sanInvalid('it has no subjectAltName');
  }
  if (altNames.includes('"')) {
    throw sanInvalid('it contains a quoted entry');
  }

  let uri: string | undefined;
  let uriCount = 0;
  for (const entry of altNames.split(', ')) {
    if (entry.startsWith(URI_PREFIX)) {
      uriCount++;
      uri = entry.slice(URI_PREFIX.length);
    }
  }
  if (uriCount !== 1 || uri === undefined) {
    throw sanInvalid(`it contains ${uriCount} URIs`);
  }

  let id: SpiffeId;
  try {
    id = parseSpiffeId(uri);
  } catch (error) {
    if (!isSealmeshError(error, 'SEALMESH_ERR_SPIFFE_ID_INVALID')) throw error;
    throw sanInvalid(`its URI is not a sealmesh SPIFFE ID (${error.message})`, error);
  }
  if (id.trustDomain !== trustDomain) {
    throw new SealmeshError(
      'SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN',
      `the peer SPIFFE ID ${uri} is in trust domain ${id.trustDomain}, not ${trustDomain}: connect only to workloads of this mesh`,
    );
  }
  return id;
}

function sanInvalid(detail: string, cause?: unknown): SealmeshError {
  return new SealmeshError(
    'SEALMESH_ERR_PEER_SAN_INVALID',
    `the peer certificate does not carry exactly one SPIFFE ID because ${detail}: the peer must present an SVID issued by this mesh`,
    { cause },
  );
}
