import { readFileSync } from 'node:fs';
import { isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
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

  // JSON is a subset of YAML 1.2, so one parser reads both. The document keeps the source ranges
  // that locate a schema issue by line and column.
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter });
  const syntaxError = document.errors[0];
  if (syntaxError !== undefined) {
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `--permissions-file ${path} is not valid YAML or JSON: ${syntaxError.message.trimEnd()}`);
  }

  const parsed = permissionsSchema.safeParse(document.toJS());
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => describeIssue(issue, document, lineCounter)).join('; ');
    throw new SealmeshError('SEALMESH_ERR_L7_PERMISSION_INVALID', `--permissions-file ${path} is invalid: ${issues}`);
  }
  return parsed.data;
}

/**
 * Describes one schema issue with its place in the list, its line and column in the file, and for
 * a wrong value or type the value found there:
 * `permission 2, http.methods[1] (line 7, column 20): Invalid option: ...; found "POTS"`.
 */
function describeIssue(issue: z.core.$ZodIssue, document: Document, lineCounter: LineCounter): string {
  const node = document.getIn(issue.path, true);
  const range = isNode(node) ? node.range : undefined;
  const position = range !== undefined && range !== null ? lineCounter.linePos(range[0]) : undefined;
  const where = position !== undefined ? ` (line ${position.line}, column ${position.col})` : '';
  const found = (issue.code === 'invalid_value' || issue.code === 'invalid_type') && isScalar(node) ? `; found ${JSON.stringify(node.value)}` : '';
  return `${issueLocation(issue.path)}${where}: ${issue.message}${found}`;
}

function isNode(value: unknown): value is { range?: [number, number, number] | null } {
  return typeof value === 'object' && value !== null && 'range' in value;
}

/** Names where a problem is, counting permissions from 1: `permission 2, http.header[0].name`, or `the list`. */
function issueLocation(path: readonly PropertyKey[]): string {
  const [first, ...rest] = path;
  if (typeof first !== 'number') return path.length > 0 ? formatPath(path) : 'the list';
  return rest.length > 0 ? `permission ${first + 1}, ${formatPath(rest)}` : `permission ${first + 1}`;
}

/** Writes a field path as `http.header[0].name`, so that list positions do not read as field names. */
function formatPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`;
    else text += text === '' ? String(key) : `.${String(key)}`;
  }
  return text;
}
