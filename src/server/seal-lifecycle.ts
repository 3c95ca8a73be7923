import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SealmeshError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';
import { KeyFileSealProvider, ShamirUnsealer, type MonotonicCounter, type SealProvider } from '../seal/index.ts';
import type { SealedStore, SqliteStore, VerifyReport } from '../store/index.ts';
import type { ControlPlane } from './server.ts';
import {
  createRotatedProvider,
  DEFAULT_SEAL,
  defaultUnsealSocketPath,
  describeSeal,
  initializeWithShamir,
  openDataDirectory,
  openWithShamir,
  type OpenedState,
} from './seal-setup.ts';
import { UnsealSocket, type SealStatus } from './unseal.ts';
import type { ServerMetrics } from './metrics.ts';

/** Records re-encrypted per step of a background data-key rotation. */
const REENCRYPT_BATCH = 100;
/** Pause between re-encryption steps, so that rotation never starves live writes. */
const REENCRYPT_PAUSE_MS = 50;

/** File in the data directory naming the pid of the server that has it open. */
export const PID_FILE = 'server.pid';

/** Throws SEALMESH_ERR_CONFLICT when the server named in the pid file of `dataDir` is still running. */
export function assertServerStopped(dataDir: string, next = 'stop it first'): void {
  const pidFile = join(dataDir, PID_FILE);
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return;
  try {
    process.kill(pid, 0);
  } catch {
    return;
  }
  throw new SealmeshError('SEALMESH_ERR_CONFLICT', `a sealmesh server (pid ${pid}) is running on ${dataDir}; ${next}`);
}

export interface KekRotationRequest {
  keyFile?: string;
  passphrase?: string;
  keyLabel?: string;
  keyShares?: number;
  keyThreshold?: number;
}

/**
 * The seal side of a running server. It opens the sealed store, or waits sealed for key shares.
 * It also runs the operations that need the seal provider: verification, snapshots, KEK rotation,
 * and data-key rotation with background re-encryption that resumes after a restart.
 */
export class SealLifecycle {
  readonly #server: ControlPlane;
  readonly #log: Logger;
  #store: SealedStore | undefined;
  #backend: SqliteStore | undefined;
  #provider: SealProvider | undefined;
  #counter: MonotonicCounter | undefined;
  #pending: Extract<OpenedState, { state: 'sealed' | 'uninitialized' }> | undefined;
  #unsealer: ShamirUnsealer | undefined;
  /** Shares issued and threshold of the current Shamir split, kept after unsealing for the status. */
  #shamirSplit: { shares: number; threshold: number } | undefined;
  #socket: UnsealSocket | undefined;
  #reencrypting: Promise<void> | undefined;
  #recordsUnderOldKeys = 0;
  #stopping = false;
  #resolveOpened!: () => void;
  readonly opened: Promise<void>;

  constructor(server: ControlPlane, log: Logger) {
    this.#server = server;
    this.#log = log;
    this.opened = new Promise((resolve) => {
      this.#resolveOpened = resolve;
    });
  }

  /** The server's data directory. */
  get dataDir(): string {
    return this.#dataDir;
  }

