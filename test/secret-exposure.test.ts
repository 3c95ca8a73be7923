/**
 * Runs a control plane and two proxies as child processes with live mTLS traffic, then searches
 * their heap snapshots, their output and their metrics for every secret of the flow.
 *
 * A V8 heap snapshot contains the strings and the object graph of the JavaScript heap. It does not
 * contain the bytes of ArrayBuffers, typed arrays or Buffers, nor OpenSSL's memory, where the TLS
 * layer keeps its copy of each private key (an EVP_PKEY). The snapshot search therefore
 * shows that no key or token is kept as a JavaScript string; keys in Buffers are covered by the
 * zeroing in src/proxy/identity.ts and src/pki/workload.ts instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { freePort, type CliProcess } from './helpers/cli.ts';
import { eventually, httpGet, startHttpApp, tempDir } from './helpers/mesh.ts';
import { createJoinToken, runSealmesh, startProxyProcess, startServerProcess, stopProcesses, type ProxyProcess, type ServerProcess } from './helpers/process-mesh.ts';
import { heapSnapshotStrings, publicPointOf, SecretScanner, textForms, type KeyTarget } from './helpers/secret-scan.ts';

const SNAPSHOT_TIMEOUT_MS = 90_000;

/** Node.js flags of every child: a heap snapshot on SIGUSR2, with whole strings, into `dir`. */
function snapshotFlags(dir: string): string[] {
  return ['--heapsnapshot-signal=SIGUSR2', '--heap-snapshot-string-limit=100000000', `--diagnostic-dir=${dir}`];
}

/** Returns the certificate chain a TLS listener presents, leaf first, without completing mTLS. */
function presentedChain(port: number): Promise<X509Certificate[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => {
      const chain: X509Certificate[] = [];
      let certificate = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (certificate.raw !== undefined && !seen.has(certificate.fingerprint256)) {
        seen.add(certificate.fingerprint256);
        chain.push(new X509Certificate(certificate.raw));
        certificate = certificate.issuerCertificate;
        if (certificate === undefined) break;
      }
      socket.destroy();
      resolve(chain);
    });
    socket.once('error', reject);
  });
}

/** Sends SIGUSR2 to the child and returns the text of the heap snapshot it writes into `dir`. */
async function takeHeapSnapshot(running: CliProcess, dir: string): Promise<string> {
  const pid = running.child.pid;
  assert.ok(pid !== undefined, 'the child has a pid');
  const ofChild = (): string[] => readdirSync(dir).filter((name) => name.endsWith('.heapsnapshot') && name.includes(`.${pid}.`));
  assert.deepEqual(ofChild(), [], 'no snapshot of this child exists yet');
  running.child.kill('SIGUSR2');
  let text = '';
  await eventually(
    () => {
      const [name] = ofChild();
      if (name === undefined) return false;
      const path = join(dir, name);
      const size = statSync(path).size;
      if (size === 0) return false;
      // V8 writes the file in one pass; it is complete once it parses.
      const candidate = readFileSync(path, 'utf8');
      try {
        heapSnapshotStrings(candidate);
      } catch {
        return false;
      }
      text = candidate;
      return true;
    },
    SNAPSHOT_TIMEOUT_MS,
    `a heap snapshot of pid ${pid}`,
  );
  return text;
}

