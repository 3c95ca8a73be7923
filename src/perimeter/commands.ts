import { SealmeshError } from '../errors/index.ts';
import { applyPerimeter, readPerimeter, removePerimeter } from './netns.ts';
import { buildPerimeterRuleset, PERIMETER_TABLE, type PerimeterSpec, type PerimeterStatus } from './nftables.ts';
import { resolveUserId } from './users.ts';

/** Flags of `sealmesh perimeter apply`, as commander passes them. */
export interface ApplyFlags {
  netns: string;
  appPort: string;
  proxyUser: string;
  appUser: string;
  upstreamPort?: string[];
  proxyPort?: string[];
  dryRun?: boolean;
}

function parsePort(text: string, option: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${option} ${JSON.stringify(text)} is invalid: use a TCP port from 1 to 65535`);
  }
  return Number(text);
}

/** Reads a repeatable port option; each value may also be a comma-separated list. */
function parsePorts(values: string[] | undefined, option: string): number[] {
  return (values ?? []).flatMap((value) => value.split(',')).map((text) => parsePort(text.trim(), option));
}

/** Turns the flags into a spec, resolving user names to uids. */
export async function perimeterSpecFromFlags(flags: ApplyFlags): Promise<PerimeterSpec> {
  return {
    appPort: parsePort(flags.appPort, '--app-port'),
    proxyUid: await resolveUserId(flags.proxyUser, '--proxy-user'),
    appUid: await resolveUserId(flags.appUser, '--app-user'),
    upstreamPorts: parsePorts(flags.upstreamPort, '--upstream-port'),
    proxyPorts: parsePorts(flags.proxyPort, '--proxy-port'),
  };
}

/** Runs `perimeter apply`: installs the table, or only builds its script with --dry-run. */
export async function runPerimeterApply(flags: ApplyFlags): Promise<{ netns: string; applied: boolean; spec: PerimeterSpec; ruleset: string }> {
  const spec = await perimeterSpecFromFlags(flags);
  if (flags.dryRun === true) return { netns: flags.netns, applied: false, spec, ruleset: buildPerimeterRuleset(spec) };
  const ruleset = await applyPerimeter(flags.netns, spec);
  return { netns: flags.netns, applied: true, spec, ruleset };
}

export async function runPerimeterCheck(flags: { netns: string }): Promise<PerimeterStatus & { netns: string }> {
  return { netns: flags.netns, ...(await readPerimeter(flags.netns)) };
}

export async function runPerimeterRemove(flags: { netns: string }): Promise<{ netns: string; removed: true }> {
  await removePerimeter(flags.netns);
  return { netns: flags.netns, removed: true };
}

/** Writes a perimeter status as the text output of `perimeter check`. */
export function formatPerimeterStatus(status: PerimeterStatus & { netns: string }): string {
  const table = `table ${PERIMETER_TABLE.family} ${PERIMETER_TABLE.name}`;
  if (!status.installed) return `No sealmesh perimeter in network namespace ${status.netns}: ${table} does not exist.`;
  const lines = [`Perimeter in network namespace ${status.netns} (${table}):`];
  lines.push(
    status.appPort === undefined
      ? '  app port:      no rule limits who connects to the app'
      : `  app port:      ${status.appPort}, connections only from uid ${status.proxyUid}` + (status.blocksOtherInterfaces ? ', nothing from other interfaces' : ''),
  );
  lines.push(
    status.appUid === undefined
      ? '  app user:      no rule limits outbound connections'
      : `  app user:      uid ${status.appUid}, outbound TCP only to ${status.allowedPorts?.length ? `loopback ports ${status.allowedPorts.join(', ')}` : 'nothing'}`,
  );
  lines.push('  rules:');
  for (const rule of status.rules) lines.push(`    ${rule.chain.padEnd(7)} ${rule.text}  [${rule.packets} packets]${rule.comment !== undefined ? `  # ${rule.comment}` : ''}`);
  return lines.join('\n');
}
