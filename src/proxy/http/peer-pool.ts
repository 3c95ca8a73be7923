import type { AgentOptions } from 'node:http';
import { Agent } from '../../node/http.ts';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { SecureContext } from 'node:tls';
import type { Endpoint } from '../../server/index.ts';
import { HTTP2_SETTINGS, widenSessionWindow } from './protocol.ts';
import type { PeerSessionCache } from '../tls-sessions.ts';
import type { Admission, TrafficRejection } from '../traffic/index.ts';
import { CircuitOpenError, connectPeer, endpointKey, PeerConnectError } from './peer-connector.ts';

/** Channel to one peer instance: its HTTP/2 session, or a keep-alive HTTP/1.1 agent. */
export type PeerChannel = { kind: 'h2'; session: ClientHttp2Session } | { kind: 'h1'; agent: Agent };

export interface PeerPoolOptions {
  expected: { namespace: string; service: string };
  trustDomain: () => string;
  secureContext: () => SecureContext | undefined;
  /** ALPN identifiers offered; `h2` is preferred when the peer accepts it. */
  alpn: () => string[];
  connectTimeoutMs: number;
  /** Sessions of verified peers of this upstream, for resumption. */
  sessions: PeerSessionCache;
  /** Called for each TLS connection opened to a peer, with whether it resumed a session. */
  onHandshake?: (resumed: boolean) => void;
  /** Most HTTP/1.1 connections kept per peer instance. */
  maxSocketsPerPeer?: number;
  /**
   * Admits a new connection against the upstream's circuit breaker; the release function runs when
   * the connection closes. Every connection is admitted when absent.
   */
  admitConnection?: () => Admission | TrafficRejection;
  /** Called before a connection is closed because the peer's certificate expired; the owner counts and logs it. */
  onPeerCertExpired?: (endpoint: Endpoint, notAfter: number) => void;
}

interface PeerEntry {
  /** The client context the channel was opened with. A renewal or a new trust bundle replaces it. */
  context?: SecureContext;
  h2?: Promise<ClientHttp2Session>;
  /** True while the HTTP/2 session is connected. */
  ready?: boolean;
  session?: ClientHttp2Session;
  agent?: Agent;
}

/**
 * Pooled connections to the instances of one upstream: one HTTP/2 session per instance, which
 * multiplexes every request, or, when the peer negotiates HTTP/1.1, an agent that keeps idle
 * connections alive for reuse.
 */
export class PeerPool {
  readonly #options: PeerPoolOptions;
  readonly #peers = new Map<string, PeerEntry>();

  constructor(options: PeerPoolOptions) {
    this.#options = options;
  }

  /** Returns a channel to `endpoint`, connecting and verifying the peer when no channel is open. */
  channel(endpoint: Endpoint): Promise<PeerChannel> {
    return this.#channel(endpoint, false);
  }

