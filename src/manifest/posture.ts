import { createHash, createPublicKey } from 'node:crypto';
import type { DefaultPolicy } from '../policy/intentions.ts';
import { manifestDigest } from './canonical.ts';
import type { AttestationProviderName, AttestationServicePolicy, Manifest, OperatorKeyAlgorithm } from './schema.ts';

/** Intel TCB status names, as the manifest's `tcbStatuses` lists them. */
export type TcbStatusName = NonNullable<AttestationServicePolicy['tcbStatuses']>[number];

/** One service's attestation policy with every default filled in. */
export interface ServiceAttestationPolicy {
  providers: AttestationProviderName[];
  tcbStatuses: TcbStatusName[];
  allowDebug: boolean;
  'sev-snp'?: {
    measurement: string[];
    hostData: string[] | null;
    /** Never null from a valid manifest; the policy rejects SEV-SNP evidence when it is. */
    minTcb: { bootloader: number; tee: number; snp: number; microcode: number; fmc?: number } | null;
    vmpl: number;
    allowSmt: boolean;
    allowMigrationAgent: boolean;
  };
  tdx?: { mrTd: string[]; rtMr0: string[] | null; rtMr1: string[] | null; rtMr2: string[] | null; rtMr3: string[] | null };
  sgx?: { mrEnclave: string[] | null; mrSigner: string[] | null; isvProdId: number | null; minIsvSvn: number | null };
  dev?: { measurement: string[] | null };
}

/** Default `tcbStatuses`: only a platform whose TCB is up to date. */
export const DEFAULT_TCB_STATUSES: readonly TcbStatusName[] = ['UpToDate'];

/** Fills in the defaults of one service's attestation policy. */
export function resolveServicePolicy(service: AttestationServicePolicy): ServiceAttestationPolicy {
  const policy: ServiceAttestationPolicy = {
    providers: [...service.providers],
    tcbStatuses: [...(service.tcbStatuses ?? DEFAULT_TCB_STATUSES)],
    allowDebug: service.allowDebug ?? false,
  };
  const snp = service['sev-snp'];
  if (snp !== undefined) {
    policy['sev-snp'] = {
      measurement: [...snp.measurement],
      hostData: snp.hostData === undefined ? null : [...snp.hostData],
      minTcb: snp.minTcb === undefined ? null : { ...snp.minTcb },
      vmpl: snp.vmpl ?? 0,
      allowSmt: snp.allowSmt ?? false,
      allowMigrationAgent: snp.allowMigrationAgent ?? false,
    };
  }
  const tdx = service.tdx;
  if (tdx !== undefined) {
    policy.tdx = {
      mrTd: [...tdx.mrTd],
      rtMr0: tdx.rtMr0 === undefined ? null : [...tdx.rtMr0],
      rtMr1: tdx.rtMr1 === undefined ? null : [...tdx.rtMr1],
      rtMr2: tdx.rtMr2 === undefined ? null : [...tdx.rtMr2],
      rtMr3: tdx.rtMr3 === undefined ? null : [...tdx.rtMr3],
    };
  }
  const sgx = service.sgx;
  if (sgx !== undefined) {
    policy.sgx = {
      mrEnclave: sgx.mrEnclave === undefined ? null : [...sgx.mrEnclave],
      mrSigner: sgx.mrSigner === undefined ? null : [...sgx.mrSigner],
      isvProdId: sgx.isvProdId ?? null,
      minIsvSvn: sgx.minIsvSvn ?? null,
    };
  }
  if (service.providers.includes('dev')) {
    policy.dev = { measurement: service.dev?.measurement === undefined ? null : [...service.dev.measurement] };
  }
  return policy;
}

/**
 * The security settings in force under a manifest, with every default filled in. Servers and
 * proxies read settings from here rather than from the manifest, so that a default lives in one
 * place. It is meant as the body of `manifest show --json` and of a `posture` field in `/v1/status`.
 */
export interface EffectivePosture {
  version: number;
  digest: string;
  previous: string | null;
  trustDomain: string;
  defaultPolicy: DefaultPolicy;
  tls: {
    minVersion: 'TLSv1.3';
    /** TLS groups offered for key exchange, or null for the Node.js defaults. */
    keyExchange: string[] | null;
    keyTypes: Array<'ecdsa-p256'>;
  };
  svidTtl: { defaultSeconds: number; minSeconds: number; maxSeconds: number };
  intentions: {
    management: 'api' | 'manifest';
    /** Number of intentions in the manifest; 0 when they are managed through the API. */
    ruleCount: number;
  };
  /** `production` unless the manifest says `development`; only development accepts the dev provider. */
  environment: 'production' | 'development';
  attestation: {
    required: boolean;
    allowDevProvider: boolean;
    /** Attestation policy per service reference, as the manifest names the service. */
    services: Record<string, ServiceAttestationPolicy>;
  };
  /** `strict`: proxies refuse to serve an app reachable around the mesh; `warn`: they report it. */
  perimeter: { appBinding: 'strict' | 'warn' };
  /** With `requireProductionMode`, the server and every proxy run only in `--mode production`. */
  hardening: { requireProductionMode: boolean };
  operators: {
    threshold: number;
    keys: Array<{ id: string; algorithm: OperatorKeyAlgorithm; fingerprint: string }>;
  };
  /** Settings that weaken the posture, one sentence each; empty when there are none. */
  warnings: string[];
}

