import type { AuditActor, AuditLog } from '../audit/index.ts';
import type { Logger } from '../log/index.ts';
import type { CertificateAuthority, RootPrune, RootRotation } from '../pki/index.ts';
import type { ServerMetrics } from './metrics.ts';

/** How often the server tries to prune a retired root. */
export const CA_PRUNE_INTERVAL_MS = 60_000;

/**
 * Runs the root rotation steps of the control plane around the CA. Each step is audited, logged
 * and counted. After every change of the bundle the server publishes it: trust-bundle.pem, a
 * server certificate under the new chain, and a push to every proxy.
 */
export class CaRotation {
  readonly #ca: CertificateAuthority;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #metrics: ServerMetrics;
  readonly #onBundleChanged: () => Promise<void>;

  constructor(options: { ca: CertificateAuthority; audit: AuditLog; log: Logger; metrics: ServerMetrics; onBundleChanged: () => Promise<void> }) {
    this.#ca = options.ca;
    this.#audit = options.audit;
    this.#log = options.log;
    this.#metrics = options.metrics;
    this.#onBundleChanged = options.onBundleChanged;
    this.#metrics.caRoots.set(this.#ca.bundle().length);
  }

  /** Rotates the root (see `CertificateAuthority.rotateRoot`) and publishes the new bundle. */
  async rotate(actor: AuditActor): Promise<RootRotation> {
    const result = await this.#ca.rotateRoot();
    await this.#audit.append({
      action: 'ca.rotate',
      actor,
      subject: result.root.serialNumber,
      details: {
        custody: this.#ca.custodyName,
        retiredRoot: result.retiredRoot.serialNumber,
        rootFingerprintSha256: result.root.fingerprintSha256,
        intermediate: result.intermediate.serialNumber,
        prunableAfter: result.prunableAfter,
      },
    });
    this.#metrics.caRootRotations.inc({ step: 'rotate' });
    this.#log.info(
      { root: result.root.serialNumber, retiredRoot: result.retiredRoot.serialNumber, prunableAfter: result.prunableAfter, accessorId: actor.accessorId },
      'CA root rotated; both roots are in the trust bundle until the retired one is pruned',
    );
    await this.#published();
    return result;
  }

  /** Prunes the retired root when its time has come, and publishes the smaller bundle. */
  async prune(actor: AuditActor): Promise<RootPrune> {
    const result = await this.#ca.pruneRetiredRoot();
    if (!result.pruned) return result;
    await this.#audit.append({
      action: 'ca.prune',
      actor,
      ...(result.retiredRootSerial !== undefined ? { subject: result.retiredRootSerial } : {}),
      details: { destroyedKeys: result.destroyedKeys ?? [], keysNotDestroyed: result.keysNotDestroyed ?? [] },
    });
    this.#metrics.caRootRotations.inc({ step: 'prune' });
    if (result.keysNotDestroyed !== undefined) {
      this.#log.error({ retiredRoot: result.retiredRootSerial, keys: result.keysNotDestroyed }, 'retired CA keys could not be destroyed in the key custody; they stay unused');
    }
    this.#log.info({ retiredRoot: result.retiredRootSerial, destroyedKeys: result.destroyedKeys }, 'retired CA root pruned from the trust bundle');
    await this.#published();
    return result;
  }

  /** Prunes on the server's timer. Failures are logged, and the next interval tries again. */
  async pruneOnTimer(): Promise<void> {
    try {
      await this.prune({ kind: 'system', accessorId: 'server' });
    } catch (error) {
      this.#log.error({ err: error }, 'failed to prune the retired CA root; retrying at the next interval');
    }
  }

  async #published(): Promise<void> {
    this.#metrics.caRoots.set(this.#ca.bundle().length);
    await this.#onBundleChanged();
  }
}
