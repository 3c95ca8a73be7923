import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SealmeshError } from '../errors/index.ts';
import { requiredModeViolation } from '../hardening/required-mode.ts';
import type { RunMode } from '../hardening/production.ts';
import { validateCsr, type CertificateAuthority } from '../pki/index.ts';
import { formatServiceRef, formatSpiffeId, parseServiceRef, type SpiffeId } from '../spiffe/index.ts';
import type { Logger } from '../log/index.ts';
import type { AclService } from './acl.ts';
import type { Catalog, Instance } from './catalog.ts';
import type { IntentionStore } from './intentions.ts';
import type { ServerMetrics } from './metrics.ts';
import type { WatchHub } from './watch.ts';
import * as schemas from './schemas.ts';
import { parseBody, presentedToken } from './request.ts';
import { normalizeSerial, peerSvid, requestConnection, type PeerSvid } from './peer-svid.ts';
import { WatchStreamBindings } from './watch-bindings.ts';
import { registerOperatorRoutes } from './routes-operator.ts';
import type { SealLifecycle } from './seal-lifecycle.ts';
import type { AuditActor, AuditLog } from '../audit/index.ts';
import type { ManifestService } from './manifest-service.ts';
import type { AttestationGate } from './attestation.ts';
import type { NonceStore } from './nonces.ts';
import { registerManifestRoutes } from './manifest-routes.ts';
import { registerAuditRoutes } from './audit-routes.ts';
import { registerCaRoutes } from './ca-routes.ts';
import type { CaRotation } from './ca-rotation.ts';

export interface RouteContext {
  acl: AclService;
  ca: CertificateAuthority;
  catalog: Catalog;
  intentions: IntentionStore;
  hub: WatchHub;
  metrics: ServerMetrics;
  /** Decides whether enrollment and renewal evidence is acceptable. */
  attestation: AttestationGate;
  nonces: NonceStore;
  log: Logger;
  trustDomain: string;
  manifests: ManifestService;
  audit: AuditLog;
  storeRevision: () => Promise<number>;
  version: string;
  seal: SealLifecycle;
  caRotation: CaRotation;
  /** Clock of the per-request client certificate expiry checks. */
  now: () => Date;
}

/** Returns the audit actor of a request made with an ACL token. */
function tokenActor(token: { accessorId: string }): AuditActor {
  return { kind: 'token', accessorId: token.accessorId };
}

/**
 * Returns the TTL to issue an SVID with under the enforced bounds. A requested TTL outside them is
 * rejected at enrollment, so the caller sees the mistake. At renewal it is clamped into them,
 * because bounds that a newer manifest narrowed must not cost a running proxy its identity.
 */
async function svidTtlFor(manifests: ManifestService, requested: number | undefined, mode: 'reject' | 'clamp'): Promise<number> {
  const { svidTtl } = await manifests.settings();
  if (requested === undefined) return svidTtl.defaultSeconds;
  if (requested >= svidTtl.minSeconds && requested <= svidTtl.maxSeconds) return requested;
  if (mode === 'clamp') return Math.min(svidTtl.maxSeconds, Math.max(svidTtl.minSeconds, requested));
  throw new SealmeshError(
    'SEALMESH_ERR_TTL_OUT_OF_BOUNDS',
    `requested SVID TTL ${requested}s is outside the bounds of the cluster's posture: request ${svidTtl.minSeconds}s to ${svidTtl.maxSeconds}s, or omit it for the default of ${svidTtl.defaultSeconds}s`,
  );
}

/**
 * Throws SEALMESH_ERR_PRODUCTION_MODE_REQUIRED when the applied manifest requires production mode
 * and the enrolling proxy declares another mode. The declared mode is not proven, so this only
 * spares the join token of a proxy started in the wrong mode. The security check is the proxy's
 * own check of every verified manifest it receives in a snapshot.
 */
