import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compilePermissions, decideRequest, loadPermissionsSchema, normaliseRequestPath, type Permission, type RequestFacts } from '../src/policy/index.ts';
import { permissionsSchema } from '../src/policy/permissions-schema.ts';

await loadPermissionsSchema();

describe('request path normalisation', () => {
  const accepted: Array<[string, string]> = [
    ['/admin', '/admin'],
    ['/./admin', '/admin'],
    ['//admin', '/admin'],
    ['/%61dmin', '/admin'],
    ['/%61%64%6D%69%6E', '/admin'],
    ['/x/../admin', '/admin'],
    ['/x/%2e%2e/admin', '/admin'],
    ['/x/%2E/admin', '/x/admin'],
    ['/admin/', '/admin/'],
    ['/admin/.', '/admin/'],
    ['/a/b/..', '/a/'],
    ['/a///b//', '/a/b/'],
    ['/', '/'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['/a%20b', '/a%20b'],
    ['/%7euser', '/~user'],
  ];
  for (const [raw, expected] of accepted) {
    test(`normalises ${raw}`, () => {
      assert.deepEqual(normaliseRequestPath(raw), { ok: true, path: expected });
    });
  }

  const rejected: Array<[string, string]> = [
    ['/a%2Fb', 'encoded slash'],
    ['/a%2fb', 'encoded slash'],
    ['/a%5Cb', 'backslash'],
    ['/a\\b', 'backslash'],
    ['/a%00b', 'NUL byte'],
    ['/a\0b', 'NUL byte'],
    ['/a%zzb', 'invalid percent-encoding'],
    ['/a%4', 'invalid percent-encoding'],
    ['/..', 'dot segment above root'],
    ['/a/../../etc', 'dot segment above root'],
    ['/%2e%2e/etc', 'dot segment above root'],
    ['admin', 'not absolute'],
    ['*', 'not absolute'],
  ];
  for (const [raw, reason] of rejected) {
    test(`rejects ${JSON.stringify(raw)}`, () => {
      assert.deepEqual(normaliseRequestPath(raw), { ok: false, reason });
    });
  }
});

function facts(method: string, path: string, headers: Record<string, string> = {}): RequestFacts {
  return { method, path, header: (name) => headers[name] };
}

describe('L7 permissions', () => {
  const permissions = permissionsSchema.parse([
    { action: 'deny', http: { pathPrefix: '/admin' } },
    { action: 'allow', http: { pathPrefix: '/api/', methods: ['GET', 'HEAD'] } },
    { action: 'allow', http: { pathExact: '/upload', methods: ['PUT'], header: [{ name: 'X-Token', exact: 'secret' }] } },
    { action: 'allow', http: { pathRegex: '/items/[0-9]+', header: [{ name: 'x-debug', present: true, invert: true }] } },
    { action: 'allow', http: { methods: ['OPTIONS'], header: [{ name: 'origin', suffix: '.example' }, { name: 'x-env', prefix: 'prod' }, { name: 'x-id', regex: '[a-f0-9]{8}' }] } },
  ]) satisfies Permission[];

  const cases: Array<[string, RequestFacts, boolean, number | undefined]> = [
    ['deny before allow', facts('GET', '/admin/users'), false, 1],
    ['method allowed', facts('GET', '/api/orders'), true, 2],
    ['method not listed', facts('POST', '/api/orders'), false, undefined],
    ['header exact match', facts('PUT', '/upload', { 'x-token': 'secret' }), true, 3],
    ['header exact mismatch', facts('PUT', '/upload', { 'x-token': 'other' }), false, undefined],
    ['header missing', facts('PUT', '/upload'), false, undefined],
    ['regex full match', facts('GET', '/items/42'), true, 4],
    ['regex partial only', facts('GET', '/items/42/edit'), false, undefined],
    ['inverted present', facts('GET', '/items/42', { 'x-debug': '1' }), false, undefined],
    ['suffix prefix regex', facts('OPTIONS', '/x', { origin: 'a.example', 'x-env': 'production', 'x-id': 'deadbeef' }), true, 5],
    ['regex header mismatch', facts('OPTIONS', '/x', { origin: 'a.example', 'x-env': 'production', 'x-id': 'nothex!!' }), false, undefined],
  ];
  for (const [name, request, allowed, permission] of cases) {
    test(name, () => {
      const decision = decideRequest(permissions, 'deny', request);
      assert.equal(decision.allowed, allowed);
      assert.equal(decision.permission, permission);
    });
  }

  test('fallback allow when none match', () => {
    assert.deepEqual(decideRequest(permissions, 'allow', facts('DELETE', '/other')), { allowed: true });
  });

  test('header names are lower-cased', () => {
    assert.equal(permissions[2]!.http.header![0]!.name, 'x-token');
  });

  test('compiles each list once', () => {
    assert.equal(compilePermissions(permissions), compilePermissions(permissions));
  });

  const invalid: Array<[string, unknown]> = [
    ['empty list', []],
    ['two path matchers', [{ action: 'allow', http: { pathExact: '/a', pathPrefix: '/a' } }]],
    ['empty http match', [{ action: 'allow', http: {} }]],
    ['unknown field', [{ action: 'allow', http: { path: '/a' } }]],
    ['unknown method', [{ action: 'allow', http: { methods: ['FETCH'] } }]],
    ['path not normalised', [{ action: 'allow', http: { pathPrefix: '/a/../b' } }]],
    ['path with encoded slash', [{ action: 'allow', http: { pathExact: '/a%2Fb' } }]],
    ['backreference in regex', [{ action: 'allow', http: { pathRegex: '(a)\\1' } }]],
    ['unbalanced regex', [{ action: 'allow', http: { pathRegex: '(a' } }]],
    ['header with two matchers', [{ action: 'allow', http: { header: [{ name: 'a', exact: 'x', prefix: 'y' }] } }]],
    ['header without matcher', [{ action: 'allow', http: { header: [{ name: 'a' }] } }]],
    ['invalid header name', [{ action: 'allow', http: { header: [{ name: 'a b', present: true }] } }]],
    ['bad action', [{ action: 'maybe', http: { pathPrefix: '/' } }]],
  ];
  for (const [name, value] of invalid) {
    test(`rejects ${name}`, () => {
      assert.equal(permissionsSchema.safeParse(value).success, false);
    });
  }

  test('nested quantifier runs in linear time', () => {
    // A backtracking engine needs about 2^n steps for this pattern on this input; RE2 needs O(n).
    const [permission] = permissionsSchema.parse([{ action: 'deny', http: { pathRegex: '/(a+)+$' } }]);
    const started = performance.now();
    const decision = decideRequest([permission!], 'allow', facts('GET', `/${'a'.repeat(5_000)}!`));
    const elapsedMs = performance.now() - started;
    assert.equal(decision.allowed, true);
    assert.ok(elapsedMs < 2_000, `matching took ${elapsedMs} ms`);
  });

  test('invalid list fails closed', () => {
    assert.throws(() => compilePermissions([{ action: 'allow', http: {} }] as unknown as Permission[]), { code: 'SEALMESH_ERR_L7_PERMISSION_INVALID' });
  });
});
