import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { CertificateAuthority, generateCsr, generateKeyPair, Pkcs11KeyCustody, privateKeyToPem, SealedKeyCustody, type KeyCustody } from '../src/pki/index.ts';
import { KeyFileSealProvider } from '../src/seal/index.ts';
import { SealedStore, SqliteStore } from '../src/store/index.ts';
import { TokenTlsKey } from '../src/proxy/token-key.ts';
import { SealmeshError } from '../src/errors/index.ts';
import { createSoftHsmToken, findSoftHsmModule, findSoftHsmUtil } from '../test/helpers/softhsm.ts';
import { integerSetting } from './settings.ts';

/**
 * The signing benchmark. It measures SVID issuance per second with the CA keys in process (sealed
 * custody) against the CA keys in SoftHSM2 through PKCS#11, and raw CA signatures per second for
 * both. It also measures TLS 1.3 handshakes per second between two endpoints on 127.0.0.1 that
 * present SVIDs, with the server's key in memory and with it in SoftHSM2 through the OpenSSL
 * pkcs11 engine, as a proxy with --tls-key-pkcs11-module has it. The variants run alternately,
 * round by round.
 */

const ROUNDS = integerSetting('SEALMESH_BENCH_ROUNDS', 5);
const SVIDS = integerSetting('SEALMESH_BENCH_SVIDS', 300);
const SIGNATURES = integerSetting('SEALMESH_BENCH_SIGNATURES', 1000);
const HANDSHAKES = integerSetting('SEALMESH_BENCH_HANDSHAKES', 300);
const TRUST_DOMAIN = 'bench.sealmesh';
const ENTITLED = { trustDomain: TRUST_DOMAIN, namespace: 'default', service: 'bench' };

type Variant = 'sealed' | 'pkcs11';

interface Setup {
  cas: Record<Variant, CertificateAuthority>;
  custodies: Record<Variant, KeyCustody>;
  /** A proxy TLS key in the same SoftHSM2 token. */
  tokenKey: TokenTlsKey;
  csrs: string[];
  close: () => Promise<void>;
}

async function setUp(): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-bench-signing-'));
  const hsm = createSoftHsmToken({ label: 'bench-ca' });
  const provider = await KeyFileSealProvider.create(join(dir, 'seal-key'), { dataDir: join(dir, 'data') });
  const stores = { sealed: SqliteStore.open(join(dir, 'data', 'sealed.db')), pkcs11: SqliteStore.open(join(dir, 'data', 'pkcs11.db')) };
  const sealedStore = await SealedStore.initialize(stores.sealed, provider, { providerName: 'keyfile' });
  const custodies: Record<Variant, KeyCustody> = {
    sealed: new SealedKeyCustody(sealedStore),
    pkcs11: Pkcs11KeyCustody.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, cluster: TRUST_DOMAIN }),
  };
  const cas = {
    sealed: await CertificateAuthority.open({ store: sealedStore, custody: custodies.sealed, trustDomain: TRUST_DOMAIN }),
    pkcs11: await CertificateAuthority.open({ store: stores.pkcs11, custody: custodies.pkcs11, trustDomain: TRUST_DOMAIN }),
  };
  // CSRs are made once, so both variants validate and sign exactly the same requests.
  const csrs: string[] = [];
  for (let index = 0; index < SVIDS; index += 1) csrs.push(await generateCsr('spiffe://bench.sealmesh/ns/default/svc/bench', await generateKeyPair()));
  const tokenKey = await TokenTlsKey.open({ module: hsm.module, tokenLabel: hsm.tokenLabel, pin: hsm.pin, keyLabel: 'bench-proxy-tls' });
  return {
    cas,
    custodies,
    csrs,
    tokenKey,
    close: async () => {
      tokenKey.close();
      await custodies.pkcs11.close();
      await sealedStore.close();
      await stores.pkcs11.close();
      await provider.close();
      rmSync(dir, { recursive: true, force: true });
      hsm.remove();
    },
  };
}

