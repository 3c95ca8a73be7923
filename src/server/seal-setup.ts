import { existsSync, mkdirSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { SealmeshError } from '../errors/index.ts';
import {
  KeyFileSealProvider,
  PassphraseSealProvider,
  Pkcs11Counter,
  Pkcs11SealProvider,
  ShamirSealProvider,
  defaultKeyFilePath,
  KEY_FILE_ENV,
  type MonotonicCounter,
  type PassphraseParams,
  type SealProvider,
} from '../seal/index.ts';
import { openSqliteBackend, SealedStore, type SqliteStore } from '../store/index.ts';

/** The seal provider chosen with `--seal` and its options. */
export type SealConfig =
  | { provider: 'keyfile'; keyFile?: string }
  | { provider: 'passphrase'; passphrase: () => Promise<string> }
  | { provider: 'pkcs11'; module: string; tokenLabel: string; pin: string; keyLabel: string }
  | { provider: 'shamir' };

/** A PKCS#11 data object used as the monotonic counter that detects a whole-directory rollback. */
export interface CounterConfig {
  module: string;
  tokenLabel: string;
  pin: string;
  label: string;
}

export const DEFAULT_SEAL: SealConfig = { provider: 'keyfile' };

/** File name of the sealed store inside the data directory. */
export const STORE_FILE = 'sealmesh.db';

/** Returns the default path of the sealed-state control socket: a sibling of the data directory. */
export function defaultUnsealSocketPath(dataDir: string): string {
  const absolute = resolve(dataDir);
  return join(dirname(absolute), `${basename(absolute)}.unseal.sock`);
}

/** Public parameters of a Shamir-sealed store, kept in the clear next to it. */
interface ShamirParams {
  verification: string;
  shares: number;
  threshold: number;
}

/** The outcome of opening the data directory. */
export type OpenedState =
  | { state: 'open'; store: SealedStore; backend: SqliteStore; provider: SealProvider; created: boolean; counter?: MonotonicCounter }
  /** A Shamir-sealed store that needs key shares; `verification` checks a combined key. */
  | { state: 'sealed'; backend: SqliteStore; verification: Uint8Array; threshold: number; shares: number; counter?: MonotonicCounter }
  /** A new directory with the Shamir provider, waiting for `operator init` to create the key. */
  | { state: 'uninitialized'; backend: SqliteStore; counter?: MonotonicCounter };

export interface OpenOptions {
  dataDir: string;
  seal: SealConfig;
  counter?: CounterConfig;
  acceptRollback?: boolean;
  onIntegrityError?: (error: SealmeshError) => void;
  onCounterError?: (error: unknown) => void;
}

/**
 * Opens the rollback counter. It is created only together with a new store: a counter missing for
 * an existing store is an error, because deleting the counter is one way to hide a rollback.
 */
export async function openCounter(config: CounterConfig | undefined, createIfMissing = false): Promise<MonotonicCounter | undefined> {
  if (config === undefined) return undefined;
  try {
    return await Pkcs11Counter.open(config);
  } catch (error) {
    if (createIfMissing && error instanceof SealmeshError && error.code === 'SEALMESH_ERR_SEAL_KEY_MISSING') return Pkcs11Counter.create(config);
    throw error;
  }
}

/**
 * Throws SEALMESH_ERR_INTEGRITY_ROLLBACK when `counter` has advanced although the data directory
 * contains no store. The counter advances only once a store has written, so a store existed there
 * and was deleted. Starting a new cluster would roll the directory back to empty without notice.
 */
async function rejectDeletedStore(counter: MonotonicCounter, dataDir: string): Promise<void> {
  const value = await counter.read();
  if (value === 0n) return;
  throw new SealmeshError(
    'SEALMESH_ERR_INTEGRITY_ROLLBACK',
    `the data directory ${dataDir} contains no store, but the rollback counter ${counter.name} is at ${value}, so a store was there and has been deleted. ` +
      'Restore the data directory from a trusted backup or a snapshot (`sealmesh operator snapshot restore`). To start a new cluster on purpose, use another counter label',
  );
}

/**
 * Opens the store in `dataDir` with the configured seal provider, creating both on first start.
 * The keyring is unwrapped before any record is read, so a missing, wrong or corrupted seal key
 * fails with the provider's error before the data is used, and the store is verified in full
 * before it is returned.
 */
export async function openDataDirectory(options: OpenOptions): Promise<OpenedState> {
  const backend = openSqliteBackend(join(options.dataDir, STORE_FILE));
  // Closed again when the open fails, so a failed start leaves no HSM session or KEK behind.
  let counter: MonotonicCounter | undefined;
  let provider: SealProvider | undefined;
  try {
    // A store whose meta record was deleted must not pass for an empty one and be initialised anew.
    const meta = await SealedStore.readMetaStrict(backend);
    counter = await openCounter(options.counter, meta === undefined);
    if (meta === undefined && counter !== undefined) await rejectDeletedStore(counter, options.dataDir);
    const storeOptions = {
      ...(counter !== undefined ? { counter } : {}),
      ...(options.onIntegrityError !== undefined ? { onIntegrityError: options.onIntegrityError } : {}),
      ...(options.onCounterError !== undefined ? { onCounterError: options.onCounterError } : {}),
    };
    if (meta !== undefined && meta.providerName !== options.seal.provider) {
      throw new SealmeshError(
        'SEALMESH_ERR_CONFIG_INVALID',
        `the store in ${options.dataDir} is sealed with the ${meta.providerName} provider, but the server was started with --seal ${options.seal.provider}; start it with --seal ${meta.providerName}`,
      );
    }
    const seal = options.seal;
    if (seal.provider === 'shamir') {
      if (meta === undefined) return { state: 'uninitialized', backend, ...(counter !== undefined ? { counter } : {}) };
      const params = meta.providerParams as unknown as ShamirParams;
      return {
        state: 'sealed',
        backend,
        verification: Buffer.from(params.verification, 'base64'),
        threshold: params.threshold,
        shares: params.shares,
        ...(counter !== undefined ? { counter } : {}),
      };
    }
    if (meta === undefined) {
      const created = await createProvider(seal, options.dataDir);
      provider = created.provider;
      const store = await SealedStore.initialize(backend, provider, { ...storeOptions, providerName: seal.provider, providerParams: created.params });
      return { state: 'open', store, backend, provider, created: true, ...(counter !== undefined ? { counter } : {}) };
    }
    provider = await openProvider(seal, options.dataDir, meta.providerParams);
    const store = await SealedStore.open(backend, provider, { ...storeOptions, ...(options.acceptRollback === true ? { acceptRollback: true } : {}) });
    return { state: 'open', store, backend, provider, created: false, ...(counter !== undefined ? { counter } : {}) };
  } catch (error) {
    await backend.close();
    await provider?.close();
    await counter?.close();
    throw error;
  }
}

/** Opens a Shamir-sealed store with the provider built from enough key shares. */
export async function openWithShamir(
  backend: SqliteStore,
  provider: ShamirSealProvider,
  counter: MonotonicCounter | undefined,
  extra: Pick<OpenOptions, 'onIntegrityError' | 'onCounterError'> = {},
): Promise<SealedStore> {
  return SealedStore.open(backend, provider, { ...(counter !== undefined ? { counter } : {}), ...extra });
}

/** Creates the Shamir key, splits it into shares and initialises the store under it. */
export async function initializeWithShamir(
  backend: SqliteStore,
  shares: number,
  threshold: number,
  counter: MonotonicCounter | undefined,
  extra: Pick<OpenOptions, 'onIntegrityError' | 'onCounterError'> = {},
): Promise<{ store: SealedStore; provider: ShamirSealProvider; shares: string[] }> {
  const created = ShamirSealProvider.create({ shares, threshold });
  const params: ShamirParams = { verification: Buffer.from(created.verification).toString('base64'), shares, threshold };
  const store = await SealedStore.initialize(backend, created.provider, {
    ...(counter !== undefined ? { counter } : {}),
    ...extra,
    providerName: 'shamir',
    providerParams: params as unknown as Record<string, unknown>,
  });
  return { store, provider: created.provider, shares: created.shares };
}

async function createProvider(seal: Exclude<SealConfig, { provider: 'shamir' }>, dataDir: string): Promise<{ provider: SealProvider; params: Record<string, unknown> }> {
  switch (seal.provider) {
    case 'keyfile': {
      const path = seal.keyFile ?? defaultKeyFilePath(dataDir);
      // A key file that an operator provisioned before the first start is used as it is.
      const provider = existsSync(path) ? await KeyFileSealProvider.open(path, { dataDir }) : await KeyFileSealProvider.create(path, { dataDir });
      return { provider, params: { keyFile: path } };
    }
    case 'passphrase': {
      const { provider, params } = await PassphraseSealProvider.create(await seal.passphrase());
      return { provider, params: params as unknown as Record<string, unknown> };
    }
    case 'pkcs11': {
      try {
        return { provider: await Pkcs11SealProvider.open(seal), params: { tokenLabel: seal.tokenLabel, keyLabel: seal.keyLabel } };
      } catch (error) {
        if (!(error instanceof SealmeshError) || error.code !== 'SEALMESH_ERR_SEAL_KEY_MISSING') throw error;
        return { provider: await Pkcs11SealProvider.create(seal), params: { tokenLabel: seal.tokenLabel, keyLabel: seal.keyLabel } };
      }
    }
  }
}

export async function openProvider(seal: Exclude<SealConfig, { provider: 'shamir' }>, dataDir: string, params: Record<string, unknown>): Promise<SealProvider> {
  switch (seal.provider) {
    // The path and label recorded in the store follow a KEK rotation. Editing them gains nothing:
    // the keyring unwraps only under the KEK it was wrapped with.
    case 'keyfile': {
      // Precedence: --seal-key-file, then SEALMESH_SEAL_KEY_FILE, then the recorded path, then the default.
      const recorded = typeof params.keyFile === 'string' ? params.keyFile : undefined;
      const fromEnv = process.env[KEY_FILE_ENV] === '' ? undefined : process.env[KEY_FILE_ENV];
      return KeyFileSealProvider.open(seal.keyFile ?? fromEnv ?? recorded ?? defaultKeyFilePath(dataDir), { dataDir });
    }
    case 'passphrase':
      return PassphraseSealProvider.open(await seal.passphrase(), params as unknown as PassphraseParams);
    case 'pkcs11': {
      const recorded = typeof params.keyLabel === 'string' ? params.keyLabel : undefined;
      return Pkcs11SealProvider.open({ ...seal, keyLabel: recorded ?? seal.keyLabel });
    }
  }
}

/**
 * Creates a provider of the same kind with new key material, for `operator rotate-kek`. Returns the
 * public parameters to store with the rewrapped keyring, and the new Shamir shares when the
 * provider is Shamir.
 */
export async function createRotatedProvider(
  kind: SealConfig['provider'],
  request: { keyFile?: string; passphrase?: string; keyLabel?: string; shares?: number; threshold?: number },
  current: SealConfig,
  dataDir: string,
): Promise<{ provider: SealProvider; params: Record<string, unknown>; shares?: string[] }> {
  switch (kind) {
    case 'keyfile': {
      if (request.keyFile === undefined) {
        throw new SealmeshError(
          'SEALMESH_ERR_BAD_REQUEST',
          'rotating a key-file seal needs the path of the new key file: pass --key-file PATH to `sealmesh operator rotate-kek` (keyFile in the API request)',
        );
      }
      const provider = await KeyFileSealProvider.create(resolve(request.keyFile), { dataDir });
      return { provider, params: { keyFile: resolve(request.keyFile) } };
    }
    case 'passphrase': {
      if (request.passphrase === undefined) {
        throw new SealmeshError(
          'SEALMESH_ERR_BAD_REQUEST',
          'rotating a passphrase seal needs the new passphrase: set SEALMESH_NEW_SEAL_PASSPHRASE for `sealmesh operator rotate-kek` (passphrase in the API request)',
        );
      }
      const { provider, params } = await PassphraseSealProvider.create(request.passphrase);
      return { provider, params: params as unknown as Record<string, unknown> };
    }
    case 'pkcs11': {
      if (current.provider !== 'pkcs11' || request.keyLabel === undefined) {
        throw new SealmeshError(
          'SEALMESH_ERR_BAD_REQUEST',
          'rotating a PKCS#11 seal needs the label of the new key: pass --key-label LABEL to `sealmesh operator rotate-kek` (keyLabel in the API request)',
        );
      }
      const provider = await Pkcs11SealProvider.create({ ...current, keyLabel: request.keyLabel });
      return { provider, params: { tokenLabel: current.tokenLabel, keyLabel: request.keyLabel } };
    }
    case 'shamir': {
      const shares = request.shares ?? 5;
      const threshold = request.threshold ?? 3;
      const created = ShamirSealProvider.create({ shares, threshold });
      const params: ShamirParams = { verification: Buffer.from(created.verification).toString('base64'), shares, threshold };
      return { provider: created.provider, params: params as unknown as Record<string, unknown>, shares: created.shares };
    }
  }
}

/** Describes the seal provider, its strength and rollback detection for the start-up log. */
export function describeSeal(provider: SealProvider, counter: MonotonicCounter | undefined): { provider: string; strength: string; rollbackDetection: string } {
  return {
    provider: provider.name,
    strength: provider.strength,
    rollbackDetection:
      counter === undefined
        ? 'off: no monotonic counter is configured, so a restore of an older copy of the whole data directory is not detected'
        : `on: counter ${counter.name}`,
  };
}

/** Creates the data directory with mode 0700, or throws SEALMESH_ERR_CONFIG_INVALID when a file is in the way. */
export function createDataDirectory(dataDir: string): void {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--data-dir ${dataDir} is not a directory (${code}); pass a directory, or a path that does not exist yet`, { cause: error });
    }
    throw error;
  }
}
