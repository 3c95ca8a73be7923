import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkAppExposure, checkTcpAppExposure, classifyAddress, formatBinding, isLoopbackHost, parseSocketTable, readListeningSockets } from '../src/perimeter/index.ts';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';

/** `/proc/net/tcp` text: 127.0.0.1:8080 and 0.0.0.0:9090 listening, 10.0.0.10:7070 listening, one established connection. */
const TCP4 = [
  HEADER,
  '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 11111 1 0000000000000000 100 0 0 10 0',
  '   1: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 22222 1 0000000000000000 100 0 0 10 0',
  '   2: 0A00000A:1B9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 33333 1 0000000000000000 100 0 0 10 0',
  '   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   998        0 44444 1 0000000000000000 20 4 30 10 -1',
  '',
].join('\n');

/** `/proc/net/tcp6` text: [::1]:8080, [::]:9090 and [::ffff:127.0.0.1]:7070 listening. */
const TCP6 = [
  HEADER,
  '   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 55555 1 0000000000000000 100 0 0 10 0',
  '   1: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 66666 1 0000000000000000 100 0 0 10 0',
  '   2: 0000000000000000FFFF00000100007F:1B9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77777 1 0000000000000000 100 0 0 10 0',
].join('\n');

describe('socket table parsing', () => {
  test('IPv4 listeners decoded', () => {
    const sockets = parseSocketTable(TCP4, 4);
    assert.deepEqual(
      sockets.map(({ address, port, scope, uid, inode }) => ({ address, port, scope, uid, inode })),
      [
        { address: '127.0.0.1', port: 8080, scope: 'loopback', uid: 998, inode: 11111 },
        { address: '0.0.0.0', port: 9090, scope: 'wildcard', uid: 1000, inode: 22222 },
        { address: '10.0.0.10', port: 7070, scope: 'external', uid: 0, inode: 33333 },
      ],
    );
  });

  test('established connections skipped', () => {
    assert.equal(parseSocketTable(TCP4, 4).filter((socket) => socket.inode === 44444).length, 0);
  });

  test('IPv6 listeners decoded', () => {
    const sockets = parseSocketTable(TCP6, 6);
    assert.deepEqual(
      sockets.map(({ port, scope }) => ({ port, scope })),
      [
        { port: 8080, scope: 'loopback' },
        { port: 9090, scope: 'wildcard' },
        { port: 7070, scope: 'loopback' },
      ],
    );
    assert.deepEqual(sockets.map(formatBinding), ['[::1]:8080', '[::]:9090', '[::ffff:127.0.0.1]:7070']);
  });

  test('large tables read in chunks', async () => {
    // 20,000 established rows put the listeners at many chunk boundaries of the 64 KiB reads.
    const established = TCP4.split('\n')[4] ?? '';
    const rows = [HEADER];
    for (let index = 0; index < 20_000; index += 1) {
      rows.push(established);
      if (index % 5_000 === 4_999) rows.push(...TCP4.split('\n').slice(1, 4));
    }
    const directory = mkdtempSync(join(tmpdir(), 'sealmesh-socket-table-'));
    try {
      const tcp = rows.join('\n');
      writeFileSync(join(directory, 'tcp'), tcp);
      writeFileSync(join(directory, 'tcp6'), TCP6);
      const sockets = await readListeningSockets(directory);
      assert.equal(sockets.length, 15);
      assert.deepEqual(sockets, [...parseSocketTable(tcp, 4), ...parseSocketTable(TCP6, 6)]);
      assert.equal(sockets.filter((socket) => socket.inode === 44444).length, 0);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  test('malformed lines ignored', () => {
    assert.deepEqual(parseSocketTable(`${HEADER}\n   0: nonsense\n   1: 0100007F:1F90 00000000:0000 0A\n`, 4), []);
    assert.deepEqual(parseSocketTable(TCP6, 4), [], 'IPv6 addresses in an IPv4 table are skipped');
  });

  test('addresses classified', () => {
    assert.equal(classifyAddress(4, '127.0.0.53'), 'loopback');
    assert.equal(classifyAddress(4, '0.0.0.0'), 'wildcard');
    assert.equal(classifyAddress(4, '192.168.1.2'), 'external');
    assert.equal(classifyAddress(6, '0:0:0:0:0:0:0:1'), 'loopback');
    assert.equal(classifyAddress(6, '0:0:0:0:0:0:0:0'), 'wildcard');
    assert.equal(classifyAddress(6, '0:0:0:0:0:ffff:a00:1'), 'external');
    assert.equal(classifyAddress(6, 'fe80:0:0:0:0:0:0:1'), 'external');
  });

  test('configured hosts classified', () => {
    assert.equal(isLoopbackHost('127.0.0.1'), true);
    assert.equal(isLoopbackHost('::1'), true);
    assert.equal(isLoopbackHost('::ffff:127.0.0.1'), true);
    assert.equal(isLoopbackHost('localhost'), true);
    assert.equal(isLoopbackHost('10.1.2.3'), false);
    assert.equal(isLoopbackHost('app.internal'), false);
  });
});

describe('app exposure from the real socket tables', () => {
  const servers: Server[] = [];

  after(async () => {
    for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  async function listenOn(host: string): Promise<number> {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port: 0, ipv6Only: host.includes(':') }, () => resolve());
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no TCP port');
    return address.port;
  }

  test('0.0.0.0 listener exposed', async () => {
    const port = await listenOn('0.0.0.0');
    const exposure = await checkAppExposure(port);
    assert.equal(exposure.exposed, true);
    assert.deepEqual(exposure.listeners.map((socket) => socket.scope), ['wildcard']);
    assert.deepEqual((await checkTcpAppExposure({ host: '127.0.0.1', port })).bindings, [`0.0.0.0:${port}`]);
  });

  test('127.0.0.1 listener not exposed', async () => {
    const port = await listenOn('127.0.0.1');
    const exposure = await checkAppExposure(port);
    assert.equal(exposure.exposed, false);
    assert.deepEqual(exposure.listeners.map((socket) => socket.scope), ['loopback']);
    assert.deepEqual(await checkTcpAppExposure({ host: '127.0.0.1', port }), { exposed: false, bindings: [] });
  });

  test(':: listener exposed', async () => {
    const port = await listenOn('::');
    const exposure = await checkAppExposure(port);
    assert.equal(exposure.exposed, true);
    assert.deepEqual(exposure.listeners.map((socket) => [socket.family, socket.scope]), [[6, 'wildcard']]);
    assert.deepEqual((await checkTcpAppExposure({ host: '::1', port })).bindings, [`[::]:${port}`]);
  });

  test('::1 listener not exposed', async () => {
    const port = await listenOn('::1');
    const exposure = await checkAppExposure(port);
    assert.equal(exposure.exposed, false);
    assert.deepEqual(exposure.listeners.map((socket) => [socket.family, socket.scope]), [[6, 'loopback']]);
  });

  test('non-loopback app address counts as exposed', async () => {
    const port = await listenOn('127.0.0.1');
    assert.deepEqual(await checkTcpAppExposure({ host: '10.1.2.3', port }), { exposed: true, bindings: [`10.1.2.3:${port}`] });
  });

  test('port without listener not exposed', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    assert.deepEqual(await checkAppExposure(port), { port, listeners: [], exposed: false });
  });
});
