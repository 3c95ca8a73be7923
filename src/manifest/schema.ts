import { createPublicKey, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { SealmeshError, isSealmeshError } from '../errors/index.ts';
import { MAX_SVID_TTL_SECONDS, MIN_SVID_TTL_SECONDS } from '../pki/index.ts';
import { normaliseIntentionEnds } from '../policy/intentions.ts';
import { permissionsSchema } from '../policy/permissions-schema.ts';
import { assertTrustDomain, parseServiceRef } from '../spiffe/index.ts';

/**
 * The zod schemas of the signed manifest and its document.
 *
 * Every object is strict, so an unknown member is an error rather than a setting that is signed
 * but ignored. Parsing never fills in defaults or rewrites a value: the digest and the signatures
 * cover the manifest exactly as written, and `effectivePosture` applies the defaults when the
 * settings are read.
 */

/** Signature algorithms of operator keys. */
export const OPERATOR_KEY_ALGORITHMS = ['ed25519', 'ecdsa-p256'] as const;
export type OperatorKeyAlgorithm = (typeof OPERATOR_KEY_ALGORITHMS)[number];

/** Length in bytes of every operator signature: Ed25519, and ECDSA P-256 in IEEE P1363 form (r || s). */
export const SIGNATURE_BYTES = 64;

const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;
const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// Node's TLS group names, such as X25519, P-256 or X25519MLKEM768.
const KEY_EXCHANGE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Imports an operator public key and checks that it is canonical SPKI PEM of the named algorithm.
 * Returns the key or a reason for rejecting it.
 */
export function importOperatorPublicKey(pem: string, algorithm: OperatorKeyAlgorithm): KeyObject | string {
  // createPublicKey also accepts a private key or a certificate and derives the public key from it,
  // so the PEM label is checked first: a private key must never end up in a signed manifest.
  if (!/^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n$/.test(pem)) {
    return 'is not an SPKI PEM public key (-----BEGIN PUBLIC KEY-----)';
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    return 'cannot be decoded as a public key';
  }
  const matches =
    algorithm === 'ed25519'
      ? key.asymmetricKeyType === 'ed25519'
      : key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  if (!matches) {
    return `is not an ${algorithm} key`;
  }
  if (publicKeyToPem(key) !== pem) {
    return 'is not in canonical form: write it exactly as `openssl pkey -pubout` prints it, with 64-character lines and a final newline';
  }
  return key;
}

/** Exports a public key as SPKI PEM text. */
export function publicKeyToPem(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

/** Returns true when `value` is base64 with padding that decodes to bytes which encode back to it. */
export function isCanonicalBase64(value: string): boolean {
  return BASE64_PATTERN.test(value) && Buffer.from(value, 'base64').toString('base64') === value;
}

const operatorKeySchema = z
  .strictObject({
    id: z.string().regex(KEY_ID_PATTERN, 'use 1 to 128 letters, digits and ._:@-, starting with a letter or digit'),
    algorithm: z.enum(OPERATOR_KEY_ALGORITHMS),
    publicKey: z.string().max(4096),
  })
  .superRefine((key, context) => {
    const imported = importOperatorPublicKey(key.publicKey, key.algorithm);
    if (typeof imported === 'string') {
      context.addIssue({ code: 'custom', path: ['publicKey'], message: `public key of operator key ${JSON.stringify(key.id)} ${imported}` });
    }
  });

const operatorsSchema = z
  .strictObject({
    keys: z.array(operatorKeySchema).min(1),
    threshold: z.number().int().min(1),
  })
  .superRefine((operators, context) => {
    if (operators.threshold > operators.keys.length) {
      context.addIssue({
        code: 'custom',
        path: ['threshold'],
        message: `threshold ${operators.threshold} exceeds the ${operators.keys.length} operator keys`,
      });
    }
    const ids = new Set<string>();
    const publicKeys = new Set<string>();
    operators.keys.forEach((key, index) => {
      if (ids.has(key.id)) {
        context.addIssue({ code: 'custom', path: ['keys', index, 'id'], message: `operator key id ${JSON.stringify(key.id)} is used twice` });
      }
      ids.add(key.id);
      if (publicKeys.has(key.publicKey)) {
        context.addIssue({ code: 'custom', path: ['keys', index, 'publicKey'], message: `operator key ${JSON.stringify(key.id)} repeats the public key of another operator key` });
      }
      publicKeys.add(key.publicKey);
    });
  });

const ttlSeconds = z.number().int().min(MIN_SVID_TTL_SECONDS).max(MAX_SVID_TTL_SECONDS);

const svidTtlSchema = z
  .strictObject({ default: ttlSeconds, min: ttlSeconds, max: ttlSeconds })
  .superRefine((ttl, context) => {
    if (!(ttl.min <= ttl.default && ttl.default <= ttl.max)) {
      context.addIssue({ code: 'custom', message: `SVID TTLs must satisfy min <= default <= max, got min ${ttl.min}, default ${ttl.default}, max ${ttl.max}` });
    }
  });

const tlsSchema = z.strictObject({
  // TLS 1.3 is the only version accepted today. A later format may allow others.
  minVersion: z.literal('TLSv1.3'),
  keyExchange: z
    .array(z.string().regex(KEY_EXCHANGE_PATTERN, 'use a TLS group name such as X25519 or P-256'))
    .min(1)
    .refine((groups) => new Set(groups).size === groups.length, 'a key exchange group is listed twice')
    .optional(),
  keyTypes: z
    .array(z.literal('ecdsa-p256'))
    .min(1)
    .refine((types) => new Set(types).size === types.length, 'a key type is listed twice'),
});

/** Adds an issue unless `ref` is a normalised intention end (`name`, `namespace/name` or `*`). */
function checkIntentionEnds(rule: { source: string; destination: string }, context: z.RefinementCtx): void {
  let normalised: { source: string; destination: string };
  try {
    normalised = normaliseIntentionEnds(rule.source, rule.destination);
  } catch (error) {
    context.addIssue({ code: 'custom', message: isSealmeshError(error) ? error.message : String(error) });
    return;
  }
  for (const end of ['source', 'destination'] as const) {
    if (normalised[end] !== rule[end]) {
      context.addIssue({ code: 'custom', path: [end], message: `${end} ${JSON.stringify(rule[end])} is not in normal form; write ${JSON.stringify(normalised[end])}` });
    }
  }
}

const intentionRuleSchema = z
  .strictObject({
    source: z.string().min(1).max(128),
    destination: z.string().min(1).max(128),
    action: z.enum(['allow', 'deny']),
    /** L7 permissions for an HTTP destination; optional, so manifests written before them still parse. */
    permissions: permissionsSchema.optional(),
    description: z.string().max(256).optional(),
  })
  .superRefine(checkIntentionEnds);

const intentionsSchema = z
  .strictObject({
    management: z.enum(['api', 'manifest']),
    rules: z.array(intentionRuleSchema).optional(),
  })
  .superRefine((intentions, context) => {
    if (intentions.management === 'api' && intentions.rules !== undefined) {
      context.addIssue({ code: 'custom', path: ['rules'], message: "rules are allowed only when management is 'manifest'; with 'api' intentions are managed through the API" });
    }
    const pairs = new Set<string>();
    (intentions.rules ?? []).forEach((rule, index) => {
      const pair = `${rule.source} -> ${rule.destination}`;
      if (pairs.has(pair)) {
        context.addIssue({ code: 'custom', path: ['rules', index], message: `intention ${pair} is listed twice` });
      }
      pairs.add(pair);
    });
  });

/** Evidence providers a manifest can name; `dev` is software evidence that proves nothing. */
export const ATTESTATION_PROVIDERS = ['sev-snp', 'tdx', 'sgx', 'dev'] as const;
export type AttestationProviderName = (typeof ATTESTATION_PROVIDERS)[number];

/** Intel's TCB status values that `tcbStatuses` may list. */
export const TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
] as const;

/** A non-empty list of distinct lowercase hex values of `bytes` bytes each. */
function hexList(bytes: number, what: string) {
  const pattern = new RegExp(`^[0-9a-f]{${bytes * 2}}$`);
  return z
    .array(z.string().regex(pattern, `use ${bytes * 2} lowercase hex digits (${bytes} bytes) for each ${what}`))
    .min(1, `list at least one acceptable ${what}`)
    .max(64)
    .refine((values) => new Set(values).size === values.length, `a ${what} value is listed twice`);
}

const tcbComponent = z.number().int().min(0).max(255);

const sevSnpPolicySchema = z.strictObject({
  /** Acceptable launch measurements (48 bytes), as AMD's sev-snp-measure computes them. */
  measurement: hexList(48, 'SEV-SNP measurement'),
  /** Acceptable HOST_DATA values (32 bytes); any value when absent. */
  hostData: hexList(32, 'SEV-SNP hostData').optional(),
  /**
   * Lowest acceptable reported TCB, per component. Required: the SEV-SNP verifier reports every
   * genuine report as UpToDate, so `tcbStatuses` sets no floor and this is the only one. `fmc`
   * exists on Turin and later, and a report without an FMC component fails a policy that sets it.
   */
  minTcb: z.strictObject({ bootloader: tcbComponent, tee: tcbComponent, snp: tcbComponent, microcode: tcbComponent, fmc: tcbComponent.optional() }).optional(),
  /** Highest VMPL the report may be requested at. Default 0. */
  vmpl: z.number().int().min(0).max(3).optional(),
  /** Whether a guest policy that allows SMT on the host is accepted. Default false. */
  allowSmt: z.boolean().optional(),
  /** Whether a guest policy that allows a migration agent is accepted. Default false. */
  allowMigrationAgent: z.boolean().optional(),
});

const tdxPolicySchema = z.strictObject({
  /** Acceptable MRTD values (48 bytes): the measurement of the TD's initial image (TDVF). */
  mrTd: hexList(48, 'TDX mrTd'),
  /** Acceptable RTMR values (48 bytes each); any value when absent. */
  rtMr0: hexList(48, 'TDX rtMr0').optional(),
  rtMr1: hexList(48, 'TDX rtMr1').optional(),
  rtMr2: hexList(48, 'TDX rtMr2').optional(),
  rtMr3: hexList(48, 'TDX rtMr3').optional(),
});

const sgxPolicySchema = z
  .strictObject({
    /** Acceptable MRENCLAVE values (32 bytes). */
    mrEnclave: hexList(32, 'SGX mrEnclave').optional(),
    /** Acceptable MRSIGNER values (32 bytes); needs `isvProdId` and `minIsvSvn`. */
    mrSigner: hexList(32, 'SGX mrSigner').optional(),
    isvProdId: z.number().int().min(0).max(0xffff).optional(),
    minIsvSvn: z.number().int().min(0).max(0xffff).optional(),
  })
  .superRefine((sgx, context) => {
    if (sgx.mrEnclave === undefined && sgx.mrSigner === undefined) {
      context.addIssue({ code: 'custom', message: 'list mrEnclave values, or mrSigner values with isvProdId and minIsvSvn' });
    }
    if (sgx.mrSigner !== undefined) {
      for (const field of ['isvProdId', 'minIsvSvn'] as const) {
        if (sgx[field] === undefined) {
          context.addIssue({ code: 'custom', path: [field], message: `${field} is required with mrSigner, because a signer key signs every enclave of its vendor` });
        }
      }
    } else {
      for (const field of ['isvProdId', 'minIsvSvn'] as const) {
        if (sgx[field] !== undefined) {
          context.addIssue({ code: 'custom', path: [field], message: `${field} applies only together with mrSigner` });
        }
      }
    }
  });

const devPolicySchema = z.strictObject({
  /** Acceptable claimed measurements (48 bytes); any value when absent. */
  measurement: hexList(48, 'dev measurement').optional(),
});

/**
 * The attestation policy of one service. Each provider in `providers` other than `dev` needs its
 * own section of acceptable measurements, so that no listed provider accepts any workload.
 */
const attestationServiceSchema = z
  .strictObject({
    providers: z
      .array(z.enum(ATTESTATION_PROVIDERS))
      .min(1)
      .refine((providers) => new Set(providers).size === providers.length, 'a provider is listed twice'),
    'sev-snp': sevSnpPolicySchema.optional(),
    tdx: tdxPolicySchema.optional(),
    sgx: sgxPolicySchema.optional(),
    dev: devPolicySchema.optional(),
    /** Acceptable TCB statuses of the platform. Default ['UpToDate']. */
    tcbStatuses: z
      .array(z.enum(TCB_STATUSES))
      .min(1)
      .refine((statuses) => new Set(statuses).size === statuses.length, 'a TCB status is listed twice')
      .optional(),
    /** Whether a TEE with debugging enabled is accepted. Default false. */
    allowDebug: z.boolean().optional(),
  })
  .superRefine((service, context) => {
    for (const provider of ATTESTATION_PROVIDERS) {
      const listed = service.providers.includes(provider);
      const configured = service[provider] !== undefined;
      if (listed && !configured && provider !== 'dev') {
        context.addIssue({ code: 'custom', path: [provider], message: `provider ${provider} is listed, so its acceptable measurements must be given in ${JSON.stringify(provider)}` });
      }
      if (!listed && configured) {
        context.addIssue({ code: 'custom', path: [provider], message: `settings for ${provider} are given, but providers does not list it` });
      }
    }
    const snp = service['sev-snp'];
    if (service.providers.includes('sev-snp') && snp !== undefined && snp.minTcb === undefined) {
      context.addIssue({
        code: 'custom',
        path: ['sev-snp', 'minTcb'],
        message:
          'sev-snp.minTcb is required: every verified SEV-SNP report has TCB status UpToDate, so tcbStatuses sets no floor for SEV-SNP; give the lowest acceptable bootloader, tee, snp and microcode versions (and fmc on Turin)',
      });
    }
  });

const attestationSchema = z
  .strictObject({
    /** Whether every proxy must present attestation evidence to enroll. Default false. */
    required: z.boolean().optional(),
    services: z.record(z.string(), attestationServiceSchema).superRefine((services, context) => {
      const seen = new Map<string, string>();
      for (const name of Object.keys(services)) {
        try {
          const ref = parseServiceRef(name);
          const normalised = `${ref.namespace}/${ref.service}`;
          const other = seen.get(normalised);
          if (other !== undefined) {
            context.addIssue({ code: 'custom', path: [name], message: `service ${JSON.stringify(name)} is the same service as ${JSON.stringify(other)}; keep one entry` });
          }
          seen.set(normalised, name);
        } catch (error) {
          context.addIssue({ code: 'custom', path: [name], message: isSealmeshError(error) ? error.message : String(error) });
        }
      }
    }),
    /** Whether the dev attestation provider, which proves nothing, is accepted. Default false. */
    allowDevProvider: z.boolean().optional(),
  })
  .superRefine((attestation, context) => {
    if (attestation.allowDevProvider === true) return;
    for (const [name, service] of Object.entries(attestation.services)) {
      if (service.providers.includes('dev')) {
        context.addIssue({ code: 'custom', path: ['services', name, 'providers'], message: `service ${JSON.stringify(name)} lists the dev provider, which needs allowDevProvider: true` });
      }
    }
  });

export const manifestSchema = z
  .strictObject({
    version: z.number().int().min(1),
    /** Digest of the predecessor's canonical manifest, or null for version 1. */
    previous: z.string().regex(DIGEST_PATTERN, 'use the 64 lowercase hex digits of a SHA-256 digest').nullable(),
    trustDomain: z.string().superRefine((name, context) => {
      try {
        assertTrustDomain(name);
      } catch (error) {
        context.addIssue({ code: 'custom', message: isSealmeshError(error) ? error.message : String(error) });
      }
    }),
    defaultPolicy: z.enum(['deny', 'allow']),
    tls: tlsSchema,
    svidTtl: svidTtlSchema,
    intentions: intentionsSchema,
    attestation: attestationSchema,
    /**
     * Purpose of the cluster. `production` (the default when absent) rejects settings that exist
     * only for development, such as `attestation.allowDevProvider`.
     */
    environment: z.enum(['production', 'development']).optional(),
    /**
     * Local perimeter. `appBinding: strict` makes every proxy refuse to serve an app that other
     * hosts can reach without it; `warn` (the default when absent) reports it.
     */
    perimeter: z.strictObject({ appBinding: z.enum(['strict', 'warn']) }).optional(),
    /**
     * Process hardening. `requireProductionMode: true` makes every proxy and the server refuse to
     * run unless started with `--mode production`; false or absent leaves the mode to each process.
     */
    hardening: z.strictObject({ requireProductionMode: z.boolean().optional() }).optional(),
    operators: operatorsSchema,
  })
  .superRefine((manifest, context) => {
    if (manifest.attestation.allowDevProvider === true && (manifest.environment ?? 'production') === 'production') {
      context.addIssue({
        code: 'custom',
        path: ['attestation', 'allowDevProvider'],
        message: 'a production manifest cannot accept the dev attestation provider, whose evidence proves nothing; set environment: development for a development cluster, or remove allowDevProvider',
      });
    }
    if (manifest.version === 1 && manifest.previous !== null) {
      context.addIssue({ code: 'custom', path: ['previous'], message: 'version 1 starts the chain, so previous must be null' });
    }
    if (manifest.version > 1 && manifest.previous === null) {
      context.addIssue({ code: 'custom', path: ['previous'], message: `version ${manifest.version} must name its predecessor's digest in previous` });
    }
  });

export const signatureSchema = z.strictObject({
  keyId: z.string().regex(KEY_ID_PATTERN, 'use 1 to 128 letters, digits and ._:@-, starting with a letter or digit'),
  algorithm: z.enum(OPERATOR_KEY_ALGORITHMS),
  signature: z
    .string()
    .max(128)
    .refine(isCanonicalBase64, 'is not canonical base64 with padding')
    .refine((value) => Buffer.from(value, 'base64').length === SIGNATURE_BYTES, `does not decode to ${SIGNATURE_BYTES} bytes`),
});

export const signedManifestSchema = z
  .strictObject({
    manifest: manifestSchema,
    signatures: z.array(signatureSchema),
  })
  .superRefine((document, context) => {
    const keyIds = new Set<string>();
    document.signatures.forEach((signature, index) => {
      if (keyIds.has(signature.keyId)) {
        context.addIssue({ code: 'custom', path: ['signatures', index, 'keyId'], message: `key ${JSON.stringify(signature.keyId)} signed twice; keep one signature per key` });
      }
      keyIds.add(signature.keyId);
    });
  });

export type Manifest = z.infer<typeof manifestSchema>;
export type OperatorKey = Manifest['operators']['keys'][number];
export type IntentionRule = NonNullable<Manifest['intentions']['rules']>[number];
export type AttestationSettings = Manifest['attestation'];
export type AttestationServicePolicy = AttestationSettings['services'][string];
export type ManifestSignature = z.infer<typeof signatureSchema>;
/** A manifest with the operator signatures collected so far; an unsigned draft has none. */
export type SignedManifest = z.infer<typeof signedManifestSchema>;

/** Formats zod issues as `path: message` lines joined by semicolons. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 10)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}

/**
 * Validates an unsigned manifest and returns it unchanged. Throws SEALMESH_ERR_MANIFEST_INVALID
 * naming every failing field (at most ten) and `source`, such as a file path, when given.
 */
export function parseManifest(value: unknown, source = 'manifest'): Manifest {
  const result = manifestSchema.safeParse(value);
  if (!result.success) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is invalid: ${describeIssues(result.error)}`);
  }
  return result.data;
}

/** Validates a signed manifest document. Throws SEALMESH_ERR_MANIFEST_INVALID like `parseManifest`. */
export function parseSignedManifest(value: unknown, source = 'manifest document'): SignedManifest {
  const result = signedManifestSchema.safeParse(value);
  if (!result.success) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is invalid: ${describeIssues(result.error)}`);
  }
  return result.data;
}
