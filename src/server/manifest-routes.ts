import type { FastifyInstance } from 'fastify';
import { isSealmeshError } from '../errors/index.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Logger } from '../log/index.ts';
import type { AclService } from './acl.ts';
import type { ManifestService } from './manifest-service.ts';
import type { Catalog } from './catalog.ts';
import { formatServiceRef } from '../spiffe/index.ts';
import { presentedToken } from './request.ts';
import { manifestDigest, parseSignedManifest } from '../manifest/index.ts';

/**
 * Names a rejected candidate in its audit entry: the version and digest of a manifest that parses,
 * or the version it claims when it does not. Nothing else of the body is recorded.
 */
function describeCandidate(body: unknown): { version?: number; digest?: string } {
  try {
    const { manifest } = parseSignedManifest(body, 'candidate manifest');
    return { version: manifest.version, digest: manifestDigest(manifest) };
  } catch {
    const claimed = (body as { manifest?: { version?: unknown } } | null | undefined)?.manifest?.version;
    return Number.isSafeInteger(claimed) ? { version: claimed as number } : {};
  }
}

/**
 * Routes of the signed manifest: apply a new version (operator token), and read the current
 * posture and the chain (read token). Applying is accepted only through `acceptManifest`, so the
 * token alone never changes the posture: the operator signatures do.
 */
export function registerManifestRoutes(
  app: FastifyInstance,
  context: { acl: AclService; manifests: ManifestService; audit: AuditLog; log: Logger; onApplied: () => void; catalog: Catalog },
): void {
  const { acl, manifests, audit, log } = context;

  app.post('/v1/manifest', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    let accepted;
    try {
      accepted = await manifests.apply(request.body);
    } catch (error) {
      // A rejected attempt to change the posture is as much a security event as an accepted one.
      if (isSealmeshError(error)) {
        await audit.append({
          action: 'manifest.reject',
          actor: { kind: 'token', accessorId: token.accessorId },
          subject: 'manifest apply',
          details: { code: error.code, ...describeCandidate(request.body) },
        });
      }
      throw error;
    }
    const version = accepted.manifest.version;
    await audit.append({
      action: 'manifest.apply',
      actor: { kind: 'token', accessorId: token.accessorId },
      subject: `version ${version}`,
      details: { version, digest: accepted.digest, previous: accepted.manifest.previous, approvedBy: accepted.approvedBy },
    });
    log.info({ accessorId: token.accessorId, version, digest: accepted.digest, approvedBy: accepted.approvedBy }, 'manifest applied');
    context.onApplied();
    return { version, digest: accepted.digest, approvedBy: accepted.approvedBy };
  });

  app.get('/v1/manifest', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    const posture = await manifests.posture();
    return {
      manifest: posture === undefined ? null : { version: posture.version, digest: posture.digest },
      genesisDigest: (await manifests.pinnedGenesis()) ?? null,
      posture: posture ?? null,
      proxies: (await context.catalog.instances()).map((instance) => ({
        instanceId: instance.id,
        service: formatServiceRef(instance),
        manifest: instance.manifest ?? null,
      })),
    };
  });

  app.get('/v1/manifest/history', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    return { chain: await manifests.chain() };
  });
}
