import { SealmeshError } from '../../errors/index.ts';
import type { SnpCertificates, SnpCollateralRequest, SnpCollateralSource } from '../collateral.ts';
import type { CollateralCache } from './cache.ts';
import type { SnpCrlSource } from '../sev-snp/crl.ts';
import type { SnpProductLine } from '../sev-snp/report.ts';
import { checkNotExpired, decodeCertificate, decodeCrl, parsePemChain } from './documents.ts';
import { fetchDocument, type FetchOptions } from './http.ts';

export interface KdsOptions {
  /** Base URL of AMD's Key Distribution Service or of a cache that serves its paths. */
  url: string;
  cache: CollateralCache;
  fetch?: FetchOptions;
}

/** Product line names as KDS paths spell them, such as Milan, Genoa or Turin. */
const PRODUCT_PATTERN = /^[A-Z][A-Za-z0-9-]{0,31}$/;

/**
 * Returns the KDS `hwid` and query of a VCEK request. Reports with an FMC TCB component (Turin
 * and later) use the first 8 bytes of the chip id and add `fmcSPL`.
 */
export function vcekPath(request: SnpCollateralRequest): string {
  const tcb = request.reportedTcb;
  const hwid = tcb.fmc === undefined ? request.chipId : request.chipId.slice(0, 16);
  const query = new URLSearchParams();
  if (tcb.fmc !== undefined) query.set('fmcSPL', String(tcb.fmc));
  query.set('blSPL', String(tcb.bootloader));
  query.set('teeSPL', String(tcb.tee));
  query.set('snpSPL', String(tcb.snp));
  query.set('ucodeSPL', String(tcb.microcode));
  return `/vcek/v1/${request.productLine}/${hwid}?${query.toString()}`;
}

/** Checks a product line that ends up in a URL or a file name. */
export function checkSnpProductLine(productLine: string): void {
  if (!PRODUCT_PATTERN.test(productLine)) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `SEV-SNP product line ${JSON.stringify(productLine)} is not a name such as Milan or Genoa`);
  }
}

/** Checks the parts of a request that end up in a URL or a file name. */
export function checkSnpRequest(request: SnpCollateralRequest): void {
  checkSnpProductLine(request.productLine);
  if (!/^[0-9a-f]{128}$/.test(request.chipId)) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', 'SEV-SNP chip id is not 128 lowercase hex digits');
  }
  for (const [name, value] of Object.entries(request.reportedTcb)) {
    if (value !== undefined && (!Number.isInteger(value) || value < 0 || value > 255)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `SEV-SNP TCB component ${name} ${value} is not 0 to 255`);
    }
  }
}

/**
 * AMD SEV-SNP certificates from KDS or a cache with its paths, each document cached in the
 * server's Store until its certificate's notAfter: the VCEK at
 * `/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..` (DER) and the ASK and ARK
 * at `/vcek/v1/{product}/cert_chain` (PEM, ASK first), and the ARK's CRL at
 * `/vcek/v1/{product}/crl` (or `/vlek/v1/{product}/crl` for the VLEK chain), cached until its
 * nextUpdate. VLEKs are not served by hardware id, so a
 * VLEK-signed report must carry its certificates in the evidence's certificate table.
 */
export class KdsCollateralSource implements SnpCollateralSource, SnpCrlSource {
  readonly #base: string;
  readonly #cache: CollateralCache;
  readonly #fetch: FetchOptions;

  constructor(options: KdsOptions) {
    this.#base = options.url.replace(/\/+$/, '');
    this.#cache = options.cache;
    this.#fetch = options.fetch ?? {};
  }

  async certificates(request: SnpCollateralRequest, now: Date): Promise<SnpCertificates> {
    checkSnpRequest(request);
    if (request.signingKey === 'vlek') {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE',
        'the report is signed by a VLEK, which KDS does not serve by hardware id; the guest must pass the certificate table from configfs-tsm auxblob',
      );
    }
    const vcekWhat = `VCEK of the ${request.productLine} chip at TCB ${JSON.stringify(request.reportedTcb)}`;
    const vcek = await this.#document(`${this.#base}${vcekPath(request)}`, now, vcekWhat, (body) => decodeCertificate(body, vcekWhat).notAfter);
    const chainWhat = `${request.productLine} ASK and ARK chain`;
    const chain = await this.#document(`${this.#base}/vcek/v1/${request.productLine}/cert_chain`, now, chainWhat, (body) => parsePemChain(body.toString('utf8'), chainWhat, 2).notAfter);
    const [ask, ark] = parsePemChain(chain.toString('utf8'), chainWhat, 2).certificates;
    return { vcek: decodeCertificate(vcek, vcekWhat).der, ask: new Uint8Array(ask!.rawData), ark: new Uint8Array(ark!.rawData) };
  }

  async crl(productLine: SnpProductLine, signingKey: 'vcek' | 'vlek', now: Date): Promise<Uint8Array> {
    checkSnpProductLine(productLine);
    const what = `${productLine} ${signingKey.toUpperCase()} CRL`;
    const body = await this.#document(`${this.#base}/${signingKey}/v1/${productLine}/crl`, now, what, (fetched) => decodeCrl(fetched, what).nextUpdate);
    return decodeCrl(body, what).der;
  }

  async #document(url: string, now: Date, what: string, expiry: (body: Buffer) => Date): Promise<Buffer> {
    const cached = await this.#cache.get(url, now);
    if (cached !== undefined) return cached.body;
    const fetched = await fetchDocument(url, this.#fetch);
    const expiresAt = expiry(fetched.body);
    checkNotExpired(what, expiresAt, now);
    await this.#cache.put({ url, body: fetched.body, headers: {}, fetchedAt: now, expiresAt });
    return fetched.body;
  }
}
