import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { ApiClient } from '../src/client/index.ts';
import type { CaStatus, RootPrune, RootRotation } from '../src/pki/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, eventually, httpGet, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/**
 * One mesh through a whole root rotation, with traffic from web to api the whole time. First api
 * is renewed under the new root while web still runs on the old one. Then both run on the new
 * root, and then the retired root is pruned.
 *
 * The CA's clock is moved forward before the prune, because the shortest SVID lifetime (5 min)
 * plus the horizon step would otherwise make the test wait for over 20 minutes. Certificates the
 * proxies use are all issued before that move, so TLS between them judges them by the real time.
 */

let clockOffsetMs = 0;
let mesh: TestServer;
let api: SidecarProxy;
let web: SidecarProxy;
const closers: Array<() => Promise<void>> = [];

/** Requests sent through web's upstream listener by the traffic loops, and how they ended. */
const traffic = { ok: 0, failed: 0, failures: [] as string[], running: true };

before(async () => {
  mesh = await startServer({ caClock: () => new Date(Date.now() + clockOffsetMs) });
  closers.push(mesh.stop);
  const apiApp = await startHttpApp('api');
  const webApp = await startHttpApp('web');
  closers.push(apiApp.close, webApp.close);
  api = await startProxy(mesh, 'api', apiApp.port, [], { svidTtlSeconds: 300 });
  web = await startProxy(mesh, 'web', webApp.port, ['api'], { svidTtlSeconds: 300 });
  closers.push(() => web.stop(), () => api.stop());
  await allow(mesh, 'web', 'api');
  await waitForDecision(api, 'web', true);
  await waitForEndpoints(web, 'api');
});

after(async () => {
  traffic.running = false;
  for (const close of closers.reverse()) await close();
});

/** Sends requests one after another, each on a new connection and so a new mTLS handshake. */
async function trafficLoop(port: number): Promise<void> {
  while (traffic.running) {
    try {
      const response = await httpGet(port, '/rotation');
      if (response.status === 200 && response.body.includes('"app":"api"')) traffic.ok += 1;
      else {
        traffic.failed += 1;
        traffic.failures.push(`HTTP ${response.status} ${response.body}`);
      }
    } catch (error) {
      traffic.failed += 1;
      traffic.failures.push((error as Error).message);
    }
  }
}

/** Waits until at least `count` more requests have succeeded. */
async function moreTraffic(count: number): Promise<void> {
  const target = traffic.ok + count;
  await eventually(() => traffic.ok >= target, 20_000, `${count} more requests through the mesh`);
}

/** Returns true when the leaf of `chainPem` was signed by the intermediate `intermediatePem`. */
function signedBy(chainPem: string | undefined, intermediatePem: string): boolean {
  const leafPem = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(chainPem ?? '')?.[0];
  return leafPem !== undefined && new X509Certificate(leafPem).verify(new X509Certificate(intermediatePem).publicKey);
}

test('traffic flows through a root rotation and prune', async () => {
  const port = web.upstreamPort('api');
  assert.ok(port !== undefined);
  const loops = [trafficLoop(port), trafficLoop(port)];
  await moreTraffic(20);

  const oldIntermediate = mesh.server.ca.intermediatePem();
  const rotation = await mesh.operator.post<RootRotation>('/v1/operator/ca/rotate-root', {});
  const newIntermediate = mesh.server.ca.intermediatePem();
  assert.notEqual(newIntermediate, oldIntermediate);
  await eventually(() => api.trustBundle.length === 2 && web.trustBundle.length === 2, 10_000, 'both roots at both proxies');
  const bundleFile = readFileSync(mesh.server.trustBundlePath, 'utf8');
  assert.equal(bundleFile.match(/BEGIN CERTIFICATE/g)?.length, 2, 'trust-bundle.pem holds both roots');
  await moreTraffic(20);

  // api moves to the new root while web stays on the old one.
  await api.renewNow();
  assert.equal(signedBy(api.svid?.chainPem, newIntermediate), true, 'api is under the new intermediate');
  assert.equal(signedBy(web.svid?.chainPem, oldIntermediate), true, 'web is still under the old intermediate');
  await moreTraffic(30);

  await web.renewNow();
  assert.equal(signedBy(web.svid?.chainPem, newIntermediate), true, 'web is under the new intermediate');
  await moreTraffic(20);

  // Clients must take the new trust-bundle.pem before the prune; this one does.
  const operator = new ApiClient({ url: mesh.url, ca: mesh.server.ca.bundle(), token: mesh.operatorToken });
  const pending = await operator.get<CaStatus>('/v1/operator/ca');
  assert.equal(pending.rotation?.retiredRootSerial, rotation.retiredRoot.serialNumber);
  assert.equal(pending.roots.length, 2);
  const early = await operator.post<RootPrune>('/v1/operator/ca/prune', {});
  assert.equal(early.pruned, false, 'the SVIDs issued under the old root are still valid');
  assert.equal(early.prunableAfter, rotation.prunableAfter);
  const status = await operator.get<{ ca: { custody: string; roots: number; rotation: CaStatus['rotation'] } }>('/v1/status');
  assert.equal(status.ca.custody, 'sealed');
  assert.equal(status.ca.roots, 2);
  assert.equal(status.ca.rotation?.prunableAfter, rotation.prunableAfter);

  // The server certificate issued after the clock jump is not yet valid to clients on the real
  // clock, so both watch streams must have moved to the renewed SVIDs before it.
  const watching = async (proxy: SidecarProxy): Promise<boolean> => (await proxy.metrics.controlPlaneConnected.get()).values[0]?.value === 1;
  await eventually(async () => (await watching(api)) && (await watching(web)), 10_000, 'both watch streams open with the renewed SVIDs');
  clockOffsetMs = Date.parse(rotation.prunableAfter) - Date.now() + 5_000;
  const pruned = await operator.post<RootPrune>('/v1/operator/ca/prune', {});
  assert.equal(pruned.pruned, true);
  assert.equal(pruned.retiredRootSerial, rotation.retiredRoot.serialNumber);
  await eventually(() => api.trustBundle.length === 1 && web.trustBundle.length === 1, 10_000, 'the retired root gone from both proxies');
  await moreTraffic(20);

  traffic.running = false;
  await Promise.all(loops);
  assert.equal(traffic.failed, 0, `failed requests: ${traffic.failures.slice(0, 5).join('; ')}`);

  assert.equal(readFileSync(mesh.server.trustBundlePath, 'utf8').match(/BEGIN CERTIFICATE/g)?.length, 1, 'trust-bundle.pem holds the new root only');
  const status2 = await mesh.server.ca.status();
  assert.equal(status2.rotation, null);
  const entries = await mesh.server.audit.list();
  const rotate = entries.find((entry) => entry.action === 'ca.rotate');
  const prune = entries.find((entry) => entry.action === 'ca.prune');
  assert.equal(rotate?.subject, rotation.root.serialNumber);
  assert.equal(rotate?.actor.kind, 'token');
  assert.equal(prune?.subject, rotation.retiredRoot.serialNumber);
  assert.equal((await mesh.server.audit.verify()).ok, true);
});
