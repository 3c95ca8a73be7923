import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from '../log/index.ts';
import type { Store, Watcher, WatchEvent } from '../store/index.ts';
import type { DefaultPolicy, Intention } from '../policy/index.ts';
import type { SignedManifest } from '../manifest/index.ts';
import { formatServiceRef, parseServiceRef } from '../spiffe/index.ts';
import type { Catalog, Instance } from './catalog.ts';
import type { IntentionStore } from './intentions.ts';
import type { ManifestService } from './manifest-service.ts';
import { decodeJson, instanceKey as catalogInstanceKey, KEYS } from './records.ts';

/** One reachable instance of an upstream service. */
export interface Endpoint {
  instanceId: string;
  address: string;
  port: number;
  spiffeId: string;
  /** Application protocol the instance declared; `tcp` for instances registered without one. */
  protocol?: 'tcp' | 'http' | 'http2' | 'grpc';
}

/** Everything one proxy needs to serve traffic, pushed over its watch stream. */
export interface ProxySnapshot {
  /** Content hash; equal snapshots have equal versions. */
  version: string;
  trustDomain: string;
  /** Root certificates (PEM) that peers' SVIDs must chain to. */
  bundle: string[];
  defaultPolicy: DefaultPolicy;
  /** Intentions whose destination is this proxy's service or `*`. */
  intentions: Intention[];
  /** Healthy endpoints of each upstream the proxy declared, by upstream service reference. */
  upstreams: Record<string, Endpoint[]>;
  /**
   * Every applied signed manifest, oldest first, so that a proxy can check the chain against the
   * genesis digest it pinned. Empty while no manifest is applied.
   */
  manifestChain?: SignedManifest[];
}

/**
 * A snapshot ready to send: the NDJSON line `{"type":"snapshot","snapshot":...}` and its newline,
 * encoded once and shared by every stream whose instance has the same service and upstreams.
 */
export interface SnapshotMessage {
  version: string;
  snapshot: ProxySnapshot;
  line: Buffer;
}

export interface WatchStream {
  id: string;
  instance: Pick<Instance, 'id' | 'namespace' | 'service' | 'upstreams'>;
  /** Writes `message.line` to the stream. The buffer is shared, so the callee must not change it. */
  send(message: SnapshotMessage): void;
  /** Ends the stream from the server side. */
  end(): void;
  lastVersion?: string;
}

interface HubOptions {
  store: Store;
  catalog: Catalog;
  intentions: IntentionStore;
  trustDomain: string;
  bundle: () => string[];
  log: Logger;
  /** How long an instance stays registered after its watch stream ends. */
  leaseSeconds: number;
  /** Delay that batches bursts of store changes into one push. */
  debounceMs?: number;
  onPush?: (count: number) => void;
  /** Source of the default policy, of intentions that a manifest manages, and of the chain. */
  manifests: ManifestService;
}

/**
 * Pushes each connected proxy its snapshot within a second of a change, and keeps the catalog's
 * leases: an instance whose watch stream has been gone for `leaseSeconds` is deregistered.
 */
export class WatchHub {
  readonly #options: HubOptions;
  readonly #streams = new Map<string, WatchStream>();
  /** Deadline (ms since epoch) of each instance that has no open stream. */
  readonly #leaseDeadlines = new Map<string, number>();
  /**
   * Number of open streams of each instance. A proxy that renews opens its new stream before the
   * old one ends, and closing a stream must not scan every other stream, because after a renewal
   * each proxy closes one.
   */
  readonly #openStreams = new Map<string, number>();
  #watcher: Watcher | undefined;
  #pending: NodeJS.Timeout | undefined;
  #reaper: NodeJS.Timeout | undefined;
  #pushing: Promise<void> = Promise.resolve();
  /**
   * State every snapshot is built from, loaded once and shared by the streams that open until the
   * next change. Without it each new stream would read and open every catalog record, which makes
   * opening N streams cost N times the catalog.
   */
  #shared: Promise<SharedState> | undefined;
  /**
   * The endpoint each registered instance contributes to snapshots, as JSON, or null when it
   * contributes none because it is not passing. A catalog write that leaves this unchanged, such
   * as the new serial number of a renewal, changes no snapshot and so triggers no push.
   */
  readonly #endpoints = new Map<string, string | null>();

