import { request } from '../node/http.ts';
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { isErrorCode, SealmeshError } from '../errors/index.ts';
import { clientFromFlags, print, type ClientFlags } from './output.ts';
import { addSealOptions, counterFromFlags, sealFromFlags, type SealFlags } from './seal-flags.ts';
import type { CaStatus, RootPrune, RootRotation } from '../pki/index.ts';

/** Sends one JSON request over the sealed-state control socket of a Shamir-sealed server. */
function socketRequest<T>(socketPath: string, method: string, path: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request({ socketPath, method, path, headers: payload === undefined ? {} : { 'content-type': 'application/json' }, timeout: 60_000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        let parsed: { error?: { code?: unknown; message?: unknown } } | undefined;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof parsed;
        } catch {
          parsed = undefined;
        }
        if (response.statusCode === 200) return resolve(parsed as T);
        const error = parsed?.error;
        if (error !== undefined && isErrorCode(error.code) && typeof error.message === 'string') return reject(new SealmeshError(error.code, error.message));
        reject(new SealmeshError('SEALMESH_ERR_INTERNAL', `${method} ${path} failed with HTTP status ${response.statusCode ?? 0}`));
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (error: Error & { code?: string }) =>
      reject(new SealmeshError('SEALMESH_ERR_SERVER_UNREACHABLE', `cannot reach the sealed-state socket ${socketPath}: ${error.code ?? error.message}; check --unseal-socket and --data-dir`)),
    );
    req.end(payload);
  });
}

/** Resolves the sealed-state socket path from the flags. */
async function socketPath(flags: { unsealSocket?: string; dataDir?: string }): Promise<string> {
  if (flags.unsealSocket !== undefined) return flags.unsealSocket;
  if (flags.dataDir !== undefined) {
    const { defaultUnsealSocketPath } = await import('../server/seal-setup.ts');
    return defaultUnsealSocketPath(flags.dataDir);
  }
  throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'pass --unseal-socket PATH or --data-dir DIR to reach a Shamir-sealed server');
}

/** Reads key shares from standard input, one per line, so that they stay out of argv and shell history. */
async function readSharesFromStdin(): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').split('\n').map((line) => line.trim()).filter((line) => line.length > 0);
}

interface SealStatusResponse {
  sealed: boolean;
  initialized: boolean;
  provider: string;
  progress: number;
  threshold: number;
  shares: number;
}

function sealStatusText(status: SealStatusResponse): string {
  if (!status.initialized) return 'Not initialised: run `sealmesh operator init --key-shares N --key-threshold M`.';
  if (!status.sealed) return `Unsealed (provider ${status.provider}).`;
  return `Sealed: ${status.progress} of ${status.threshold} key shares submitted (${status.shares} issued).`;
}

function caStatusText(status: CaStatus): string {
  const lines = [`Key custody:   ${status.custody}`, `Intermediate:  ${status.intermediate.serialNumber} (expires ${status.intermediate.notAfter})`];
  for (const root of status.roots) lines.push(`Root:          ${root.serialNumber} ${root.state} (expires ${root.notAfter}, SHA-256 ${root.fingerprintSha256})`);
  lines.push(
    status.rotation === null
      ? 'Rotation:      none pending'
      : `Rotation:      root ${status.rotation.retiredRootSerial} retired at ${status.rotation.rotatedAt}; it leaves the bundle after ${status.rotation.prunableAfter}`,
  );
  return lines.join('\n');
}

