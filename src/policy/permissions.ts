import { RE2JS } from 're2js';
import { z } from 'zod';
import { SealmeshError } from '../errors/index.ts';
import { normaliseRequestPath } from './path.ts';

/**
 * L7 permissions of an intention whose destination speaks HTTP, HTTP/2 or gRPC. The proxy checks
 * them in order for every request; the first that matches decides, and with no match the
 * intention's own action decides.
 *
 * Regular expressions run on RE2JS, a pure-JavaScript port of RE2 whose matching time is linear in
 * the input, so no pattern can backtrack catastrophically. Patterns are compiled once per snapshot.
 */

/** HTTP methods a permission may name: the RFC 9110 methods and PATCH. */
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;

/** Maximum length of a regular expression in a permission, in characters. */
export const MAX_REGEX_LENGTH = 1024;

/** Most permissions one intention may hold. */
export const MAX_PERMISSIONS = 64;

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

/** Request attributes a permission matches: the normalised path, the method and lower-case headers. */
export interface RequestFacts {
  method: string;
  path: string;
  header: (name: string) => string | undefined;
}

/** A permission with its regular expressions compiled. */
interface CompiledPermission {
  action: 'allow' | 'deny';
  matches: (request: RequestFacts) => boolean;
}

export interface PermissionDecision {
  allowed: boolean;
  /** 1-based position of the matching permission, or undefined when the intention's action decided. */
  permission?: number;
}

/** Compiled permission lists, keyed by the array the snapshot holds, so each list compiles once. */
const compiled = new WeakMap<readonly Permission[], CompiledPermission[]>();

function compileHeader(match: HeaderMatch): (request: RequestFacts) => boolean {
  const regex = match.regex !== undefined ? RE2JS.compile(match.regex) : undefined;
  const test = (value: string | undefined): boolean => {
    if (match.present === true) return value !== undefined;
    if (value === undefined) return false;
    if (match.exact !== undefined) return value === match.exact;
    if (match.prefix !== undefined) return value.startsWith(match.prefix);
    if (match.suffix !== undefined) return value.endsWith(match.suffix);
    if (regex !== undefined) return regex.matches(value);
    return false;
  };
  return (request) => test(request.header(match.name)) !== (match.invert === true);
}

function compilePermission(permission: Permission): CompiledPermission {
  const http = permission.http;
  const pathRegex = http.pathRegex !== undefined ? RE2JS.compile(http.pathRegex) : undefined;
  const headers = (http.header ?? []).map(compileHeader);
  const methods = http.methods !== undefined ? new Set<string>(http.methods) : undefined;
  return {
    action: permission.action,
    matches: (request) => {
      if (http.pathExact !== undefined && request.path !== http.pathExact) return false;
      if (http.pathPrefix !== undefined && !request.path.startsWith(http.pathPrefix)) return false;
      if (pathRegex !== undefined && !pathRegex.matches(request.path)) return false;
      if (methods !== undefined && !methods.has(request.method)) return false;
      return headers.every((header) => header(request));
    },
  };
}

/** Compiles a permission list, or raises SEALMESH_ERR_L7_PERMISSION_INVALID for one that fails the schema. */
export function compilePermissions(permissions: readonly Permission[]): CompiledPermission[] {
  let list = compiled.get(permissions);
  if (list !== undefined) return list;
  const parsed = permissionsSchema.safeParse(permissions);
  if (!parsed.success) {
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `invalid permissions: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
  }
  list = parsed.data.map(compilePermission);
  compiled.set(permissions, list);
  return list;
}

/**
 * Decides one HTTP request under an intention's permissions: the first matching permission wins,
 * and without a match `fallback` (the intention's action) decides.
 */
export function decideRequest(permissions: readonly Permission[], fallback: 'allow' | 'deny', request: RequestFacts): PermissionDecision {
  const list = compilePermissions(permissions);
  for (let index = 0; index < list.length; index += 1) {
    const permission = list[index]!;
    if (permission.matches(request)) return { allowed: permission.action === 'allow', permission: index + 1 };
  }
  return { allowed: fallback === 'allow' };
}
