import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuditLog } from '../audit/index.ts';
import type { Logger } from '../log/index.ts';
import type { AclService } from './acl.ts';
import type { SealLifecycle } from './seal-lifecycle.ts';
import { parseBody, presentedToken } from './request.ts';

const rotateKekBody = z.strictObject({
  keyFile: z.string().min(1).max(4096).optional(),
  passphrase: z.string().min(1).max(1024).optional(),
  keyLabel: z.string().min(1).max(128).optional(),
  keyShares: z.number().int().min(1).max(255).optional(),
  keyThreshold: z.number().int().min(1).max(255).optional(),
});

/**
 * Operator routes that act on the sealed store: verification, snapshots and key rotation. Each
 * needs an operator token.
 */
export function registerOperatorRoutes(app: FastifyInstance, context: { acl: AclService; seal: SealLifecycle; audit: AuditLog; log: Logger }): void {
  const { acl, seal, audit, log } = context;

  app.post('/v1/operator/verify-data', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    const report = await seal.verify();
    log.info({ accessorId: token.accessorId, records: report.records, chainEntries: report.chainEntries }, 'data verified on request');
    return { report };
  });

  app.get('/v1/operator/snapshot', async (request, reply) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    // VACUUM INTO writes a new file, which is then read back. It goes to a private directory inside
    // the data directory, because the sandbox lets the server write there and nowhere else.
    const directory = mkdtempSync(join(seal.dataDir, '.snapshot-'));
    try {
      const path = join(directory, 'snapshot.db');
      await seal.snapshotTo(path);
      const bytes = readFileSync(path);
      log.info({ accessorId: token.accessorId, bytes: bytes.length }, 'sealed snapshot taken');
      return reply.header('content-type', 'application/octet-stream').send(bytes);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  app.post('/v1/operator/rotate-kek', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    const body = parseBody(rotateKekBody, request.body, 'request body');
    const result = await seal.rotateKek(body);
    await audit.append({ action: 'seal.rotate-kek', actor: { kind: 'token', accessorId: token.accessorId }, details: { provider: result.provider } });
    log.info({ accessorId: token.accessorId, provider: result.provider }, 'key-encryption key rotated on request');
    return result;
  });

  app.post('/v1/operator/rotate-data-key', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    const result = await seal.rotateDataKey();
    await audit.append({
      action: 'seal.rotate-data-key',
      actor: { kind: 'token', accessorId: token.accessorId },
      details: { recordsUnderOldKeys: result.recordsUnderOldKeys },
    });
    log.info({ accessorId: token.accessorId, recordsUnderOldKeys: result.recordsUnderOldKeys }, 'data key rotation started on request');
    return result;
  });
}