  get #dataDir(): string {
    return this.#server.options.dataDir;
  }

  async start(): Promise<void> {
    const options = this.#server.options;
    // Two servers on one store would break the single-writer rule of the sealed store.
    assertServerStopped(this.#dataDir);
    const opened = await openDataDirectory({
      dataDir: this.#dataDir,
      seal: options.seal ?? DEFAULT_SEAL,
      ...(options.counter !== undefined ? { counter: options.counter } : {}),
      ...this.#storeHandlers(),
    });
    writeFileSync(join(this.#dataDir, PID_FILE), `${process.pid}\n`, { mode: 0o600 });
    if (opened.state === 'open') {
      await this.#openStore(opened.store, opened.backend, opened.provider, opened.counter, opened.created);
      return;
    }
    this.#pending = opened;
    this.#counter = opened.counter;
    if (opened.state === 'sealed') {
      this.#unsealer = new ShamirUnsealer(opened.verification);
      this.#shamirSplit = { shares: opened.shares, threshold: opened.threshold };
    }
    const socketPath = options.unsealSocket ?? defaultUnsealSocketPath(this.#dataDir);
    this.#socket = new UnsealSocket(socketPath, {
      status: () => this.sealStatus(),
      init: (shares, threshold) => this.#initShamir(shares, threshold),
      unseal: (share) => this.#unseal(share),
    }, this.#log);
    await this.#socket.start();
    this.#log.warn(
      { socket: socketPath },
      opened.state === 'sealed'
        ? `the server is sealed: submit key shares with \`sealmesh operator unseal --data-dir ${this.#dataDir}\``
        : `the data directory is not initialised: run \`sealmesh operator init --key-shares N --key-threshold M --data-dir ${this.#dataDir}\``,
    );
  }

  /** Called by the server once its API is listening. */
  markOpen(): void {
    this.#resolveOpened();
  }

  sealStatus(): SealStatus {
    const sealed = this.#store === undefined;
    const threshold = this.#shamirSplit?.threshold ?? 0;
    return {
      sealed,
      initialized: this.#pending?.state !== 'uninitialized',
      provider: this.#provider?.name ?? (this.#server.options.seal ?? DEFAULT_SEAL).provider,
      progress: sealed ? (this.#unsealer?.status().progress ?? 0) : threshold,
      threshold,
      shares: this.#shamirSplit?.shares ?? 0,
    };
  }

  /** Describes the seal provider, counter and data-key rotation for `GET /v1/status`. */
  describe(): Record<string, unknown> {
    if (this.#provider === undefined) return { provider: 'none', note: 'the store was opened by the caller' };
    return { ...describeSeal(this.#provider, this.#counter), dataKeyRotation: { recordsUnderOldKeys: this.#recordsUnderOldKeys } };
  }

  async verify(): Promise<VerifyReport> {
    return this.#requireStore().verify();
  }

  /** Writes a consistent copy of the sealed store file to `path`. The copy stays sealed. */
  async snapshotTo(path: string): Promise<void> {
    this.#requireStore();
    await (this.#backend as SqliteStore).snapshotTo(path);
  }

  /** Rewraps the keyring under new key material of the same provider kind. */
  async rotateKek(request: KekRotationRequest): Promise<{ provider: string; shares?: string[] }> {
    const store = this.#requireStore();
    const current = this.#server.options.seal ?? DEFAULT_SEAL;
    const rotated = await createRotatedProvider(
      current.provider,
      {
        ...(request.keyFile !== undefined ? { keyFile: request.keyFile } : {}),
        ...(request.passphrase !== undefined ? { passphrase: request.passphrase } : {}),
        ...(request.keyLabel !== undefined ? { keyLabel: request.keyLabel } : {}),
        ...(request.keyShares !== undefined ? { shares: request.keyShares } : {}),
        ...(request.keyThreshold !== undefined ? { threshold: request.keyThreshold } : {}),
      },
      current,
      this.#dataDir,
    );
    await store.rewrapKeyring(rotated.provider, { providerName: rotated.provider.name, providerParams: rotated.params });
    const previous = this.#provider;
    this.#provider = rotated.provider;
    if (rotated.shares !== undefined) this.#shamirSplit = { shares: Number(rotated.params.shares), threshold: Number(rotated.params.threshold) };
    await previous?.close();
    this.#log.info({ provider: rotated.provider.name }, 'key-encryption key rotated; the keyring is rewrapped');
    return { provider: rotated.provider.name, ...(rotated.shares !== undefined ? { shares: rotated.shares } : {}) };
  }

  /** Adds a new data key and re-encrypts every record under it in the background. */
  async rotateDataKey(): Promise<{ recordsUnderOldKeys: number }> {
    const store = this.#requireStore();
    const dataKeyId = await store.rotateDataKey();
    // rotateDataKey returns the new key id. A batch of 0 re-encrypts nothing and returns the count.
    this.#recordsUnderOldKeys = await store.reencryptBatch(0);
    this.#log.info({ dataKeyId, recordsUnderOldKeys: this.#recordsUnderOldKeys }, 'data key rotated; re-encrypting records in the background');
    this.#startReencryption();
    return { recordsUnderOldKeys: this.#recordsUnderOldKeys };
  }

  /** Waits for a running re-encryption step to finish; the rest resumes at the next start. */
  async stopBackground(): Promise<void> {
    this.#stopping = true;
    await this.#reencrypting;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await this.#socket?.stop();
    if (this.#store === undefined) await this.#pending?.backend.close();
    await this.#provider?.close();
    await this.#counter?.close();
    rmSync(join(this.#dataDir, PID_FILE), { force: true });
  }

  async #openStore(store: SealedStore, backend: SqliteStore, provider: SealProvider, counter: MonotonicCounter | undefined, created: boolean): Promise<void> {
    this.#store = store;
    this.#backend = backend;
    this.#provider = provider;
    this.#counter = counter;
    // The key file can come from four places (see openProvider), so the log names the one opened.
    const keyFile = provider instanceof KeyFileSealProvider ? { keyFile: provider.path } : {};
    this.#log.info({ ...describeSeal(provider, counter), ...keyFile, created }, created ? 'sealed store created' : 'sealed store opened and verified');
    this.#recordsUnderOldKeys = store.openReport?.recordsUnderOldKeys ?? 0;
    if (this.#recordsUnderOldKeys > 0) {
      this.#log.info({ recordsUnderOldKeys: this.#recordsUnderOldKeys }, 'resuming re-encryption under the current data key');
      this.#startReencryption();
    }
    await this.#server.openWithStore(store);
  }

  async #initShamir(shares: number, threshold: number): Promise<{ shares: string[]; token: string; accessorId: string; trustDomain: string }> {
    const pending = this.#pending;
    if (pending?.state !== 'uninitialized') {
      throw new SealmeshError('SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED', 'the data directory is already initialised; unseal it with `sealmesh operator unseal`');
    }
    const created = await initializeWithShamir(pending.backend, shares, threshold, this.#counter, this.#storeHandlers());
    this.#pending = undefined;
    this.#shamirSplit = { shares, threshold };
    await this.#openStore(created.store, pending.backend, created.provider, this.#counter, true);
    const { token, accessorId } = await this.#server.bootstrapAcl();
    return { shares: created.shares, token, accessorId, trustDomain: this.#server.trustDomain };
  }

  async #unseal(share: string): Promise<SealStatus> {
    const pending = this.#pending;
    const unsealer = this.#unsealer;
    if (pending?.state !== 'sealed' || unsealer === undefined) {
      if (this.#store !== undefined) return this.sealStatus();
      throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', `the data directory is not initialised: run \`sealmesh operator init --key-shares N --key-threshold M --data-dir ${this.#dataDir}\` first`);
    }
    const progress = unsealer.submit(share);
    this.#log.info({ progress: progress.progress, threshold: progress.threshold }, 'key share accepted');
    if (!progress.unsealed) return this.sealStatus();
    const provider = unsealer.provider;
    const store = await openWithShamir(pending.backend, provider, this.#counter, this.#storeHandlers());
    this.#pending = undefined;
    this.#unsealer = undefined;
    await this.#openStore(store, pending.backend, provider, this.#counter, false);
    await this.#server.audit.append({ action: 'seal.unseal', actor: { kind: 'system', accessorId: 'unseal-socket' }, details: { provider: provider.name } });
    this.#log.info('server unsealed');
    return this.sealStatus();
  }

  #storeHandlers(): StoreHandlers {
    return storeHandlers(this.#log, this.#server.metrics);
  }

  #startReencryption(): void {
    if (this.#reencrypting !== undefined) return;
    const store = this.#requireStore();
    this.#reencrypting = (async () => {
      while (!this.#stopping) {
        try {
          this.#recordsUnderOldKeys = await store.reencryptBatch(REENCRYPT_BATCH);
        } catch (error) {
          this.#log.error({ err: error }, 're-encryption step failed; it resumes at the next start');
          return;
        }
        if (this.#recordsUnderOldKeys === 0) {
          this.#log.info('every record is under the current data key; the old key is removed');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, REENCRYPT_PAUSE_MS));
      }
    })().finally(() => {
      this.#reencrypting = undefined;
    });
  }

  #requireStore(): SealedStore {
    if (this.#store === undefined) {
      throw new SealmeshError('SEALMESH_ERR_NOT_INITIALIZED', 'this operation needs the sealed store, which this server did not open');
    }
    return this.#store;
  }
}

/** Callbacks through which the sealed store reports failures that no caller receives. */
export interface StoreHandlers {
  onIntegrityError: (error: SealmeshError) => void;
  onCounterError: (error: unknown) => void;
}

/**
 * Returns handlers that log the store's integrity and counter failures, and count an integrity
 * failure (a stored record that failed authentication and was not delivered) as a rejection.
 */
export function storeHandlers(log: Logger, metrics: ServerMetrics): StoreHandlers {
  return {
    onIntegrityError: (error) => {
      metrics.rejections.inc({ code: error.code });
      log.error({ code: error.code, reason: error.message }, 'a stored record failed authentication and was not delivered');
    },
    onCounterError: (error) => log.error({ err: error }, 'failed to advance the rollback counter; the next start may report a rollback'),
  };
}
