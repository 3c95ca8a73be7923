import { execFile } from 'node:child_process';
import { access, constants, lstat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { SealmeshError } from '../errors/index.ts';
import { buildPerimeterRuleset, buildRemovalScript, parsePerimeterTable, PERIMETER_TABLE, type PerimeterSpec, type PerimeterStatus } from './nftables.ts';

/** Absolute paths of the programs that install the perimeter. */
export interface PerimeterTools {
  ip: string;
  nft: string;
}

/** Directory in which `ip netns add` creates the handle of a named namespace (iproute2's NETNS_RUN_DIR). */
export const NETNS_RUN_DIR = '/run/netns';

/** Maximum run time of nft or ip; both finish in milliseconds unless the system is stuck. */
const COMMAND_TIMEOUT_MS = 15_000;
/** Maximum output read from nft; a listed perimeter table is a few kilobytes. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/**
 * Directories searched for `ip` and `nft`: PATH, then the sbin directories, which a non-root
 * user's PATH often lacks on Debian.
 */
function defaultSearchPath(): string[] {
  const fromEnv = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir.startsWith('/'));
  return [...new Set([...fromEnv, '/usr/sbin', '/sbin', '/usr/bin', '/bin'])];
}

async function findProgram(name: string, debianPackage: string, searchPath: readonly string[]): Promise<string> {
  for (const dir of searchPath) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new SealmeshError(
    'SEALMESH_ERR_PERIMETER_TOOL_MISSING',
    `${name} was not found in ${searchPath.join(':')}; install it with \`apt-get install ${debianPackage}\` (or your distribution's ${debianPackage} package)`,
  );
}

/**
 * Finds `ip` and `nft`. Their absolute paths are passed on, so `ip netns exec` runs exactly the
 * nft found here rather than searching PATH again.
 */
export async function findPerimeterTools(searchPath: readonly string[] = defaultSearchPath()): Promise<PerimeterTools> {
  return { ip: await findProgram('ip', 'iproute2', searchPath), nft: await findProgram('nft', 'nftables', searchPath) };
}

/** Rejects names that `ip netns` would not create, so that a name never reads as a path or an option. */
export function checkNetnsName(name: string): void {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(name)) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_INVALID',
      `--netns ${JSON.stringify(name)} is invalid: use a network namespace name of letters, digits, '_', '.' and '-', as \`ip netns list\` shows them`,
    );
  }
}

function netnsMissing(name: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_NETNS_NOT_FOUND', `network namespace ${JSON.stringify(name)} does not exist; check \`ip netns list\`, or create it with \`ip netns add ${name}\``);
}

async function requireNetns(name: string, runDir: string): Promise<void> {
  checkNetnsName(name);
  try {
    await lstat(join(runDir, name));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw netnsMissing(name);
    throw error;
  }
}

interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs nft inside a namespace through `ip netns exec`, without a shell, writing `input` to its standard input. */
function runNft(tools: PerimeterTools, netns: string, args: string[], input?: string): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      tools.ip,
      ['netns', 'exec', netns, tools.nft, ...args],
      { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS, maxBuffer: MAX_OUTPUT_BYTES },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ code: 0, stdout, stderr: stderr.trim() });
        } else if (error.killed === true) {
          resolve({ code: null, stdout, stderr: `timed out after ${COMMAND_TIMEOUT_MS} ms and was killed` });
        } else if (typeof error.code === 'number') {
          resolve({ code: error.code, stdout, stderr: stderr.trim() });
        } else {
          // A string code such as ENOENT or EACCES: ip itself did not start.
          reject(error);
        }
      },
    );
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** Turns a failed `ip netns exec` into the namespace error when ip, not nft, failed. */
function ipFailure(result: CommandResult, netns: string): SealmeshError | undefined {
  if (/Cannot open network namespace/.test(result.stderr)) return netnsMissing(netns);
  return undefined;
}

export interface NetnsOptions {
  tools?: PerimeterTools;
  /** Directory of named namespace handles; NETNS_RUN_DIR when absent. */
  runDir?: string;
}

/** Installs or replaces the perimeter table in a named network namespace. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN). */
export async function applyPerimeter(netns: string, spec: PerimeterSpec, options: NetnsOptions = {}): Promise<string> {
  const ruleset = buildPerimeterRuleset(spec);
  const tools = options.tools ?? (await findPerimeterTools());
  await requireNetns(netns, options.runDir ?? NETNS_RUN_DIR);
  await loadScript(tools, netns, ruleset);
  return ruleset;
}

/** Removes the perimeter table from a named network namespace; succeeds when none is installed. */
export async function removePerimeter(netns: string, options: NetnsOptions = {}): Promise<void> {
  const tools = options.tools ?? (await findPerimeterTools());
  await requireNetns(netns, options.runDir ?? NETNS_RUN_DIR);
  await loadScript(tools, netns, buildRemovalScript());
}

/** Loads an nft script with `nft -f -` in the namespace. */
export async function loadScript(tools: PerimeterTools, netns: string, script: string): Promise<void> {
  const result = await runNft(tools, netns, ['-f', '-'], script);
  if (result.code === 0) return;
  throw (
    ipFailure(result, netns) ??
    new SealmeshError(
      'SEALMESH_ERR_NFT_APPLY_FAILED',
      `nft -f - in network namespace ${netns} exited with ${String(result.code)}: ${result.stderr || 'no output'}; ` +
        'it must run as root, and the kernel needs nf_tables (check `nft list tables` as root)',
    )
  );
}

/** Reads the perimeter table of a named network namespace back from nftables. */
export async function readPerimeter(netns: string, options: NetnsOptions = {}): Promise<PerimeterStatus> {
  const tools = options.tools ?? (await findPerimeterTools());
  await requireNetns(netns, options.runDir ?? NETNS_RUN_DIR);
  const result = await runNft(tools, netns, ['-j', 'list', 'table', PERIMETER_TABLE.family, PERIMETER_TABLE.name]);
  if (result.code === 0) return parsePerimeterTable(result.stdout);
  const failure = ipFailure(result, netns);
  if (failure !== undefined) throw failure;
  // nft reports a missing table as ENOENT: "Error: No such file or directory".
  if (/No such file or directory/.test(result.stderr)) return { installed: false, blocksOtherInterfaces: false, rules: [] };
  throw new SealmeshError(
    'SEALMESH_ERR_NFT_LIST_FAILED',
    `nft -j list table ${PERIMETER_TABLE.family} ${PERIMETER_TABLE.name} in network namespace ${netns} exited with ${String(result.code)}: ${result.stderr || 'no output'}; it must run as root`,
  );
}
