import type { FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { SealmeshError } from '../errors/index.ts';

/** Validates a request body or query against its schema, naming the first invalid field. */
export function parseBody<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const path = issue === undefined || issue.path.length === 0 ? what : `${what} field ${issue.path.join('.')}`;
    throw new SealmeshError('SEALMESH_ERR_BAD_REQUEST', `${path} is invalid: ${issue?.message ?? 'does not match the schema'}`);
  }
  return result.data;
}

/** Returns the ACL token presented as `Authorization: Bearer` or `X-Sealmesh-Token`. */
export function presentedToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header === 'string' && header.startsWith('Bearer ')) return header.slice('Bearer '.length).trim();
  const alternative = request.headers['x-sealmesh-token'];
  return typeof alternative === 'string' ? alternative : undefined;
}
