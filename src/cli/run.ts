import { createLogger } from '../log/index.ts';
import { ControlPlane } from '../server/index.ts';
import { SidecarProxy, parseHealthPath, parseHostPort, parseSocketAddress, parseUpstream } from '../proxy/index.ts';
import { parseSocketMode, resolveGroupId, resolveUserId } from '../perimeter/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { counterFromFlags, sealFromFlags, type SealFlags } from './seal-flags.ts';
import { DEFAULT_ADDR, parseDuration, readCaFile } from './output.ts';

/**
 * Resolves once SIGINT or SIGTERM arrives. With SEALMESH_EXIT_WITH_PARENT=1, as `sealmesh dev` sets
 * for its children, the end of standard input counts too, so a child never outlives its parent.
 */
async function untilSignal(): Promise<string> {
  const watchParent = process.env.SEALMESH_EXIT_WITH_PARENT === '1';
  const reason = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    if (watchParent) {
      process.stdin.once('end', () => resolve('parent exited'));
      process.stdin.once('close', () => resolve('parent exited'));
      process.stdin.resume();
    }
  });
  // A standard input that is still being read keeps the event loop alive, so the process would
  // not exit after a signal.
  if (watchParent) process.stdin.destroy();
  return reason;
}

export async function runServer(
  flags: { dataDir: string; addr: string; trustDomain?: string; svidTtl: string; lease: string; logLevel: string } & SealFlags,
): Promise<void> {
  const log = createLogger({ component: 'server', level: flags.logLevel });
  const listen = parseHostPort(flags.addr, '--addr', true);
  const counter = counterFromFlags(flags);
  const server = new ControlPlane({
    seal: sealFromFlags(flags),
    ...(counter !== undefined ? { counter } : {}),
    ...(flags.unsealSocket !== undefined ? { unsealSocket: flags.unsealSocket } : {}),
    dataDir: flags.dataDir,
    host: listen.host,
    port: listen.port,
    svidTtlSeconds: parseDuration(flags.svidTtl, '--svid-ttl'),
    leaseSeconds: parseDuration(flags.lease, '--lease'),
    log,
    ...(flags.trustDomain !== undefined ? { trustDomain: flags.trustDomain } : {}),
  });
  await server.start();
  const signal = await untilSignal();
  log.info({ signal }, 'stopping');
  await server.stop();
  log.flush();
}

export async function runProxy(flags: {
  service: string;
  joinToken?: string;
  listen: string;
  app: string;
  upstream: string[];
  advertise?: string;
  admin?: string;
  socketMode: string;
  socketOwner?: string;
  socketGroup?: string;
  health?: string;
  appHealthPath?: string;
  svidTtl?: string;
  drain: string;
  addr?: string;
  caFile?: string;
  logLevel: string;
}): Promise<void> {
  const joinToken = flags.joinToken ?? process.env.SEALMESH_JOIN_TOKEN;
  if (joinToken === undefined || joinToken === '') {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no join token given: pass --join-token or set SEALMESH_JOIN_TOKEN (create one with `sealmesh token create --service NAME`)');
  }
  const caFile = flags.caFile ?? process.env.SEALMESH_CACERT;
  if (caFile === undefined) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no CA file given: pass --ca-file or set SEALMESH_CACERT to the server\'s trust-bundle.pem');
  }
  const addr = flags.addr ?? process.env.SEALMESH_ADDR ?? DEFAULT_ADDR;
  const log = createLogger({ component: 'proxy', level: flags.logLevel }).child({ service: flags.service });
  const proxy = new SidecarProxy({
    service: flags.service,
    joinToken,
    serverUrl: new URL(addr.includes('://') ? addr : `https://${addr}`).origin,
    serverCa: readCaFile(caFile),
    listen: parseHostPort(flags.listen, '--listen', true),
    app: parseSocketAddress(flags.app, '--app'),
    upstreams: flags.upstream.map(parseUpstream),
    drainSeconds: parseDuration(flags.drain, '--drain'),
    log,
    socketPermissions: {
      mode: parseSocketMode(flags.socketMode),
      ...(flags.socketOwner !== undefined ? { uid: await resolveUserId(flags.socketOwner, '--socket-owner') } : {}),
      ...(flags.socketGroup !== undefined ? { gid: await resolveGroupId(flags.socketGroup, '--socket-group') } : {}),
    },
    ...(flags.advertise !== undefined ? { advertise: parseHostPort(flags.advertise, '--advertise') } : {}),
    ...(flags.admin !== undefined ? { admin: parseSocketAddress(flags.admin, '--admin', true) } : {}),
    ...(flags.health !== undefined ? { health: parseHostPort(flags.health, '--health', true) } : {}),
    ...(flags.appHealthPath !== undefined ? { appHealthPath: parseHealthPath(flags.appHealthPath) } : {}),
    ...(flags.svidTtl !== undefined ? { svidTtlSeconds: parseDuration(flags.svidTtl, '--svid-ttl') } : {}),
  });
  await proxy.start();
  const signal = await untilSignal();
  log.info({ signal }, 'stopping');
  await proxy.stop();
  log.flush();
}
