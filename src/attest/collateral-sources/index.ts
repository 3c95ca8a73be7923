import { isSealmeshError } from '../../errors/index.ts';
import type { Logger } from '../../log/index.ts';
import type { Store } from '../../store/index.ts';
import type { DcapCollateral, DcapCollateralRequest, DcapCollateralSource, SnpCertificates, SnpCollateralRequest, SnpCollateralSource } from '../collateral.ts';
import type { VerifierRegistryOptions } from '../registry.ts';
import type { SnpCrlSource } from '../sev-snp/crl.ts';
import type { SnpProductLine } from '../sev-snp/report.ts';
import { CollateralCache } from './cache.ts';
import { FileCollateralSource } from './file.ts';
import { KdsCollateralSource } from './kds.ts';
import { PccsCollateralSource } from './pccs.ts';

export { COLLATERAL_CACHE_PREFIX, CollateralCache, type CachedDocument } from './cache.ts';
export { FileCollateralSource } from './file.ts';
export { KdsCollateralSource, vcekPath, type KdsOptions } from './kds.ts';
export { PccsCollateralSource, type PccsOptions } from './pccs.ts';
export { fetchDocument, type FetchOptions } from './http.ts';

/** Sources of attestation collateral, in any combination. Without any, the hardware verifiers have no collateral. */
export interface CollateralConfig {
  /** A directory in the layout of `FileCollateralSource`, tried first. */
  directory?: string;
  /** A PCCS or Intel PCS base URL for DCAP collateral. */
  pccsUrl?: string;
  /** URL of the Intel SGX Root CA CRL; default `<pccsUrl>/sgx/certification/v4/rootcacrl`. */
  rootCrlUrl?: string;
  /** An AMD KDS base URL, or a cache with its paths, for SEV-SNP certificates and CRLs. */
  kdsUrl?: string;
  /** PEM roots for HTTPS caching services; the system roots when absent. */
  ca?: string[];
}

/** Tries each SEV-SNP source in turn; the next one is asked only when one has no document. */
class SnpSourceChain implements SnpCollateralSource {
  readonly #sources: SnpCollateralSource[];
  readonly #log: Logger;

  constructor(sources: SnpCollateralSource[], log: Logger) {
    this.#sources = sources;
    this.#log = log;
  }

  async certificates(request: SnpCollateralRequest, now: Date): Promise<SnpCertificates> {
    return firstAvailable(this.#sources.map((source) => () => source.certificates(request, now)), this.#log);
  }
}

/** Tries each AMD CRL source in turn; the next one is asked only when one has no CRL. */
class SnpCrlChain implements SnpCrlSource {
  readonly #sources: SnpCrlSource[];
  readonly #log: Logger;

  constructor(sources: SnpCrlSource[], log: Logger) {
    this.#sources = sources;
    this.#log = log;
  }

  async crl(productLine: SnpProductLine, signingKey: 'vcek' | 'vlek', now: Date): Promise<Uint8Array> {
    return firstAvailable(this.#sources.map((source) => () => source.crl(productLine, signingKey, now)), this.#log);
  }
}

/** Tries each DCAP source in turn; the next one is asked only when one has no document. */
class DcapSourceChain implements DcapCollateralSource {
  readonly #sources: DcapCollateralSource[];
  readonly #log: Logger;

  constructor(sources: DcapCollateralSource[], log: Logger) {
    this.#sources = sources;
    this.#log = log;
  }

  async collateral(request: DcapCollateralRequest, now: Date): Promise<DcapCollateral> {
    return firstAvailable(this.#sources.map((source) => () => source.collateral(request, now)), this.#log);
  }
}

/**
 * Returns the result of the first attempt that does not fail with
 * SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE. Invalid or expired collateral fails at once,
 * so that a stale directory is noticed instead of hidden behind a service.
 */
async function firstAvailable<T>(attempts: Array<() => Promise<T>>, log: Logger): Promise<T> {
  let last: unknown;
  for (const attempt of attempts) {
    try {
      return await attempt();
    } catch (error) {
      if (!isSealmeshError(error, 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE')) throw error;
      log.warn({ code: error.code, reason: error.message }, 'collateral source has no document; trying the next source');
      last = error;
    }
  }
  throw last;
}

/**
 * Builds the collateral sources of `config`, caching fetched documents in `store`. A kind of
 * collateral with no source stays undefined; the verifier that needs it is still registered and
 * rejects such evidence with an error naming the flag to set.
 */
export function createCollateralSources(config: CollateralConfig, store: Store, log: Logger): VerifierRegistryOptions {
  const cache = new CollateralCache(store);
  const fetch = config.ca !== undefined ? { ca: config.ca } : {};
  const file = config.directory !== undefined ? new FileCollateralSource(config.directory) : undefined;
  const snp: SnpCollateralSource[] = [];
  const snpCrl: SnpCrlSource[] = [];
  const dcap: DcapCollateralSource[] = [];
  if (file !== undefined) {
    snp.push(file);
    snpCrl.push(file);
    dcap.push(file);
  }
  if (config.kdsUrl !== undefined) {
    const kds = new KdsCollateralSource({ url: config.kdsUrl, cache, fetch });
    snp.push(kds);
    snpCrl.push(kds);
  }
  if (config.pccsUrl !== undefined) dcap.push(new PccsCollateralSource({ url: config.pccsUrl, rootCrlUrl: config.rootCrlUrl, cache, fetch }));
  return {
    ...(snp.length > 0 ? { snpCollateral: new SnpSourceChain(snp, log) } : {}),
    ...(snpCrl.length > 0 ? { snpCrl: new SnpCrlChain(snpCrl, log) } : {}),
    ...(dcap.length > 0 ? { dcapCollateral: new DcapSourceChain(dcap, log) } : {}),
  };
}
