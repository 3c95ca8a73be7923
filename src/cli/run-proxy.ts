import { accessSync, constants } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createLogger, type Logger } from '../log/index.ts';
import { ATTESTATION_MODES, type AttestationMode } from '../attest/providers/modes.ts';
import { SidecarProxy, parseProtocol, formatSocketAddress, isUnixAddress, parseHealthPath, parseHostPort, parseSocketAddress, parseUpstream } from '../proxy/index.ts';
import { parseSocketMode } from '../perimeter/unix-socket.ts';
import { resolveGroupId, resolveUserId } from '../perimeter/users.ts';
import { isSealmeshError, SealmeshError } from '../errors/index.ts';
import { checkEnvironment, isLoopback, loadLocalConfig, type ProxyLocalConfig } from '../config/index.ts';
import type { AccessLogOptions } from '../proxy/http/access-log.ts';
import type { TokenTlsKey } from '../proxy/token-key.ts';
import { applyUpstreamTraffic, parseTrafficFlag } from '../proxy/traffic/index.ts';
import { DEFAULT_ADDR, parseDuration, readCaFile } from './output.ts';
import { checkedProxyGrant, checkRunMode, launchSandboxIfRequested, type HardeningFlags } from './hardening-flags.ts';
import { assertTlsKeyWithoutSandbox, tokenKeyFromFlags, type TlsKeyFlags } from './tls-key-flags.ts';
import { DEFAULT_LOG_LEVEL, missingSetting, untilSignal } from './run-common.ts';

const DEFAULT_DRAIN = '10s';

/**
 * Runs a sidecar proxy. Like `runServer`, it checks the environment, reads the --config file and
 * lets each flag given replace the file's value. SEALMESH_ADDR and SEALMESH_CACERT also replace it.
 */
