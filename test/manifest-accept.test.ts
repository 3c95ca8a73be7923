import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { type ErrorCode, isSealmeshError } from '../src/errors/index.ts';
import {
  FileManifestSigner,
  ManifestChainError,
  acceptManifest,
  generateOperatorKey,
  initManifest,
  manifestDigest,
  nextManifest,
  parseSignedManifestText,
  readSignedManifestFile,
  signManifest,
  verifyChain,
  writeSignedManifestFile,
  type ManifestChanges,
  type ManifestSigner,
  type OperatorKeyAlgorithm,
  type SignedManifest,
} from '../src/manifest/index.ts';

const TRUST_DOMAIN = 'test.sealmesh';

function hasCode(code: ErrorCode): (error: unknown) => boolean {
  return (error) => {
    assert.ok(isSealmeshError(error), `expected a SealmeshError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    return true;
  };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealmesh-manifest-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function newSigner(id: string, algorithm: OperatorKeyAlgorithm = 'ed25519'): FileManifestSigner {
  return FileManifestSigner.fromPem(generateOperatorKey(algorithm).privateKeyPem, { keyId: id });
}

async function signAll(document: SignedManifest, signers: readonly ManifestSigner[]): Promise<SignedManifest> {
  let signed = document;
  for (const signer of signers) {
    signed = await signManifest(signed, signer);
  }
  return signed;
}

function operatorSet(signers: readonly ManifestSigner[], threshold: number): NonNullable<ManifestChanges['operators']> {
  return {
    keys: signers.map((signer) => ({ id: signer.keyId, algorithm: signer.algorithm, publicKey: signer.publicKeyPem })),
    threshold,
  };
}

function draftGenesis(operators: readonly ManifestSigner[], threshold: number): SignedManifest {
  return initManifest({
    trustDomain: TRUST_DOMAIN,
    operatorKeys: operators.map((signer) => ({ id: signer.keyId, publicKeyPem: signer.publicKeyPem })),
    threshold,
  });
}

// One operator set for most tests: three Ed25519 keys, any two of which approve a change.
const alice = newSigner('alice');
const bob = newSigner('bob');
const carol = newSigner('carol');
const mallory = newSigner('mallory');
const genesis = await signAll(draftGenesis([alice, bob, carol], 2), [alice, bob]);
const version2 = await signAll(nextManifest(genesis, { defaultPolicy: 'deny', svidTtl: { default: 3600, min: 300, max: 86400 } }), [alice, carol]);
const version3 = await signAll(nextManifest(version2, { intentions: { management: 'manifest', rules: [{ source: 'web', destination: 'api', action: 'allow' }] } }), [bob, carol]);

/** Returns `document` with one byte of its text at `index` replaced by `replacement`. */
function replaceByte(text: string, index: number, replacement: string): string {
  return `${text.slice(0, index)}${replacement}${text.slice(index + 1)}`;
}

test('genesis accepted with its own operator signatures', () => {
  const now = new Date('2030-01-01T00:00:00Z');
  const accepted = acceptManifest(genesis, undefined, now);

  assert.equal(accepted.manifest.version, 1);
  assert.equal(accepted.digest, manifestDigest(genesis.manifest));
  assert.deepEqual(accepted.approvedBy, ['alice', 'bob']);
  assert.equal(accepted.acceptedAt, now);
});

test('genesis rejected when it is not version 1', () => {
  assert.throws(() => acceptManifest(version2, undefined), hasCode('SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH'));
});

test('Ed25519 and ECDSA P-256 signatures both verify', async () => {
  const edwards = newSigner('edwards', 'ed25519');
  const nist = newSigner('nist', 'ecdsa-p256');
  const mixed = await signAll(draftGenesis([edwards, nist], 2), [edwards, nist]);

  const accepted = acceptManifest(mixed, undefined);

  assert.deepEqual(accepted.approvedBy, ['edwards', 'nist']);
  assert.equal(mixed.signatures.find((entry) => entry.keyId === 'nist')?.algorithm, 'ecdsa-p256');
  assert.equal(mixed.signatures.find((entry) => entry.keyId === 'edwards')?.algorithm, 'ed25519');
});

test('successor accepted with current operator signatures', () => {
  const accepted = acceptManifest(version2, genesis);

  assert.equal(accepted.manifest.version, 2);
  assert.deepEqual(accepted.approvedBy, ['alice', 'carol']);
  assert.equal(accepted.manifest.previous, manifestDigest(genesis.manifest));
});

test('byte flipped in signed YAML file rejected', async (t) => {
  const path = join(tempDir(t), 'manifest.yaml');
  await writeSignedManifestFile(path, genesis);
  const text = readFileSync(path, 'utf8');
  assert.ok(text.includes(`trustDomain: ${TRUST_DOMAIN}`), 'the YAML file lists the trust domain as a plain scalar');

  // `test.sealmesh` becomes `uest.sealmesh`, which still passes the schema.
  const index = text.indexOf(`trustDomain: ${TRUST_DOMAIN}`) + 'trustDomain: '.length;
  writeFileSync(path, replaceByte(text, index, 'u'));
  const tampered = await readSignedManifestFile(path);

  assert.equal(tampered.manifest.trustDomain, 'uest.sealmesh');
  assert.throws(() => acceptManifest(tampered, undefined), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('byte flipped in signed JSON file rejected', async (t) => {
  const path = join(tempDir(t), 'manifest.json');
  await writeSignedManifestFile(path, version2);
  const text = readFileSync(path, 'utf8');

  // 3600 seconds becomes 3601: a valid TTL, so only the signatures can catch it.
  const index = text.indexOf('"default": 3600') + '"default": 360'.length;
  writeFileSync(path, replaceByte(text, index, '1'));
  const tampered = await readSignedManifestFile(path);

  assert.equal(tampered.manifest.svidTtl.default, 3601);
  assert.throws(() => acceptManifest(tampered, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('byte flipped in a signature rejected', () => {
  const text = JSON.stringify(version2);
  const signature = version2.signatures[0]!.signature;
  const index = text.indexOf(signature) + 10;
  const replacement = text[index] === 'A' ? 'B' : 'A';
  const tampered = parseSignedManifestText(replaceByte(text, index, replacement), { format: 'json' });

  assert.throws(() => acceptManifest(tampered, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

for (const format of ['json', 'yaml'] as const) {
  test(`no single-bit flip of the ${format} file is accepted`, async (t) => {
    const path = join(tempDir(t), `manifest.${format}`);
    await writeSignedManifestFile(path, version2);
    const original = readFileSync(path);
    const originalDigest = manifestDigest(version2.manifest);
    const outcomes = new Map<string, number>();

    for (let index = 0; index < original.length; index++) {
      const flipped = Buffer.from(original);
      flipped[index] = flipped[index]! ^ 0x01;
      let outcome: string;
      try {
        const candidate = parseSignedManifestText(flipped.toString('utf8'), { format });
        const accepted = acceptManifest(candidate, genesis);
        // A flip that the parser reads as the same document is harmless; any other must fail.
        assert.equal(accepted.digest, originalDigest, `flip at byte ${index} changed the manifest but was accepted`);
        assert.deepEqual(candidate.signatures, version2.signatures, `flip at byte ${index} changed a signature but was accepted`);
        outcome = 'same document';
      } catch (error) {
        if (error instanceof assert.AssertionError) throw error;
        assert.ok(isSealmeshError(error), `flip at byte ${index} threw ${String(error)}`);
        outcome = error.code;
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }

    assert.ok((outcomes.get('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID') ?? 0) > 0, 'some flips reach signature verification');
    assert.ok((outcomes.get('SEALMESH_ERR_MANIFEST_INVALID') ?? 0) > 0, 'some flips fail parsing or the schema');
  });
}

test('field changed after signing rejected', () => {
  const changed: SignedManifest = { ...version2, manifest: { ...version2.manifest, defaultPolicy: 'allow' } };

  assert.throws(() => acceptManifest(changed, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('signature removed below threshold rejected', () => {
  const stripped: SignedManifest = { ...version2, signatures: version2.signatures.slice(1) };

  assert.throws(() => acceptManifest(stripped, genesis), hasCode('SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET'));
});

test('signature by key outside operator set rejected', async () => {
  const withOutsider = await signManifest(version2, mallory);

  assert.throws(() => acceptManifest(withOutsider, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY'));
});

test('outsider signature cannot stand in for an operator', async () => {
  const onlyOne = await signAll(nextManifest(genesis, { defaultPolicy: 'deny' }), [alice, mallory]);

  assert.throws(() => acceptManifest(onlyOne, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY'));
});

test('fewer than threshold signatures rejected', async () => {
  const strict = await signAll(draftGenesis([alice, bob, carol], 3), [alice, bob, carol]);
  const twoOfThree = await signAll(nextManifest(strict, { defaultPolicy: 'deny' }), [alice, bob]);

  const genesisWithOne = await signAll(draftGenesis([alice, bob, carol], 3), [alice]);

  assert.throws(() => acceptManifest(twoOfThree, strict), hasCode('SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET'));
  assert.throws(() => acceptManifest(genesisWithOne, undefined), hasCode('SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET'));
});

test('unsigned manifest rejected', () => {
  assert.throws(() => acceptManifest(nextManifest(genesis, {}), genesis), hasCode('SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET'));
});

test('older version replayed rejected', () => {
  assert.throws(() => acceptManifest(version2, version3), hasCode('SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER'));
  assert.throws(() => acceptManifest(genesis, version3), hasCode('SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER'));
});

test('fork with the same version rejected', async () => {
  const rival = await signAll(nextManifest(genesis, { defaultPolicy: 'allow' }), [alice, bob]);
  assert.equal(rival.manifest.version, version2.manifest.version);

  assert.throws(() => acceptManifest(rival, version2), hasCode('SEALMESH_ERR_MANIFEST_FORK'));
});

test('different predecessor hash rejected', async () => {
  const draft = nextManifest(version2, { defaultPolicy: 'deny' });
  const wrongPrevious = await signAll({ ...draft, manifest: { ...draft.manifest, previous: 'ab'.repeat(32) } }, [alice, bob]);

  assert.throws(() => acceptManifest(wrongPrevious, version2), hasCode('SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH'));
});

test('skipped link rejected as predecessor mismatch', () => {
  assert.throws(() => acceptManifest(version3, genesis), hasCode('SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH'));
});

test('version gap with the right predecessor accepted', async () => {
  const draft = nextManifest(genesis, { defaultPolicy: 'deny' });
  const jump = await signAll({ ...draft, manifest: { ...draft.manifest, version: 5 } }, [alice, bob]);

  assert.equal(acceptManifest(jump, genesis).manifest.version, 5);
});

test('exact replay of current manifest rejected', () => {
  assert.throws(() => acceptManifest(version2, version2), hasCode('SEALMESH_ERR_MANIFEST_REPLAY'));
});

test('replay with other signatures rejected', async () => {
  const resigned = await signAll({ manifest: version2.manifest, signatures: [] }, [bob, carol]);

  assert.throws(() => acceptManifest(resigned, version2), hasCode('SEALMESH_ERR_MANIFEST_REPLAY'));
});

test('trust domain change rejected', async () => {
  const draft = nextManifest(genesis, {});
  const moved = await signAll({ ...draft, manifest: { ...draft.manifest, trustDomain: 'other.sealmesh' } }, [alice, bob]);

  assert.throws(() => acceptManifest(moved, genesis), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
});

test('signature claiming another algorithm rejected', () => {
  const relabelled: SignedManifest = {
    ...version2,
    signatures: version2.signatures.map((entry, index) => (index === 0 ? { ...entry, algorithm: 'ecdsa-p256' as const } : entry)),
  };

  assert.throws(() => acceptManifest(relabelled, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('extra invalid signature rejected despite threshold', async () => {
  const withBob = await signManifest(version2, bob);
  const corrupted: SignedManifest = {
    ...withBob,
    signatures: withBob.signatures.map((entry) => (entry.keyId === 'bob' ? { ...entry, signature: version2.signatures[0]!.signature } : entry)),
  };

  assert.throws(() => acceptManifest(corrupted, genesis), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
});

test('schema failure rejected before signatures', () => {
  const broken = { ...version2, manifest: { ...version2.manifest, extra: true } } as unknown as SignedManifest;

  assert.throws(() => acceptManifest(broken, genesis), hasCode('SEALMESH_ERR_MANIFEST_INVALID'));
});

test('operator rotation through v2 and v3', async () => {
  // v1: alice, bob, carol with threshold 2. v2 removes alice and adds dave.
  const dave = newSigner('dave', 'ecdsa-p256');
  const rotation = nextManifest(genesis, { operators: operatorSet([bob, carol, dave], 2) });

  // dave's signature verifies but cannot approve his own addition.
  const selfApproved = await signAll(rotation, [bob, dave]);
  assert.throws(() => acceptManifest(selfApproved, genesis), hasCode('SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET'));

  // alice still belongs to v1, so she can approve her own removal.
  const rotated = await signAll(rotation, [alice, bob, dave]);
  const acceptedRotation = acceptManifest(rotated, genesis);
  assert.deepEqual(acceptedRotation.approvedBy, ['alice', 'bob']);

  // In v3 alice's signature no longer counts: her key is outside the v2 operator set.
  const change = nextManifest(rotated, { defaultPolicy: 'deny', svidTtl: { default: 7200, min: 300, max: 86400 } });
  const byRemovedKey = await signAll(change, [alice, bob]);
  assert.throws(() => acceptManifest(byRemovedKey, rotated), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY'));

  const byRemovedKeyOnly = await signAll(change, [alice]);
  assert.throws(() => acceptManifest(byRemovedKeyOnly, rotated), hasCode('SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY'));

  // dave's signature now counts.
  const byNewKey = await signAll(change, [bob, dave]);
  const acceptedChange = acceptManifest(byNewKey, rotated);
  assert.deepEqual(acceptedChange.approvedBy, ['bob', 'dave']);
  assert.equal(acceptedChange.manifest.version, 3);

  const head = verifyChain([genesis, rotated, byNewKey], manifestDigest(genesis.manifest));
  assert.equal(head.digest, acceptedChange.digest);
});

test('verifyChain returns the head of a good chain', () => {
  const head = verifyChain([genesis, version2, version3], manifestDigest(genesis.manifest));

  assert.equal(head.manifest.version, 3);
  assert.equal(head.digest, manifestDigest(version3.manifest));
});

test('verifyChain names the bad link', () => {
  const tampered: SignedManifest = { ...version3, manifest: { ...version3.manifest, defaultPolicy: 'allow' } };

  assert.throws(
    () => verifyChain([genesis, version2, tampered], manifestDigest(genesis.manifest)),
    (error: unknown) => {
      assert.ok(error instanceof ManifestChainError);
      assert.equal(error.code, 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
      assert.equal(error.link, 2);
      assert.equal(error.version, 3);
      assert.match(error.message, /link 2 \(version 3\)/);
      assert.ok(isSealmeshError(error.cause, 'SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID'));
      return true;
    },
  );
});

test('verifyChain names a missing link', () => {
  assert.throws(
    () => verifyChain([genesis, version3], manifestDigest(genesis.manifest)),
    (error: unknown) => {
      assert.ok(error instanceof ManifestChainError);
      assert.equal(error.link, 1);
      assert.ok(isSealmeshError(error.cause, 'SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH'));
      return true;
    },
  );
});

test('verifyChain rejects a genesis other than the pinned one', async () => {
  const otherGenesis = await signAll(draftGenesis([mallory], 1), [mallory]);

  assert.throws(
    () => verifyChain([otherGenesis], manifestDigest(genesis.manifest)),
    (error: unknown) => {
      assert.ok(error instanceof ManifestChainError);
      assert.equal(error.code, 'SEALMESH_ERR_MANIFEST_CHAIN_BROKEN');
      assert.equal(error.link, 0);
      return true;
    },
  );
});

test('verifyChain rejects an empty chain', () => {
  assert.throws(() => verifyChain([], manifestDigest(genesis.manifest)), hasCode('SEALMESH_ERR_MANIFEST_CHAIN_BROKEN'));
});
