import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isSealmeshError } from '../src/errors/index.ts';
import {
  applyPerimeter,
  buildPerimeterRuleset,
  checkNetnsName,
  findPerimeterTools,
  loadScript,
  parsePerimeterTable,
  readPerimeter,
  type PerimeterSpec,
  type PerimeterStatus,
  type PerimeterTools,
} from '../src/perimeter/index.ts';
import { runCli } from './helpers/cli.ts';
import { tempDir } from './helpers/mesh.ts';
import { CONNECT_SCRIPT, createTestUser, removeTestUser, runChild, type TestUser } from './helpers/perimeter.ts';

const SPEC: PerimeterSpec = { appPort: 8080, proxyUid: 998, appUid: 997, upstreamPorts: [9191, 9192], proxyPorts: [21000] };

/** `nft -j list table inet sealmesh` output of nftables 1.0.6 for SPEC, with one rejected connection counted. */
const LISTED = JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { table: { family: 'inet', name: 'sealmesh', handle: 3 } },
    { chain: { family: 'inet', table: 'sealmesh', name: 'output', handle: 1, type: 'filter', hook: 'output', prio: 0, policy: 'accept' } },
    { chain: { family: 'inet', table: 'sealmesh', name: 'input', handle: 2, type: 'filter', hook: 'input', prio: 0, policy: 'accept' } },
    {
      rule: {
        family: 'inet',
        table: 'sealmesh',
        chain: 'output',
        handle: 3,
        comment: 'app port: only the proxy user connects',
        expr: [
          { match: { op: '==', left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, ['fin', 'syn', 'rst', 'ack']] }, right: 'syn' } },
          { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 8080 } },
          { match: { op: '!=', left: { meta: { key: 'skuid' } }, right: 998 } },
          { counter: { packets: 1, bytes: 60 } },
          { reject: { type: 'tcp reset' } },
        ],
      },
    },
    {
      rule: {
        family: 'inet',
        table: 'sealmesh',
        chain: 'output',
        handle: 5,
        expr: [
          { match: { op: '==', left: { meta: { key: 'skuid' } }, right: 997 } },
          { match: { op: '==', left: { meta: { key: 'oifname' } }, right: 'lo' } },
          { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: { set: [9191, 9192, 21000] } } },
          { counter: { packets: 0, bytes: 0 } },
          { accept: null },
        ],
      },
    },
    {
      rule: {
        family: 'inet',
        table: 'sealmesh',
        chain: 'output',
        handle: 6,
        expr: [{ match: { op: '==', left: { meta: { key: 'skuid' } }, right: 997 } }, { counter: { packets: 0, bytes: 0 } }, { reject: { type: 'tcp reset' } }],
      },
    },
    {
      rule: {
        family: 'inet',
        table: 'sealmesh',
        chain: 'input',
        handle: 7,
        expr: [
          { match: { op: '!=', left: { meta: { key: 'iifname' } }, right: 'lo' } },
          { match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 8080 } },
          { counter: { packets: 0, bytes: 0 } },
          { drop: null },
        ],
      },
    },
  ],
});