export async function runProxy(flags: HardeningFlags & {
  config?: string;
  service?: string;
  joinToken?: string;
  listen?: string;
  app?: string;
  upstream: string[];
  protocol?: string;
  upstreamConfig?: string[];
  advertise?: string;
  admin?: string;
  socketMode: string;
  socketOwner?: string;
  socketGroup?: string;
  health?: string;
  appHealthPath?: string;
  manifestGenesis?: string;
  svidTtl?: string;
  drain?: string;
  addr?: string;
  caFile?: string;
  logLevel?: string;
  attestation?: string;
  devMeasurement?: string;
  accessLog?: boolean;
  accessLogSampling?: string;
  accessLogPath?: string;
  accessLogQuery?: boolean;
} & TlsKeyFlags): Promise<void> {
  checkEnvironment(process.env);
  const attestation = parseAttestationMode(flags.attestation ?? 'auto');
  const file = flags.config === undefined ? {} : await loadLocalConfig(flags.config, 'proxy');
  const accessLog = accessLogSettings(flags, file);
  assertTlsKeyWithoutSandbox(flags);
  if (await launchSandboxIfRequested(flags, () => checkedProxyGrant(flags, file))) return;
  checkRunMode(flags);
  // Other users can read a process's command line in /proc/PID/cmdline, so production takes the join token from the environment only.
  if (flags.mode === 'production' && flags.joinToken !== undefined) {
    throw new SealmeshError('SEALMESH_ERR_PRODUCTION_SECRET_IN_ARGV', '--join-token puts the join token where other users can read it (/proc/PID/cmdline); set SEALMESH_JOIN_TOKEN instead in production mode');
  }
  const service = flags.service ?? file.service;
  if (service === undefined) throw missingSetting('--service <name>', 'service');
  const listen = flags.listen !== undefined ? parseHostPort(flags.listen, '--listen', true) : file.listen;
  if (listen === undefined) throw missingSetting('--listen <host:port>', 'listen');
  const app = flags.app !== undefined ? parseSocketAddress(flags.app, '--app') : file.app;
  if (app === undefined) throw missingSetting('--app <host:port|unix:path>', 'app');
  const declared = flags.upstream.length > 0 ? flags.upstream.map(parseUpstream) : (file.upstreams ?? []);
  const upstreams = applyUpstreamTraffic(declared, file.upstreamConfig, (flags.upstreamConfig ?? []).map(parseTrafficFlag));
  const advertise = flags.advertise !== undefined ? parseHostPort(flags.advertise, '--advertise') : file.advertise;
  const admin = flags.admin !== undefined ? parseSocketAddress(flags.admin, '--admin', true) : file.admin;
  // The admin endpoint serves metrics and status without authentication, so it stays on this host.
  if (admin !== undefined && !isUnixAddress(admin) && !isLoopback(admin.host)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--admin ${formatSocketAddress(admin)} is not a loopback address; the admin endpoint has no authentication, so bind it to 127.0.0.1, ::1 or a Unix socket`);
  }
  const drainSeconds = flags.drain !== undefined ? parseDuration(flags.drain, '--drain') : (file.drainSeconds ?? parseDuration(DEFAULT_DRAIN, '--drain'));
  assertJoinTokenGiven(flags);
  const caFile = flags.caFile ?? process.env.SEALMESH_CACERT ?? file.caFile;
  if (caFile === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no CA file given: pass --ca-file or set SEALMESH_CACERT to the server\'s trust-bundle.pem');
  }
  const addr = flags.addr ?? process.env.SEALMESH_ADDR ?? file.addr ?? DEFAULT_ADDR;
  const log = createLogger({ component: 'proxy', level: flags.logLevel ?? file.logLevel ?? DEFAULT_LOG_LEVEL }).child({ service });
  const tokenKey = await openTokenKey(flags, log);
  const proxy = new SidecarProxy({
    service,
    joinToken: takeJoinToken(flags),
    serverUrl: new URL(addr.includes('://') ? addr : `https://${addr}`).origin,
    serverCa: readCaFile(caFile),
    listen,
    app,
    upstreams,
    drainSeconds,
    log,
    ...(accessLog !== undefined ? { accessLog } : {}),
    socketPermissions: {
      mode: parseSocketMode(flags.socketMode),
      ...(flags.socketOwner !== undefined ? { uid: await resolveUserId(flags.socketOwner, '--socket-owner') } : {}),
      ...(flags.socketGroup !== undefined ? { gid: await resolveGroupId(flags.socketGroup, '--socket-group') } : {}),
    },
    ...(advertise !== undefined ? { advertise } : {}),
    ...(flags.protocol !== undefined ? { protocol: parseProtocol(flags.protocol) } : {}),
    ...(admin !== undefined ? { admin } : {}),
    ...(flags.health !== undefined ? { health: parseHostPort(flags.health, '--health', true) } : {}),
    ...(flags.appHealthPath !== undefined ? { appHealthPath: parseHealthPath(flags.appHealthPath) } : {}),
    ...(flags.manifestGenesis !== undefined ? { manifestGenesis: parseDigest(flags.manifestGenesis) } : {}),
    ...(flags.svidTtl !== undefined ? { svidTtlSeconds: parseDuration(flags.svidTtl, '--svid-ttl') } : {}),
    attestation,
    runMode: flags.mode,
    ...(tokenKey !== undefined ? { tokenKey } : {}),
    ...(flags.devMeasurement !== undefined ? { devMeasurement: flags.devMeasurement } : {}),
  });
  if (attestation === 'dev') {
    console.error('WARNING: --attestation dev sends INSECURE software evidence that proves nothing; only a development manifest accepts it.');
  }
  await serveProxy(proxy, tokenKey, log);
}

/**
 * Starts the proxy and runs it until a signal arrives or the proxy halts, whose error is then
 * thrown. It is a separate function because with these awaits inside `runProxy`, heap snapshots
 * of the running proxy contained the join token (Node.js 24.21, test/secret-exposure.test.ts).
 */
async function serveProxy(proxy: SidecarProxy, tokenKey: TokenTlsKey | undefined, log: Logger): Promise<void> {
  const signalled = untilSignal();
  try {
    await proxy.start();
    const stopCause = await Promise.race([signalled, proxy.halted]);
    if (typeof stopCause !== 'string') {
      await proxy.stop();
      throw stopCause;
    }
    log.info({ signal: stopCause }, 'stopping');
    await proxy.stop();
  } finally {
    tokenKey?.close();
    log.flush();
  }
}