  /** Implements `channel`. `retried` is set on the one retry after a session closed during the wait. */
  async #channel(endpoint: Endpoint, retried: boolean): Promise<PeerChannel> {
    const key = endpointKey(endpoint);
    let entry = this.#peers.get(key);
    // A channel opened with an earlier SVID or trust bundle is retired, so that no pooled connection
    // outlives the renewal of its client certificate. Its requests in flight finish first.
    if (entry?.context !== undefined && entry.context !== this.#options.secureContext()) {
      this.#peers.delete(key);
      retire(entry);
      entry = undefined;
    }
    if (entry === undefined) {
      entry = {};
      this.#peers.set(key, entry);
    }
    if (entry.agent !== undefined) return { kind: 'h1', agent: entry.agent };
    if (entry.h2 === undefined) {
      const pending = this.#openSession(endpoint, key, entry);
      entry.h2 = pending;
      pending.catch(() => {
        if (entry.h2 === pending) entry.h2 = undefined;
      });
    }
    const session = await entry.h2;
    if (session === undefined) return { kind: 'h1', agent: entry.agent! };
    // A session retired by a renewal while this call waited takes no new streams, so dial once more.
    if (session.closed && !retried) return this.#channel(endpoint, true);
    return { kind: 'h2', session };
  }

  /** True when a request to `endpoint` can be sent without opening a connection first. */
  isReady(endpoint: Endpoint): boolean {
    const entry = this.#peers.get(endpointKey(endpoint));
    return entry !== undefined && (entry.agent !== undefined || entry.ready === true);
  }

  /** Opens a dedicated connection that negotiates HTTP/1.1, for an Upgrade request. */
  async dedicatedHttp1(endpoint: Endpoint): Promise<Duplex> {
    return this.#dial(endpoint, ['http/1.1']);
  }

  /** Closes every pooled connection; requests in flight on HTTP/2 sessions finish first. */
  close(): void {
    for (const entry of this.#peers.values()) {
      void entry.h2?.then((session) => session?.close(), () => undefined);
      entry.agent?.destroy();
    }
    this.#peers.clear();
  }

  /** Drops the pooled channel of an instance, such as one that left the catalog or was ejected, and closes its connections. */
  forget(endpoint: Endpoint): void {
    const key = endpointKey(endpoint);
    const entry = this.#peers.get(key);
    if (entry === undefined) return;
    this.#peers.delete(key);
    void entry.h2?.then((session) => session?.close(), () => undefined);
    entry.agent?.destroy();
  }

  async #dial(endpoint: Endpoint, alpn: string[]): Promise<import('node:tls').TLSSocket> {
    const secureContext = this.#options.secureContext();
    if (secureContext === undefined) throw new PeerConnectError('SEALMESH_ERR_ENROLLMENT_FAILED', 'the proxy has no SVID yet');
    const admitted = this.#options.admitConnection?.() ?? { admitted: true, established: () => undefined, release: () => undefined };
    if (!admitted.admitted) throw new CircuitOpenError(admitted);
    let socket: import('node:tls').TLSSocket;
    try {
      socket = await connectPeer(
        { endpoint, expected: this.#options.expected, trustDomain: this.#options.trustDomain(), secureContext, alpn, connectTimeoutMs: this.#options.connectTimeoutMs },
        this.#options.sessions,
        (_socket, notAfter) => this.#options.onPeerCertExpired?.(endpoint, notAfter),
      );
    } catch (error) {
      admitted.release();
      throw error;
    }
    admitted.established();
    socket.once('close', admitted.release);
    this.#options.onHandshake?.(socket.isSessionReused());
    return socket;
  }

  /**
   * Connects and, when the peer selects `h2`, wraps the connection in an HTTP/2 session. When it
   * selects HTTP/1.1 the entry switches to a keep-alive agent and this resolves to undefined.
   */
  async #openSession(endpoint: Endpoint, key: string, entry: PeerEntry): Promise<ClientHttp2Session> {
    const alpn = this.#options.alpn();
    entry.context = this.#options.secureContext();
    const socket = await this.#dial(endpoint, alpn);
    if (socket.alpnProtocol === 'http/1.1') {
      socket.destroy();
      entry.agent = this.#http1Agent(endpoint);
      return undefined as unknown as ClientHttp2Session;
    }
    if (socket.alpnProtocol !== 'h2') {
      socket.destroy();
      throw new PeerConnectError('SEALMESH_ERR_L7_PROTOCOL_MISMATCH', `instance ${endpoint.instanceId} accepted none of ${alpn.join(', ')}; does its proxy declare an HTTP protocol?`);
    }
    const session = http2Connect(`https://${endpoint.address}:${endpoint.port}`, { createConnection: () => socket, settings: HTTP2_SETTINGS });
    widenSessionWindow(session);
    entry.ready = true;
    entry.session = session;
    const drop = (): void => {
      if (this.#peers.get(key) !== entry || entry.session !== session) return;
      entry.session = undefined;
      entry.h2 = undefined;
      entry.ready = false;
    };
    session.once('close', drop);
    session.once('goaway', drop);
    session.on('error', drop);
    // An idle session does not keep the proxy's event loop alive on its own.
    session.unref();
    return session;
  }

  #http1Agent(endpoint: Endpoint): Agent {
    const dial = (alpn: string[]): Promise<import('node:tls').TLSSocket> => this.#dial(endpoint, alpn);
    const options: AgentOptions = { keepAlive: true, maxSockets: this.#options.maxSocketsPerPeer ?? 64 };
    const agent = new Agent(options);
    // The agent requests each connection through this hook; each one is dialled and verified like the
    // HTTP/2 sessions, with ALPN fixed to HTTP/1.1.
    agent.createConnection = (_options, callback): Duplex | undefined => {
      dial(['http/1.1']).then(
        (socket) => callback?.(null, socket),
        (error: Error) => callback?.(error, undefined as unknown as Duplex),
      );
      return undefined;
    };
    return agent;
  }
}

/**
 * Retires the channel of an entry dialled with an earlier SVID or trust bundle: no new request uses
 * it, and its requests in flight finish first. An HTTP/2 session closes once its streams end; an
 * HTTP/1.1 agent closes its idle connections now and each busy one when its response ends.
 */
function retire(entry: PeerEntry): void {
  void entry.h2?.then((session) => session?.close(), () => undefined);
  const agent = entry.agent;
  if (agent === undefined) return;
  agent.keepSocketAlive = () => false;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
}