describe('nftables ruleset', () => {
  test('app port limited to the proxy user', () => {
    const text = buildPerimeterRuleset(SPEC);
    assert.ok(text.includes('tcp flags & (fin | syn | rst | ack) == syn tcp dport 8080 meta skuid != 998 counter reject with tcp reset'), text);
  });

  test('app user limited to mesh ports on loopback', () => {
    const text = buildPerimeterRuleset(SPEC);
    assert.ok(text.includes('meta skuid 997 oifname "lo" tcp dport { 9191, 9192, 21000 } counter accept'), text);
    assert.ok(text.includes('tcp flags & (fin | syn | rst | ack) == syn meta skuid 997 counter reject with tcp reset'), text);
    assert.ok(text.indexOf('counter accept') < text.indexOf('skuid 997 counter reject'), 'the accept comes before the catch-all reject');
  });

  test('app port closed to other interfaces', () => {
    assert.ok(buildPerimeterRuleset(SPEC).includes('iifname != "lo" tcp dport 8080 counter drop'));
  });

  test('table replaced in one transaction', () => {
    const lines = buildPerimeterRuleset(SPEC).split('\n');
    assert.deepEqual(lines.slice(1, 4), ['table inet sealmesh', 'delete table inet sealmesh', 'table inet sealmesh {']);
    assert.ok(lines.includes('\t\ttype filter hook output priority filter; policy accept;'));
    assert.ok(lines.includes('\t\ttype filter hook input priority filter; policy accept;'));
  });

  test('no mesh ports leaves no accept rule', () => {
    const text = buildPerimeterRuleset({ ...SPEC, upstreamPorts: [], proxyPorts: [] });
    assert.equal(text.includes('accept comment'), false);
    assert.ok(text.includes('meta skuid 997 counter reject with tcp reset'));
  });

  test('same user for proxy and app rejected', () => {
    assert.throws(() => buildPerimeterRuleset({ ...SPEC, appUid: 998 }), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'), String(error));
      assert.ok(error.message.includes('uid 998'), error.message);
      return true;
    });
  });

  test('app port among mesh ports rejected', () => {
    assert.throws(() => buildPerimeterRuleset({ ...SPEC, proxyPorts: [8080] }), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'));
  });

  test('port out of range rejected', () => {
    assert.throws(() => buildPerimeterRuleset({ ...SPEC, appPort: 70000 }), /--app-port 70000 is invalid/);
    assert.throws(() => buildPerimeterRuleset({ ...SPEC, upstreamPorts: [0] }), /--upstream-port 0 is invalid/);
  });

  test('listed table parsed', () => {
    const status = parsePerimeterTable(LISTED);
    assert.equal(status.installed, true);
    assert.equal(status.appPort, 8080);
    assert.equal(status.proxyUid, 998);
    assert.equal(status.appUid, 997);
    assert.deepEqual(status.allowedPorts, [9191, 9192, 21000]);
    assert.equal(status.blocksOtherInterfaces, true);
  });

  test('listed rules written back in nft syntax', () => {
    const status = parsePerimeterTable(LISTED);
    assert.deepEqual(
      status.rules.map((rule) => [rule.chain, rule.text, rule.packets]),
      [
        ['output', 'tcp flags & (fin | syn | rst | ack) == syn tcp dport 8080 meta skuid != 998 reject with tcp reset', 1],
        ['output', 'meta skuid 997 oifname "lo" tcp dport { 9191, 9192, 21000 } accept', 0],
        ['output', 'meta skuid 997 reject with tcp reset', 0],
        ['input', 'iifname != "lo" tcp dport 8080 drop', 0],
      ],
    );
    assert.equal(status.rules[0]?.comment, 'app port: only the proxy user connects');
  });

  test('empty listing means not installed', () => {
    assert.deepEqual(parsePerimeterTable('{"nftables":[{"metainfo":{}}]}'), { installed: false, blocksOtherInterfaces: false, rules: [] });
  });

  test('namespace names checked', () => {
    checkNetnsName('sealmesh-t-1a2b');
    for (const name of ['', '../etc', '-n', 'a/b', 'x'.repeat(65)]) {
      assert.throws(() => checkNetnsName(name), (error: unknown) => isSealmeshError(error, 'SEALMESH_ERR_CONFIG_INVALID'), name);
    }
  });

  test('missing ip reported with its package', async () => {
    const empty = tempDir('sealmesh-tools-');
    try {
      await assert.rejects(findPerimeterTools([empty.path]), (error: unknown) => {
        assert.ok(isSealmeshError(error, 'SEALMESH_ERR_PERIMETER_TOOL_MISSING'), String(error));
        assert.ok(error.message.includes('apt-get install iproute2'), error.message);
        return true;
      });
    } finally {
      empty.remove();
    }
  });

  test('missing nft reported with its package', async () => {
    const dir = tempDir('sealmesh-tools-');
    try {
      writeFileSync(join(dir.path, 'ip'), '#!/bin/sh\nexit 1\n');
      chmodSync(join(dir.path, 'ip'), 0o755);
      await assert.rejects(findPerimeterTools([dir.path]), (error: unknown) => {
        assert.ok(isSealmeshError(error, 'SEALMESH_ERR_PERIMETER_TOOL_MISSING'), String(error));
        assert.ok(error.message.includes('apt-get install nftables'), error.message);
        return true;
      });
    } finally {
      dir.remove();
    }
  });

  test('missing namespace reported', async () => {
    const runDir = tempDir('sealmesh-netns-');
    try {
      await assert.rejects(
        applyPerimeter('sealmesh-absent', SPEC, { tools: { ip: '/bin/false', nft: '/bin/false' }, runDir: runDir.path }),
        (error: unknown) => {
          assert.ok(isSealmeshError(error, 'SEALMESH_ERR_NETNS_NOT_FOUND'), String(error));
          assert.ok(error.message.includes('ip netns add sealmesh-absent'), error.message);
          return true;
        },
      );
    } finally {
      runDir.remove();
    }
  });
});