  constructor(options: HubOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    const now = Date.now();
    // The revision is read first: the watch replays every write after it, so an instance written
    // between the two reads is compared again when its event arrives.
    const revision = await this.#options.store.revision();
    for (const instance of await this.#options.catalog.instances()) {
      this.#leaseDeadlines.set(instanceRef(instance), now + this.#options.leaseSeconds * 1000);
      this.#endpoints.set(instanceKey(instance), endpointJson(instance));
    }
    this.#watcher = this.#options.store.watch('', revision, (event) => {
      if (event.key.startsWith('acl/') || event.key.startsWith('audit/')) return;
      if (event.key.startsWith(KEYS.instancePrefix) && !this.#endpointChanged(event)) return;
      this.schedulePush();
    });
    const reapEveryMs = Math.max(200, Math.min(5000, (this.#options.leaseSeconds * 1000) / 3));
    this.#reaper = setInterval(() => void this.#reap(), reapEveryMs);
    this.#reaper.unref();
  }

  /** Stops pushing and ends every open stream. */
  stop(): void {
    for (const stream of this.#streams.values()) stream.end();
    this.#streams.clear();
    this.#openStreams.clear();
    this.#watcher?.close();
    if (this.#pending !== undefined) clearTimeout(this.#pending);
    if (this.#reaper !== undefined) clearInterval(this.#reaper);
  }

  get streamCount(): number {
    return this.#streams.size;
  }

  /** Adds a stream and sends it its first snapshot at once. */
  async open(instance: WatchStream['instance'], send: WatchStream['send'], end: WatchStream['end']): Promise<WatchStream> {
    const stream: WatchStream = { id: randomUUID(), instance, send, end };
    this.#streams.set(stream.id, stream);
    const ref = instanceRef(instance);
    this.#openStreams.set(ref, (this.#openStreams.get(ref) ?? 0) + 1);
    this.#leaseDeadlines.delete(ref);
    // A change that lands while this state loads resets the cache and schedules a push, which
    // sends this stream the newer snapshot.
    const shared = await this.#currentShared();
    this.#pushTo(stream, shared);
    return stream;
  }

  /** Removes a stream; its instance keeps its registration for the lease period. */
  close(stream: WatchStream): void {
    if (!this.#streams.delete(stream.id)) return;
    const ref = instanceRef(stream.instance);
    const open = (this.#openStreams.get(ref) ?? 1) - 1;
    if (open > 0) {
      this.#openStreams.set(ref, open);
      return;
    }
    this.#openStreams.delete(ref);
    this.#leaseDeadlines.set(ref, Date.now() + this.#options.leaseSeconds * 1000);
  }

  /** Forgets the lease of an instance that deregistered itself. */
  forget(instance: Pick<Instance, 'id' | 'namespace' | 'service'>): void {
    this.#leaseDeadlines.delete(instanceRef(instance));
  }

  /** Records the endpoint of the instance that `event` writes and returns whether it changed. */
  #endpointChanged(event: WatchEvent): boolean {
    let next: string | null = null;
    if (event.type === 'put') {
      try {
        next = endpointJson(decodeJson<Instance>(event.key, event.value));
      } catch (error) {
        // An unreadable record cannot be compared, so every snapshot is rebuilt from the store.
        this.#options.log.error({ err: error, key: event.key }, 'failed to decode a catalog record from the store watch');
        this.#endpoints.delete(event.key);
        return true;
      }
    }
    const previous = this.#endpoints.get(event.key);
    if (next === null) this.#endpoints.delete(event.key);
    else this.#endpoints.set(event.key, next);
    return previous === undefined ? next !== null : previous !== next;
  }

  /** Rebuilds the snapshots from the store after a debounce, and sends each stream whose snapshot changed. */
  schedulePush(): void {
    this.#shared = undefined;
    if (this.#pending !== undefined) return;
    this.#pending = setTimeout(() => {
      this.#pending = undefined;
      this.#pushing = this.#pushing.then(() => this.#pushAll()).catch((error: unknown) => {
        this.#options.log.error({ err: error }, 'failed to push snapshots to proxies');
      });
    }, this.#options.debounceMs ?? 25);
  }

  async #pushAll(): Promise<void> {
    if (this.#streams.size === 0) return;
    const shared = await this.#currentShared();
    let pushed = 0;
    for (const stream of this.#streams.values()) {
      if (this.#pushTo(stream, shared)) pushed += 1;
    }
    if (pushed > 0) this.#options.onPush?.(pushed);
  }

  #currentShared(): Promise<SharedState> {
    if (this.#shared === undefined) {
      const loading = this.#loadShared();
      this.#shared = loading;
      // A failed load is not kept, so the next stream or push reads the store again.
      loading.catch(() => {
        if (this.#shared === loading) this.#shared = undefined;
      });
    }
    return this.#shared;
  }

  async #loadShared(): Promise<SharedState> {
    const [stored, instances, settings, manifestChain] = await Promise.all([
      this.#options.intentions.list(),
      this.#options.catalog.instances(),
      this.#options.manifests.settings(),
      this.#options.manifests.chain(),
    ]);
    const intentions = settings.manifestIntentions ?? stored;
    const healthyByService = new Map<string, Endpoint[]>();
    for (const instance of instances) {
      if (instance.health !== 'passing') continue;
      const ref = formatServiceRef(instance);
      const endpoints = healthyByService.get(ref) ?? [];
      endpoints.push({ instanceId: instance.id, address: instance.address, port: instance.port, spiffeId: instance.spiffeId, protocol: instance.protocol ?? 'tcp' });
      healthyByService.set(ref, endpoints);
    }
    return { intentions, healthyByService, bundle: this.#options.bundle(), defaultPolicy: settings.defaultPolicy, manifestChain, messages: new Map() };
  }

  #pushTo(stream: WatchStream, shared: SharedState): boolean {
    const message = snapshotMessage(stream.instance, shared, this.#options.trustDomain);
    if (message.version === stream.lastVersion) return false;
    stream.lastVersion = message.version;
    stream.send(message);
    return true;
  }

  async #reap(): Promise<void> {
    const now = Date.now();
    for (const [ref, deadline] of this.#leaseDeadlines) {
      if (deadline > now) continue;
      this.#leaseDeadlines.delete(ref);
      const [namespace, service, id] = ref.split('/') as [string, string, string];
      try {
        if (await this.#options.catalog.deregister(namespace, service, id)) {
          this.#options.log.info({ instance: id, service: `${namespace}/${service}` }, 'instance lease lapsed; deregistered');
        }
      } catch (error) {
        this.#options.log.error({ err: error, instance: id }, 'failed to deregister an instance whose lease lapsed');
      }
    }
  }
}

interface SharedState {
  intentions: Intention[];
  healthyByService: Map<string, Endpoint[]>;
  bundle: string[];
  defaultPolicy: DefaultPolicy;
  manifestChain: SignedManifest[];
  /**
   * The message of each group of streams whose snapshots are equal by construction: same service
   * and same upstreams. It is built and encoded once per group for this state.
   */
  messages: Map<string, SnapshotMessage>;
}

function instanceRef(instance: Pick<Instance, 'id' | 'namespace' | 'service'>): string {
  return `${instance.namespace}/${instance.service}/${instance.id}`;
}

/** Returns the store key of an instance's catalog record. */
function instanceKey(instance: Pick<Instance, 'id' | 'namespace' | 'service'>): string {
  return catalogInstanceKey(instance.namespace, instance.service, instance.id);
}

/** Returns the endpoint that `instance` adds to snapshots as JSON, or null when it is not passing. */
function endpointJson(instance: Instance): string | null {
  if (instance.health !== 'passing') return null;
  return JSON.stringify([instance.id, instance.namespace, instance.service, instance.address, instance.port, instance.spiffeId]);
}

/** Returns the message of `instance`'s snapshot, building it once per group of equal snapshots. */
function snapshotMessage(instance: WatchStream['instance'], shared: SharedState, trustDomain: string): SnapshotMessage {
  const group = JSON.stringify([instance.namespace, instance.service, instance.upstreams]);
  let message = shared.messages.get(group);
  if (message === undefined) {
    const snapshot = buildSnapshot(instance, shared, trustDomain);
    const line = Buffer.from(`${JSON.stringify({ type: 'snapshot', snapshot })}\n`, 'utf8');
    message = { version: snapshot.version, snapshot, line };
    shared.messages.set(group, message);
  }
  return message;
}

function buildSnapshot(instance: WatchStream['instance'], shared: SharedState, trustDomain: string): ProxySnapshot {
  const self = formatServiceRef(instance);
  const intentions = shared.intentions
    .filter((intention) => intention.destination === self || intention.destination === '*')
    .sort((a, b) => `${a.source}|${a.destination}`.localeCompare(`${b.source}|${b.destination}`));
  const upstreams: Record<string, Endpoint[]> = {};
  for (const upstream of instance.upstreams) {
    const ref = formatServiceRef(parseServiceRef(upstream));
    upstreams[upstream] = [...(shared.healthyByService.get(ref) ?? [])].sort((a, b) => a.instanceId.localeCompare(b.instanceId));
  }
  const body = { trustDomain, bundle: shared.bundle, defaultPolicy: shared.defaultPolicy, intentions, upstreams, manifestChain: shared.manifestChain };
  const version = createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16);
  return { version, ...body };
}
