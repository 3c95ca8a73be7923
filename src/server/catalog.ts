import type { Store } from '../store/index.ts';
import type { InstanceAttestation } from './attestation.ts';
import { formatServiceRef } from '../spiffe/index.ts';
import { encodeJson, getJson, instanceKey, KEYS, listJson } from './records.ts';

export type HealthStatus = 'passing' | 'critical';

/** Binding of the app behind a proxy, as the proxy read it from the host's socket tables. */
export interface AppExposure {
  /** True when the app listens on a wildcard or non-loopback address. */
  exposed: boolean;
  /** The exposed addresses, such as `0.0.0.0:8080` or `[::]:8080`. */
  bindings: string[];
}

/** One running proxy and the app behind it. */
export interface Instance {
  id: string;
  namespace: string;
  service: string;
  spiffeId: string;
  /** Address and port of the proxy's inbound mTLS listener, as other proxies dial it. */
  address: string;
  port: number;
  /** Upstream services this instance calls; its snapshot carries their endpoints. */
  upstreams: string[];
  /** Application protocol of the service; records written before protocols existed are `tcp`. */
  protocol?: 'tcp' | 'http' | 'http2' | 'grpc';
  health: HealthStatus;
  healthOutput?: string;
  /** The app's binding as of the proxy's last health report; absent when the proxy never reported it. */
  appExposure?: AppExposure;
  /** The signed manifest the instance's proxy reports that it verified and enforces. */
  manifest?: { version: number; digest: string };
  registeredAt: string;
  svidSerial?: string;
  svidNotAfter?: string;
  /** The evidence the proxy last enrolled or renewed with; absent when it presented none. */
  attestation?: InstanceAttestation;
}

export interface ServiceSummary {
  name: string;
  namespace: string;
  instances: Instance[];
}

export class Catalog {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  async register(instance: Instance): Promise<void> {
    await this.#store.put(instanceKey(instance.namespace, instance.service, instance.id), encodeJson(instance));
  }

  async get(namespace: string, service: string, instanceId: string): Promise<Instance | undefined> {
    return (await getJson<Instance>(this.#store, instanceKey(namespace, service, instanceId)))?.value;
  }

  /** Updates one instance in place; returns false when it no longer exists. */
  async update(namespace: string, service: string, instanceId: string, change: (instance: Instance) => Instance): Promise<boolean> {
    const key = instanceKey(namespace, service, instanceId);
    // A compare on the revision keeps a concurrent deregistration from being undone.
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const current = await getJson<Instance>(this.#store, key);
      if (current === undefined) return false;
      const result = await this.#store.txn({
        compare: [{ key, modRevision: current.modRevision }],
        success: [{ type: 'put', key, value: encodeJson(change(current.value)) }],
      });
      if (result.succeeded) return true;
    }
    return false;
  }

  async deregister(namespace: string, service: string, instanceId: string): Promise<boolean> {
    return this.#store.delete(instanceKey(namespace, service, instanceId));
  }

  async instances(): Promise<Instance[]> {
    return (await listJson<Instance>(this.#store, KEYS.instancePrefix)).map((entry) => entry.value);
  }

  /** Lists instances of one service, `namespace/name` or `name`. */
  async instancesOf(namespace: string, service: string): Promise<Instance[]> {
    const prefix = `${KEYS.instancePrefix}${namespace}/${service}/`;
    return (await listJson<Instance>(this.#store, prefix)).map((entry) => entry.value);
  }

  async services(): Promise<ServiceSummary[]> {
    const byService = new Map<string, ServiceSummary>();
    for (const instance of await this.instances()) {
      const ref = formatServiceRef(instance);
      let summary = byService.get(ref);
      if (summary === undefined) {
        summary = { name: instance.service, namespace: instance.namespace, instances: [] };
        byService.set(ref, summary);
      }
      summary.instances.push(instance);
    }
    return [...byService.values()].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  }
}
