import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { KeyFileSealProvider, defaultKeyFilePath } from '../src/seal/index.ts';
import { openSealedFile } from '../src/store/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, httpGet, joinToken, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

// Distinctive names, so that a match in the data directory cannot be a coincidence of random bytes.
const SOURCE = 'ledger-frontend-7k2q';
const DESTINATION = 'payments-ledger-9x4w';

/** Lists every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

let mesh: TestServer;
let dataDir: string;
const secrets = new Map<string, Buffer>();
const closers: Array<() => Promise<void>> = [];

before(async () => {
  mesh = await startServer();
  dataDir = mesh.dir;
  const app = await startHttpApp(DESTINATION);
  closers.push(app.close);
  const destination: SidecarProxy = await startProxy(mesh, DESTINATION, app.port);
  const source: SidecarProxy = await startProxy(mesh, SOURCE, 1, [DESTINATION]);
  closers.push(() => source.stop(), () => destination.stop());
  await allow(mesh, SOURCE, DESTINATION);
  await waitForEndpoints(source, DESTINATION);
  await waitForDecision(destination, SOURCE, true);
  assert.equal((await httpGet(source.upstreamPort(DESTINATION)!, '/')).status, 200);
  await source.renewNow();

  const read = await mesh.operator.post<{ token: string }>('/v1/acl/tokens', { kind: 'read' });
  const unusedJoin = await joinToken(mesh, DESTINATION);
  secrets.set('operator token', Buffer.from(mesh.operatorToken));
  secrets.set('read token', Buffer.from(read.token));
  secrets.set('unused join token', Buffer.from(unusedJoin));
  secrets.set('source SPIFFE ID', Buffer.from(source.spiffeId!));
  secrets.set('destination SPIFFE ID', Buffer.from(destination.spiffeId!));
  secrets.set('source service name', Buffer.from(SOURCE));
  secrets.set('destination service name', Buffer.from(DESTINATION));
  for (const close of closers.reverse()) await close();
  await mesh.stop();

  // The CA keys are read back through the seal, as only a holder of the key file can.
  const provider = await KeyFileSealProvider.open(defaultKeyFilePath(dataDir), { dataDir });
  const store = await openSealedFile(join(dataDir, 'sealmesh.db'), provider);
  try {
    for (const record of await store.list('ca/keys/')) {
      const der = Buffer.from(record.value);
      const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
      const jwk = key.export({ format: 'jwk' });
      secrets.set(`${record.key} PKCS#8 DER`, der);
      secrets.set(`${record.key} PEM body`, Buffer.from(der.toString('base64').slice(0, 64)));
      secrets.set(`${record.key} raw scalar`, Buffer.from(jwk.d ?? '', 'base64url'));
    }
  } finally {
    await store.close();
    await provider.close();
  }
});

after(() => {
  rmSync(dirname(dataDir), { recursive: true, force: true });
});

test('workload created every kind of secret', () => {
  assert.ok([...secrets.keys()].some((name) => name.endsWith('raw scalar')), 'CA keys were read back');
  assert.ok(secrets.size >= 10);
});

test('data directory holds none in clear', () => {
  const files = filesUnder(dataDir);
  assert.ok(files.some((path) => path.endsWith('sealmesh.db')));
  for (const path of files) {
    const bytes = readFileSync(path);
    for (const [name, secret] of secrets) {
      assert.equal(bytes.indexOf(secret), -1, `${name} found in ${path}`);
      assert.equal(bytes.indexOf(Buffer.from(secret.toString('hex'))), -1, `${name} found hex-encoded in ${path}`);
    }
  }
});