async function assertEnrollmentMode(manifests: ManifestService, mode: RunMode): Promise<void> {
  const violation = requiredModeViolation(await manifests.posture(), mode, 'the enrolling proxy');
  if (violation === undefined) return;
  throw new SealmeshError(violation.code, `${violation.message}; the join token was not used and is still valid`);
}

/** Throws when the applied manifest manages intentions, so the API may not write them. */
async function assertIntentionsWritable(manifests: ManifestService): Promise<void> {
  const settings = await manifests.settings();
  if (settings.intentionsManagement === 'manifest') {
    throw new SealmeshError(
      'SEALMESH_ERR_INTENTIONS_MANAGED_BY_MANIFEST',
      'the applied manifest sets intentions.management to manifest, so intentions change only through a signed manifest; edit intentions.rules in a new manifest version',
    );
  }
}

/** Returns the nonce holder of a join token. */
function joinHolder(token: { accessorId: string }): string {
  return `token:${token.accessorId}`;
}

/**
 * Returns the nonce holder of a proxy that authenticated with its SVID. It is keyed on the SVID's
 * serial number, not its SPIFFE ID, because every replica of a service shares the SPIFFE ID and
 * one replica must not use up or evict another's nonces.
 */
function svidHolder(peer: PeerSvid): string {
  return `svid:${peer.serial}`;
}

/** Counts instances by the provider of their evidence, with the insecure ones apart, for `/v1/status`. */
function summarizeAttestation(instances: Instance[]): { byProvider: Record<string, number>; insecure: number; unattested: number } {
  const byProvider: Record<string, number> = {};
  let insecure = 0;
  let unattested = 0;
  for (const instance of instances) {
    if (instance.attestation === undefined) {
      unattested += 1;
      continue;
    }
    byProvider[instance.attestation.provider] = (byProvider[instance.attestation.provider] ?? 0) + 1;
    if (instance.attestation.insecure) insecure += 1;
  }
  return { byProvider, insecure, unattested };
}