/** Returns the lowercase hex SHA-256 of a public key's DER SPKI encoding. */
function keyFingerprint(publicKeyPem: string): string {
  const der = createPublicKey({ key: publicKeyPem, format: 'pem' }).export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex');
}

/** Computes the effective posture of a manifest that passed schema validation. */
export function effectivePosture(manifest: Manifest): EffectivePosture {
  const attestationServices = Object.fromEntries(
    Object.entries(manifest.attestation.services).map(([service, settings]) => [service, resolveServicePolicy(settings)]),
  );
  const posture: EffectivePosture = {
    version: manifest.version,
    digest: manifestDigest(manifest),
    previous: manifest.previous,
    trustDomain: manifest.trustDomain,
    defaultPolicy: manifest.defaultPolicy,
    tls: {
      minVersion: manifest.tls.minVersion,
      keyExchange: manifest.tls.keyExchange === undefined ? null : [...manifest.tls.keyExchange],
      keyTypes: [...manifest.tls.keyTypes],
    },
    svidTtl: { defaultSeconds: manifest.svidTtl.default, minSeconds: manifest.svidTtl.min, maxSeconds: manifest.svidTtl.max },
    intentions: { management: manifest.intentions.management, ruleCount: manifest.intentions.rules?.length ?? 0 },
    environment: manifest.environment ?? 'production',
    attestation: {
      required: manifest.attestation.required ?? false,
      allowDevProvider: manifest.attestation.allowDevProvider ?? false,
      services: attestationServices,
    },
    perimeter: { appBinding: manifest.perimeter?.appBinding ?? 'warn' },
    hardening: { requireProductionMode: manifest.hardening?.requireProductionMode ?? false },
    operators: {
      threshold: manifest.operators.threshold,
      keys: manifest.operators.keys.map((key) => ({ id: key.id, algorithm: key.algorithm, fingerprint: keyFingerprint(key.publicKey) })),
    },
    warnings: [],
  };
  posture.warnings = postureWarnings(posture);
  return posture;
}

function postureWarnings(posture: EffectivePosture): string[] {
  const warnings: string[] = [];
  if (posture.defaultPolicy === 'allow') {
    warnings.push('The default policy is allow, so a connection that no intention matches is allowed.');
  }
  if (posture.attestation.allowDevProvider) {
    warnings.push('The dev attestation provider is accepted, and its evidence proves nothing about a workload.');
  }
  if (!posture.attestation.required) {
    warnings.push('Attestation is not required, so a join token alone enrolls a proxy.');
  }
  if (posture.operators.threshold === 1 && posture.operators.keys.length > 1) {
    warnings.push('The threshold is 1, so any single operator key can change the posture.');
  }
  return warnings;
}

function formatDuration(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

/** Formats a posture as the aligned `key: value` lines that `manifest show` prints, ending in a newline. */
export function formatPosture(posture: EffectivePosture): string {
  const rows: Array<[string, string]> = [
    ['version', String(posture.version)],
    ['digest', posture.digest],
    ['previous', posture.previous ?? '(none: genesis)'],
    ['trust domain', posture.trustDomain],
    ['environment', posture.environment],
    ['default policy', posture.defaultPolicy],
    ['TLS', `min ${posture.tls.minVersion}, key types ${posture.tls.keyTypes.join(', ')}, key exchange ${posture.tls.keyExchange?.join(', ') ?? 'Node.js defaults'}`],
    [
      'SVID TTL',
      `default ${formatDuration(posture.svidTtl.defaultSeconds)}, min ${formatDuration(posture.svidTtl.minSeconds)}, max ${formatDuration(posture.svidTtl.maxSeconds)}`,
    ],
    [
      'intentions',
      posture.intentions.management === 'api' ? 'managed through the API' : `managed by the manifest (${posture.intentions.ruleCount} rules)`,
    ],
    [
      'attestation',
      `${posture.attestation.required ? 'required' : 'not required'}, dev provider ${posture.attestation.allowDevProvider ? 'accepted (INSECURE)' : 'rejected'}, ${Object.keys(posture.attestation.services).length} service(s) configured`,
    ],
    ...Object.entries(posture.attestation.services).map(([service, policy]): [string, string] => [
      `  ${service}`,
      `providers ${policy.providers.join(', ')}; TCB statuses ${policy.tcbStatuses.join(', ')}; debug ${policy.allowDebug ? 'allowed' : 'rejected'}`,
    ]),
    [
      'app binding',
      posture.perimeter.appBinding === 'strict' ? 'strict: proxies refuse apps reachable around the mesh' : 'warn: proxies report apps reachable around the mesh',
    ],
    ['production mode', posture.hardening.requireProductionMode ? 'required of the server and every proxy' : 'not required'],
    ['operators', `${posture.operators.threshold} of ${posture.operators.keys.length} signatures required`],
    ...posture.operators.keys.map((key): [string, string] => [`  ${key.id}`, `${key.algorithm} sha256:${key.fingerprint}`]),
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  const lines = rows.map(([label, value]) => `${`${label}:`.padEnd(width + 2)}${value}`);
  for (const warning of posture.warnings) {
    lines.push(`warning: ${warning}`);
  }
  return `${lines.join('\n')}\n`;
}