describe('secrets in process memory and output', () => {
  const dir = tempDir('sealmesh-secret-exposure-');
  const snapshots = join(dir.path, 'snapshots');
  const processes: CliProcess[] = [];
  const closers: Array<() => Promise<void>> = [];
  let server: ServerProcess;
  let api: ProxyProcess;
  let web: ProxyProcess;
  let upstreamPort = 0;
  const joinTokens: Record<string, string> = {};
  let unusedJoinToken = '';
  let revokedToken = '';
  let kek: Buffer;

  before(async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(snapshots);
    server = await startServerProcess(dir.path, [], { nodeArgs: snapshotFlags(snapshots) });
    processes.push(server.running);
    kek = Buffer.from(readFileSync(`${server.dataDir}.seal-key`, 'utf8').trim(), 'base64');
    assert.equal(kek.length, 32, 'the key file holds a 32-byte key');

    const app = await startHttpApp('api');
    closers.push(app.close);
    joinTokens.api = await createJoinToken(server, 'api');
    joinTokens.web = await createJoinToken(server, 'web');
    unusedJoinToken = await createJoinToken(server, 'spare');
    const read = await server.operator.post<{ token: string; accessorId: string }>('/v1/acl/tokens', { kind: 'read' });
    revokedToken = read.token;
    await server.operator.delete(`/v1/acl/tokens/${read.accessorId}`);
    await server.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow' });

    api = await startProxyProcess(server, 'api', joinTokens.api, ['--app', `127.0.0.1:${app.port}`], { nodeArgs: snapshotFlags(snapshots) });
    processes.push(api.running);
    upstreamPort = await freePort();
    web = await startProxyProcess(server, 'web', joinTokens.web, ['--app', '127.0.0.1:9', '--upstream', `api=127.0.0.1:${upstreamPort}`], {
      nodeArgs: snapshotFlags(snapshots),
    });
    processes.push(web.running);

    // Live mTLS traffic: web's upstream listener to api's inbound listener to the app.
    await eventually(
      async () => {
        const response = await httpGet(upstreamPort, '/through-the-mesh').catch(() => ({ status: 0, body: '' }));
        return response.status === 200;
      },
      30_000,
      'a request through the mesh to succeed',
    );
    for (let i = 0; i < 20; i++) {
      const response = await httpGet(upstreamPort, `/request-${i}`);
      assert.equal(response.status, 200);
    }
    // A rejected request with a revoked token, so that the rejection path is in the output too.
    await assert.rejects(server.client.with({ token: revokedToken }).get('/v1/catalog/services'));
  });

  after(async () => {
    await stopProcesses(processes);
    for (const close of closers) await close();
    dir.remove();
  });

  /** Returns the P-256 keys of a proxy: its SVID, read from its inbound listener. */
  async function proxyKey(service: string): Promise<KeyTarget> {
    const { services } = await server.operator.get<{ services: Array<{ name: string; instances: Array<{ port: number }> }> }>('/v1/catalog/services');
    const port = services.find((entry) => entry.name === service)?.instances[0]?.port;
    assert.ok(port !== undefined, `${service} is in the catalog`);
    const [leaf] = await presentedChain(port);
    assert.ok(leaf !== undefined, `${service} presents a certificate`);
    return { name: `${service} SVID key`, publicPoint: publicPointOf(leaf) };
  }

  test('scanner finds every key and token form', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = privateKey.export({ format: 'jwk' });
    const scalar = Buffer.from(jwk.d ?? '', 'base64url');
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url'), Buffer.from(jwk.y ?? '', 'base64url')]);
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    const sec1 = privateKey.export({ type: 'sec1', format: 'der' });
    const token = 'smt_test-token-that-is-long-enough';
    const cases: Array<[string, string]> = [
      ['PKCS#8 PEM', privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()],
      ['SEC1 PEM', privateKey.export({ type: 'sec1', format: 'pem' }).toString()],
      ['PKCS#8 DER as Latin-1', `x${pkcs8.toString('latin1')}y`],
      ['SEC1 DER as hex', `id=${sec1.toString('hex')};`],
      ['PKCS#8 DER as base64', pkcs8.toString('base64')],
      ...textForms(scalar).map((form): [string, string] => [`scalar as ${form.form}`, `before ${form.text} after`]),
      ['JWK', JSON.stringify(jwk)],
    ];
    for (const [name, text] of cases) {
      const scanner = new SecretScanner([{ name: 'key', publicPoint: point }]);
      scanner.scan([text], name);
      assert.ok(scanner.findings.length > 0, `the key is found in ${name}`);
    }
    for (const form of [token, Buffer.from(token).toString('base64'), Buffer.from(token).toString('hex')]) {
      const scanner = new SecretScanner([], [{ name: 'token', bytes: Buffer.from(token) }]);
      scanner.scan([`prefix ${form} suffix`], 'text');
      assert.ok(scanner.findings.length > 0, `the token is found as ${form}`);
    }
    const clean = new SecretScanner([{ name: 'key', publicPoint: point }], [{ name: 'token', bytes: Buffer.from(token) }]);
    clean.scan([publicKey.export({ type: 'spki', format: 'pem' }).toString(), 'nothing secret here at all'], 'public text');
    assert.deepEqual(clean.findings, [], 'a public key alone is no finding');
  });

  test('scanner finds a key in a real heap', async () => {
    // A plain Node.js child keeps one key as a PEM string and another as a hex string, prints both
    // public points, and writes a heap snapshot with the same flags as the sealmesh children.
    const script = [
      "const { generateKeyPairSync } = require('node:crypto');",
      "const { writeHeapSnapshot } = require('node:v8');",
      "const point = (key) => { const jwk = key.export({ format: 'jwk' }); return Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, 'base64url'), Buffer.from(jwk.y, 'base64url')]).toString('hex'); };",
      "const pemKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });",
      "const hexKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });",
      "globalThis.kept = [pemKey.privateKey.export({ type: 'pkcs8', format: 'pem' }), 'd=' + Buffer.from(hexKey.privateKey.export({ format: 'jwk' }).d, 'base64url').toString('hex')];",
      "const file = writeHeapSnapshot(process.argv[1]);",
      "console.log(JSON.stringify({ pem: point(pemKey.publicKey), hex: point(hexKey.publicKey), file }));",
    ].join('\n');
    const path = join(snapshots, 'control.heapsnapshot');
    const { execFileSync } = await import('node:child_process');
    const output = execFileSync(process.execPath, ['--heap-snapshot-string-limit=100000000', '-e', script, path], { encoding: 'utf8' });
    const points = JSON.parse(output) as { pem: string; hex: string };
    const scanner = new SecretScanner([
      { name: 'PEM key', publicPoint: Buffer.from(points.pem, 'hex') },
      { name: 'hex key', publicPoint: Buffer.from(points.hex, 'hex') },
    ]);
    scanner.scan(heapSnapshotStrings(readFileSync(path, 'utf8')), 'control snapshot');
    const found = new Set(scanner.findings.map((finding) => finding.target));
    assert.ok(found.has('PEM key'), 'the PEM key is found in the heap snapshot');
    assert.ok(found.has('hex key'), 'the hex key is found in the heap snapshot');
  });

  test('proxy heap snapshots hold no private key or token', async () => {
    const bundle = readFileSync(server.bundlePath, 'utf8');
    const bundleBody = bundle.split('\n').slice(1, 3).join('\n');
    for (const [service, proxy] of [['api', api], ['web', web]] as const) {
      const key = await proxyKey(service);
      const strings = heapSnapshotStrings(await takeHeapSnapshot(proxy.running, snapshots));
      // The trust bundle is a string the proxy holds for its whole life, so finding it shows that
      // the snapshot covers the proxy's live strings.
      assert.ok(
        strings.some((text) => text.includes(bundleBody)),
        `the ${service} snapshot contains the trust bundle the proxy holds`,
      );
      const scanner = new SecretScanner([key], [
        { name: `${service} join token`, bytes: Buffer.from(joinTokens[service] ?? '') },
        { name: 'operator token', bytes: Buffer.from(server.operatorToken) },
      ]);
      scanner.scan(strings, `${service} heap snapshot`);
      assert.deepEqual(scanner.findings, [], `no secret in the ${service} heap (${scanner.candidates} candidate scalars checked)`);
      assert.deepEqual(scanner.otherPrivateKeys, [], `no private-key PEM block of any key in the ${service} heap`);
      assert.ok(scanner.candidates > 0, 'the scan tried candidate scalars');
    }
  });

  test('server heap snapshot holds no key or token', async () => {
    const serverUrl = new URL(`https://${server.addr}`);
    const chain = await presentedChain(Number(serverUrl.port));
    assert.ok(chain.length >= 1, 'the server presents a certificate');
    const roots = readFileSync(server.bundlePath, 'utf8')
      .split(/(?=-----BEGIN CERTIFICATE-----)/)
      .filter((block) => block.includes('BEGIN CERTIFICATE'))
      .map((block) => new X509Certificate(block));
    const keys: KeyTarget[] = [
      ...chain.map((certificate, index) => ({ name: index === 0 ? 'server TLS key' : `CA key ${certificate.subject}`, publicPoint: publicPointOf(certificate) })),
      ...roots.map((certificate) => ({ name: `root CA key ${certificate.subject}`, publicPoint: publicPointOf(certificate) })),
    ];
    const strings = heapSnapshotStrings(await takeHeapSnapshot(server.running, snapshots));
    assert.ok(
      strings.some((text) => text.includes(roots[0]?.toString().split('\n')[1] ?? 'no root')),
      'the server snapshot contains the root certificate the CA holds',
    );
    const scanner = new SecretScanner(keys, [
      { name: 'operator token', bytes: Buffer.from(server.operatorToken) },
      { name: 'api join token', bytes: Buffer.from(joinTokens.api ?? '') },
      { name: 'web join token', bytes: Buffer.from(joinTokens.web ?? '') },
      { name: 'unused join token', bytes: Buffer.from(unusedJoinToken) },
      { name: 'revoked read token', bytes: Buffer.from(revokedToken) },
      { name: 'seal KEK', bytes: kek },
    ]);
    scanner.scan(strings, 'server heap snapshot');
    assert.deepEqual(scanner.findings, [], `no secret in the server heap (${scanner.candidates} candidate scalars checked)`);
    assert.deepEqual(scanner.otherPrivateKeys, [], 'no private-key PEM block of any key in the server heap');
  });

  test('output and metrics hold no secret', async () => {
    // A proxy that presents a spent join token fails; its error output is part of the search.
    const spent = await runSealmesh(
      ['proxy', '--service', 'api', '--listen', '127.0.0.1:0', '--app', '127.0.0.1:9', '--addr', server.addr, '--ca-file', server.bundlePath],
      { env: { SEALMESH_JOIN_TOKEN: joinTokens.api ?? '' } },
    );
    assert.equal(spent.code, 1, spent.stderr);
    assert.match(spent.stderr, /SEALMESH_ERR_ACL_TOKEN_USED/);

    const metrics = await server.operator.get<string>('/v1/metrics');
    const apiMetrics = await httpGet(api.adminPort, '/metrics');
    const webMetrics = await httpGet(web.adminPort, '/metrics');
    const webStatus = await httpGet(web.adminPort, '/status');
    assert.match(metrics, /sealmesh_/, 'the server metrics are not empty');
    assert.equal(apiMetrics.status, 200);

    const keys = [await proxyKey('api'), await proxyKey('web')];
    const scanner = new SecretScanner(keys, [
      { name: 'operator token', bytes: Buffer.from(server.operatorToken) },
      { name: 'api join token', bytes: Buffer.from(joinTokens.api ?? '') },
      { name: 'web join token', bytes: Buffer.from(joinTokens.web ?? '') },
      { name: 'unused join token', bytes: Buffer.from(unusedJoinToken) },
      { name: 'revoked read token', bytes: Buffer.from(revokedToken) },
      { name: 'seal KEK', bytes: kek },
    ]);
    const outputs: Array<[string, string]> = [
      ['server stdout', server.running.stdout()],
      ['server stderr', server.running.stderr()],
      ['api proxy stdout', api.running.stdout()],
      ['api proxy stderr', api.running.stderr()],
      ['web proxy stdout', web.running.stdout()],
      ['web proxy stderr', web.running.stderr()],
      ['failed proxy stdout', spent.stdout],
      ['failed proxy stderr', spent.stderr],
      ['server metrics', metrics],
      ['api proxy metrics', apiMetrics.body],
      ['web proxy metrics', webMetrics.body],
      ['web proxy status', webStatus.body],
    ];
    for (const [where, text] of outputs) scanner.scan([text], where);
    assert.match(server.running.stderr(), /request rejected/, 'the server logged the rejected request');
    assert.deepEqual(scanner.findings, [], 'no secret in any output');
    assert.deepEqual(scanner.otherPrivateKeys, [], 'no private-key PEM block in any output');
    assert.ok(existsSync(server.bundlePath));
  });
});
