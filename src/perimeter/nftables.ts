import { SealmeshError } from '../errors/index.ts';

/** The nftables table that contains the perimeter: `table inet sealmesh`, for IPv4 and IPv6 alike. */
export const PERIMETER_TABLE = { family: 'inet', name: 'sealmesh' } as const;

/** Settings of the perimeter inside the app's network namespace. */
export interface PerimeterSpec {
  /** TCP port the app listens on. */
  appPort: number;
  /** The only user whose processes may connect to the app port. */
  proxyUid: number;
  /** The app's user, whose outbound TCP connections are limited to the ports below. */
  appUid: number;
  /** Upstream listeners of the proxy, which the app calls. */
  upstreamPorts: number[];
  /** Other ports of the proxy the app may connect to, such as its admin or health endpoint. */
  proxyPorts: number[];
}

/** Matches only the first packet of a TCP connection: SYN set, and ACK, RST and FIN clear. */
const NEW_CONNECTION = 'tcp flags & (fin | syn | rst | ack) == syn';

function checkPort(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${String(value)} is invalid: use a TCP port from 1 to 65535`);
  }
}

function checkUid(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 2 ** 32 - 2) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${what} ${String(value)} is invalid: use a uid from 0 to ${2 ** 32 - 2}`);
  }
}

/** Validates a spec; returns the ports the app's user may connect to, sorted and without repeats. */
export function validatePerimeterSpec(spec: PerimeterSpec): number[] {
  checkPort(spec.appPort, '--app-port');
  checkUid(spec.proxyUid, '--proxy-user');
  checkUid(spec.appUid, '--app-user');
  for (const port of spec.upstreamPorts) checkPort(port, '--upstream-port');
  for (const port of spec.proxyPorts) checkPort(port, '--proxy-port');
  if (spec.proxyUid === spec.appUid) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_INVALID',
      `--proxy-user and --app-user are the same uid ${spec.proxyUid}: the perimeter separates the two, so run the app and the proxy as different users`,
    );
  }
  const allowed = [...new Set([...spec.upstreamPorts, ...spec.proxyPorts])].sort((a, b) => a - b);
  if (allowed.includes(spec.appPort)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--app-port ${spec.appPort} is also given as an upstream or proxy port; the app port must be a port of its own`);
  }
  return allowed;
}

/**
 * Builds the nftables script that installs the perimeter, for `nft -f -`. The script first
 * declares and then deletes the table, so that one transaction replaces an earlier version
 * without a moment in which no rule is in force.
 *
 * Rules in the output chain see every connection that a process in the namespace opens, including
 * connections over loopback, and `meta skuid` is the uid of the process that owns the socket. They
 * match only the first packet of a connection, so the packets of established connections (the
 * app's own responses included) pass without connection tracking. A rejected connect fails at once
 * with ECONNREFUSED, because the reject sends a TCP reset to the local socket.
 *
 * NOTE: only TCP is limited. The app's user can still send UDP (DNS included) and use Unix sockets,
 * which file permissions govern.
 */
export function buildPerimeterRuleset(spec: PerimeterSpec): string {
  const allowed = validatePerimeterSpec(spec);
  const { family, name } = PERIMETER_TABLE;
  const lines = [
    '# sealmesh local perimeter, written by `sealmesh perimeter apply`. Changes by hand are lost at the next apply.',
    `table ${family} ${name}`,
    `delete table ${family} ${name}`,
    `table ${family} ${name} {`,
    '\tchain output {',
    '\t\ttype filter hook output priority filter; policy accept;',
    `\t\t${NEW_CONNECTION} tcp dport ${spec.appPort} meta skuid != ${spec.proxyUid} counter reject with tcp reset comment "app port: only the proxy user connects"`,
  ];
  if (allowed.length > 0) {
    lines.push(`\t\t${NEW_CONNECTION} meta skuid ${spec.appUid} oifname "lo" tcp dport { ${allowed.join(', ')} } counter accept comment "app user: mesh ports on loopback"`);
  }
  lines.push(
    `\t\t${NEW_CONNECTION} meta skuid ${spec.appUid} counter reject with tcp reset comment "app user: no other outbound TCP"`,
    '\t}',
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy accept;',
    `\t\tiifname != "lo" tcp dport ${spec.appPort} counter drop comment "app port: nothing from outside the namespace"`,
    '\t}',
    '}',
    '',
  );
  return lines.join('\n');
}

/** Builds the nftables script that removes the perimeter; it succeeds when no perimeter is installed. */
export function buildRemovalScript(): string {
  const { family, name } = PERIMETER_TABLE;
  return `table ${family} ${name}\ndelete table ${family} ${name}\n`;
}

/** One rule of the perimeter table as `nft -j` lists it, written back in nft syntax. */
export interface PerimeterRule {
  chain: string;
  /** The rule in nft syntax, such as `tcp dport 8080 meta skuid != 998 reject with tcp reset`. */
  text: string;
  comment?: string;
  /** Packets the rule's counter has matched since the table was loaded. */
  packets: number;
}

/** The perimeter as it is in force in a network namespace, read back from nftables. */
export interface PerimeterStatus {
  installed: boolean;
  /** Port that only `proxyUid` may connect to; absent when no rule enforces that. */
  appPort?: number;
  proxyUid?: number;
  /** User whose outbound TCP connections are limited; absent when no rule limits any user. */
  appUid?: number;
  /** Ports that `appUid` may connect to on loopback. */
  allowedPorts?: number[];
  /** True when the input chain drops packets to the app port from interfaces other than loopback. */
  blocksOtherInterfaces: boolean;
  rules: PerimeterRule[];
}

interface Match {
  left: string;
  op: string;
  right: unknown;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Writes the left side of a match: `tcp dport`, `meta skuid`, `oifname` or `tcp flags & (syn | ack)`. */
function renderLeft(left: unknown): string {
  if (!isObject(left)) return JSON.stringify(left);
  const payload = left.payload;
  if (isObject(payload)) return `${String(payload.protocol)} ${String(payload.field)}`;
  const meta = left.meta;
  if (isObject(meta)) return meta.key === 'iifname' || meta.key === 'oifname' ? String(meta.key) : `meta ${String(meta.key)}`;
  const and = left['&'];
  if (Array.isArray(and) && and.length === 2) {
    const mask = Array.isArray(and[1]) ? `(${and[1].map(String).join(' | ')})` : String(and[1]);
    return `${renderLeft(and[0])} & ${mask}`;
  }
  return JSON.stringify(left);
}

/** Writes the right side of a match; interface names are quoted as nft writes them. */
function renderRight(right: unknown, left: string): string {
  if (typeof right === 'number') return String(right);
  if (typeof right === 'string') return left === 'iifname' || left === 'oifname' ? JSON.stringify(right) : right;
  if (isObject(right) && Array.isArray(right.set)) return `{ ${right.set.map((item) => renderRight(item, left)).join(', ')} }`;
  return JSON.stringify(right);
}

function setOrNumber(value: unknown): number[] | undefined {
  if (typeof value === 'number') return [value];
  if (isObject(value) && Array.isArray(value.set) && value.set.every((item) => typeof item === 'number')) return value.set as number[];
  return undefined;
}

/** Decodes the `expr` list of one rule into its matches, verdict and counter. */
function decodeRule(expressions: unknown[]): { matches: Match[]; verdict: string; packets: number; text: string } {
  const matches: Match[] = [];
  const parts: string[] = [];
  let verdict = '';
  let packets = 0;
  for (const expression of expressions) {
    if (!isObject(expression)) continue;
    const match = expression.match;
    if (isObject(match)) {
      const decoded = { left: renderLeft(match.left), op: String(match.op), right: match.right };
      matches.push(decoded);
      // nft leaves out `==` except after a bitmask, where it is needed to read the match.
      const implicit = decoded.op === 'in' || (decoded.op === '==' && !decoded.left.includes(' & '));
      const op = implicit ? '' : `${decoded.op} `;
      parts.push(`${decoded.left} ${op}${renderRight(decoded.right, decoded.left)}`);
    } else if (isObject(expression.counter)) {
      packets = Number(expression.counter.packets ?? 0);
    } else if ('accept' in expression || 'drop' in expression) {
      verdict = 'accept' in expression ? 'accept' : 'drop';
      parts.push(verdict);
    } else if ('reject' in expression) {
      verdict = 'reject';
      const type = isObject(expression.reject) ? expression.reject.type : undefined;
      parts.push(typeof type === 'string' ? `reject with ${type}` : 'reject');
    } else {
      parts.push(JSON.stringify(expression));
    }
  }
  return { matches, verdict, packets, text: parts.join(' ') };
}

/**
 * Reads the output of `nft -j list table inet sealmesh` and states what the table enforces. The
 * settings come from the rules themselves, not from their comments, so a rule edited by hand is
 * reported as it is.
 */
export function parsePerimeterTable(json: string): PerimeterStatus {
  const document = JSON.parse(json) as { nftables?: unknown[] };
  const status: PerimeterStatus = { installed: false, blocksOtherInterfaces: false, rules: [] };
  const inputRules: Array<ReturnType<typeof decodeRule>> = [];
  for (const item of document.nftables ?? []) {
    if (!isObject(item)) continue;
    if (isObject(item.table) && item.table.family === PERIMETER_TABLE.family && item.table.name === PERIMETER_TABLE.name) status.installed = true;
    const rule = item.rule;
    if (!isObject(rule) || !Array.isArray(rule.expr)) continue;
    const chain = String(rule.chain);
    const decoded = decodeRule(rule.expr);
    status.rules.push({ chain, text: decoded.text, packets: decoded.packets, ...(typeof rule.comment === 'string' ? { comment: rule.comment } : {}) });
    if (chain === 'input') {
      inputRules.push(decoded);
      continue;
    }
    const find = (left: string, op?: string): Match | undefined => decoded.matches.find((match) => match.left === left && (op === undefined || match.op === op));
    const dport = find('tcp dport');
    const otherUser = find('meta skuid', '!=');
    const user = find('meta skuid', '==');
    if (decoded.verdict === 'reject' && dport !== undefined && typeof dport.right === 'number' && otherUser !== undefined) {
      status.appPort = dport.right;
      status.proxyUid = Number(otherUser.right);
    } else if (user !== undefined && decoded.verdict === 'accept' && dport !== undefined) {
      status.appUid = Number(user.right);
      status.allowedPorts = setOrNumber(dport.right) ?? [];
    } else if (user !== undefined && decoded.verdict === 'reject' && dport === undefined) {
      status.appUid ??= Number(user.right);
      status.allowedPorts ??= [];
    }
  }
  status.blocksOtherInterfaces = inputRules.some(
    (rule) =>
      rule.verdict === 'drop' &&
      rule.matches.some((match) => match.left === 'iifname' && match.op === '!=' && match.right === 'lo') &&
      rule.matches.some((match) => match.left === 'tcp dport' && match.right === status.appPort),
  );
  return status;
}
