import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { webcrypto } from 'node:crypto';
import {
  COLLATERAL_CACHE_PREFIX,
  CollateralCache,
  FileCollateralSource,
  KdsCollateralSource,
  PccsCollateralSource,
  createCollateralSources,
} from '../src/attest/collateral-sources/index.ts';
import type { SnpCollateralRequest } from '../src/attest/collateral.ts';
import { isSealmeshError, type ErrorCode } from '../src/errors/index.ts';
import { silentLogger } from '../src/log/index.ts';
import { generateKeyPair } from '../src/pki/index.ts';
import { nodeCrypto, x509 } from '../src/pki/x509.ts';
import { SqliteStore, type Store } from '../src/store/index.ts';
import { initializeSealedFile } from '../src/store/sealed-api.ts';
import { TestSealProvider } from './helpers/test-seal.ts';
import { tempDir } from './helpers/mesh.ts';

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  });
}

const DAY = 24 * 3600 * 1000;
const issued = new Date('2026-12-01T00:00:00Z');
const nextUpdate = new Date('2026-12-31T00:00:00Z');
const beforeExpiry = new Date('2026-12-10T00:00:00Z');
const afterExpiry = new Date('2027-01-02T00:00:00Z');
const ecdsa = { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams;

interface Pki {
  root: x509.X509Certificate;
  signing: x509.X509Certificate;
  rootKeys: webcrypto.CryptoKeyPair;
  chainPem: string;
}

/** Creates a root and a signing certificate, valid for a year, like Intel's SGX Root CA and TCB Signing certificate. */
async function makePki(name: string): Promise<Pki> {
  const rootKeys = await generateKeyPair();
  const root = await x509.X509CertificateGenerator.createSelfSigned(
    { name: `CN=${name} Root CA`, keys: rootKeys, signingAlgorithm: ecdsa, notBefore: issued, notAfter: new Date(issued.getTime() + 365 * DAY), extensions: [new x509.BasicConstraintsExtension(true, undefined, true)] },
    nodeCrypto,
  );
  const signingKeys = await generateKeyPair();
  const signing = await x509.X509CertificateGenerator.create(
    {
      subject: `CN=${name} Signing`,
      issuer: root.subject,
      publicKey: signingKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: ecdsa,
      notBefore: issued,
      notAfter: new Date(issued.getTime() + 365 * DAY),
      serialNumber: '02',
    },
    nodeCrypto,
  );
  return { root, signing, rootKeys, chainPem: `${signing.toString('pem')}\n${root.toString('pem')}\n` };
}

async function makeCrl(pki: Pki, until: Date): Promise<Uint8Array> {
  const crl = await x509.X509CrlGenerator.create(
    { issuer: pki.root.subject, thisUpdate: issued, nextUpdate: until, signingKey: pki.rootKeys.privateKey, signingAlgorithm: ecdsa },
    nodeCrypto,
  );
  return new Uint8Array(crl.rawData);
}

// Spacing as Intel's services may send it; the signed member must come back byte for byte.
const tcbInfoText = `{"id":"TDX","version":3,"issueDate":"${issued.toISOString()}","nextUpdate":"${nextUpdate.toISOString()}","fmspc":"00806f050000","tcbLevels":[{"tcb":{"sgxtcbcomponents":[]},"tcbStatus":"UpToDate"}]}`;
const tcbBody = `{"tcbInfo": ${tcbInfoText} ,"signature":"AB01cd"}`;
const qeIdentityText = `{"id":"TD_QE","version":2,"issueDate":"${issued.toISOString()}","nextUpdate":"${nextUpdate.toISOString()}","tcbLevels":[]}`;
const qeBody = `{"enclaveIdentity":${qeIdentityText},"signature":"ef02"}`;
const chipId = 'c5'.repeat(64);
const snpRequest: SnpCollateralRequest = { productLine: 'Genoa', chipId, reportedTcb: { bootloader: 9, tee: 0, snp: 23, microcode: 72 }, signingKey: 'vcek' };

describe('collateral from a caching service', () => {
  let intel: Pki;
  let amd: Pki;
  let vcek: x509.X509Certificate;
  let server: Server;
  let base = '';
  let store: Store;
  const requests: string[] = [];
  let pckCrl: Uint8Array;
  let rootCrl: Uint8Array;
  // What the service serves now; a test replaces them to publish a newer version.
  let servedTcb = tcbBody;
  let servedQe = qeBody;
  let servedPckCrl: Uint8Array;
  let amdCrl: Uint8Array;

  before(async () => {
    intel = await makePki('Intel SGX');
    amd = await makePki('AMD ARK-Genoa');
    const vcekKeys = await generateKeyPair();
    vcek = await x509.X509CertificateGenerator.create(
      { subject: 'CN=SEV-VCEK', issuer: amd.signing.subject, publicKey: vcekKeys.publicKey, signingKey: amd.rootKeys.privateKey, signingAlgorithm: ecdsa, notBefore: issued, notAfter: new Date(issued.getTime() + 200 * DAY), serialNumber: '03' },
      nodeCrypto,
    );
    pckCrl = await makeCrl(intel, nextUpdate);
    rootCrl = await makeCrl(intel, new Date('2027-06-01T00:00:00Z'));
    servedPckCrl = pckCrl;
    amdCrl = await makeCrl(amd, nextUpdate);
    const chainHeader = encodeURIComponent(intel.chainPem);
    server = createServer((request, response) => {
      const url = request.url ?? '';
      requests.push(url);
      const path = url.split('?')[0];
      const query = new URLSearchParams(url.split('?')[1] ?? '');
      if (path === '/tdx/certification/v4/tcb' && query.get('fmspc') === '00806f050000') {
        response.writeHead(200, { 'content-type': 'application/json', 'TCB-Info-Issuer-Chain': chainHeader }).end(servedTcb);
      } else if (path === '/tdx/certification/v4/qe/identity') {
        response.writeHead(200, { 'content-type': 'application/json', 'SGX-Enclave-Identity-Issuer-Chain': chainHeader }).end(servedQe);
      } else if (path === '/sgx/certification/v4/pckcrl' && query.get('ca') === 'platform') {
        // Older PCCS versions serve the CRL as hex text.
        response.writeHead(200, { 'SGX-PCK-CRL-Issuer-Chain': chainHeader }).end(Buffer.from(servedPckCrl).toString('hex'));
      } else if (path === '/sgx/certification/v4/rootcacrl') {
        response.writeHead(200).end(Buffer.from(rootCrl));
      } else if (path === `/vcek/v1/Genoa/${chipId}` && query.get('blSPL') === '9' && query.get('teeSPL') === '0' && query.get('snpSPL') === '23' && query.get('ucodeSPL') === '72') {
        response.writeHead(200, { 'content-type': 'application/x-x509-ca-cert' }).end(Buffer.from(vcek.rawData));
      } else if (path === '/vcek/v1/Genoa/crl' || path === '/vlek/v1/Genoa/crl') {
        response.writeHead(200, { 'content-type': 'application/pkix-crl' }).end(Buffer.from(amdCrl));
      } else if (path === '/vcek/v1/Genoa/cert_chain') {
        response.writeHead(200, { 'content-type': 'application/x-pem-file' }).end(amd.chainPem);
      } else {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    base = `http://127.0.0.1:${address.port}`;
    store = SqliteStore.open(join(tempDir('sealmesh-collateral-').path, 'store.db'));
  });

  after(async () => {
    await store.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  test('PCCS collateral fetched and cached until it expires', async () => {
    const source = new PccsCollateralSource({ url: base, cache: new CollateralCache(store) });
    const request = { teeType: 'tdx' as const, fmspc: '00806f050000', pckCa: 'platform' as const };
    requests.length = 0;
    const first = await source.collateral(request, beforeExpiry);
    assert.equal(first.tcbInfo, tcbInfoText);
    assert.equal(first.tcbInfoSignature, 'ab01cd');
    assert.equal(first.qeIdentity, qeIdentityText);
    assert.equal(first.qeIdentitySignature, 'ef02');
    assert.deepEqual(Buffer.from(first.pckCrl), Buffer.from(pckCrl));
    assert.deepEqual(Buffer.from(first.rootCaCrl), Buffer.from(rootCrl));
    assert.match(first.tcbInfoIssuerChain, /^-----BEGIN CERTIFICATE-----/);
    assert.equal(first.pckCrlIssuerChain, first.tcbInfoIssuerChain);
    assert.equal(requests.length, 4);

    const second = await source.collateral(request, new Date(beforeExpiry.getTime() + DAY));
    assert.deepEqual(second, first);
    assert.equal(requests.length, 4, 'served from the cache');
    assert.equal((await store.list(COLLATERAL_CACHE_PREFIX)).length, 4);
  });

  test('expired cached collateral refreshed', async () => {
    const source = new PccsCollateralSource({ url: base, cache: new CollateralCache(store) });
    const request = { teeType: 'tdx' as const, fmspc: '00806f050000', pckCa: 'platform' as const };
    await source.collateral(request, beforeExpiry);

    // Past nextUpdate of TCB info, QE identity and the PCK CRL, but not of the root CA CRL. The
    // service still serves the old documents, which are expired, so they are rejected.
    requests.length = 0;
    await rejectsWith(source.collateral(request, afterExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
    assert.equal(requests.length, 1);
    assert.ok(requests[0]?.startsWith('/tdx/certification/v4/tcb'));

    // Once the service publishes new versions, the expired ones are replaced.
    const later = new Date('2027-02-01T00:00:00Z');
    servedTcb = tcbBody.replace(nextUpdate.toISOString(), later.toISOString());
    servedQe = qeBody.replace(nextUpdate.toISOString(), later.toISOString());
    servedPckCrl = await makeCrl(intel, later);
    requests.length = 0;
    const refreshed = await source.collateral(request, afterExpiry);
    assert.match(refreshed.tcbInfo, /2027-02-01/);
    assert.deepEqual(Buffer.from(refreshed.pckCrl), Buffer.from(servedPckCrl));
    assert.equal(requests.length, 3, 'the root CA CRL was still valid in the cache');
    requests.length = 0;
    await source.collateral(request, afterExpiry);
    assert.equal(requests.length, 0);
    servedTcb = tcbBody;
    servedQe = qeBody;
    servedPckCrl = pckCrl;
  });

  test('unknown FMSPC reported as unavailable', async () => {
    const source = new PccsCollateralSource({ url: base, cache: new CollateralCache(store) });
    await rejectsWith(source.collateral({ teeType: 'tdx', fmspc: '000000000000', pckCa: 'platform' }, beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE');
  });

  test('malformed FMSPC rejected before any request', async () => {
    const source = new PccsCollateralSource({ url: base, cache: new CollateralCache(store) });
    requests.length = 0;
    await rejectsWith(source.collateral({ teeType: 'sgx', fmspc: '../x', pckCa: 'processor' }, beforeExpiry), 'SEALMESH_ERR_INVALID_ARGUMENT');
    assert.equal(requests.length, 0);
  });

  test('KDS VCEK and chain fetched and cached', async () => {
    const source = new KdsCollateralSource({ url: base, cache: new CollateralCache(store) });
    requests.length = 0;
    const certificates = await source.certificates(snpRequest, beforeExpiry);
    assert.deepEqual(Buffer.from(certificates.vcek), Buffer.from(vcek.rawData));
    assert.deepEqual(Buffer.from(certificates.ask), Buffer.from(amd.signing.rawData));
    assert.deepEqual(Buffer.from(certificates.ark), Buffer.from(amd.root.rawData));
    assert.equal(requests.length, 2);
    assert.equal(requests[0], `/vcek/v1/Genoa/${chipId}?blSPL=9&teeSPL=0&snpSPL=23&ucodeSPL=72`);
    await source.certificates(snpRequest, beforeExpiry);
    assert.equal(requests.length, 2, 'served from the cache');
  });

  test('VCEK past notAfter fetched again and rejected', async () => {
    const source = new KdsCollateralSource({ url: base, cache: new CollateralCache(store) });
    requests.length = 0;
    await rejectsWith(source.certificates(snpRequest, new Date(issued.getTime() + 201 * DAY)), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
    assert.equal(requests.length, 1);
  });

  test('cache in a sealed store is encrypted', async () => {
    const path = join(tempDir('sealmesh-collateral-sealed-').path, 'store.db');
    const sealed = await initializeSealedFile(path, new TestSealProvider());
    try {
      const source = new KdsCollateralSource({ url: base, cache: new CollateralCache(sealed) });
      requests.length = 0;
      await source.certificates(snpRequest, beforeExpiry);
      assert.equal(requests.length, 2);
      await new KdsCollateralSource({ url: base, cache: new CollateralCache(sealed) }).certificates(snpRequest, beforeExpiry);
      assert.equal(requests.length, 2, 'served from the sealed cache');
      assert.equal((await sealed.list(COLLATERAL_CACHE_PREFIX)).length, 2);
    } finally {
      await sealed.close();
    }
    const raw = readFileSync(path);
    assert.ok(!raw.includes(Buffer.from('/vcek/v1/Genoa')), 'the cached URL is not stored in plaintext');
    // The cache record keeps the body as base64 text inside JSON.
    assert.ok(!raw.includes(Buffer.from(Buffer.from(vcek.rawData).toString('base64').slice(0, 48))), 'the cached VCEK is not stored in plaintext');
  });

  test('KDS CRL fetched and cached until its nextUpdate', async () => {
    const source = new KdsCollateralSource({ url: base, cache: new CollateralCache(store) });
    requests.length = 0;
    assert.deepEqual(Buffer.from(await source.crl('Genoa', 'vcek', beforeExpiry)), Buffer.from(amdCrl));
    assert.deepEqual(requests, ['/vcek/v1/Genoa/crl']);
    await source.crl('Genoa', 'vcek', beforeExpiry);
    assert.equal(requests.length, 1, 'served from the cache');
    assert.deepEqual(Buffer.from(await source.crl('Genoa', 'vlek', beforeExpiry)), Buffer.from(amdCrl));
    assert.equal(requests[1], '/vlek/v1/Genoa/crl');
    // Past its nextUpdate the cached CRL is ignored, fetched again, and the stale copy rejected.
    await rejectsWith(source.crl('Genoa', 'vcek', afterExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
    assert.equal(requests.length, 3);
    await rejectsWith(source.crl('../x' as 'Genoa', 'vcek', beforeExpiry), 'SEALMESH_ERR_INVALID_ARGUMENT');
    assert.equal(requests.length, 3);
  });

  test('CRL sources built from the configuration', async () => {
    assert.equal(createCollateralSources({}, store, silentLogger()).snpCrl, undefined);
    const directory = tempDir('sealmesh-collateral-dir-').path;
    const sources = createCollateralSources({ directory, kdsUrl: base }, store, silentLogger());
    // The directory has no CRL, so the service provides it.
    assert.deepEqual(Buffer.from(await sources.snpCrl!.crl('Genoa', 'vcek', beforeExpiry)), Buffer.from(amdCrl));
  });

  test('VLEK not served by KDS', async () => {
    const source = new KdsCollateralSource({ url: base, cache: new CollateralCache(store) });
    await rejectsWith(source.certificates({ ...snpRequest, signingKey: 'vlek' }, beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE');
  });

  test('unreachable service with nothing cached unavailable', async () => {
    const source = new KdsCollateralSource({ url: 'http://127.0.0.1:9', cache: new CollateralCache(store) });
    await rejectsWith(source.certificates({ ...snpRequest, chipId: 'ab'.repeat(64) }, beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE');
  });

  test('directory tried before the service', async () => {
    const directory = tempDir('sealmesh-collateral-dir-').path;
    const sources = createCollateralSources({ directory, kdsUrl: base }, store, silentLogger());
    requests.length = 0;
    // The directory has no VCEK, so the service provides it.
    const certificates = await sources.snpCollateral!.certificates({ ...snpRequest }, beforeExpiry);
    assert.deepEqual(Buffer.from(certificates.vcek), Buffer.from(vcek.rawData));
    assert.equal(sources.dcapCollateral !== undefined, true);
  });

  test('collateral directory read in its layout', async () => {
    const directory = tempDir('sealmesh-collateral-dir-').path;
    mkdirSync(join(directory, 'dcap', 'tdx', 'tcb'), { recursive: true });
    mkdirSync(join(directory, 'sev-snp', 'Genoa', 'vcek'), { recursive: true });
    writeFileSync(join(directory, 'dcap', 'tdx', 'tcb', '00806f050000.json'), tcbBody);
    writeFileSync(join(directory, 'dcap', 'tdx', 'tcb', '00806f050000.issuer-chain.pem'), intel.chainPem);
    writeFileSync(join(directory, 'dcap', 'tdx', 'qe-identity.json'), qeBody);
    writeFileSync(join(directory, 'dcap', 'tdx', 'qe-identity.issuer-chain.pem'), intel.chainPem);
    writeFileSync(join(directory, 'dcap', 'pckcrl-processor.crl'), pckCrl);
    writeFileSync(join(directory, 'dcap', 'pckcrl-processor.issuer-chain.pem'), intel.chainPem);
    writeFileSync(join(directory, 'dcap', 'rootcacrl.crl'), new x509.X509Crl(rootCrl).toString('pem'));
    writeFileSync(join(directory, 'sev-snp', 'Genoa', 'cert_chain.pem'), amd.chainPem);
    writeFileSync(join(directory, 'sev-snp', 'Genoa', 'vcek', `${chipId}-9-0-23-72.der`), Buffer.from(vcek.rawData));
    writeFileSync(join(directory, 'sev-snp', 'Genoa', 'crl.der'), new x509.X509Crl(amdCrl).toString('pem'));

    const source = new FileCollateralSource(directory);
    const collateral = await source.collateral({ teeType: 'tdx', fmspc: '00806f050000', pckCa: 'processor' }, beforeExpiry);
    assert.equal(collateral.tcbInfo, tcbInfoText);
    assert.deepEqual(Buffer.from(collateral.rootCaCrl), Buffer.from(rootCrl));
    const certificates = await source.certificates(snpRequest, beforeExpiry);
    assert.deepEqual(Buffer.from(certificates.vcek), Buffer.from(vcek.rawData));
    assert.deepEqual(Buffer.from(await source.crl('Genoa', 'vcek', beforeExpiry)), Buffer.from(amdCrl));
    await rejectsWith(source.crl('Genoa', 'vcek', afterExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
    await rejectsWith(source.crl('Milan', 'vcek', beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE');

    await rejectsWith(source.collateral({ teeType: 'tdx', fmspc: '00806f050000', pckCa: 'processor' }, afterExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
    await rejectsWith(source.collateral({ teeType: 'sgx', fmspc: '00806f050000', pckCa: 'processor' }, beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE');
    writeFileSync(join(directory, 'dcap', 'tdx', 'qe-identity.json'), '{"enclaveIdentity": 1');
    await rejectsWith(source.collateral({ teeType: 'tdx', fmspc: '00806f050000', pckCa: 'processor' }, beforeExpiry), 'SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID');
  });
});
