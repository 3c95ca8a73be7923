import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log/index.ts';
import type { CertificateAuthority } from '../pki/index.ts';
import type { AclService } from './acl.ts';
import type { CaRotation } from './ca-rotation.ts';
import * as schemas from './schemas.ts';
import { parseBody, presentedToken } from './request.ts';

/**
 * Registers the CA routes: status (read token), root rotation and the prune of a retired root
 * (operator token).
 */
export function registerCaRoutes(app: FastifyInstance, context: { acl: AclService; ca: CertificateAuthority; rotation: CaRotation; log: Logger }): void {
  const { acl, ca, rotation, log } = context;

  app.get('/v1/operator/ca', async (request) => {
    await acl.authorize(presentedToken(request), 'read');
    return ca.status();
  });

  app.post('/v1/operator/ca/rotate-root', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    parseBody(schemas.emptyBody, request.body, 'request body');
    log.info({ accessorId: token.accessorId }, 'CA root rotation requested');
    return rotation.rotate({ kind: 'token', accessorId: token.accessorId });
  });

  app.post('/v1/operator/ca/prune', async (request) => {
    const token = await acl.authorize(presentedToken(request), 'operator');
    parseBody(schemas.emptyBody, request.body, 'request body');
    return rotation.prune({ kind: 'token', accessorId: token.accessorId });
  });
}