let tools: PerimeterTools | undefined;
let toolsMissing: string | undefined;
try {
  tools = await findPerimeterTools();
} catch (error) {
  toolsMissing = (error as Error).message;
}
// In CI the namespace tests must run, so a missing nft fails them there instead of skipping.
const skip = toolsMissing !== undefined && process.env.CI === undefined ? `nft or ip is not installed (apt-get install nftables iproute2): ${toolsMissing}` : false;

/** Ports inside the test namespace; the namespace is new, so none of them is taken. */
const PORTS = { app: 8080, upstream: 9191, proxy: 21000, other: 7000 };

/** Listens on every port in PORTS on 127.0.0.1 and prints `ready`; accepted connections are closed at once. */
const LISTEN_SCRIPT = `
const net = require('node:net');
const ports = JSON.parse(process.argv[1]);
let pending = ports.length;
for (const port of ports) {
  net.createServer((socket) => socket.destroy()).listen(port, '127.0.0.1', () => {
    pending -= 1;
    if (pending === 0) console.log('ready');
  });
}
`;

describe('nftables perimeter in a network namespace', { skip }, () => {
  const netns = `sealmesh-t-${randomBytes(4).toString('hex')}`;
  let netnsCreated = false;
  let proxyUser: TestUser;
  let appUser: TestUser;
  let otherUser: TestUser;
  let listener: ChildProcess | undefined;

  before(async () => {
    await runChild('ip', ['netns', 'add', netns]);
    netnsCreated = true;
    const up = await runChild('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    assert.equal(up.code, 0, up.stderr);
    proxyUser = createTestUser();
    appUser = createTestUser();
    otherUser = createTestUser();

    listener = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', LISTEN_SCRIPT, JSON.stringify(Object.values(PORTS))], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      listener?.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
        if (chunk.includes('ready')) resolve();
      });
      listener?.once('exit', (code) => reject(new Error(`the listener in ${netns} exited with ${String(code)}`)));
    });
  });

  after(async () => {
    if (listener !== undefined && listener.exitCode === null) {
      const exited = new Promise((resolve) => listener?.once('exit', resolve));
      listener.kill('SIGTERM');
      await exited;
    }
    if (netnsCreated) await runChild('ip', ['netns', 'del', netns]);
    removeTestUser(proxyUser);
    removeTestUser(appUser);
    removeTestUser(otherUser);
  });

  /** Connects to 127.0.0.1:port inside the namespace as `user`; returns `connected` or the error code. */
  async function connectAs(user: TestUser, port: number): Promise<string> {
    const result = await runChild('ip', [
      'netns',
      'exec',
      netns,
      'setpriv',
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      '--clear-groups',
      process.execPath,
      '-e',
      CONNECT_SCRIPT,
      '127.0.0.1',
      String(port),
    ]);
    return result.stdout || `exit ${String(result.code)}: ${result.stderr}`;
  }

  async function check(): Promise<PerimeterStatus & { netns: string }> {
    const result = await runCli(['perimeter', 'check', '--netns', netns, '--json']);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as PerimeterStatus & { netns: string };
  }

  test('other user reaches the app before apply', async () => {
    assert.equal(await connectAs(otherUser, PORTS.app), 'connected');
    assert.equal(await connectAs(appUser, PORTS.other), 'connected');
  });

  test('check reports nothing before apply', async () => {
    const status = await check();
    assert.equal(status.installed, false);
    const text = await runCli(['perimeter', 'check', '--netns', netns]);
    assert.match(text.stdout, /No sealmesh perimeter in network namespace/);
  });

  test('apply installs the table', async () => {
    const result = await runCli([
      'perimeter', 'apply',
      '--netns', netns,
      '--app-port', String(PORTS.app),
      '--proxy-user', proxyUser.name,
      '--app-user', String(appUser.uid),
      '--upstream-port', String(PORTS.upstream),
      '--proxy-port', String(PORTS.proxy),
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /Applied the perimeter in network namespace/);
  });

  test('other user refused at the app port', async () => {
    assert.equal(await connectAs(otherUser, PORTS.app), 'ECONNREFUSED');
  });

  test('app user refused at its own app port', async () => {
    assert.equal(await connectAs(appUser, PORTS.app), 'ECONNREFUSED');
  });

  test('proxy user accepted at the app port', async () => {
    assert.equal(await connectAs(proxyUser, PORTS.app), 'connected');
  });

  test('app user refused at a non-mesh port', async () => {
    assert.equal(await connectAs(appUser, PORTS.other), 'ECONNREFUSED');
  });

  test('app user accepted at an upstream port', async () => {
    assert.equal(await connectAs(appUser, PORTS.upstream), 'connected');
  });

  test('app user accepted at a proxy port', async () => {
    assert.equal(await connectAs(appUser, PORTS.proxy), 'connected');
  });

  test('other user unaffected elsewhere', async () => {
    assert.equal(await connectAs(otherUser, PORTS.other), 'connected');
  });

  test('check reports the table in force', async () => {
    const status = await check();
    assert.equal(status.installed, true);
    assert.equal(status.appPort, PORTS.app);
    assert.equal(status.proxyUid, proxyUser.uid);
    assert.equal(status.appUid, appUser.uid);
    assert.deepEqual(status.allowedPorts, [PORTS.upstream, PORTS.proxy]);
    assert.equal(status.blocksOtherInterfaces, true);
    assert.ok((status.rules[0]?.packets ?? 0) >= 2, 'the app-port rule counted the refused connections');
  });

  test('check prints a summary', async () => {
    const result = await runCli(['perimeter', 'check', '--netns', netns]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`app port: +${PORTS.app}, connections only from uid ${proxyUser.uid}, nothing from other interfaces`));
    assert.match(result.stdout, new RegExp(`app user: +uid ${appUser.uid}, outbound TCP only to loopback ports ${PORTS.upstream}, ${PORTS.proxy}`));
  });

  test('apply again replaces the table', async () => {
    await applyPerimeter(netns, { appPort: PORTS.app, proxyUid: proxyUser.uid, appUid: appUser.uid, upstreamPorts: [PORTS.upstream, PORTS.other], proxyPorts: [] });
    const status = await readPerimeter(netns);
    assert.deepEqual(status.allowedPorts, [PORTS.other, PORTS.upstream]);
    assert.equal(status.rules.length, 4);
    assert.equal(await connectAs(appUser, PORTS.other), 'connected');
    assert.equal(await connectAs(appUser, PORTS.proxy), 'ECONNREFUSED');
  });

  test('invalid script reported as apply failure', async () => {
    await assert.rejects(loadScript(tools!, netns, 'table inet sealmesh { chain nonsense { this is not nft } }\n'), (error: unknown) => {
      assert.ok(isSealmeshError(error, 'SEALMESH_ERR_NFT_APPLY_FAILED'), String(error));
      assert.match(error.message, /syntax error/);
      return true;
    });
    assert.equal((await readPerimeter(netns)).installed, true, 'the failed load left the table in place');
  });

  test('remove deletes the table', async () => {
    const result = await runCli(['perimeter', 'remove', '--netns', netns]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal((await check()).installed, false);
    assert.equal(await connectAs(otherUser, PORTS.app), 'connected');
  });
});
