export { SidecarProxy, type ProxyOptions } from './proxy.ts';
export { parseHostPort, parseUpstream, formatHostPort, type HostPort, type UpstreamSpec } from './address.ts';