/** Opens the proxy's TLS key in its token when the flags request one; the start fails with its code otherwise. */
async function openTokenKey(flags: TlsKeyFlags, log: Logger): Promise<TokenTlsKey | undefined> {
  try {
    // A missing or unreadable PIN is raised here, so it is logged like the token failures below.
    const options = tokenKeyFromFlags(flags);
    if (options === undefined) return undefined;
    const { TokenTlsKey } = await import('../proxy/token-key.ts');
    const key = await TokenTlsKey.open(options);
    // The field is not named `token`, because the logger redacts every `token` field.
    log.info({ tokenLabel: options.tokenLabel, keyLabel: options.keyLabel, generated: key.generated }, key.generated ? 'TLS key generated in the PKCS#11 token' : 'TLS key found in the PKCS#11 token');
    return key;
  } catch (error) {
    log.error({ code: isSealmeshError(error) ? error.code : 'SEALMESH_ERR_INTERNAL', reason: (error as Error).message }, 'the TLS key in the PKCS#11 token cannot be used');
    throw error;
  }
}

/** Checks a `--attestation` value. */
function parseAttestationMode(value: string): AttestationMode {
  if (!(ATTESTATION_MODES as readonly string[]).includes(value)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--attestation ${JSON.stringify(value)} is invalid: use one of ${ATTESTATION_MODES.join(', ')}`);
  }
  return value as AttestationMode;
}

function assertJoinTokenGiven(flags: { joinToken?: string }): void {
  const joinToken = flags.joinToken ?? process.env.SEALMESH_JOIN_TOKEN;
  if (joinToken === undefined || joinToken === '') {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no join token given: pass --join-token or set SEALMESH_JOIN_TOKEN (create one with `sealmesh token create --service NAME`)');
  }
}

/**
 * Returns the join token and removes SEALMESH_JOIN_TOKEN from the environment, so that neither
 * child processes nor `runProxy`'s own variables keep a copy after the proxy has enrolled.
 */
function takeJoinToken(flags: { joinToken?: string }): string {
  const joinToken = flags.joinToken ?? process.env.SEALMESH_JOIN_TOKEN ?? '';
  delete process.env.SEALMESH_JOIN_TOKEN;
  return joinToken;
}

/** Checks a `--manifest-genesis` value: 64 lowercase hex digits of a SHA-256 digest. */
function parseDigest(value: string): string {
  const digest = value.trim().toLowerCase().replace(/^sha256:/, '');
  if (!/^[0-9a-f]{64}$/.test(digest)) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--manifest-genesis ${JSON.stringify(value)} is invalid: use the 64 hex digits that \`sealmesh manifest show\` prints as the genesis digest`);
  }
  return digest;
}

/**
 * Returns the access log settings from the flags and the --config file, a flag replacing the
 * file's value; undefined when the access log is off. Throws SEALMESH_ERR_CONFIG_INVALID for a
 * sampling rate outside 0..1.
 */
export function accessLogSettings(
  flags: { accessLog?: boolean; accessLogSampling?: string; accessLogPath?: string; accessLogQuery?: boolean },
  file: Pick<ProxyLocalConfig, 'accessLog' | 'accessLogSampling' | 'accessLogPath' | 'accessLogQuery'>,
): AccessLogOptions | undefined {
  let sampleRate = file.accessLogSampling ?? 1;
  if (flags.accessLogSampling !== undefined) {
    const text = flags.accessLogSampling.trim();
    sampleRate = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : Number.NaN;
    if (!(sampleRate >= 0 && sampleRate <= 1)) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--access-log-sampling ${JSON.stringify(flags.accessLogSampling)} is not a sampling rate; use a number from 0 to 1, such as 0.1`);
    }
  }
  if ((flags.accessLog ?? file.accessLog ?? false) === false) return undefined;
  const path = flags.accessLogPath ?? file.accessLogPath;
  if (path !== undefined) {
    // The file is opened by the proxy later, so an unwritable directory is reported here instead.
    try {
      accessSync(dirname(resolve(path)), constants.W_OK);
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `access log path ${path} cannot be written: ${(error as NodeJS.ErrnoException).code ?? String(error)}; create its directory or choose another --access-log-path`);
    }
  }
  return { sampleRate, includeQuery: flags.accessLogQuery ?? file.accessLogQuery ?? false, ...(path !== undefined ? { path: resolve(path) } : {}) };
}
