import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../src/client/index.ts';
import { readCaFile } from '../src/cli/output.ts';
import { freePort, runCli, spawnCli, waitForExit, type CliProcess } from './helpers/cli.ts';
import { eventually, tempDir } from './helpers/mesh.ts';

const base = tempDir('sealmesh-crash-');
const dataDir = join(base.path, 'data');
const running: CliProcess[] = [];

after(() => {
  for (const server of running) if (server.child.exitCode === null) server.child.kill('SIGKILL');
  base.remove();
});

async function startServer(port: number): Promise<{ server: CliProcess; client: ApiClient }> {
  const server = spawnCli(['server', '--data-dir', dataDir, '--addr', `127.0.0.1:${port}`, '--log-level', 'warn']);
  running.push(server);
  const bundle = join(dataDir, 'trust-bundle.pem');
  await eventually(() => existsSync(bundle), 20_000, 'trust bundle');
  const client = new ApiClient({ url: `https://127.0.0.1:${port}`, ca: readCaFile(bundle), timeoutMs: 5_000 });
  await eventually(async () => (await client.get('/v1/status').then(() => true, () => false)), 20_000, 'server API');
  return { server, client };
}

test('acknowledged writes survive SIGKILL of the server', async () => {
  const port = await freePort();
  const first = await startServer(port);
  const { token } = await first.client.post<{ token: string }>('/v1/operator/init', {});
  const operator = first.client.with({ token });

  // Four writers keep requests in flight, so the kill lands in the middle of some of them.
  const acknowledged: string[] = [];
  let stop = false;
  const writers = [0, 1, 2, 3].map(async (writer) => {
    for (let index = 0; index < 500 && !stop; index += 1) {
      const source = `crash-${writer}-${index}`;
      try {
        await operator.post('/v1/intentions', { source, destination: 'target', action: 'allow' });
        acknowledged.push(source);
      } catch {
        return;
      }
    }
  });
  await eventually(() => acknowledged.length >= 60, 30_000, '60 acknowledged writes');
  first.server.child.kill('SIGKILL');
  stop = true;
  await Promise.all(writers);
  await waitForExit(first.server.child, 10_000);

  const second = await startServer(port);
  const { intentions } = await second.client.with({ token }).get<{ intentions: Array<{ source: string }> }>('/v1/intentions');
  const present = new Set(intentions.map((intention) => intention.source));
  const lost = acknowledged.filter((source) => !present.has(source));
  assert.deepEqual(lost, [], 'every acknowledged write is present after the restart');
  second.server.child.kill('SIGTERM');
  const exit = await waitForExit(second.server.child, 15_000);
  assert.equal(exit.code, 0);

  const verify = await runCli(['operator', 'verify-data', '--data-dir', dataDir, '--json'], { timeoutMs: 30_000 });
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(JSON.parse(verify.stdout).ok, true);
});
