import { createRequire } from 'node:module';

/**
 * The parts of node:http that sealmesh uses, loaded with `require`. An ESM import of a built-in
 * module builds its namespace from every export, and node:http's lazy `WebSocket`, `CloseEvent` and
 * `MessageEvent` exports then load undici, web streams and perf_hooks. In Node.js 24.21 that costs
 * 7.8 MiB of resident memory more than loading node:http with `require`.
 */
const http = createRequire(import.meta.url)('node:http') as typeof import('node:http');

export const { Agent, createServer, request } = http;
export type Agent = import('node:http').Agent;
