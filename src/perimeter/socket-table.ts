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

/** TCP state code of a listening socket in the kernel's socket tables (`TCP_LISTEN`). */
const TCP_LISTEN = '0A';

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
  for (const line of text.split('\n').slice(1)) {
    const socket = parseSocketLine(line, family);
    if (socket !== undefined) sockets.push(socket);
  }
  return sockets;
}

/** Parses one row of a socket table; undefined for the header, a malformed row or a socket that does not listen. */
function parseSocketLine(line: string, family: 4 | 6): ListeningSocket | undefined {
  const fields = line.trim().split(/\s+/);
  if (fields.length < 10 || fields[3] !== TCP_LISTEN) return undefined;
  const [addressHex, portHex] = (fields[1] ?? '').split(':');
  if (addressHex === undefined || portHex === undefined) return undefined;
  if (addressHex.length !== (family === 4 ? 8 : 32)) return undefined;
  const address = family === 4 ? decodeIpv4(addressHex) : decodeIpv6(addressHex);
  return {
    family,
    address,
    port: Number.parseInt(portHex, 16),
    scope: classifyAddress(family, address),
    uid: Number(fields[7]),
    inode: Number(fields[9]),
  };
}

/**
 * Reads one socket table in blocks of 64 KiB into one reused buffer and parses only the rows whose
 * state field is `0A`. On a busy host the table has a row for every connection, tens of thousands
 * of rows and several MiB of text. Reading it as one string and splitting every row made the
 * proxy's heap grow by more than the table itself, and the memory stayed resident after the check.
 */
async function readSocketTable(path: string, family: 4 | 6): Promise<ListeningSocket[]> {
  const sockets: ListeningSocket[] = [];
  const take = (line: string): void => {
    // Every row has single spaces around its state field, so this skips the other rows cheaply.
    if (!line.includes(` ${TCP_LISTEN} `)) return;
    const socket = parseSocketLine(line, family);
    if (socket !== undefined) sockets.push(socket);
  };
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(64 * 1024);
    let partial = '';
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      // The kernel writes the tables in ASCII.
      const lines = (partial + buffer.toString('latin1', 0, bytesRead)).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) take(line);
    }
    take(partial);
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
