import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import {
  MANIFEST_FORMAT,
  canonicalJson,
  canonicalManifestBytes,
  formatSignedManifest,
  generateOperatorKey,
  initManifest,
  manifestDigest,
  manifestSigningInput,
  parseManifest,
  parseSignedManifestText,
  type Manifest,
} from '../src/manifest/index.ts';

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

/** Returns a deep copy of `value` whose object members are inserted in reverse order. */
function reverseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reverseKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).reverse().map(([key, member]) => [key, reverseKeys(member)]));
  }
  return value;
}

const key = generateOperatorKey('ecdsa-p256');
const manifest: Manifest = initManifest({
  trustDomain: 'canonical.sealmesh',
  operatorKeys: [{ id: 'ops-1', publicKeyPem: key.publicKeyPem }],
  threshold: 1,
  intentions: { management: 'manifest', rules: [{ source: 'web', destination: 'api', action: 'allow', description: 'café ☕ \u2028 "quoted"' }] },
}).manifest;

test('member order does not change the digest', () => {
  const reordered = reverseKeys(manifest) as Manifest;

  assert.notEqual(JSON.stringify(reordered), JSON.stringify(manifest), 'the copy really has another member order');
  assert.equal(manifestDigest(reordered), manifestDigest(manifest));
  assert.equal(manifestDigest(parseManifest(reordered)), manifestDigest(manifest));
});

test('whitespace and format do not change the digest', () => {
  const document = { manifest, signatures: [] };
  const compact = parseSignedManifestText(JSON.stringify(document), { format: 'json' });
  const indented = parseSignedManifestText(`\n\t${JSON.stringify(document, null, 7)}\n\n`, { format: 'json' });
  const yaml = parseSignedManifestText(formatSignedManifest(document, 'yaml'), { format: 'yaml' });

  assert.equal(manifestDigest(compact.manifest), manifestDigest(manifest));
  assert.equal(manifestDigest(indented.manifest), manifestDigest(manifest));
  assert.equal(manifestDigest(yaml.manifest), manifestDigest(manifest));
});

test('digest is SHA-256 of the canonical bytes', () => {
  const canonical = canonicalManifestBytes(manifest);
  const expected = createHash('sha256').update(canonical).digest('hex');

  assert.equal(manifestDigest(manifest), expected);
  assert.match(expected, /^[0-9a-f]{64}$/);
});

test('canonical bytes sort members and drop whitespace', () => {
  const text = new TextDecoder().decode(canonicalManifestBytes(manifest));

  assert.ok(text.startsWith('{"attestation":{"allowDevProvider":false,"required":false,"services":{}},"defaultPolicy":"deny","intentions":'), text);
  assert.ok(!/[\n ]"/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '""')), 'no whitespace outside strings');
});

test('canonical bytes write non-ASCII text as UTF-8', () => {
  const bytes = Buffer.from(canonicalManifestBytes(manifest));

  assert.ok(bytes.includes(Buffer.from('café ☕ \u2028 \\"quoted\\"', 'utf8')));
});

test('signing input is the format prefix and canonical bytes', () => {
  const input = Buffer.from(manifestSigningInput(manifest));
  const prefix = Buffer.from(`${MANIFEST_FORMAT}\n`, 'ascii');

  assert.equal(prefix.length, 21);
  assert.deepEqual(input.subarray(0, 21), prefix);
  assert.deepEqual(input.subarray(21), Buffer.from(canonicalManifestBytes(manifest)));
});

test('omitted optional fields stay omitted', () => {
  const withoutOptional = parseManifest({ ...manifest, attestation: { services: {} } });
  const text = new TextDecoder().decode(canonicalManifestBytes(withoutOptional));

  assert.ok(text.includes('"attestation":{"services":{}}'), text);
  assert.notEqual(manifestDigest(withoutOptional), manifestDigest(manifest));
});

test('RFC 8785 sample object', () => {
  // The example input and output of RFC 8785 section 3.2.2.
  const input = String.raw`{
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
  }`;
  const expected = String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`;

  assert.equal(canonicalJson(JSON.parse(input)), expected);
});

test('numbers use the ECMAScript shortest form', () => {
  const cases: Array<[number, string]> = [
    [0, '0'],
    [-0, '0'],
    [1, '1'],
    [-1, '-1'],
    [1e21, '1e+21'],
    [1e20, '100000000000000000000'],
    [1e-7, '1e-7'],
    [0.000001, '0.000001'],
    [9007199254740991, '9007199254740991'],
    [5e-324, '5e-324'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [0.1 + 0.2, '0.30000000000000004'],
  ];
  for (const [value, expected] of cases) {
    assert.equal(canonicalJson(value), expected, `number ${value}`);
  }
});

test('strings use minimal escapes', () => {
  const cases: Array<[string, string]> = [
    ['\u0000', '"\\u0000"'],
    ['\u001f', '"\\u001f"'],
    ['\b\f\n\r\t', '"\\b\\f\\n\\r\\t"'],
    ['"\\', '"\\"\\\\"'],
    ['/', '"/"'],
    ['\u007f', '"\u007f"'],
    ['é€😀', '"é€😀"'],
    ['\u2028\u2029', '"\u2028\u2029"'],
  ];
  for (const [value, expected] of cases) {
    assert.equal(canonicalJson(value), expected, `string ${JSON.stringify(value)}`);
  }
});

test('members sort by UTF-16 code units', () => {
  // RFC 8785 section 3.2.3: U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB33.
  const value = { '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\u{1f600}': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' };
  const order = Object.keys(JSON.parse(canonicalJson(value)) as Record<string, string>);

  // Object.keys lists integer-like keys first, so '1' is checked separately.
  assert.ok(canonicalJson(value).startsWith('{"\\r":"Carriage Return","1":"One",'));
  assert.deepEqual(
    order.filter((name) => name !== '1'),
    ['\r', '\u0080', '\u00f6', '\u20ac', '\u{1f600}', '\ufb33'],
  );
});

test('values without a JSON form rejected', () => {
  assert.throws(() => canonicalJson({ value: Number.NaN }), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
  assert.throws(() => canonicalJson({ value: Number.POSITIVE_INFINITY }), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
  assert.throws(() => canonicalJson({ value: '\ud800' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
  assert.throws(() => canonicalJson(undefined), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
});

test('YAML non-finite number rejected in attestation settings', () => {
  const document = formatSignedManifest({ manifest, signatures: [] }, 'yaml').replace('services: {}', 'services:\n    api:\n      providers: [tpm]\n      limit: .inf');

  assert.throws(() => parseSignedManifestText(document, { format: 'yaml' }), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
});
