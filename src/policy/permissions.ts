import { SealmeshError } from '../errors/index.ts';
import type { HeaderMatch, Permission } from './permissions-schema.ts';

export type { HeaderMatch, HttpMatch, Permission } from './permissions-schema.ts';

/**
 * L7 permissions of an intention whose destination speaks HTTP, HTTP/2 or gRPC. The proxy checks
 * them in order for every request; the first that matches decides, and with no match the
 * intention's own action decides.
 *
 * Regular expressions run on RE2JS, a pure-JavaScript port of RE2 whose matching time is linear in
 * the input, so no pattern can backtrack catastrophically. Patterns are compiled once per snapshot.
 * The schema and RE2JS load with `loadPermissionsSchema`, which must have completed before
 * `compilePermissions` or `decideRequest` runs; until then both raise SEALMESH_ERR_INTERNAL.
 */

/** HTTP methods a permission may name: the RFC 9110 methods and PATCH. */
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] as const;

/** Maximum length of a regular expression in a permission, in characters. */
export const MAX_REGEX_LENGTH = 1024;

/** Most permissions one intention may hold. */
export const MAX_PERMISSIONS = 64;

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

type PermissionsSchemaModule = typeof import('./permissions-schema.ts');

let schemaModule: PermissionsSchemaModule | undefined;
let schemaLoad: Promise<void> | undefined;

/**
 * Loads the permission schema with zod and RE2JS, which together add several MiB of resident
 * memory to a process. Loading twice is harmless.
 */
export function loadPermissionsSchema(): Promise<void> {
  schemaLoad ??= import('./permissions-schema.ts').then((module) => {
    schemaModule = module;
  });
  return schemaLoad;
}

/**
 * Returns a promise to wait for before deciding requests when the permission schema is still
 * loading or `needed` is true and it has not loaded, and undefined when requests can be decided now.
 */
export function preparePermissionsSchema(needed: boolean): Promise<void> | undefined {
  if (schemaModule !== undefined) return undefined;
  if (schemaLoad !== undefined || needed) return loadPermissionsSchema();
  return undefined;
}

function loadedSchema(): PermissionsSchemaModule {
  if (schemaModule === undefined) {
    throw new SealmeshError('SEALMESH_ERR_INTERNAL', 'L7 permissions were checked before the permission schema loaded; call loadPermissionsSchema first');
  }
  return schemaModule;
}

/** Compiled permission lists, keyed by the array the snapshot holds, so each list compiles once. */
const compiled = new WeakMap<readonly Permission[], CompiledPermission[]>();

function compileHeader(match: HeaderMatch, schema: PermissionsSchemaModule): (request: RequestFacts) => boolean {
  const regex = match.regex !== undefined ? schema.compileRegex(match.regex) : undefined;
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

function compilePermission(permission: Permission, schema: PermissionsSchemaModule): CompiledPermission {
  const http = permission.http;
  const pathRegex = http.pathRegex !== undefined ? schema.compileRegex(http.pathRegex) : undefined;
  const headers = (http.header ?? []).map((match) => compileHeader(match, schema));
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
  const schema = loadedSchema();
  const parsed = schema.permissionsSchema.safeParse(permissions);
  if (!parsed.success) {
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `invalid permissions: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
  }
  list = parsed.data.map((permission) => compilePermission(permission, schema));
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