async function issuancePerSecond(ca: CertificateAuthority, csrs: string[]): Promise<number> {
  const start = process.hrtime.bigint();
  for (const csrPem of csrs) await ca.issueSvid({ csrPem, entitled: ENTITLED, ttlSeconds: 3600 });
  return csrs.length / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function signaturesPerSecond(custody: KeyCustody, label: string): Promise<number> {
  const key = await custody.load(label);
  if (key === undefined) throw new Error(`key ${label} is missing from the ${custody.name} custody`);
  const data = new Uint8Array(512).fill(7);
  const start = process.hrtime.bigint();
  for (let index = 0; index < SIGNATURES; index += 1) await key.sign(data);
  return SIGNATURES / (Number(process.hrtime.bigint() - start) / 1e9);
}

/**
 * Sequential mutual-TLS handshakes, each on a new TCP connection, with SVIDs on both ends. With
 * `serverTokenKey` the server's key is that token key, loaded through the engine.
 */
async function handshakesPerSecond(ca: CertificateAuthority, serverTokenKey?: TokenTlsKey): Promise<number> {
  const credentials = async (): Promise<{ key: Buffer; cert: string }> => {
    const keys = await generateKeyPair();
    const svid = await ca.issueSvid({ csrPem: await generateCsr('spiffe://bench.sealmesh/ns/default/svc/bench', keys), entitled: ENTITLED, ttlSeconds: 3600 });
    return { key: await privateKeyToPem(keys.privateKey), cert: svid.chainPem };
  };
  const tokenCredentials = async (tokenKey: TokenTlsKey): Promise<ReturnType<TokenTlsKey['engineOptions']> & { cert: string }> => {
    const svid = await ca.issueSvid({ csrPem: await tokenKey.csr('spiffe://bench.sealmesh/ns/default/svc/bench'), entitled: ENTITLED, ttlSeconds: 3600 });
    return { ...tokenKey.engineOptions(), cert: svid.chainPem };
  };
  const server = serverTokenKey === undefined ? await credentials() : await tokenCredentials(serverTokenKey);
  const client = await credentials();
  const listener = createServer({ ...server, ca: ca.bundle(), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (socket) => socket.end());
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const port = (listener.address() as AddressInfo).port;
  try {
    const start = process.hrtime.bigint();
    for (let index = 0; index < HANDSHAKES; index += 1) {
      const socket = connect({ host: '127.0.0.1', port, ...client, ca: ca.bundle(), minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
      await once(socket, 'secureConnect');
      if (!socket.authorized) throw new Error(`handshake not authorized: ${String(socket.authorizationError)}`);
      socket.destroy();
    }
    return HANDSHAKES / (Number(process.hrtime.bigint() - start) / 1e9);
  } finally {
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

function summary(values: number[]): { median: number; min: number; max: number; runs: number[] } {
  return { median: Math.round(median(values)), min: Math.round(Math.min(...values)), max: Math.round(Math.max(...values)), runs: values.map((value) => Math.round(value)) };
}

/** Checks that SoftHSM2 is installed, and otherwise stops the benchmark with the install line. */
export function checkSoftHsm(): void {
  if (findSoftHsmUtil() === undefined || findSoftHsmModule() === undefined) {
    throw new SealmeshError('SEALMESH_ERR_BENCH_TOOL_MISSING', 'the signing benchmark needs SoftHSM2 (softhsm2-util on PATH and libsofthsm2.so), which is not installed; install it with `apt-get install -y softhsm2`');
  }
}

/** Runs the signing benchmark and returns its JSON-ready report. */
export async function signingBenchmark(): Promise<Record<string, unknown>> {
  const setup = await setUp();
  try {
    const intermediateLabel = async (ca: CertificateAuthority): Promise<string> => {
      const serial = (await ca.status()).intermediate.serialNumber;
      return `intermediate-${serial}`;
    };
    const labels = { sealed: await intermediateLabel(setup.cas.sealed), pkcs11: await intermediateLabel(setup.cas.pkcs11) };
    const issuance: Record<Variant, number[]> = { sealed: [], pkcs11: [] };
    const signatures: Record<Variant, number[]> = { sealed: [], pkcs11: [] };
    const handshakes: number[] = [];
    const tokenHandshakes: number[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const order: Variant[] = round % 2 === 0 ? ['sealed', 'pkcs11'] : ['pkcs11', 'sealed'];
      for (const variant of order) {
        issuance[variant].push(await issuancePerSecond(setup.cas[variant], setup.csrs));
        signatures[variant].push(await signaturesPerSecond(setup.custodies[variant], labels[variant]));
      }
      if (round % 2 === 0) {
        handshakes.push(await handshakesPerSecond(setup.cas.sealed));
        tokenHandshakes.push(await handshakesPerSecond(setup.cas.sealed, setup.tokenKey));
      } else {
        tokenHandshakes.push(await handshakesPerSecond(setup.cas.sealed, setup.tokenKey));
        handshakes.push(await handshakesPerSecond(setup.cas.sealed));
      }
      process.stderr.write(`signing round ${round + 1}/${ROUNDS} done\n`);
    }
    const issued = { sealed: summary(issuance.sealed), pkcs11: summary(issuance.pkcs11) };
    const signed = { sealed: summary(signatures.sealed), pkcs11: summary(signatures.pkcs11) };
    return {
      parameters: { rounds: ROUNDS, svidsPerRound: SVIDS, signaturesPerRound: SIGNATURES, handshakesPerRound: HANDSHAKES, hsm: 'SoftHSM2' },
      svidsIssuedPerSecond: issued,
      caSignaturesPerSecond: signed,
      tlsHandshakesPerSecond: summary(handshakes),
      tlsHandshakesPerSecondServerKeyInSoftHsm: summary(tokenHandshakes),
      ratios: {
        issuancePkcs11ToSealed: issued.pkcs11.median / issued.sealed.median,
        signaturesPkcs11ToSealed: signed.pkcs11.median / signed.sealed.median,
        handshakesServerKeyInSoftHsmToInMemory: median(tokenHandshakes) / median(handshakes),
      },
    };
  } finally {
    await setup.close();
  }
}
