/**
 * The permission grants of `sealmesh server` and `sealmesh proxy`, the sandbox launcher and the
 * run-mode check. The CLI loads this module only when one of the two programs runs.
 */
import { dirname, resolve } from 'node:path';
import { assertProductionProcess, runSandboxed, sandboxActive, sandboxCommand, shellQuote, type SandboxGrant } from '../hardening/index.ts';
import { isUnixAddress, parseSocketAddress, parseUpstream, type SocketAddress } from '../proxy/index.ts';
import { checkSocketAncestors } from '../perimeter/unix-socket.ts';
import { LAUNCHER_OPTIONS, type HardeningFlags } from './hardening-options.ts';

export type { HardeningFlags } from './hardening-options.ts';

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
