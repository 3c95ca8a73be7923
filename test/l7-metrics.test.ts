import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { SidecarProxy } from '../src/proxy/index.ts';
import { httpGet, startHttpApp, startProxy, startServer, waitForDecision, waitForEndpoints, type TestServer } from './helpers/mesh.ts';

/** Returns the value of one series from Prometheus text, or undefined when it is absent. */
function series(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('HTTP metrics after known traffic', () => {
  let mesh: TestServer;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  let api: SidecarProxy;
  let web: SidecarProxy;
  let apiText: string;
  let webText: string;

  before(async () => {
    mesh = await startServer();
    app = await startHttpApp('api');
    api = await startProxy(mesh, 'api', app.port, [], { protocol: 'http', admin: { host: '127.0.0.1', port: 0 } });
    web = await startProxy(mesh, 'web', 1, ['api'], { admin: { host: '127.0.0.1', port: 0 } });
    await mesh.operator.post('/v1/intentions', { source: 'web', destination: 'api', action: 'allow', permissions: [{ action: 'deny', http: { pathPrefix: '/private' } }] });
    await waitForEndpoints(web, 'api');
    await waitForDecision(api, 'web', true);
    const port = web.upstreamPort('api')!;
    for (const path of ['/a', '/b', '/c', '/private/x', '/private/y', '/bad%2Fpath']) await httpGet(port, path);
    apiText = (await httpGet(api.adminPort!, '/metrics')).body;
    webText = (await httpGet(web.adminPort!, '/metrics')).body;
  });

  after(async () => {
    await web?.stop();
    await api?.stop();
    await app?.close();
    await mesh?.stop();
  });

  test('process metrics served with admin endpoint', () => {
    // prom-client's default metrics load only with the admin endpoint; both proxies have one.
    for (const text of [apiText, webText]) {
      assert.match(text, /^sealmesh_proxy_process_cpu_user_seconds_total \d/m);
      assert.match(text, /^sealmesh_proxy_process_resident_memory_bytes \d/m);
      assert.match(text, /^sealmesh_proxy_nodejs_eventloop_lag_seconds \d/m);
    }
  });

  test('inbound requests by status class', () => {
    const labels = (status: string): string => `direction="inbound",source="web",destination="api",method="GET",status="${status}"`;
    assert.equal(series(apiText, 'sealmesh_proxy_http_requests_total', labels('2xx')), 3);
    assert.equal(series(apiText, 'sealmesh_proxy_http_requests_total', labels('4xx')), 3);
  });

  test('outbound requests by status class', () => {
    const labels = (status: string): string => `direction="outbound",source="web",destination="api",method="GET",status="${status}"`;
    assert.equal(series(webText, 'sealmesh_proxy_http_requests_total', labels('2xx')), 3);
    assert.equal(series(webText, 'sealmesh_proxy_http_requests_total', labels('4xx')), 3);
  });

  test('denials by reason', () => {
    assert.equal(series(apiText, 'sealmesh_proxy_http_denials_total', 'source="web",destination="api",reason="intention"'), 2);
    assert.equal(series(apiText, 'sealmesh_proxy_http_denials_total', 'source="web",destination="api",reason="invalid_path"'), 1);
  });

  test('latency histogram counts requests', () => {
    assert.equal(series(webText, 'sealmesh_proxy_http_request_duration_seconds_count', 'direction="outbound",destination="api"'), 6);
    assert.equal(series(apiText, 'sealmesh_proxy_http_request_duration_seconds_count', 'direction="inbound",destination="api"'), 6);
    assert.equal(series(webText, 'sealmesh_proxy_http_request_duration_seconds_bucket', 'le="+Inf",direction="outbound",destination="api"'), 6);
  });

  test('one pooled handshake', () => {
    assert.equal(series(webText, 'sealmesh_proxy_tls_handshakes_total', 'direction="outbound",resumed="false"'), 1);
    assert.equal(series(apiText, 'sealmesh_proxy_tls_handshakes_total', 'direction="inbound",resumed="false"'), 1);
  });

  test('no requests left in flight', () => {
    assert.equal(series(webText, 'sealmesh_proxy_http_active_requests', 'direction="outbound"'), 0);
    assert.equal(series(apiText, 'sealmesh_proxy_http_active_requests', 'direction="inbound"'), 0);
  });

  test('SVID expiry is in the future', () => {
    const line = webText.split('\n').find((candidate) => candidate.startsWith('sealmesh_proxy_svid_expiry_seconds '));
    const seconds = Number(line?.split(' ')[1]);
    const expected = (web.svid!.notAfter.getTime() - Date.now()) / 1000;
    assert.ok(seconds > 0, line);
    assert.ok(Math.abs(seconds - expected) < 60, `${seconds} vs ${expected}`);
  });

  test('status shows the control-plane link', async () => {
    const status = JSON.parse((await httpGet(web.adminPort!, '/status')).body) as {
      svidNotAfter: string;
      controlPlane: { url: string; watchConnected: boolean; connectionsOpened: number; nextRenewalAt: string | null; renewalFailures: number };
    };
    const link = status.controlPlane;
    assert.equal(link.url, mesh.url);
    assert.equal(link.watchConnected, true);
    assert.equal(link.connectionsOpened, 1, 'watch, registration and health reports share one connection');
    assert.equal(link.renewalFailures, 0);
    const renewal = Date.parse(link.nextRenewalAt ?? '');
    assert.ok(renewal > Date.now(), `renewal at ${link.nextRenewalAt} is in the future`);
    assert.ok(renewal < Date.parse(status.svidNotAfter), `renewal at ${link.nextRenewalAt} comes before the expiry ${status.svidNotAfter}`);
  });
});
