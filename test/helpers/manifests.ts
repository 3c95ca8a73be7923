import { FileManifestSigner, generateOperatorKey, initManifest, nextManifest, signManifest, type ManifestChanges, type SignedManifest } from '../../src/manifest/index.ts';
import type { TestServer } from './mesh.ts';

/** Applies a chain of manifests signed by one in-memory operator key to a test server. */
export class TestManifestChain {
  readonly #signer: FileManifestSigner;
  readonly #mesh: TestServer;
  current: SignedManifest | undefined;

  constructor(mesh: TestServer) {
    this.#mesh = mesh;
    this.#signer = FileManifestSigner.fromPem(generateOperatorKey('ed25519').privateKeyPem);
  }

  /** Builds the next version (or the genesis) with `changes`, signs it and applies it. */
  async apply(changes: ManifestChanges): Promise<SignedManifest> {
    const unsigned =
      this.current === undefined
        ? initManifest({
            trustDomain: this.#mesh.server.trustDomain,
            operatorKeys: [{ publicKeyPem: this.#signer.publicKeyPem }],
            threshold: 1,
            ...(changes.attestation !== undefined ? { attestation: changes.attestation } : {}),
            ...(changes.environment !== undefined ? { environment: changes.environment } : {}),
          })
        : nextManifest(this.current, changes);
    const signed = await signManifest(unsigned, this.#signer);
    await this.#mesh.operator.post('/v1/manifest', signed);
    this.current = signed;
    return signed;
  }
}
