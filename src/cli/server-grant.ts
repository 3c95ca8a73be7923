import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { SandboxGrant } from '../hardening/index.ts';
import { defaultKeyFilePath } from '../seal/index.ts';
import { createDataDirectory as createServerDataDirectory, defaultUnsealSocketPath } from '../server/seal-setup.ts';
import type { HardeningFlags } from './hardening-options.ts';
import type { SealFlags } from './seal-flags.ts';

/**
 * Returns the grant of a server: the data directory, the key file, the sealed-state control
 * socket, the --config file and /proc/self/limits. The key file's directory is granted only while
 * the key file does not exist yet, because creating it also creates and syncs that directory.
 */
export function serverGrant(flags: HardeningFlags & SealFlags & { config?: string }, dataDir: string, env: NodeJS.ProcessEnv = process.env): SandboxGrant {
  const read = ['/proc/self/limits', ...flags.sandboxAllowRead];
  const write = [dataDir, ...flags.sandboxAllowWrite];
  if (flags.config !== undefined) read.push(flags.config);
  if (flags.seal === 'keyfile') {
    const keyFile = resolve(flags.sealKeyFile ?? defaultKeyFilePath(dataDir, env));
    write.push(keyFile);
    if (!existsSync(keyFile)) write.push(dirname(keyFile));
  }
  if (flags.seal === 'shamir') write.push(flags.unsealSocket ?? defaultUnsealSocketPath(dataDir));
  const pkcs11 = flags.seal === 'pkcs11' || flags.counter === 'pkcs11';
  if (pkcs11 && flags.pkcs11Module !== undefined) read.push(flags.pkcs11Module);
  return { read, write, addons: pkcs11, childProcess: false };
}

/**
 * Creates the server's data directory (mode 0700) and its missing parents before a sandboxed start:
 * the sandbox grants the data directory but not its parents, so the sandboxed server could not
 * create them on a first start.
 */
export function createDataDirectory(dataDir: string): void {
  createServerDataDirectory(dataDir);
}