/** Adds `operator ca status`, `operator ca rotate-root` and `operator ca prune`. */
function addCaCommands(operator: Command, addClientOptions: (command: Command) => Command): void {
  const ca = operator.command('ca').description('the mesh CA: status, root rotation without downtime, and the prune of a retired root');
  addClientOptions(
    ca
      .command('status')
      .description('show the key custody, the roots in the trust bundle, the intermediate and any pending rotation (read token)')
      .action(async (flags: ClientFlags) => {
        const status = await clientFromFlags(flags).get<CaStatus>('/v1/operator/ca');
        print(flags, status, () => caStatusText(status));
      }),
  );
  addClientOptions(
    ca
      .command('rotate-root')
      .description('create a new root and intermediate in the same key custody, cross-signed by the current root; both roots stay in the trust bundle until every SVID under the old one has expired')
      .action(async (flags: ClientFlags) => {
        const result = await clientFromFlags(flags).post<RootRotation>('/v1/operator/ca/rotate-root', {});
        print(flags, result, () =>
          [
            `New root:      ${result.root.serialNumber} (SHA-256 ${result.root.fingerprintSha256})`,
            `Intermediate:  ${result.intermediate.serialNumber}`,
            `Retired root:  ${result.retiredRoot.serialNumber}; it stays in the trust bundle until ${result.prunableAfter}, then the server prunes it`,
          ].join('\n'),
        );
      }),
  );
  addClientOptions(
    ca
      .command('prune')
      .description('remove the retired root from the trust bundle now, if every certificate under it has expired (the server also does this every minute)')
      .action(async (flags: ClientFlags) => {
        const result = await clientFromFlags(flags).post<RootPrune>('/v1/operator/ca/prune', {});
        print(flags, result, () => {
          if (result.pruned) return `Pruned root ${result.retiredRootSerial ?? ''}; destroyed keys: ${(result.destroyedKeys ?? []).join(', ')}.`;
          if (result.retiredRootSerial === undefined) return 'No rotation is pending.';
          return `Root ${result.retiredRootSerial} stays in the trust bundle until ${result.prunableAfter ?? ''}.`;
        });
      }),
  );
}

/**
 * Adds the operator commands: init, unseal, seal-status, verify-data, snapshot save and restore,
 * rotate-kek, rotate-data-key and the CA commands.
 */