/** Interval between heartbeat lines on a watch stream, so that both ends notice a dead peer. */
const WATCH_HEARTBEAT_MS = 15_000;
export function registerRoutes(app: FastifyInstance, context: RouteContext): void {
  const { acl, ca, catalog, intentions, hub, metrics, log, manifests, audit } = context;
  const bindings = new WatchStreamBindings({ log, metrics, now: context.now });

  app.get('/v1/status', async () => {
    const posture = (await manifests.posture()) ?? null;
    const instances = await catalog.instances();
    return {
      trustDomain: context.trustDomain,
      rootFingerprintSha256: ca.rootFingerprintSha256(),
      ca: await caSummary(ca),
      initialized: await acl.isBootstrapped(),
      storeRevision: await context.storeRevision(),
      watchStreams: hub.streamCount,
      version: context.version,
      seal: context.seal.describe(),
      manifest: posture === null ? null : { version: posture.version, digest: posture.digest },
      posture,
      // Counts only: which proxy enforces what is in `GET /v1/manifest`, behind a read token.
      proxiesByManifestVersion: countByManifestVersion(instances),
      attestation: summarizeAttestation(instances),
    };
  });

  app.get('/v1/bundle', async () => ({ trustDomain: context.trustDomain, roots: ca.bundle() }));

  app.post('/v1/operator/init', async (request) => {
    parseBody(schemas.emptyBody, request.body, 'request body');
    const { token, accessorId } = await acl.bootstrap();
    await audit.append({ action: 'operator.init', actor: { kind: 'system', accessorId: 'server' }, subject: accessorId });
    log.info({ accessorId }, 'cluster initialised; first operator token issued');
    return { token, accessorId, trustDomain: context.trustDomain };
  });

  app.post('/v1/acl/tokens', async (request) => {
    const caller = await acl.authorize(presentedToken(request), 'operator');
    const body = parseBody(schemas.createTokenBody, request.body, 'request body');
    const ref = body.service === undefined ? undefined : parseServiceRef(body.service);
    const { token, record } = await acl.create({
      kind: body.kind,
      namespace: ref?.namespace,
      service: ref?.service,
      ttlSeconds: body.ttlSeconds,
      description: body.description,
    });
    await audit.append({
      action: 'token.create',
      actor: tokenActor(caller),
      subject: record.accessorId,
      details: { kind: record.kind, ...(body.service !== undefined ? { service: body.service } : {}), ...(record.expiresAt !== undefined ? { expiresAt: record.expiresAt } : {}) },
    });
    log.info({ accessorId: record.accessorId, kind: record.kind, service: body.service }, 'ACL token created');
    return { token, ...record };
  });

  app.get('/v1/acl/tokens', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    return { tokens: await acl.list() };
  });

  app.delete('/v1/acl/tokens/:accessorId', async (request) => {
    const caller = await acl.authorize(presentedToken(request), 'operator');
    const { accessorId } = request.params as { accessorId: string };
    if (!(await acl.revoke(accessorId))) {
      throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `no token with accessor id ${JSON.stringify(accessorId)}`);
    }
    await audit.append({ action: 'token.revoke', actor: tokenActor(caller), subject: accessorId });
    log.info({ accessorId }, 'ACL token revoked');
    return { revoked: accessorId };
  });

  app.get('/v1/catalog/services', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    return { services: await catalog.services() };
  });

  app.get('/v1/intentions', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    const managed = (await manifests.settings()).manifestIntentions;
    return { intentions: managed ?? (await intentions.list()) };
  });

  app.post('/v1/intentions', async (request) => {
    const caller = await acl.authorize(presentedToken(request), 'operator');
    const body = parseBody(schemas.createIntentionBody, request.body, 'request body');
    await assertIntentionsWritable(manifests);
    const intention = await intentions.upsert(body);
    await audit.append({
      action: 'intention.create',
      actor: tokenActor(caller),
      subject: `${intention.source} -> ${intention.destination}`,
      details: { action: intention.action, replace: body.replace === true, permissions: intention.permissions?.length ?? 0 },
    });
    log.info({ source: intention.source, destination: intention.destination, action: intention.action }, 'intention written');
    return { intention };
  });

  app.delete('/v1/intentions', async (request) => {
    const caller = await acl.authorize(presentedToken(request), 'operator');
    const query = parseBody(schemas.deleteIntentionQuery, request.query, 'query');
    await assertIntentionsWritable(manifests);
    if (!(await intentions.delete(query.source, query.destination))) {
      throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `no intention ${query.source} -> ${query.destination}`);
    }
    await audit.append({ action: 'intention.delete', actor: tokenActor(caller), subject: `${query.source} -> ${query.destination}` });
    log.info({ source: query.source, destination: query.destination }, 'intention deleted');
    return { deleted: { source: query.source, destination: query.destination } };
  });

  // A nonce binds attestation evidence to one enrollment or renewal. A proxy that enrolls requests
  // it with its join token, and one that renews requests it over mTLS with its SVID. The nonce is
  // valid only for the same credential.
  app.post('/v1/svid/nonce', async (request) => {
    parseBody(schemas.emptyBody, request.body, 'request body');
    const holder = await nonceHolder(request);
    const issued = context.nonces.issue(holder);
    return { nonce: issued.nonce, expiresAt: issued.expiresAt.toISOString() };
  });

  async function nonceHolder(request: FastifyRequest): Promise<string> {
    const token = presentedToken(request);
    const { socket } = requestConnection(request);
    if (token !== undefined || socket.getPeerX509Certificate?.() === undefined) {
      // Without a client certificate a join token is required; its absence is reported as such.
      return joinHolder(await acl.authorize(token, 'join'));
    }
    return svidHolder(peerSvid(request, context.trustDomain, context.now()));
  }

  app.post('/v1/svid/enroll', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'join');
    const body = parseBody(schemas.enrollBody, request.body, 'request body');
    const entitled: SpiffeId = { trustDomain: context.trustDomain, namespace: token.namespace ?? 'default', service: token.service ?? '' };
    // The mode, the CSR and the evidence are checked before the token is consumed, so a malformed
    // or rejected request does not burn it.
    await assertEnrollmentMode(manifests, body.mode);
    const ttlSeconds = await svidTtlFor(manifests, body.ttlSeconds, 'reject');
    const csr = await validateCsr(body.csr, entitled);
    const attestation = await context.attestation.check({
      kind: 'enroll',
      identity: entitled,
      spkiDer: csr.spkiDer,
      evidence: body.evidence,
      nonce: body.nonce,
      holder: joinHolder(token),
      actor: tokenActor(token),
      now: new Date(),
    });
    const svid = await ca.issueSvid({ csr, entitled, ttlSeconds });
    await acl.consumeJoinToken(token);
    const instance: Instance = {
      id: randomUUID(),
      namespace: entitled.namespace,
      service: entitled.service,
      spiffeId: svid.spiffeId,
      address: body.address,
      port: body.port,
      upstreams: body.upstreams.map((upstream) => formatServiceRef(parseServiceRef(upstream))),
      protocol: body.protocol,
      health: 'passing',
      registeredAt: new Date().toISOString(),
      svidSerial: svid.serialNumber,
      svidNotAfter: svid.notAfter.toISOString(),
      ...(attestation !== undefined ? { attestation } : {}),
    };
    await catalog.register(instance);
    metrics.svidsIssued.inc({ kind: 'enroll' });
    log.info(
      { spiffeId: svid.spiffeId, instance: instance.id, serial: svid.serialNumber, tokenAccessor: token.accessorId, attestation: attestation?.provider ?? 'none', insecure: attestation?.insecure },
      'proxy enrolled',
    );
    return {
      instanceId: instance.id,
      spiffeId: svid.spiffeId,
      certificatePem: svid.certificatePem,
      chainPem: svid.chainPem,
      notAfter: svid.notAfter.toISOString(),
      bundle: ca.bundle(),
      trustDomain: context.trustDomain,
      ...(attestation !== undefined ? { attestation: { provider: attestation.provider, insecure: attestation.insecure, policy: attestation.policy } } : {}),
    };
  });

  /**
   * Returns the catalog instance `instanceId` when it belongs to the caller: registered under the
   * caller's namespace and service, and recorded with the serial number of the SVID the caller
   * presented. Anything else throws SEALMESH_ERR_SVID_INSTANCE_MISMATCH, so that one replica of a
   * service cannot renew, report health for or remove another's instance.
   */
  async function ownInstance(peer: PeerSvid, instanceId: string, action: string): Promise<Instance> {
    const instance = await catalog.get(peer.id.namespace, peer.id.service, instanceId);
    const recorded = instance?.svidSerial === undefined ? undefined : normalizeSerial(instance.svidSerial);
    if (instance !== undefined && recorded === peer.serial) return instance;
    const reason = instance === undefined ? 'not registered' : 'registered to another SVID';
    log.warn({ code: 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH', spiffeId: formatSpiffeId(peer.id), serial: peer.serial, instance: instanceId, action, reason }, 'instance ownership check failed');
    throw new SealmeshError(
      'SEALMESH_ERR_SVID_INSTANCE_MISMATCH',
      `instance ${instanceId} of ${formatServiceRef(peer.id)} is ${reason}: a proxy may ${action} only the instance it enrolled, with the SVID it was last issued; enroll again if its registration was lost`,
    );
  }

  app.post('/v1/svid/renew', async (request) => {
    const caller = peerSvid(request, context.trustDomain, context.now());
    const peer = caller.id;
    const body = parseBody(schemas.renewBody, request.body, 'request body');
    // Checked first, so that a request for another instance neither uses up a nonce nor gets an SVID.
    await ownInstance(caller, body.instanceId, 'renew');
    const ttlSeconds = await svidTtlFor(manifests, body.ttlSeconds, 'clamp');
    const csr = await validateCsr(body.csr, peer);
    const attestation = await context.attestation.check({
      kind: 'renew',
      identity: peer,
      spkiDer: csr.spkiDer,
      evidence: body.evidence,
      nonce: body.nonce,
      holder: svidHolder(caller),
      actor: { kind: 'svid', accessorId: formatSpiffeId(peer) },
      now: new Date(),
    });
    const svid = await ca.issueSvid({ csr, entitled: peer, ttlSeconds });
    const updated = await catalog.update(peer.namespace, peer.service, body.instanceId, (instance) => {
      // Each renewal records the evidence it presented, or removes the record when it presented none.
      const { attestation: _previous, ...rest } = instance;
      return {
        ...rest,
        svidSerial: svid.serialNumber,
        svidNotAfter: svid.notAfter.toISOString(),
        ...(attestation !== undefined ? { attestation } : {}),
      };
    });
    if (!updated) {
      // The instance was deregistered while the SVID was being issued; the SVID is not returned.
      throw new SealmeshError('SEALMESH_ERR_SVID_INSTANCE_MISMATCH', `instance ${body.instanceId} of ${formatServiceRef(peer)} was deregistered during renewal; enroll again`);
    }
    metrics.svidsIssued.inc({ kind: 'renew' });
    bindings.supersede(body.instanceId, normalizeSerial(svid.serialNumber));
    log.info({ spiffeId: svid.spiffeId, instance: body.instanceId, serial: svid.serialNumber, attestation: attestation?.provider ?? 'none' }, 'SVID renewed');
    return {
      instanceId: body.instanceId,
      spiffeId: svid.spiffeId,
      certificatePem: svid.certificatePem,
      chainPem: svid.chainPem,
      notAfter: svid.notAfter.toISOString(),
      bundle: ca.bundle(),
      trustDomain: context.trustDomain,
      ...(attestation !== undefined ? { attestation: { provider: attestation.provider, insecure: attestation.insecure, policy: attestation.policy } } : {}),
    };
  });

  app.put('/v1/agent/health', async (request) => {
    const caller = peerSvid(request, context.trustDomain, context.now());
    const peer = caller.id;
    const body = parseBody(schemas.healthBody, request.body, 'request body');
    await ownInstance(caller, body.instanceId, 'report health for');
    const updated = await catalog.update(peer.namespace, peer.service, body.instanceId, (instance) => ({
      ...instance,
      health: body.status,
      ...(body.output !== undefined ? { healthOutput: body.output } : {}),
      ...(body.appExposure !== undefined ? { appExposure: body.appExposure } : {}),
      ...(body.manifest !== undefined ? { manifest: body.manifest } : {}),
    }));
    if (!updated) throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `instance ${body.instanceId} of ${formatServiceRef(peer)} is not registered`);
    log.info({ instance: body.instanceId, status: body.status, appExposed: body.appExposure?.exposed }, 'instance health changed');
    return { instanceId: body.instanceId, health: body.status };
  });

  // NOTE: a proxy that never receives a renewal response keeps an SVID whose serial the catalog no
  // longer records, so its later renewals are rejected and it must enroll again.
  // A proxy whose registration lapsed while the server was unreachable registers again with its
  // SVID; it can only register an instance of the service its SVID names.
  app.post('/v1/agent/register', async (request) => {
    const caller = peerSvid(request, context.trustDomain, context.now());
    const peer = caller.id;
    const body = parseBody(schemas.registerBody, request.body, 'request body');
    const existing = await catalog.get(peer.namespace, peer.service, body.instanceId);
    // A lapsed registration is recreated with the caller's SVID serial, so that the proxy can renew
    // it. A registration that still exists may only be replaced by the SVID it records.
    if (existing !== undefined) await ownInstance(caller, body.instanceId, 'register again');
    const instance: Instance = {
      svidSerial: caller.serial,
      ...existing,
      id: body.instanceId,
      namespace: peer.namespace,
      service: peer.service,
      spiffeId: formatSpiffeId(peer),
      address: body.address,
      port: body.port,
      upstreams: body.upstreams.map((upstream) => formatServiceRef(parseServiceRef(upstream))),
      protocol: body.protocol,
      health: existing?.health ?? 'passing',
      registeredAt: existing?.registeredAt ?? new Date().toISOString(),
    };
    await catalog.register(instance);
    log.info({ instance: instance.id, spiffeId: instance.spiffeId }, 'instance registered again');
    return { instanceId: instance.id };
  });

  app.post('/v1/agent/deregister', async (request) => {
    const caller = peerSvid(request, context.trustDomain, context.now());
    const peer = caller.id;
    const body = parseBody(schemas.deregisterBody, request.body, 'request body');
    if ((await catalog.get(peer.namespace, peer.service, body.instanceId)) !== undefined) await ownInstance(caller, body.instanceId, 'deregister');
    const removed = await catalog.deregister(peer.namespace, peer.service, body.instanceId);
    hub.forget({ id: body.instanceId, namespace: peer.namespace, service: peer.service });
    log.info({ instance: body.instanceId, removed }, 'instance deregistered');
    return { instanceId: body.instanceId, deregistered: removed };
  });

  app.get('/v1/watch', async (request, reply) => {
    const caller = peerSvid(request, context.trustDomain, context.now());
    const peer = caller.id;
    const query = parseBody(schemas.watchQuery, request.query, 'query');
    const registered = await catalog.get(peer.namespace, peer.service, query.instance);
    if (registered === undefined) {
      throw new SealmeshError('SEALMESH_ERR_NOT_FOUND', `instance ${query.instance} of ${formatServiceRef(peer)} is not registered; the proxy must enroll again`);
    }
    const instance = await ownInstance(caller, query.instance, 'watch');
    reply.hijack();
    const response = reply.raw;
    response.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const stream = await hub.open(
      instance,
      (message) => response.write(message.line),
      () => response.end(),
    );
    metrics.watchStreams.inc();
    log.info({ instance: instance.id, spiffeId: instance.spiffeId, serial: caller.serial }, 'watch stream opened');
    const heartbeat = setInterval(() => response.write('{"type":"heartbeat"}\n'), WATCH_HEARTBEAT_MS);
    const release = bindings.bind(instance.id, caller, () => {
      if (!response.writableEnded) response.end();
    });
    const closed = (): void => {
      clearInterval(heartbeat);
      release();
      hub.close(stream);
      metrics.watchStreams.dec();
      log.info({ instance: instance.id }, 'watch stream closed');
    };
    response.once('close', closed);
  });

  registerOperatorRoutes(app, { acl, seal: context.seal, audit, log });
  registerManifestRoutes(app, { acl, manifests, audit, log, catalog, onApplied: () => hub.schedulePush() });
  registerAuditRoutes(app, { acl, audit, log });
  registerCaRoutes(app, { acl, ca, rotation: context.caRotation, log });

  app.get('/v1/metrics', async (request, reply) => {
    await acl.authorize(presentedToken(request), 'read');
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}

/** The CA part of `GET /v1/status`: custody, root count and the pending rotation, if any. */
async function caSummary(ca: CertificateAuthority): Promise<{ custody: string; roots: number; rotation: Awaited<ReturnType<CertificateAuthority['status']>>['rotation'] }> {
  const status = await ca.status();
  return { custody: status.custody, roots: status.roots.length, rotation: status.rotation };
}

/** Counts instances by the manifest version their proxy enforces; `none` before the first. */
export function countByManifestVersion(instances: readonly Instance[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const instance of instances) {
    const key = instance.manifest === undefined ? 'none' : String(instance.manifest.version);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}
