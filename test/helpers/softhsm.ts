/**
 * Fresh SoftHSM2 tokens for the PKCS#11 tests, each in its own temporary token directory.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** Where Debian and Ubuntu install the module; other multiarch directories are searched too. */
const MODULE_CANDIDATES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/local/lib/softhsm/libsofthsm2.so'];

export interface SoftHsmToken {
  /** Path of libsofthsm2.so. */
  module: string;
  tokenLabel: string;
  pin: string;
  soPin: string;
  /** Temporary directory with softhsm2.conf and the token files. */
  dir: string;
  remove(): void;
}

/** Returns the path of libsofthsm2.so, or undefined when SoftHSM2 is not installed. */
export function findSoftHsmModule(): string | undefined {
  const found = MODULE_CANDIDATES.find((path) => existsSync(path));
  if (found !== undefined) {
    return found;
  }
  for (const entry of safeReaddir('/usr/lib')) {
    const path = join('/usr/lib', entry, 'softhsm', 'libsofthsm2.so');
    if (entry.endsWith('-linux-gnu') && existsSync(path)) {
      return path;
    }
  }
  return undefined;
}

/** Returns the path of softhsm2-util on PATH, or undefined. */
export function findSoftHsmUtil(): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(delimiter)) {
    const path = join(directory, 'softhsm2-util');
    if (directory !== '' && existsSync(path)) {
      return path;
    }
  }
  return undefined;
}

/**
 * Returns why the PKCS#11 tests should be skipped, or undefined when they should run. They run in
 * CI (CI set) even without SoftHSM2, so that a missing install fails the build instead of passing
 * silently.
 */
export function softHsmSkipReason(): string | undefined {
  if (process.env.CI !== undefined && process.env.CI !== '') {
    return undefined;
  }
  if (findSoftHsmUtil() === undefined) {
    return 'SoftHSM2 is not installed (softhsm2-util not on PATH); install it with apt-get install softhsm2 to run the PKCS#11 tests';
  }
  return undefined;
}

/**
 * Creates a temporary token directory with its own softhsm2.conf, points SOFTHSM2_CONF at it and
 * initialises one token in it with softhsm2-util.
 *
 * SoftHSM reads SOFTHSM2_CONF in C_Initialize, so call this before the first provider loads the
 * module in this process, or after every provider on the module has been closed.
 */
export function createSoftHsmToken(options: { label?: string; pin?: string; soPin?: string } = {}): SoftHsmToken {
  const util = findSoftHsmUtil();
  if (util === undefined) {
    throw new Error('softhsm2-util is not on PATH; install SoftHSM2 with apt-get install softhsm2');
  }
  const module = findSoftHsmModule();
  if (module === undefined) {
    throw new Error(`libsofthsm2.so was not found in ${MODULE_CANDIDATES.join(', ')} or /usr/lib/*-linux-gnu/softhsm`);
  }

  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  mkdirSync(tokenDir, { mode: 0o700 });
  const configPath = join(dir, 'softhsm2.conf');
  writeFileSync(configPath, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = configPath;

  const token = {
    module,
    tokenLabel: options.label ?? 'sealmesh-test',
    pin: options.pin ?? '1234',
    soPin: options.soPin ?? '5678',
    dir,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
  execFileSync(util, ['--init-token', '--free', '--label', token.tokenLabel, '--pin', token.pin, '--so-pin', token.soPin], {
    env: process.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return token;
}

function safeReaddir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

/**
 * Returns the getter of one token per test file, created on first use and removed when the process
 * exits. SoftHSM reads SOFTHSM2_CONF once, when the module is initialised, so a file keeps one token.
 */
export function fileToken(label: string): () => SoftHsmToken {
  let token: SoftHsmToken | undefined;
  process.on('exit', () => token?.remove());
  return () => (token ??= createSoftHsmToken({ label }));
}
