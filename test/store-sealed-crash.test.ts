import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { initializeSealedFile, openSealedFile, verifySealedFile } from '../src/store/sealed-api.ts';
import { TestSealProvider } from './helpers/test-seal.ts';

const ROUNDS = 3;
/** Acknowledged puts after which a round kills the child: 150 iterations of three puts. */
const KILL_AFTER_LINES = 450;
/** Time after which a round kills the child even if it printed fewer lines. */
const KILL_AFTER_MS = 20_000;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-sealed-crash-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const moduleUrl = (...parts: string[]): string => pathToFileURL(join(import.meta.dirname, '..', ...parts)).href;

/**
 * Returns a child script that opens the store, then loops: three concurrent puts, which share one
 * write, and from the 50th iteration on a data key rotation followed by one re-encryption per
 * iteration, so kills also land mid-rotation. It prints each key after its put resolves.
 */
function childScript(path: string, kek: Buffer, round: number): string {
  return `
    import { openSealedFile } from ${JSON.stringify(moduleUrl('src', 'store', 'sealed-api.ts'))};
    import { TestSealProvider } from ${JSON.stringify(moduleUrl('test', 'helpers', 'test-seal.ts'))};
    const store = await openSealedFile(${JSON.stringify(path)}, new TestSealProvider(Buffer.from(${JSON.stringify(kek.toString('hex'))}, 'hex')));
    const value = new Uint8Array(512).fill(7);
    for (let i = 0; i < 100000; i += 1) {
      await Promise.all([0, 1, 2].map(async (j) => {
        const key = 'round-${round}/' + i + '/' + j;
        await store.put(key, value);
        process.stdout.write(key + '\\n');
      }));
      if (i === 50) await store.rotateDataKey();
      if (i > 50) await store.reencryptBatch(1);
    }
  `;
}

/** Runs one child until it is killed and returns the keys whose put it acknowledged. */
async function runUntilKilled(path: string, kek: Buffer, round: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--input-type=module', '--eval', childScript(path, kek, round)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let errors = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (errors += chunk));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  const killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
    if (output.split('\n').length > KILL_AFTER_LINES) child.kill('SIGKILL');
  });
  const signal = await exited;
  clearTimeout(killTimer);
  assert.equal(signal, 'SIGKILL', `child ended without being killed; stderr: ${errors}`);
  // Only complete lines count, because a line cut short was not fully acknowledged.
  const acknowledged = output.split('\n').slice(0, -1);
  assert.ok(acknowledged.length >= 180, `only ${acknowledged.length} puts acknowledged in round ${round}; stderr: ${errors}`);
  return acknowledged;
}

test('acknowledged sealed writes survive SIGKILL', { timeout: 120_000 }, async (t) => {
  const path = join(tempDir(t), 'store.db');
  const provider = new TestSealProvider();
  const kek = provider.exportKek();
  const initial = await initializeSealedFile(path, provider);
  await initial.close();

  const acknowledged: string[] = [];
  for (let round = 1; round <= ROUNDS; round += 1) {
    acknowledged.push(...(await runUntilKilled(path, kek, round)));

    const report = await verifySealedFile(path, provider);
    assert.ok(report.records >= acknowledged.length, `round ${round}: ${report.records} records for ${acknowledged.length} acknowledged puts`);
    const store = await openSealedFile(path, provider);
    const missing: string[] = [];
    for (const key of acknowledged) {
      if ((await store.get(key)) === undefined) missing.push(key);
    }
    await store.close();
    assert.deepEqual(missing, [], `round ${round}`);
  }
});
