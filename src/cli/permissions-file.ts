import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { SealmeshError } from '../errors/index.ts';
import type { Permission } from '../policy/index.ts';
import { permissionsSchema } from '../policy/permissions-schema.ts';

/**
 * Reads the L7 permissions of `intention create --permissions-file`: a YAML or JSON list of
 * `{action, http}` entries, checked against the same schema as the API, so a mistake is reported
 * with its position before anything is sent.
 */
export function readPermissionsFile(path: string): Permission[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot read --permissions-file ${path}: ${(error as Error).message}`);
  }
  let document: unknown;
  try {
    // JSON is a subset of YAML 1.2, so one parser reads both.
    document = parseYaml(text);
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `--permissions-file ${path} is not valid YAML or JSON: ${(error as Error).message}`);
  }
  const parsed = permissionsSchema.safeParse(document);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => `${issueLocation(issue.path)}: ${issue.message}`).join('; ');
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `--permissions-file ${path} is invalid: ${issues}`);
  }
  return parsed.data;
}

/** Names where a problem is, counting permissions from 1: `permission 2, http.pathPrefix`, or `the list`. */
function issueLocation(path: readonly PropertyKey[]): string {
  const [first, ...rest] = path;
  if (typeof first !== 'number') return path.length > 0 ? path.map(String).join('.') : 'the list';
  return rest.length > 0 ? `permission ${first + 1}, ${rest.map(String).join('.')}` : `permission ${first + 1}`;
}
