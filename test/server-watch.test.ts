import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { silentLogger } from '../src/log/index.ts';
import { Catalog, type Instance } from '../src/server/catalog.ts';
import { IntentionStore } from '../src/server/intentions.ts';
import { ManifestService } from '../src/server/manifest-service.ts';
import { WatchHub, type SnapshotMessage } from '../src/server/watch.ts';
import { SqliteStore } from '../src/store/sqlite.ts';

const trustDomain = 'example.sealmesh';
/** Longer than the hub's debounce, so that a push caused by a write has happened. */
const PUSH_WAIT_MS = 150;

const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function instance(service: string, id: string, upstreams: string[] = []): Instance {
  return {
    id,
    namespace: 'default',
    service,
    spiffeId: `spiffe://${trustDomain}/ns/default/svc/${service}`,
    address: '127.0.0.1',
    port: 20000,
    upstreams,
    health: 'passing',
    registeredAt: new Date().toISOString(),
    svidSerial: '01',
  };
}

async function startHub(t: TestContext): Promise<{ hub: WatchHub; catalog: Catalog; intentions: IntentionStore }> {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-watch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = SqliteStore.open(join(dir, 'store.db'));
  t.after(() => store.close());
  const catalog = new Catalog(store);
  const intentions = new IntentionStore(store);
  const hub = new WatchHub({
    store,
    catalog,
    intentions,
    trustDomain,
    bundle: () => [],
    log: silentLogger(),
    leaseSeconds: 60,
    manifests: new ManifestService(store, trustDomain, 3600),
  });
  await hub.start();
  t.after(() => hub.stop());
  return { hub, catalog, intentions };
}

/** Opens a stream for `owner` that records every message it is sent. */
async function openStream(hub: WatchHub, owner: Instance): Promise<SnapshotMessage[]> {
  const received: SnapshotMessage[] = [];
  await hub.open(owner, (message) => received.push(message), () => {});
  return received;
}

test('streams of one service share one message', async (t) => {
  const { hub, catalog, intentions } = await startHub(t);
  const first = instance('web', 'a');
  const second = instance('web', 'b');
  const other = instance('api', 'c');
  for (const entry of [first, second, other]) await catalog.register(entry);
  const streams = [await openStream(hub, first), await openStream(hub, second), await openStream(hub, other)];

  await intentions.upsert({ source: 'probe', destination: '*', action: 'allow' });
  await wait(PUSH_WAIT_MS);

  const [webA, webB, api] = streams.map((received) => received.at(-1));
  assert.equal(streams[0]?.length, 2);
  assert.equal(streams[2]?.length, 2);
  assert.equal(webA?.line, webB?.line, 'both web streams got the same buffer');
  assert.notEqual(webA?.line, api?.line);
  const sent = JSON.parse(webA?.line.toString('utf8') ?? '') as { type: string; snapshot: { version: string; intentions: Array<{ source: string }> } };
  assert.equal(sent.type, 'snapshot');
  assert.equal(sent.snapshot.version, webA?.version);
  assert.deepEqual(sent.snapshot.intentions.map((intention) => intention.source), ['probe']);
});

test('renewal of an instance pushes nothing', async (t) => {
  const { hub, catalog } = await startHub(t);
  const upstream = instance('api', 'u');
  const caller = instance('web', 'w', ['api']);
  await catalog.register(upstream);
  await catalog.register(caller);
  const received = await openStream(hub, caller);
  assert.equal(received.length, 1);

  await catalog.update('default', 'api', 'u', (current) => ({ ...current, svidSerial: '02', svidNotAfter: new Date().toISOString() }));
  await wait(PUSH_WAIT_MS);
  assert.equal(received.length, 1, 'a new serial number changes no snapshot');

  await catalog.update('default', 'api', 'u', (current) => ({ ...current, health: 'critical' }));
  await wait(PUSH_WAIT_MS);
  assert.equal(received.length, 2, 'a failing upstream leaves the snapshot');
  const upstreams = JSON.parse(received[1]?.line.toString('utf8') ?? '').snapshot.upstreams as Record<string, unknown[]>;
  assert.deepEqual(upstreams['api'], []);
});

test('deregistered upstream leaves snapshots', async (t) => {
  const { hub, catalog } = await startHub(t);
  const upstream = instance('api', 'u');
  const caller = instance('web', 'w', ['api']);
  await catalog.register(upstream);
  await catalog.register(caller);
  const received = await openStream(hub, caller);
  const before = JSON.parse(received[0]?.line.toString('utf8') ?? '').snapshot.upstreams as Record<string, Array<{ instanceId: string }>>;
  assert.deepEqual(before['api']?.map((endpoint) => endpoint.instanceId), ['u']);

  await catalog.deregister('default', 'api', 'u');
  await wait(PUSH_WAIT_MS);
  assert.equal(received.length, 2);
  const after = JSON.parse(received[1]?.line.toString('utf8') ?? '').snapshot.upstreams as Record<string, unknown[]>;
  assert.deepEqual(after['api'], []);
});