export function addOperatorCommands(operator: Command, addClientOptions: (command: Command) => Command): void {
  addCaCommands(operator, addClientOptions);
  addClientOptions(
    operator
      .command('init')
      .description('issue the first operator token; with --key-shares, initialise a Shamir-sealed server and issue its key shares')
      .option('--key-shares <n>', 'Shamir seal: number of key shares to issue (use with --key-threshold)')
      .option('--key-threshold <m>', 'Shamir seal: shares needed to unseal')
      .option('--unseal-socket <path>', 'Shamir seal: the server\'s sealed-state socket')
      .option('--data-dir <dir>', 'Shamir seal: the server\'s data directory, to find its default socket')
      .action(async (flags: ClientFlags & { keyShares?: string; keyThreshold?: string; unsealSocket?: string; dataDir?: string }) => {
        if (flags.keyShares !== undefined || flags.keyThreshold !== undefined) {
          const keyShares = Number(flags.keyShares ?? 5);
          const keyThreshold = Number(flags.keyThreshold ?? 3);
          if (!Number.isInteger(keyShares) || !Number.isInteger(keyThreshold)) {
            throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', '--key-shares and --key-threshold take whole numbers');
          }
          const result = await socketRequest<{ shares: string[]; token: string; accessorId: string; trustDomain: string }>(
            await socketPath(flags),
            'POST',
            '/v1/operator/init',
            { keyShares, keyThreshold },
          );
          print(flags, { ...result, keyShares, keyThreshold }, () =>
            [
              ...result.shares.map((share, index) => `Key share ${index + 1}: ${share}`),
              '',
              `Trust domain:  ${result.trustDomain}`,
              `Accessor ID:   ${result.accessorId}`,
              `Token:         ${result.token}`,
              '',
              `Give each key share to a different operator. ${keyThreshold === 1 ? 'Any one of them unseals' : `Any ${keyThreshold} of them unseal`} the server after every restart.`,
              'The shares and the token are shown once and cannot be recovered.',
            ].join('\n'),
          );
          return;
        }
        const client = clientFromFlags(flags, false);
        const result = await client.post<{ token: string; accessorId: string; trustDomain: string }>('/v1/operator/init', {});
        print(flags, result, () =>
          [
            `Trust domain:  ${result.trustDomain}`,
            `Accessor ID:   ${result.accessorId}`,
            `Token:         ${result.token}`,
            '',
            'This token is shown once and cannot be recovered. Store it in a secret manager.',
          ].join('\n'),
        );
      }),
  );

  operator
    .command('unseal')
    .description('submit one key share to a Shamir-sealed server (read from standard input when SHARE is omitted)')
    .argument('[share]')
    .option('--unseal-socket <path>', 'the server\'s sealed-state socket')
    .option('--data-dir <dir>', 'the server\'s data directory, to find its default socket')
    .option('--json', 'print the result as JSON')
    .action(async (share: string | undefined, flags: { unsealSocket?: string; dataDir?: string; json?: boolean }) => {
      const shares = share !== undefined ? [share] : await readSharesFromStdin();
      if (shares.length === 0) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'no key share given: pass it as an argument or on standard input');
      const path = await socketPath(flags);
      let status: SealStatusResponse | undefined;
      for (const submitted of shares) status = await socketRequest<SealStatusResponse>(path, 'POST', '/v1/operator/unseal', { share: submitted });
      print(flags, status, () => sealStatusText(status as SealStatusResponse));
    });

  operator
    .command('seal-status')
    .description('show whether a Shamir-sealed server is sealed and how many key shares it has')
    .option('--unseal-socket <path>', 'the server\'s sealed-state socket')
    .option('--data-dir <dir>', 'the server\'s data directory, to find its default socket')
    .option('--json', 'print the result as JSON')
    .action(async (flags: { unsealSocket?: string; dataDir?: string; json?: boolean }) => {
      const status = await socketRequest<SealStatusResponse>(await socketPath(flags), 'GET', '/v1/status');
      print(flags, status, () => sealStatusText(status));
    });

  addSealOptions(
    addClientOptions(
      operator
        .command('verify-data')
        .description('verify every record and the integrity chain: offline on a stopped server\'s --data-dir, or online through the API')
        .option('--data-dir <dir>', 'verify this directory offline; key shares of a Shamir seal are read from standard input'),
    ),
  ).action(async (flags: ClientFlags & SealFlags & { dataDir?: string }) => {
    let report: unknown;
    if (flags.dataDir !== undefined) {
      const { verifyDataDirectory } = await import('../server/offline.ts');
      const counter = counterFromFlags(flags);
      report = await verifyDataDirectory({
        dataDir: flags.dataDir,
        seal: sealFromFlags(flags),
        ...(counter !== undefined ? { counter } : {}),
        ...(flags.seal === 'shamir' ? { shares: await readSharesFromStdin() } : {}),
      });
    } else {
      report = (await clientFromFlags(flags).post<{ report: unknown }>('/v1/operator/verify-data', {})).report;
    }
    const summary = report as { records: number; chainEntries: number; revision: number; storeId: string };
    print(flags, { ok: true, report }, () => `OK: ${summary.records} records and ${summary.chainEntries} chain entries verified at revision ${summary.revision} (store ${summary.storeId}).`);
  });

  const snapshot = operator.command('snapshot').description('save or restore a sealed snapshot of the store');
  addClientOptions(
    snapshot
      .command('save')
      .description('save a sealed snapshot of a running server\'s store to FILE (mode 0600)')
      .argument('<file>')
      .action(async (file: string, flags: ClientFlags) => {
        // Creating the file before the download reports an existing file or a missing directory at
        // once, instead of after the server has streamed the whole store.
        const descriptor = openSnapshotFile(file);
        let bytes: Buffer;
        try {
          const client = clientFromFlags(flags);
          const response = await client.stream('/v1/operator/snapshot');
          const chunks: Buffer[] = [];
          for await (const chunk of response) chunks.push(chunk as Buffer);
          bytes = Buffer.concat(chunks);
          writeFileSync(descriptor, bytes);
        } catch (error) {
          closeSync(descriptor);
          rmSync(file, { force: true });
          throw error;
        }
        closeSync(descriptor);
        print(flags, { file, bytes: bytes.length }, () => `Saved a sealed snapshot of ${bytes.length} bytes to ${file}.`);
      }),
  );
  addSealOptions(
    snapshot
      .command('restore')
      .description('restore a sealed snapshot into a stopped server\'s data directory; advances the rollback counter')
      .argument('<file>')
      .requiredOption('--data-dir <dir>', 'data directory of the stopped server')
      .option('--json', 'print the result as JSON'),
  ).action(async (file: string, flags: SealFlags & { dataDir: string; json?: boolean }) => {
    const { restoreSnapshot } = await import('../server/offline.ts');
    const counter = counterFromFlags(flags);
    const result = await restoreSnapshot({
      file,
      dataDir: flags.dataDir,
      seal: sealFromFlags(flags),
      ...(counter !== undefined ? { counter } : {}),
      ...(flags.seal === 'shamir' ? { shares: await readSharesFromStdin() } : {}),
    });
    print(flags, result, () => `Restored ${file} into ${flags.dataDir}: ${result.report.records} records at revision ${result.report.revision}. Start the server to serve it.`);
  });

  addClientOptions(
    operator
      .command('rotate-kek')
      .description('rewrap the data keys under new key-encryption key material of the same seal provider, without downtime')
      .option('--key-file <path>', 'keyfile seal: path of the new key file, which the server creates')
      .option('--key-label <label>', 'pkcs11 seal: label of the new key, which the server creates in the token')
      .option('--key-shares <n>', 'shamir seal: number of new key shares')
      .option('--key-threshold <m>', 'shamir seal: shares needed to unseal')
      .action(async (flags: ClientFlags & { keyFile?: string; keyLabel?: string; keyShares?: string; keyThreshold?: string }) => {
        const body: Record<string, unknown> = {};
        if (flags.keyFile !== undefined) body.keyFile = flags.keyFile;
        if (flags.keyLabel !== undefined) body.keyLabel = flags.keyLabel;
        if (flags.keyShares !== undefined) body.keyShares = Number(flags.keyShares);
        if (flags.keyThreshold !== undefined) body.keyThreshold = Number(flags.keyThreshold);
        if (process.env.SEALMESH_NEW_SEAL_PASSPHRASE !== undefined) body.passphrase = process.env.SEALMESH_NEW_SEAL_PASSPHRASE;
        const result = await clientFromFlags(flags).post<{ provider: string; shares?: string[] }>('/v1/operator/rotate-kek', body);
        print(flags, result, () =>
          [`Key-encryption key rotated (provider ${result.provider}).`, ...(result.shares ?? []).map((share, index) => `New key share ${index + 1}: ${share}`)].join('\n'),
        );
      }),
  );

  addClientOptions(
    operator
      .command('rotate-data-key')
      .description('add a new data key and re-encrypt every record under it in the background; resumes after a restart')
      .action(async (flags: ClientFlags) => {
        const result = await clientFromFlags(flags).post<{ recordsUnderOldKeys: number }>('/v1/operator/rotate-data-key', {});
        print(flags, result, () => `Data key rotated; ${result.recordsUnderOldKeys} records are being re-encrypted in the background.`);
      }),
  );
}

/** Creates the output file of `snapshot save` with mode 0600, never replacing an existing file. */
function openSnapshotFile(file: string): number {
  try {
    return openSync(file, 'wx', 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new SealmeshError('SEALMESH_ERR_CONFLICT', `${file} already exists; snapshot save never overwrites a file, so choose another FILE or remove it first`);
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot create the snapshot file ${file}: ${(error as Error).message}; check that its directory exists and is writable`);
  }
}
