export { ControlPlane, DEFAULT_SERVER_HOST, DEFAULT_SERVER_PORT, DEFAULT_SVID_TTL_SECONDS, DEFAULT_LEASE_SECONDS, type CaCustodyConfig, type ServerOptions } from './server.ts';
export type { Endpoint, ProxySnapshot } from './watch.ts';
export type { Instance, ServiceSummary, HealthStatus } from './catalog.ts';
export type { TokenRecord, TokenKind } from './acl.ts';
