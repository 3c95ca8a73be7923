import { open } from 'node:fs/promises';

/** Reachability of a listening socket's bound address from other hosts. */
export type BindScope = 'loopback' | 'wildcard' | 'external';

export interface ListeningSocket {
  family: 4 | 6;
  address: string;
  port: number;
  scope: BindScope;
  uid: number;
  inode: number;
}

/**
 * A line of a listening socket (state `0A`, TCP_LISTEN) in `/proc/net/tcp` or `/proc/net/tcp6`:
 * slot, local address and port, remote address and port, state, then tx/rx queue, timer and
 * retransmits, uid, timeout and inode. Lines of other states fail at the state field, so a table
 * with tens of thousands of TIME_WAIT entries costs one regular-expression scan rather than a
 * split of every line.
 */
const LISTEN_LINE = /^ *\d+: ([0-9A-F]+):([0-9A-F]+) [0-9A-F]+:[0-9A-F]+ 0A +\S+ +\S+ +\S+ +(\d+) +\S+ +(\d+)/gm;

/**
 * Decodes an IPv4 address as the kernel prints it in `/proc/net/tcp`: eight hex digits of the
 * 32-bit address in host byte order, which is little-endian on every architecture Node.js
 * supports on Linux except s390x and big-endian PowerPC.
 */
function decodeIpv4(hex: string): string {
  const value = Number.parseInt(hex, 16);
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff].join('.');
}

/** Decodes an IPv6 address from `/proc/net/tcp6`: four 32-bit words, each in host byte order. */
function decodeIpv6(hex: string): string {
  const bytes: number[] = [];
  for (let word = 0; word < 4; word += 1) {
    const value = Number.parseInt(hex.slice(word * 8, word * 8 + 8), 16);
    bytes.push(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff);
  }
  const groups: string[] = [];
  for (let index = 0; index < 16; index += 2) groups.push((((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0)).toString(16));
  return groups.join(':');
}

/** Classifies a decoded address: loopback, the wildcard address, or an address other hosts can reach. */
export function classifyAddress(family: 4 | 6, address: string): BindScope {
  if (family === 4) {
    if (address === '0.0.0.0') return 'wildcard';
    return address.startsWith('127.') ? 'loopback' : 'external';
  }
  const groups = address.split(':').map((group) => Number.parseInt(group, 16));
  if (groups.every((group) => group === 0)) return 'wildcard';
  if (groups.slice(0, 7).every((group) => group === 0) && groups[7] === 1) return 'loopback';
  // An IPv4-mapped address (::ffff:a.b.c.d) is loopback when the IPv4 part is in 127.0.0.0/8.
  const mapped = groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff;
  if (mapped) return ((groups[6] ?? 0) >>> 8) === 127 ? 'loopback' : 'external';
  return 'external';
}

/** Parses the text of `/proc/net/tcp` or `/proc/net/tcp6` and returns its listening sockets. */
export function parseSocketTable(text: string, family: 4 | 6): ListeningSocket[] {
  const sockets: ListeningSocket[] = [];
  collectListening(text, family, sockets);
  return sockets;
}

/** Appends the listening sockets of the whole lines in `text` to `sockets`. */
function collectListening(text: string, family: 4 | 6, sockets: ListeningSocket[]): void {
  for (const match of text.matchAll(LISTEN_LINE)) {
    const [, addressHex = '', portHex = '', uid, inode] = match;
    if (addressHex.length !== (family === 4 ? 8 : 32)) continue;
    const address = family === 4 ? decodeIpv4(addressHex) : decodeIpv6(addressHex);
    sockets.push({
      family,
      address,
      port: Number.parseInt(portHex, 16),
      scope: classifyAddress(family, address),
      uid: Number(uid),
      inode: Number(inode),
    });
  }
}

/**
 * Reads one socket table in blocks of 64 KiB into one reused buffer and scans the whole lines of
 * each block for listening rows. On a busy host the table has a row for every connection, tens of
 * thousands of rows and several MiB of text. Reading it as one string and splitting every row made
 * the proxy's heap grow by more than the table itself, and the memory stayed resident after the check.
 */
async function readSocketTable(path: string, family: 4 | 6): Promise<ListeningSocket[]> {
  const sockets: ListeningSocket[] = [];
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(64 * 1024);
    let partial = '';
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      // The kernel writes the tables in ASCII. A line cut at the block's end waits for the next block.
      const text = partial + buffer.toString('latin1', 0, bytesRead);
      const end = text.lastIndexOf('\n') + 1;
      collectListening(text.slice(0, end), family, sockets);
      partial = text.slice(end);
    }
    collectListening(partial, family, sockets);
  } finally {
    await handle.close();
  }
  return sockets;
}

/**
 * Reads the kernel's TCP socket tables of this process's network namespace. A table that does
 * not exist (no IPv6 support, or not Linux) contributes no sockets.
 */
export async function readListeningSockets(procNet = '/proc/net'): Promise<ListeningSocket[]> {
  const tables = await Promise.all(
    ([['tcp', 4], ['tcp6', 6]] as const).map(async ([name, family]) => {
      try {
        return await readSocketTable(`${procNet}/${name}`, family);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw error;
      }
    }),
  );
  return tables.flat();
}

export interface AppExposure {
  port: number;
  /** Listening sockets on the app's port. */
  listeners: ListeningSocket[];
  /** True when any of them can be reached from another host, around the mesh. */
  exposed: boolean;
}

/** Finds how the app's port is bound and whether it can be reached around the sidecar. */
export async function checkAppExposure(port: number, procNet = '/proc/net'): Promise<AppExposure> {
  const listeners = (await readListeningSockets(procNet)).filter((socket) => socket.port === port);
  return { port, listeners, exposed: listeners.some((socket) => socket.scope !== 'loopback') };
}
