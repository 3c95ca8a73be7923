import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateOperatorKey, initManifest, parseManifest, type Manifest } from '../src/manifest/index.ts';

const key = generateOperatorKey('ed25519');

function draft(rules: unknown[]): unknown {
  const base: Manifest = initManifest({ trustDomain: 'docs.sealmesh', operatorKeys: [{ id: 'ed', publicKeyPem: key.publicKeyPem }], threshold: 1 }).manifest;
  return { ...base, intentions: { management: 'manifest', rules } };
}

test('manifest rule accepts permissions', () => {
  const manifest = parseManifest(draft([{ source: 'web', destination: 'api', action: 'deny', permissions: [{ action: 'allow', http: { pathPrefix: '/api/', methods: ['GET'] } }] }]));
  assert.deepEqual(manifest.intentions.rules?.[0]?.permissions, [{ action: 'allow', http: { pathPrefix: '/api/', methods: ['GET'] } }]);
});

test('manifest rule without permissions parses', () => {
  const manifest = parseManifest(draft([{ source: 'web', destination: 'api', action: 'allow' }]));
  assert.equal(manifest.intentions.rules?.[0]?.permissions, undefined);
});

test('manifest rule with bad permission fails', () => {
  assert.throws(() => parseManifest(draft([{ source: 'web', destination: 'api', action: 'deny', permissions: [{ action: 'allow', http: { pathRegex: '(' } }] }])), {
    code: 'SEALMESH_ERR_MANIFEST_INVALID',
  });
});
