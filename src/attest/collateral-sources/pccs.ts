import { SealmeshError } from '../../errors/index.ts';
import type { DcapCollateral, DcapCollateralRequest, DcapCollateralSource } from '../collateral.ts';
import type { CollateralCache } from './cache.ts';
import { checkNotExpired, decodeCrl, invalidCollateral, parsePemChain, parseSignedJson } from './documents.ts';
import { fetchDocument, type FetchOptions } from './http.ts';

export interface PccsOptions {
  /** Base URL of a PCCS or of Intel's PCS, such as `https://pccs.example:8081`; the paths follow PCS API version 4. */
  url: string;
  /** URL of the Intel SGX Root CA CRL. Default `<url>/sgx/certification/v4/rootcacrl`. */
  rootCrlUrl?: string;
  cache: CollateralCache;
  fetch?: FetchOptions;
}

/** Returns a response header's URL-decoded value, trying each name (PCS v4 names first, then v3). */
function issuerChainHeader(headers: Record<string, string>, names: string[], what: string): string {
  for (const name of names) {
    const value = headers[name];
    if (value !== undefined) {
      try {
        return decodeURIComponent(value);
      } catch {
        throw invalidCollateral(what, `header ${name} is not URL-encoded PEM`);
      }
    }
  }
  throw invalidCollateral(what, `the response lacks the issuer chain header ${names.join(' or ')}`);
}

/**
 * Intel DCAP collateral from a PCCS or Intel's PCS, with each document cached in the server's
 * Store until it expires:
 * - PCK CRL: `/sgx/certification/v4/pckcrl?ca=processor|platform`, chain in `SGX-PCK-CRL-Issuer-Chain`;
 * - TCB info: `/{sgx|tdx}/certification/v4/tcb?fmspc=<hex>`, chain in `TCB-Info-Issuer-Chain`;
 * - QE identity: `/{sgx|tdx}/certification/v4/qe/identity`, chain in `SGX-Enclave-Identity-Issuer-Chain`;
 * - Root CA CRL: `rootCrlUrl`.
 * A document expires at its nextUpdate or at the earliest notAfter of its issuer chain.
 */
export class PccsCollateralSource implements DcapCollateralSource {
  readonly #base: string;
  readonly #rootCrlUrl: string;
  readonly #cache: CollateralCache;
  readonly #fetch: FetchOptions;

  constructor(options: PccsOptions) {
    this.#base = options.url.replace(/\/+$/, '');
    this.#rootCrlUrl = options.rootCrlUrl ?? `${this.#base}/sgx/certification/v4/rootcacrl`;
    this.#cache = options.cache;
    this.#fetch = options.fetch ?? {};
  }

  async collateral(request: DcapCollateralRequest, now: Date): Promise<DcapCollateral> {
    if (!/^[0-9a-f]{12}$/.test(request.fmspc)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `FMSPC ${JSON.stringify(request.fmspc)} is not 12 lowercase hex digits`);
    }
    const tee = request.teeType;

    const tcbWhat = `${tee} TCB info for FMSPC ${request.fmspc}`;
    const tcb = await this.#document(`${this.#base}/${tee}/certification/v4/tcb?fmspc=${request.fmspc}`, now, tcbWhat, (body, headers) => {
      const signed = parseSignedJson(body.toString('utf8'), 'tcbInfo', tcbWhat);
      const chain = parsePemChain(issuerChainHeader(headers, ['tcb-info-issuer-chain', 'sgx-tcb-info-issuer-chain'], tcbWhat), tcbWhat);
      return earliest(signed.nextUpdate, chain.notAfter);
    });
    const tcbSigned = parseSignedJson(tcb.body.toString('utf8'), 'tcbInfo', tcbWhat);

    const qeWhat = `${tee} QE identity`;
    const qe = await this.#document(`${this.#base}/${tee}/certification/v4/qe/identity`, now, qeWhat, (body, headers) => {
      const signed = parseSignedJson(body.toString('utf8'), 'enclaveIdentity', qeWhat);
      const chain = parsePemChain(issuerChainHeader(headers, ['sgx-enclave-identity-issuer-chain'], qeWhat), qeWhat);
      return earliest(signed.nextUpdate, chain.notAfter);
    });
    const qeSigned = parseSignedJson(qe.body.toString('utf8'), 'enclaveIdentity', qeWhat);

    const crlWhat = `PCK ${request.pckCa} CA CRL`;
    const pckCrl = await this.#document(`${this.#base}/sgx/certification/v4/pckcrl?ca=${request.pckCa}`, now, crlWhat, (body, headers) => {
      const chain = parsePemChain(issuerChainHeader(headers, ['sgx-pck-crl-issuer-chain'], crlWhat), crlWhat);
      return earliest(decodeCrl(body, crlWhat).nextUpdate, chain.notAfter);
    });

    const rootWhat = 'Intel SGX Root CA CRL';
    const rootCrl = await this.#document(this.#rootCrlUrl, now, rootWhat, (body) => decodeCrl(body, rootWhat).nextUpdate);

    return {
      tcbInfo: tcbSigned.body,
      tcbInfoSignature: tcbSigned.signature,
      tcbInfoIssuerChain: parsePemChain(issuerChainHeader(tcb.headers, ['tcb-info-issuer-chain', 'sgx-tcb-info-issuer-chain'], tcbWhat), tcbWhat).pem,
      qeIdentity: qeSigned.body,
      qeIdentitySignature: qeSigned.signature,
      qeIdentityIssuerChain: parsePemChain(issuerChainHeader(qe.headers, ['sgx-enclave-identity-issuer-chain'], qeWhat), qeWhat).pem,
      pckCrl: decodeCrl(pckCrl.body, crlWhat).der,
      pckCrlIssuerChain: parsePemChain(issuerChainHeader(pckCrl.headers, ['sgx-pck-crl-issuer-chain'], crlWhat), crlWhat).pem,
      rootCaCrl: decodeCrl(rootCrl.body, rootWhat).der,
    };
  }

  /** Returns the cached document, or fetches, checks and caches it when it is absent or expired. */
  async #document(
    url: string,
    now: Date,
    what: string,
    expiry: (body: Buffer, headers: Record<string, string>) => Date,
  ): Promise<{ body: Buffer; headers: Record<string, string> }> {
    const cached = await this.#cache.get(url, now);
    if (cached !== undefined) return cached;
    const fetched = await fetchDocument(url, this.#fetch);
    const expiresAt = expiry(fetched.body, fetched.headers);
    checkNotExpired(what, expiresAt, now);
    await this.#cache.put({ url, body: fetched.body, headers: fetched.headers, fetchedAt: now, expiresAt });
    return fetched;
  }
}

export function earliest(...dates: Date[]): Date {
  return new Date(Math.min(...dates.map((date) => date.getTime())));
}
