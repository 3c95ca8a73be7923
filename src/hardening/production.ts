/**
 * Production mode: checks, before any secret is read, that nothing in the Node.js process exposes
 * its memory to a debugger, a profiler, a diagnostic report or a core file.
 */
import { readFileSync } from 'node:fs';
import { url as inspectorUrl } from 'node:inspector';
import { SealmeshError, type ErrorCode } from '../errors/index.ts';

/** The run modes of `sealmesh server` and `sealmesh proxy`. */
export const RUN_MODES = ['development', 'production'] as const;
export type RunMode = (typeof RUN_MODES)[number];

/** Facts about the running process that production mode judges. */
export interface ProcessFacts {
  /** Node.js and V8 flags of the process (`process.execArgv`). */
  execArgv: readonly string[];
  /** The NODE_OPTIONS environment variable, or undefined. */
  nodeOptions: string | undefined;
  /** WebSocket URL of an active inspector (`inspector.url()`), or undefined. */
  inspectorUrl: string | undefined;
  /** Text of /proc/self/limits, or undefined when it cannot be read. */
  limits: string | undefined;
  /** True when the Node.js permission model is enabled (`process.permission` exists). */
  permissionModel: boolean;
}

/** Flags that start or arm the inspector. */
const INSPECTOR_FLAGS = ['--inspect', '--inspect-brk', '--inspect-wait', '--inspect-port', '--inspect-publish-uid', '--debug-port'];

/**
 * Flags that write process memory or internals somewhere, or let code read them: heap snapshots
 * and profiles, diagnostic reports, tracing, V8 natives and Node.js internals. A flag matches when
 * it equals an entry or starts with an entry that ends in `-`.
 */
const DIAGNOSTIC_FLAGS = [
  '--expose-gc',
  '--allow-natives-syntax',
  '--expose-internals',
  '--heapsnapshot-signal',
  '--heapsnapshot-near-heap-limit',
  '--heap-prof',
  '--heap-prof-',
  '--cpu-prof',
  '--cpu-prof-',
  '--prof',
  '--prof-',
  '--perf-basic-prof',
  '--perf-basic-prof-',
  '--perf-prof',
  '--perf-prof-',
  '--trace-',
  '--diagnostic-dir',
  '--report-on-signal',
  '--report-on-fatalerror',
  '--report-uncaught-exception',
  '--report-signal',
  '--report-dir',
  '--report-directory',
  '--report-filename',
  '--report-compact',
  '--report-exclude-network',
  '--report-exclude-env',
];

/** Returns the flag's name with V8's `_` spelling turned into `-` and any `=value` removed. */
function flagName(argument: string): string {
  const name = argument.split('=', 1)[0] ?? argument;
  return name.replaceAll('_', '-').toLowerCase();
}

function matches(name: string, list: readonly string[]): boolean {
  return list.some((entry) => (entry.endsWith('-') ? name.startsWith(entry) : name === entry));
}

/**
 * Returns the core file size soft limit from the text of /proc/self/limits (`Max core file size`
 * row), or undefined when the row is missing.
 */
export function coreFileSoftLimit(limits: string): string | undefined {
  const row = limits.split('\n').find((line) => line.startsWith('Max core file size'));
  return row?.slice('Max core file size'.length).trim().split(/\s+/)[0];
}

/** Reads the facts about this process. */
export function readProcessFacts(): ProcessFacts {
  let limits: string | undefined;
  try {
    limits = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    limits = undefined;
  }
  return {
    execArgv: process.execArgv,
    nodeOptions: process.env.NODE_OPTIONS,
    inspectorUrl: inspectorUrl(),
    limits,
    permissionModel: process.permission !== undefined,
  };
}

/**
 * Returns every reason production mode rejects a process with `facts`, in a fixed order:
 * inspector, diagnostic flags, core dumps, then a missing permission model. Empty when none.
 */
export function productionViolations(facts: ProcessFacts): SealmeshError[] {
  const violations: SealmeshError[] = [];
  const flags = [
    ...facts.execArgv.filter((argument) => argument.startsWith('--')).map((argument) => ({ argument, source: 'the command line' })),
    ...(facts.nodeOptions ?? '')
      .split(/\s+/)
      .filter((argument) => argument.startsWith('--'))
      .map((argument) => ({ argument, source: 'NODE_OPTIONS' })),
  ];
  const add = (code: ErrorCode, message: string): void => {
    violations.push(new SealmeshError(code, message));
  };

  if (facts.inspectorUrl !== undefined) {
    add('SEALMESH_ERR_PRODUCTION_INSPECTOR', 'the inspector is active, so a debugger can read every key in memory; start without --inspect in production mode');
  }
  for (const { argument, source } of flags) {
    const name = flagName(argument);
    if (matches(name, INSPECTOR_FLAGS)) {
      add('SEALMESH_ERR_PRODUCTION_INSPECTOR', `${name} in ${source} enables the inspector, so a debugger could read every key in memory; remove it in production mode`);
    } else if (matches(name, DIAGNOSTIC_FLAGS)) {
      add('SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG', `${name} in ${source} can write process memory or internals to files or expose them to code; remove it in production mode`);
    }
  }

  if (facts.limits === undefined) {
    add('SEALMESH_ERR_PRODUCTION_CORE_DUMPS', 'cannot read /proc/self/limits to check that core dumps are off; production mode needs Linux with /proc mounted');
  } else {
    const soft = coreFileSoftLimit(facts.limits);
    if (soft !== '0') {
      add(
        'SEALMESH_ERR_PRODUCTION_CORE_DUMPS',
        `the core file size limit is ${soft ?? 'unknown'}, so a crash would write every key in memory to disk; run \`ulimit -c 0\` or set LimitCORE=0 in the systemd unit`,
      );
    }
  }

  if (!facts.permissionModel) {
    add('SEALMESH_ERR_PRODUCTION_SANDBOX_REQUIRED', 'the Node.js permission model is off; pass --sandbox, or start Node.js with --permission and the flags that `--sandbox-print` prints');
  }
  return violations;
}

/**
 * Throws the first production-mode violation of this process, with the number of further ones in
 * the message; returns when there is none.
 */
export function assertProductionProcess(facts: ProcessFacts = readProcessFacts()): void {
  const [first, ...rest] = productionViolations(facts);
  if (first === undefined) return;
  const more = rest.length === 0 ? '' : ` (and ${rest.length} more: ${rest.map((violation) => violation.code).join(', ')})`;
  throw new SealmeshError(first.code, `${first.message}${more}`);
}
