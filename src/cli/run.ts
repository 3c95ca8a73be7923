import { createLogger } from '../log/index.ts';
import { ControlPlane } from '../server/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { checkEnvironment, loadLocalConfig } from '../config/index.ts';
import { parseHostPort } from '../proxy/address.ts';
import { counterFromFlags, sealFromFlags, type SealFlags } from './seal-flags.ts';
import { caCustodyFromFlags, DEFAULT_CA_PIN_ENV, type CaCustodyFlags } from './ca-flags.ts';
import { parseDuration, readCaFile } from './output.ts';
import { checkRunMode, launchSandboxIfRequested, type HardeningFlags } from './hardening-flags.ts';
import { createDataDirectory, serverGrant } from './server-grant.ts';
import { DEFAULT_LOG_LEVEL, missingSetting, untilSignal } from './run-common.ts';

// The proxy lives in a module of its own, so that `sealmesh proxy` does not load the control plane.
export { accessLogSettings, runProxy } from './run-proxy.ts';

const DEFAULT_SERVER_ADDR = '127.0.0.1:8501';
const DEFAULT_LEASE = '30s';

/**
 * Runs the control plane. The SEALMESH_* environment variables are checked first, then the
 * --config file is read, and each flag given on the command line replaces the file's value.
 */
export async function runServer(
  flags: {
    config?: string;
    dataDir?: string;
    addr?: string;
    trustDomain?: string;
    lease?: string;
    logLevel?: string;
    collateralDir?: string;
    pccsUrl?: string;
    kdsUrl?: string;
    collateralCaFile?: string;
  } & SealFlags &
    Partial<CaCustodyFlags> &
    HardeningFlags,
): Promise<void> {
  checkEnvironment(process.env);
  const file = flags.config === undefined ? {} : await loadLocalConfig(flags.config, 'server');
  const dataDir = flags.dataDir ?? file.dataDir;
  if (dataDir === undefined) throw missingSetting('--data-dir <dir>', 'data_dir');
  if (await launchSandboxIfRequested(flags, () => serverGrant(flags, dataDir), () => createDataDirectory(dataDir))) return;
  // The process checks come before any key is read or created.
  checkRunMode(flags);
  const log = createLogger({ component: 'server', level: flags.logLevel ?? file.logLevel ?? DEFAULT_LOG_LEVEL });
  const listen = flags.addr !== undefined ? parseHostPort(flags.addr, '--addr', true) : (file.addr ?? parseHostPort(DEFAULT_SERVER_ADDR, '--addr', true));
  const leaseSeconds = flags.lease !== undefined ? parseDuration(flags.lease, '--lease') : (file.leaseSeconds ?? parseDuration(DEFAULT_LEASE, '--lease'));
  const counter = counterFromFlags(flags);
  const caCustody = caCustodyFromFlags({ caCustody: flags.caCustody ?? 'sealed', caPkcs11PinEnv: flags.caPkcs11PinEnv ?? DEFAULT_CA_PIN_ENV, ...pkcs11Flags(flags) });
  const server = new ControlPlane({
    seal: sealFromFlags(flags),
    caCustody,
    runMode: flags.mode,
    ...(counter !== undefined ? { counter } : {}),
    ...(flags.unsealSocket !== undefined ? { unsealSocket: flags.unsealSocket } : {}),
    dataDir,
    host: listen.host,
    port: listen.port,
    leaseSeconds,
    log,
    ...(flags.trustDomain !== undefined ? { trustDomain: flags.trustDomain } : {}),
    collateral: {
      ...(flags.collateralDir !== undefined ? { directory: flags.collateralDir } : {}),
      ...(flags.pccsUrl !== undefined ? { pccsUrl: parseServiceUrl(flags.pccsUrl, '--pccs-url') } : {}),
      ...(flags.kdsUrl !== undefined ? { kdsUrl: parseServiceUrl(flags.kdsUrl, '--kds-url') } : {}),
      ...(flags.collateralCaFile !== undefined ? { ca: readCaFile(flags.collateralCaFile) } : {}),
    },
  });
  // Listening for signals before the start means a SIGTERM during it still ends in a clean stop.
  const signalled = untilSignal();
  await server.start();
  const signal = await signalled;
  log.info({ signal }, 'stopping');
  await server.stop();
  log.flush();
}

/** Picks the PKCS#11 module and token label flags that were given. */
function pkcs11Flags(flags: Partial<CaCustodyFlags>): Pick<CaCustodyFlags, 'caPkcs11Module' | 'caPkcs11TokenLabel'> {
  return {
    ...(flags.caPkcs11Module !== undefined ? { caPkcs11Module: flags.caPkcs11Module } : {}),
    ...(flags.caPkcs11TokenLabel !== undefined ? { caPkcs11TokenLabel: flags.caPkcs11TokenLabel } : {}),
  };
}

/** Checks the URL of a collateral caching service: http or https, without credentials. */
function parseServiceUrl(value: string, flag: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${flag} ${JSON.stringify(value)} is not a URL; use a base URL such as https://pccs.example:8081`);
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '') {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `${flag} must be an http or https URL without credentials`);
  }
  return url.toString().replace(/\/+$/, '');
}
