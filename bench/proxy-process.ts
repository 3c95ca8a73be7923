import { join } from 'node:path';

/**
 * One sealmesh sidecar proxy in a process of its own, started by the data-path benchmark with
 * `child_process.fork`, so that its memory and CPU time can be read from /proc like HAProxy's and
 * nginx's. The configuration arrives as JSON in argv[2]. The proxy is loaded from the compiled
 * JavaScript in `build` when given, as the published package runs it, otherwise from the
 * TypeScript sources. Over IPC it reports
 * `{ type: 'started', inboundPort, upstreamPort }` and takes `{ type: 'renew' }`, which renews the
 * SVID and reports `{ type: 'renewed' }` or `{ type: 'renew-failed', reason }`.
 */

interface ChildConfig {
  service: string;
  joinToken: string;
  serverUrl: string;
  serverCa: string[];
  appPort: number;
  upstream?: string;
  /** Directory of the compiled sources (`tsc -p tsconfig.build.json`). */
  build?: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
const base = config.build ?? join(import.meta.dirname, '..', 'src');
const extension = config.build === undefined ? 'ts' : 'js';
const { SidecarProxy, parseUpstream } = (await import(join(base, 'proxy', `index.${extension}`))) as typeof import('../src/proxy/index.ts');
const { silentLogger } = (await import(join(base, 'log', `index.${extension}`))) as typeof import('../src/log/index.ts');
const proxy = new SidecarProxy({
  service: config.service,
  joinToken: config.joinToken,
  serverUrl: config.serverUrl,
  serverCa: config.serverCa,
  listen: { host: '127.0.0.1', port: 0 },
  app: { host: '127.0.0.1', port: config.appPort },
  upstreams: config.upstream === undefined ? [] : [parseUpstream(`${config.upstream}=127.0.0.1:0`)],
  drainSeconds: 0,
  log: silentLogger(),
});

function send(message: Record<string, unknown>): void {
  process.send?.(message);
}

process.on('message', (message: { type: string }) => {
  if (message.type === 'renew') {
    proxy.renewNow().then(
      () => send({ type: 'renewed' }),
      (error: unknown) => send({ type: 'renew-failed', reason: (error as Error).message }),
    );
  } else if (message.type === 'stop') {
    void proxy.stop().finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));

await proxy.start();
// The first snapshot names the upstream's endpoints and the intentions; traffic before it is rejected.
const deadline = Date.now() + 10_000;
while (proxy.snapshotVersion === undefined || (config.upstream !== undefined && proxy.endpoints(config.upstream).length === 0)) {
  if (Date.now() > deadline) throw new Error(`proxy ${config.service} received no usable snapshot within 10 s`);
  await new Promise((resolve) => setTimeout(resolve, 50));
}
send({ type: 'started', inboundPort: proxy.inboundPort, upstreamPort: config.upstream === undefined ? undefined : proxy.upstreamPort(config.upstream) });
