/**
 * The permission grants of `sealmesh server` and `sealmesh proxy`, the sandbox launcher and the
 * run-mode check. The CLI loads this module only when one of the two programs runs.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { assertProductionProcess, runSandboxed, sandboxActive, sandboxCommand, shellQuote, type SandboxGrant } from '../hardening/index.ts';
import { defaultKeyFilePath } from '../seal/index.ts';
import { defaultUnsealSocketPath } from '../server/seal-setup.ts';
import { isUnixAddress, parseSocketAddress, parseUpstream, type SocketAddress } from '../proxy/index.ts';
import { checkSocketAncestors } from '../perimeter/index.ts';
import type { SealFlags } from './seal-flags.ts';
import { LAUNCHER_OPTIONS, type HardeningFlags } from './hardening-options.ts';

export type { HardeningFlags } from './hardening-options.ts';

/**
 * Returns the grant of a server: the data directory, the key file, the sealed-state control
 * socket, the --config file and /proc/self/limits. The key file's directory is granted only while
 * the key file does not exist yet, because creating it also creates and syncs that directory.
 */
export function serverGrant(flags: HardeningFlags & SealFlags & { config?: string }, dataDir: string, env: NodeJS.ProcessEnv = process.env): SandboxGrant {
  const read = ['/proc/self/limits', ...flags.sandboxAllowRead];
  const write = [dataDir, ...flags.sandboxAllowWrite];
  if (flags.config !== undefined) read.push(flags.config);
  if (flags.seal === 'keyfile') {
    const keyFile = resolve(flags.sealKeyFile ?? defaultKeyFilePath(dataDir, env));
    write.push(keyFile);
    if (!existsSync(keyFile)) write.push(dirname(keyFile));
  }
  if (flags.seal === 'shamir') write.push(flags.unsealSocket ?? defaultUnsealSocketPath(dataDir));
  const pkcs11 = flags.seal === 'pkcs11' || flags.counter === 'pkcs11';
  if (pkcs11 && flags.pkcs11Module !== undefined) read.push(flags.pkcs11Module);
  return { read, write, addons: pkcs11, childProcess: false };
}

type ProxyGrantFlags = HardeningFlags & { config?: string; caFile?: string; upstream: string[]; admin?: string; socketOwner?: string; socketGroup?: string; accessLogPath?: string };
type ProxyGrantFile = { caFile?: string; admin?: SocketAddress; upstreams?: Array<{ listen: SocketAddress }>; accessLogPath?: string };

/** Returns the paths of the Unix sockets that the proxy listens on: the admin endpoint and upstreams. */
function unixSocketPaths(flags: ProxyGrantFlags, file: ProxyGrantFile): string[] {
  const admin = flags.admin !== undefined ? parseSocketAddress(flags.admin, '--admin', true) : file.admin;
  const upstreams = flags.upstream.length > 0 ? flags.upstream.map((value) => parseUpstream(value).listen) : (file.upstreams ?? []).map((upstream) => upstream.listen);
  return [admin, ...upstreams].flatMap((address) => (address !== undefined && isUnixAddress(address) ? [address.path] : []));
}

/**
 * Returns the grant of a proxy: the --config and CA files, the kernel's socket tables in /proc/net
 * (the app exposure check), /proc/self/limits, and the Unix sockets it creates with read access
 * to their directories. Child processes are
 * granted only when --socket-owner or --socket-group names a user or group, which getent resolves.
 */
export function proxyGrant(flags: ProxyGrantFlags, file: ProxyGrantFile, env: NodeJS.ProcessEnv = process.env): SandboxGrant {
  const read = ['/proc/self/limits', '/proc/net', ...flags.sandboxAllowRead];
  const write = [...flags.sandboxAllowWrite];
  if (flags.config !== undefined) read.push(flags.config);
  const caFile = flags.caFile ?? env.SEALMESH_CACERT ?? file.caFile;
  if (caFile !== undefined) read.push(caFile);
  for (const path of unixSocketPaths(flags, file)) {
    write.push(path);
    // The directory check before the bind reads the socket's own directory.
    read.push(dirname(resolve(path)));
  }
  const accessLogPath = flags.accessLogPath ?? file.accessLogPath;
  if (accessLogPath !== undefined) write.push(accessLogPath);
  const named = (value: string | undefined): boolean => value !== undefined && !/^\d+$/.test(value);
  return { read, write, addons: false, childProcess: named(flags.socketOwner) || named(flags.socketGroup) };
}

/**
 * Starts the sandbox when --sandbox or --sandbox-print requests it and this process is not
 * sandboxed yet. Returns true when the command is finished here: the command line was printed, or
 * the sandboxed child ran and its exit code is in `process.exitCode`. Returns false when this
 * process should run the program itself. `prepare` runs just before the child starts, outside the
 * sandbox, and not for --sandbox-print.
 */
export async function launchSandboxIfRequested(
  flags: HardeningFlags,
  grant: () => SandboxGrant | Promise<SandboxGrant>,
  prepare?: () => void,
): Promise<boolean> {
  if (flags.sandbox !== true && flags.sandboxPrint !== true) return false;
  if (sandboxActive()) return false;
  const args = process.argv.slice(2).filter((argument) => !LAUNCHER_OPTIONS.has(argument));
  if (flags.sandboxPrint === true) {
    process.stdout.write(`${sandboxCommand(args, await grant()).map(shellQuote).join(' ')}\n`);
    process.exitCode = 0;
    return true;
  }
  const granted = await grant();
  prepare?.();
  process.exitCode = await runSandboxed(args, granted);
  return true;
}

/**
 * Creates the server's data directory (mode 0700) and its missing parents before a sandboxed start:
 * the sandbox grants the data directory but not its parents, so the sandboxed server could not
 * create them on a first start.
 */
export function createDataDirectory(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
}

/**
 * Returns the proxy's grant after checking the directories above each Unix socket, which the
 * sandboxed proxy may not read. Throws the socket directory errors of `checkSocketAncestors`.
 */
export async function checkedProxyGrant(flags: ProxyGrantFlags, file: ProxyGrantFile): Promise<SandboxGrant> {
  for (const path of unixSocketPaths(flags, file)) await checkSocketAncestors(path);
  return proxyGrant(flags, file);
}

/** Runs the production-mode checks when --mode production is set. */
export function checkRunMode(flags: HardeningFlags): void {
  if (flags.mode === 'production') assertProductionProcess();
}
