import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../src/client/index.ts';
import { silentLogger } from '../src/log/index.ts';
import { ControlPlane } from '../src/server/index.ts';

/**
 * The control plane of the control-plane benchmark, in a process of its own so that its memory can
 * be read from /proc. It reports `{ type: 'started', url, ca, operatorToken }` over IPC and stops
 * when the IPC channel closes.
 */
const dir = mkdtempSync(join(tmpdir(), 'sealmesh-bench-cp-'));
const server = new ControlPlane({ dataDir: join(dir, 'data'), host: '127.0.0.1', port: 0, leaseSeconds: 120, log: silentLogger() });
await server.start();
const ca = server.ca.bundle();
const { token } = await new ApiClient({ url: server.url, ca }).post<{ token: string }>('/v1/operator/init', {});
process.send?.({ type: 'started', url: server.url, ca, operatorToken: token });
process.on('disconnect', () => {
  void server.stop().finally(() => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
});
