import { z } from 'zod';
import { permissionsSchema } from '../policy/permissions-schema.ts';
import { RUN_MODES } from '../hardening/production.ts';

/**
 * Schemas of every API request body. All objects are strict: an unknown field is an error, so a
 * misspelt option is reported instead of silently ignored.
 */

const serviceRef = z.string().min(1).max(128);
const protocol = z.enum(['tcp', 'http', 'http2', 'grpc']);
const endpointRef = z.string().min(1).max(128);

export const createTokenBody = z.strictObject({
  kind: z.enum(['operator', 'read', 'join']),
  service: serviceRef.optional(),
  ttlSeconds: z.number().int().positive().max(365 * 24 * 3600).optional(),
  description: z.string().max(256).optional(),
});

export const createIntentionBody = z.strictObject({
  source: endpointRef,
  destination: endpointRef,
  action: z.enum(['allow', 'deny']),
  permissions: permissionsSchema.optional(),
  description: z.string().max(256).optional(),
  replace: z.boolean().optional(),
});

export const deleteIntentionQuery = z.strictObject({
  source: endpointRef,
  destination: endpointRef,
});

const csr = z.string().min(1).max(64 * 1024);

const evidence = z.strictObject({
  provider: z.string().min(1).max(32),
  data: z.base64().max(256 * 1024),
  aux: z.base64().max(64 * 1024).optional(),
});

/** A nonce from `POST /v1/svid/nonce`: 32 random bytes, base64url without padding. */
const nonce = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'use the nonce exactly as POST /v1/svid/nonce returned it');

export const enrollBody = z.strictObject({
  csr,
  address: z.union([z.ipv4(), z.ipv6(), z.hostname()]),
  port: z.number().int().min(1).max(65535),
  upstreams: z.array(serviceRef).max(64).default([]),
  protocol: protocol.default('tcp'),
  ttlSeconds: z.number().int().positive().optional(),
  evidence: evidence.optional(),
  nonce: nonce.optional(),
  /** The proxy's `--mode`. Proxies that predate the field send none and count as development. */
  mode: z.enum(RUN_MODES).default('development'),
});

export const renewBody = z.strictObject({
  csr,
  instanceId: z.uuid(),
  ttlSeconds: z.number().int().positive().optional(),
  evidence: evidence.optional(),
  nonce: nonce.optional(),
});

export const watchQuery = z.strictObject({
  instance: z.uuid(),
});

export const healthBody = z.strictObject({
  instanceId: z.uuid(),
  status: z.enum(['passing', 'critical']),
  output: z.string().max(1024).optional(),
  appExposure: z
    .strictObject({
      exposed: z.boolean(),
      bindings: z.array(z.string().min(1).max(64)).max(32),
    })
    .optional(),
  /** The signed manifest the proxy verified and enforces. */
  manifest: z.strictObject({ version: z.number().int().min(1), digest: z.string().regex(/^[0-9a-f]{64}$/) }).optional(),
});

export const registerBody = z.strictObject({
  instanceId: z.uuid(),
  address: z.union([z.ipv4(), z.ipv6(), z.hostname()]),
  port: z.number().int().min(1).max(65535),
  upstreams: z.array(serviceRef).max(64).default([]),
  protocol: protocol.default('tcp'),
});

export const deregisterBody = z.strictObject({
  instanceId: z.uuid(),
});

export const emptyBody = z.union([z.strictObject({}), z.null(), z.undefined()]);
