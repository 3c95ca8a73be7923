export { SidecarProxy, type ProxyOptions } from './proxy.ts';
export {
  parseHostPort,
  parseSocketAddress,
  parseUpstream,
  formatHostPort,
  formatSocketAddress,
  isUnixAddress,
  type HostPort,
  type SocketAddress,
  type UnixAddress,
  type UpstreamSpec,
} from './address.ts';
export { checkApp, parseHealthPath, type AppCheckResult } from './app-check.ts';
export type { HealthReport } from './app-monitor.ts';
export { parseProtocol, SERVICE_PROTOCOLS, type ServiceProtocol } from './http/protocol.ts';
