import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { SealmeshError } from '../errors/index.ts';
import { manifestSigningInput } from './canonical.ts';
import { parseSignedManifest, type Manifest, type SignedManifest } from './schema.ts';
import { requireOperatorPublicKey, verifyOperatorSignature, type ManifestSigner } from './signers.ts';

/** Serialisations of a manifest document. */
export type DocumentFormat = 'yaml' | 'json';

/** Largest manifest document read, in bytes. */
export const MAX_DOCUMENT_BYTES = 1024 * 1024;

/** Returns the format named by a file extension, or the one the text looks like. */
export function detectDocumentFormat(text: string, path?: string): DocumentFormat {
  const extension = path === undefined ? '' : extname(path).toLowerCase();
  if (extension === '.json') return 'json';
  if (extension === '.yaml' || extension === '.yml') return 'yaml';
  return text.trimStart().startsWith('{') ? 'json' : 'yaml';
}

/**
 * Parses YAML or JSON text into a plain value. A mapping that repeats a key is rejected, because
 * another tool could show a reviewer the other copy of the value than the one that was signed.
 * YAML uses the 1.2 core schema without the YAML 1.1 tags such as !!binary or !!timestamp, so
 * every value is a JSON value and dates stay strings. Throws SEALMESH_ERR_MANIFEST_INVALID.
 */
export function parseDocumentText(text: string, format: DocumentFormat, source: string): unknown {
  if (Buffer.byteLength(text, 'utf8') > MAX_DOCUMENT_BYTES) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is larger than ${MAX_DOCUMENT_BYTES} bytes`);
  }
  if (format === 'json') {
    // JSON.parse enforces strict JSON syntax but keeps the last copy of a repeated key silently,
    // so the YAML parser, which rejects repeated keys, reads the same text a second time.
    try {
      JSON.parse(text);
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  }
  const document = parseDocument(text, { schema: format === 'json' ? 'json' : 'core', uniqueKeys: true, resolveKnownTags: false, prettyErrors: false });
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem !== undefined) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is not valid ${format === 'json' ? 'JSON' : 'YAML'}: ${problem.message}`, { cause: problem });
  }
  // toJS throws for problems that parsing does not report, such as an alias without an anchor.
  try {
    return document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `${source} is not valid ${format === 'json' ? 'JSON' : 'YAML'}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/**
 * Parses a signed manifest document from YAML or JSON text. `format` defaults to the detected one.
 * Throws SEALMESH_ERR_MANIFEST_INVALID when the text cannot be parsed or fails the schema.
 */
export function parseSignedManifestText(text: string, options: { format?: DocumentFormat; source?: string } = {}): SignedManifest {
  const source = options.source ?? 'manifest document';
  const format = options.format ?? detectDocumentFormat(text);
  return parseSignedManifest(parseDocumentText(text, format, source), source);
}

/** Serialises a manifest document as YAML or JSON text ending in a newline. */
export function formatSignedManifest(document: SignedManifest, format: DocumentFormat): string {
  if (format === 'json') {
    return `${JSON.stringify(document, null, 2)}\n`;
  }
  // lineWidth 0 turns off folding, so PEM lines and base64 signatures are written as they are.
  return stringify(document, { lineWidth: 0 });
}

/** Reads a manifest document from a `.yaml`, `.yml` or `.json` file, or detects the format. */
export async function readSignedManifestFile(path: string): Promise<SignedManifest> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new SealmeshError('SEALMESH_ERR_MANIFEST_INVALID', `manifest file ${path} cannot be read: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return parseSignedManifestText(text, { format: detectDocumentFormat(text, path), source: `manifest file ${path}` });
}

/**
 * Writes a manifest document to `path` through a temporary file and a rename, so a reader sees the
 * old or the new document and never a partial one. The format follows the extension, with YAML
 * for any extension other than `.json`.
 */
export async function writeSignedManifestFile(path: string, document: SignedManifest, format?: DocumentFormat): Promise<void> {
  const chosen = format ?? (extname(path).toLowerCase() === '.json' ? 'json' : 'yaml');
  const temporary = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(temporary, formatSignedManifest(document, chosen), { mode: 0o644, flag: 'wx' });
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** Returns an unsigned document for a manifest, ready for `signManifest`. */
export function unsignedDocument(manifest: Manifest): SignedManifest {
  return { manifest, signatures: [] };
}

/**
 * Adds `signer`'s signature to a document and returns the new document; the input is not changed.
 * A signature by the same key id is replaced. The new signature is verified with the signer's
 * public key before it is added.
 *
 * The signer need not be in the document's own operator set: for version n + 1 the keys of
 * version n approve the change, so a key removed by this version still signs it. Throws:
 * - SEALMESH_ERR_MANIFEST_INVALID when the document fails the schema;
 * - SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID when the manifest lists the signer's key id with
 *   another public key or algorithm;
 * - SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID when the signer returns a signature that does not
 *   verify, such as an HSM key that does not match the public key given.
 */
export async function signManifest(document: SignedManifest, signer: ManifestSigner): Promise<SignedManifest> {
  const parsed = parseSignedManifest(document);
  const listed = parsed.manifest.operators.keys.find((key) => key.id === signer.keyId);
  if (listed !== undefined && (listed.publicKey !== signer.publicKeyPem || listed.algorithm !== signer.algorithm)) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID',
      `operator key id ${JSON.stringify(signer.keyId)} belongs to another ${listed.algorithm} public key in the manifest; sign with that key or choose another key id`,
    );
  }

  const publicKey = requireOperatorPublicKey(signer.publicKeyPem, signer.algorithm, `public key of signer ${JSON.stringify(signer.keyId)}`);
  const input = manifestSigningInput(parsed.manifest);
  const signature = await signer.sign(input);
  if (!verifyOperatorSignature(signer.algorithm, publicKey, input, signature)) {
    throw new SealmeshError(
      'SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID',
      `signer ${JSON.stringify(signer.keyId)} returned a signature that does not verify with its public key; check that the private key matches it`,
    );
  }

  const entry = { keyId: signer.keyId, algorithm: signer.algorithm, signature: Buffer.from(signature).toString('base64') };
  const replaced = parsed.signatures.some((existing) => existing.keyId === signer.keyId);
  const signatures = replaced
    ? parsed.signatures.map((existing) => (existing.keyId === signer.keyId ? entry : existing))
    : [...parsed.signatures, entry];
  return { manifest: parsed.manifest, signatures };
}
