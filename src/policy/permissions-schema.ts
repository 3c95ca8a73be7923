import { RE2JS } from 're2js';
import { z } from 'zod';
import { HTTP_METHODS, MAX_PERMISSIONS, MAX_REGEX_LENGTH } from './permissions.ts';
import { normaliseRequestPath } from './path.ts';

/**
 * The schema of L7 permissions, with zod and RE2JS. It is a module of its own so that a proxy
 * loads both packages only once a snapshot carries permissions (see `loadPermissionsSchema`).
 */

const HEADER_NAME = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;

function checkRegex(pattern: string, context: z.RefinementCtx): void {
  try {
    RE2JS.compile(pattern);
  } catch (error) {
    context.addIssue({ code: 'custom', message: `regular expression ${JSON.stringify(pattern)} is invalid for RE2 syntax: ${(error as Error).message}` });
  }
}

/** A path in a rule must be in the form request paths are normalised to, or it could never match. */
const rulePathSchema = z
  .string()
  .startsWith('/')
  .max(1024)
  .superRefine((path, context) => {
    const normalised = normaliseRequestPath(path);
    if (!normalised.ok) context.addIssue({ code: 'custom', message: `path ${JSON.stringify(path)} is invalid: ${normalised.reason}` });
    else if (normalised.path !== path) context.addIssue({ code: 'custom', message: `path ${JSON.stringify(path)} is not normalised; write ${JSON.stringify(normalised.path)}` });
  });

const regexSchema = z.string().min(1).max(MAX_REGEX_LENGTH).superRefine(checkRegex);

export const headerMatchSchema = z
  .strictObject({
    name: z.string().min(1).max(128).transform((name) => name.toLowerCase()).pipe(z.string().regex(HEADER_NAME, 'use an HTTP header name (RFC 9110 token characters)')),
    present: z.literal(true).optional(),
    exact: z.string().max(1024).optional(),
    prefix: z.string().min(1).max(1024).optional(),
    suffix: z.string().min(1).max(1024).optional(),
    regex: regexSchema.optional(),
    invert: z.boolean().optional(),
  })
  .superRefine((match, context) => {
    const set = ['present', 'exact', 'prefix', 'suffix', 'regex'].filter((key) => match[key as keyof typeof match] !== undefined);
    if (set.length !== 1) context.addIssue({ code: 'custom', message: `a header match sets exactly one of present, exact, prefix, suffix and regex; this one sets ${set.length === 0 ? 'none' : set.join(', ')}` });
  });

export const httpMatchSchema = z
  .strictObject({
    pathExact: rulePathSchema.optional(),
    pathPrefix: rulePathSchema.optional(),
    pathRegex: regexSchema.optional(),
    methods: z.array(z.enum(HTTP_METHODS)).min(1).max(HTTP_METHODS.length).optional(),
    header: z.array(headerMatchSchema).min(1).max(32).optional(),
  })
  .superRefine((match, context) => {
    const paths = [match.pathExact, match.pathPrefix, match.pathRegex].filter((value) => value !== undefined);
    if (paths.length > 1) context.addIssue({ code: 'custom', message: 'set at most one of pathExact, pathPrefix and pathRegex' });
    if (paths.length === 0 && match.methods === undefined && match.header === undefined) {
      context.addIssue({ code: 'custom', message: 'an http match needs a path, methods or a header match; an empty one would match every request' });
    }
  });

export const permissionSchema = z.strictObject({
  action: z.enum(['allow', 'deny']),
  http: httpMatchSchema,
});

export const permissionsSchema = z.array(permissionSchema).min(1).max(MAX_PERMISSIONS);

export type HeaderMatch = z.output<typeof headerMatchSchema>;
export type HttpMatch = z.output<typeof httpMatchSchema>;
export type Permission = z.output<typeof permissionSchema>;

/** Compiles a regular expression of a permission that passed the schema. */
export function compileRegex(pattern: string): RE2JS {
  return RE2JS.compile(pattern);
}
