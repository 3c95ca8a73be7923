import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealmeshError } from '../../errors/index.ts';
import type { DcapCollateral, DcapCollateralRequest, DcapCollateralSource, SnpCertificates, SnpCollateralRequest, SnpCollateralSource } from '../collateral.ts';
import type { SnpCrlSource } from '../sev-snp/crl.ts';
import type { SnpProductLine } from '../sev-snp/report.ts';
import { checkNotExpired, decodeCertificate, decodeCrl, parsePemChain, parseSignedJson } from './documents.ts';
import { checkSnpProductLine, checkSnpRequest } from './kds.ts';
import { earliest } from './pccs.ts';

/**
 * Collateral from a directory that an operator fills, for servers without a route to a caching
 * service. Every document is read at each request and checked for expiry; an expired one fails
 * with SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID until the directory is refreshed. Layout:
 *
 * ```
 * sev-snp/<product>/cert_chain.pem                     ASK then ARK, as KDS serves cert_chain
 * sev-snp/<product>/crl.der                            the ARK's CRL (DER or PEM), as KDS serves
 *                                                      vcek/v1/<product>/crl; required
 * sev-snp/<product>/vcek/<hwid>-<bl>-<tee>-<snp>-<ucode>.der
 *                                                      VCEK; hwid is the chip id in hex (first
 *                                                      16 digits, and -<fmc> appended, on Turin)
 * dcap/<sgx|tdx>/tcb/<fmspc>.json                      PCS body {"tcbInfo": ..., "signature": ...}
 * dcap/<sgx|tdx>/tcb/<fmspc>.issuer-chain.pem
 * dcap/<sgx|tdx>/qe-identity.json                      PCS body {"enclaveIdentity": ..., "signature": ...}
 * dcap/<sgx|tdx>/qe-identity.issuer-chain.pem
 * dcap/pckcrl-<processor|platform>.crl                 DER, PEM or hex
 * dcap/pckcrl-<processor|platform>.issuer-chain.pem
 * dcap/rootcacrl.crl                                   DER, PEM or hex
 * ```
 */
export class FileCollateralSource implements SnpCollateralSource, SnpCrlSource, DcapCollateralSource {
  readonly directory: string;

  constructor(directory: string) {
    this.directory = directory;
  }

  async #read(relative: string): Promise<Buffer> {
    const path = join(this.directory, relative);
    try {
      return await readFile(path);
    } catch (error) {
      throw new SealmeshError(
        'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE',
        `collateral file ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}); see the collateral directory layout in docs/attestation.md`,
        { cause: error },
      );
    }
  }

  async certificates(request: SnpCollateralRequest, now: Date): Promise<SnpCertificates> {
    checkSnpRequest(request);
    if (request.signingKey === 'vlek') {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE', 'a VLEK-signed report must carry its certificates in the certificate table, because the collateral directory contains VCEKs only');
    }
    const tcb = request.reportedTcb;
    const hwid = tcb.fmc === undefined ? request.chipId : request.chipId.slice(0, 16);
    const name = [hwid, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, ...(tcb.fmc !== undefined ? [tcb.fmc] : [])].join('-');
    const vcekFile = `sev-snp/${request.productLine}/vcek/${name}.der`;
    const vcek = decodeCertificate(await this.#read(vcekFile), vcekFile);
    checkNotExpired(vcekFile, vcek.notAfter, now);
    const chainFile = `sev-snp/${request.productLine}/cert_chain.pem`;
    const chain = parsePemChain((await this.#read(chainFile)).toString('utf8'), chainFile, 2);
    checkNotExpired(chainFile, chain.notAfter, now);
    return { vcek: vcek.der, ask: new Uint8Array(chain.certificates[0]!.rawData), ark: new Uint8Array(chain.certificates[1]!.rawData) };
  }

  /** Returns the ARK's CRL of `productLine`; the ARK's one CRL covers both the VCEK and the VLEK chain. */
  async crl(productLine: SnpProductLine, _signingKey: 'vcek' | 'vlek', now: Date): Promise<Uint8Array> {
    checkSnpProductLine(productLine);
    const crlFile = `sev-snp/${productLine}/crl.der`;
    const crl = decodeCrl(await this.#read(crlFile), crlFile);
    checkNotExpired(crlFile, crl.nextUpdate, now);
    return crl.der;
  }

  async collateral(request: DcapCollateralRequest, now: Date): Promise<DcapCollateral> {
    if (!/^[0-9a-f]{12}$/.test(request.fmspc)) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `FMSPC ${JSON.stringify(request.fmspc)} is not 12 lowercase hex digits`);
    }
    const tee = request.teeType;
    const tcbFile = `dcap/${tee}/tcb/${request.fmspc}.json`;
    const tcb = parseSignedJson((await this.#read(tcbFile)).toString('utf8'), 'tcbInfo', tcbFile);
    const tcbChain = parsePemChain((await this.#read(`dcap/${tee}/tcb/${request.fmspc}.issuer-chain.pem`)).toString('utf8'), tcbFile);
    checkNotExpired(tcbFile, earliest(tcb.nextUpdate, tcbChain.notAfter), now);

    const qeFile = `dcap/${tee}/qe-identity.json`;
    const qe = parseSignedJson((await this.#read(qeFile)).toString('utf8'), 'enclaveIdentity', qeFile);
    const qeChain = parsePemChain((await this.#read(`dcap/${tee}/qe-identity.issuer-chain.pem`)).toString('utf8'), qeFile);
    checkNotExpired(qeFile, earliest(qe.nextUpdate, qeChain.notAfter), now);

    const crlFile = `dcap/pckcrl-${request.pckCa}.crl`;
    const pckCrl = decodeCrl(await this.#read(crlFile), crlFile);
    const crlChain = parsePemChain((await this.#read(`dcap/pckcrl-${request.pckCa}.issuer-chain.pem`)).toString('utf8'), crlFile);
    checkNotExpired(crlFile, earliest(pckCrl.nextUpdate, crlChain.notAfter), now);

    const rootFile = 'dcap/rootcacrl.crl';
    const rootCrl = decodeCrl(await this.#read(rootFile), rootFile);
    checkNotExpired(rootFile, rootCrl.nextUpdate, now);

    return {
      tcbInfo: tcb.body,
      tcbInfoSignature: tcb.signature,
      tcbInfoIssuerChain: tcbChain.pem,
      qeIdentity: qe.body,
      qeIdentitySignature: qe.signature,
      qeIdentityIssuerChain: qeChain.pem,
      pckCrl: pckCrl.der,
      pckCrlIssuerChain: crlChain.pem,
      rootCaCrl: rootCrl.der,
    };
  }
}
