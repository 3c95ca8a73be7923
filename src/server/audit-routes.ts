import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuditLog } from '../audit/index.ts';
import type { Logger } from '../log/index.ts';
import type { AclService } from './acl.ts';
import { parseBody, presentedToken } from './request.ts';

const listQuery = z.strictObject({
  since: z.iso.datetime({ offset: true }).optional(),
});

/** Routes that read and verify the audit log. Both need an operator token. */
export function registerAuditRoutes(app: FastifyInstance, context: { acl: AclService; audit: AuditLog; log: Logger }): void {
  const { acl, audit, log } = context;

  app.get('/v1/audit', async (request) => {
    await acl.authorize(presentedToken(request), 'operator');
    const query = parseBody(listQuery, request.query, 'query');
    const entries = await audit.list(query.since === undefined ? {} : { since: new Date(query.since) });
    return { entries };
  });

  app.post('/v1/audit/verify', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    const verification = await audit.verify();
    if (verification.ok) log.info({ accessorId: token.accessorId, entries: verification.count }, 'audit log verified on request');
    else log.error({ accessorId: token.accessorId, code: verification.code, seq: verification.seq, reason: verification.message }, 'audit log verification failed');
    return { verification };
  });
}
