import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { ControlPlane } from '../src/server/index.ts';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { allow, eventually, httpGet, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Sends requests back to back until `stop` resolves; returns the count of successes and failures. */
async function steadyTraffic(port: number, stop: Promise<void>, agent?: Agent): Promise<{ ok: number; failed: number; errors: string[] }> {
  let done = false;
  void stop.then(() => {
    done = true;
  });
  const result = { ok: 0, failed: 0, errors: [] as string[] };
  const deadline = Date.now() + 60_000;
  while (!done && Date.now() < deadline) {
    try {
      const response = await httpGet(port, '/traffic', agent);
      if (response.status === 200) result.ok += 1;
      else {
        result.failed += 1;
        result.errors.push(`status ${response.status}`);
      }
    } catch (error) {
      result.failed += 1;
      result.errors.push((error as Error).message);
    }
  }
  return result;
}

describe('proxy resilience', () => {
  let mesh: TestServer;
  let web: SidecarProxy;
  let api: SidecarProxy;
  let closeApp: () => Promise<void>;

  before(async () => {
    mesh = await startServer();
    const app = await startHttpApp('api');
    closeApp = app.close;
    api = await startProxy(mesh, 'api', app.port);
    web = await startProxy(mesh, 'web', 1, ['api']);
    await allow(mesh, 'web', 'api');
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await closeApp?.();
    await mesh?.stop();
  });

  test('SVID renewal under traffic fails no request', async () => {
    const before = { web: web.svid?.serial, api: api.svid?.serial };
    let finish!: () => void;
    const stop = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    const fresh = steadyTraffic(web.upstreamPort('api')!, stop);
    const reused = steadyTraffic(web.upstreamPort('api')!, stop, keepAlive);
    for (let round = 0; round < 3; round += 1) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      await Promise.all([web.renewNow(), api.renewNow()]);
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    finish();
    const results = await Promise.all([fresh, reused]);
    keepAlive.destroy();
    for (const result of results) {
      assert.equal(result.failed, 0, `failed requests: ${result.errors.slice(0, 3).join(', ')}`);
      assert.ok(result.ok > 0);
    }
    assert.notEqual(web.svid?.serial, before.web);
    assert.notEqual(api.svid?.serial, before.api);
  });

  test('renewal opens one control-plane connection', async () => {
    const connections = async (): Promise<number> => {
      const text = await mesh.operator.get<string>('/v1/metrics');
      return Number(/^sealmesh_server_tls_connections_total (\d+)/m.exec(text)?.[1] ?? NaN);
    };
    const watching = async (proxy: SidecarProxy): Promise<boolean> => (await proxy.metrics.controlPlaneConnected.get()).values[0]?.value === 1;
    await eventually(async () => (await watching(web)) && (await watching(api)), 10_000, 'both proxies watching the control plane');
    // Each metrics read opens one connection of the operator client, and the value it reads counts
    // that connection. `others` is what the rest of the mesh opened since `before`.
    let before = await connections();
    let reads = 0;
    const others = async (): Promise<number> => {
      reads += 1;
      return (await connections()) - before - reads;
    };
    // Moves from the renewals of earlier tests finish first, so that only this renewal is counted.
    await eventually(
      async () => {
        await new Promise((resolve) => setTimeout(resolve, 300));
        if ((await others()) === 0) return true;
        before = await connections();
        reads = 0;
        return false;
      },
      10_000,
      'no other control-plane connection opening',
    );
    before = await connections();
    reads = 0;
    const serial = web.svid?.serial;
    await web.renewNow();
    assert.notEqual(web.svid?.serial, serial);
    await eventually(async () => (await others()) >= 1, 10_000, 'web moving to a connection with the renewed SVID');
    await eventually(() => watching(web), 10_000, 'web watching again with the renewed SVID');
    assert.equal(await others(), 1, 'the renewal used the open connection; only the move to the new SVID made one');
  });

  test('renewed SVID keeps its identity', () => {
    assert.equal(web.spiffeId, `spiffe://${mesh.server.trustDomain}/ns/default/svc/web`);
  });

  test('traffic continues while the server is down', async () => {
    const port = mesh.server.address.port;
    const dataDir = mesh.dir;
    await mesh.stop();
    for (let i = 0; i < 20; i += 1) {
      const response = await httpGet(web.upstreamPort('api')!, `/down/${i}`);
      assert.equal(response.status, 200);
    }
    await assert.rejects(web.renewNow(), (error: unknown) => (error as { code?: string }).code === 'SEALMESH_ERR_SERVER_UNREACHABLE');
    assert.ok(web.svid !== undefined, 'the proxy keeps its current SVID');

    // The same cluster comes back on the same address; proxies reconnect and receive changes again.
    const server = new ControlPlane({ dataDir, host: '127.0.0.1', port, leaseSeconds: 5 });
    await server.start();
    mesh = { ...mesh, server, stop: () => server.stop() };
    for (const proxy of [web, api]) {
      await eventually(
        async () => (await proxy.metrics.registry.getSingleMetricAsString('sealmesh_proxy_control_plane_connected')).trim().endsWith(' 1'),
        20_000,
        `${proxy.identity.service} watch stream reconnected`,
      );
    }
    await allow(mesh, 'web', 'api', 'deny');
    await waitForDecision(api, 'web', false);
    await assert.rejects(httpGet(web.upstreamPort('api')!, '/after'));
  });
});
