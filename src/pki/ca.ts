import { X509Certificate as NodeX509Certificate, type webcrypto } from 'node:crypto';
import { SealmeshError } from '../errors/index.ts';
import { assertTrustDomain, formatSpiffeId, type SpiffeId } from '../spiffe/index.ts';
import type { Store, StoreRecord } from '../store/types.ts';
import {
  decodeRecord,
  encodeRecord,
  inconsistent,
  parseCertificate,
  STORE_KEYS,
  type CustodyRecord,
  type IntermediateRecord,
  type RotationRecord,
  type SigningRootRecord,
} from './ca-records.ts';
import { LeafHorizon } from './ca-horizon.ts';
import { createIntermediateIssuer, createRootIssuer, type IssuerContext } from './ca-issuers.ts';
import { createCrossCertificate, serverCertificateNames, type Issuer } from './certificates.ts';
import { isValidatedCsr, validateCsr, type ValidatedCsr } from './csr.ts';
import { signLeafCertificate } from './leaf-certificate.ts';
import type { CaSigningKey, KeyCustody } from './custody.ts';
import { exportSpki, importP256PublicKey, randomSerialNumber } from './keys.ts';
import { x509 } from './x509.ts';
import {
  checkTtl,
  CLOCK_SKEW_SECONDS,
  INTERMEDIATE_RENEWAL_SECONDS,
  MAX_SVID_TTL_SECONDS,
  toPem,
  truncateToSecond,
  type CaStatus,
  type CertificateAuthorityOptions,
  type IssuedCertificate,
  type IssuedSvid,
  type RootPrune,
  type RootRotation,
  type RootStatus,
} from './ca-types.ts';

interface SigningRootState {
  certificate: x509.X509Certificate;
  keyLabel: string;
  pem: string;
  fingerprint256: string;
  /** modRevision of `ca/root` when this state was read or written. */
  modRevision: number;
}

interface IntermediateState extends Issuer {
  pem: string;
  keyLabel: string;
  /** Serial number of the root that signed this intermediate. */
  rootSerial: string;
  /** modRevision of `ca/intermediate` when this state was read or written. */
  modRevision: number;
}

interface RotationState extends RotationRecord {
  modRevision: number;
}

/**
 * The mesh certificate authority: a root, an intermediate with pathLenConstraint 0 that signs
 * every leaf, and the trust bundle of root certificates.
 *
 * Certificates live in the store and private keys in a `KeyCustody`. Several CertificateAuthority
 * objects may share one store: creation and renewal are compare-and-swap transactions, and the
 * loser of a race loads the winner's certificates.
 *
 * Root rotation (`rotateRoot`) creates a new root and intermediate in the same custody, cross-signs
 * the new root with the old one and puts both roots in the bundle. The old root leaves the bundle
 * in `pruneRetiredRoot`, once the leaf horizon of the old root (see ca-horizon.ts) has passed.
 * NOTE: a CertificateAuthority reads the store only at open and after its own writes, so a second
 * server process on the same store loads another's rotation only after a restart.
 */
export class CertificateAuthority {
  readonly #store: Store;
  readonly #custody: KeyCustody;
  readonly #trustDomain: string;
  readonly #now: () => Date;
  readonly #horizon: LeafHorizon;
  #roots: string[] = [];
  #signingRoot!: SigningRootState;
  #intermediate!: IntermediateState;
  #rotation: RotationState | undefined;
  #renewal: Promise<boolean> | undefined;
  /** Renewal, rotation and prune run one at a time, in call order. */
  #exclusive: Promise<unknown> = Promise.resolve();

  private constructor(options: CertificateAuthorityOptions) {
    this.#store = options.store;
    this.#custody = options.custody;
    this.#trustDomain = options.trustDomain;
    this.#now = options.now ?? (() => new Date());
    this.#horizon = new LeafHorizon(options.store);
  }

  /**
   * Opens the CA kept in `store`, creating the root and intermediate on first use, checks that
   * the custody contains the keys of the signing root and the intermediate, and replaces the
   * intermediate when it expires within 30 days.
   * Throws SEALMESH_ERR_CONFIG_INVALID when the store contains a CA of another trust domain,
   * SEALMESH_ERR_CA_CUSTODY_MISMATCH when it was created with another custody,
   * SEALMESH_ERR_CA_KEY_MISSING when the custody lacks one of its keys, and SEALMESH_ERR_INTERNAL
   * when the stored CA state is incomplete or inconsistent.
   */
  static async open(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    assertTrustDomain(options.trustDomain);
    const ca = new CertificateAuthority(options);
    if (await ca.#load()) {
      // The root key is used only when an intermediate is due, possibly months from now, so its
      // presence in the custody is checked at every start instead.
      await ca.#loadKey(ca.#signingRoot.keyLabel, ca.#signingRoot.certificate);
    } else {
      await ca.#initialize();
    }
    await ca.renewIntermediateIfDue();
    return ca;
  }

  /** The trust domain whose SPIFFE IDs this CA issues. */
  get trustDomain(): string {
    return this.#trustDomain;
  }

  /** The name of the key custody that keeps the CA keys. */
  get custodyName(): string {
    return this.#custody.name;
  }

  /** Returns the PEM of every root in the trust bundle. */
  bundle(): string[] {
    return [...this.#roots];
  }

  /** Returns the trust bundle as one PEM text. */
  bundlePem(): string {
    return this.#roots.join('');
  }

  /** Returns the PEM of the intermediate that signs leaves now. */
  intermediatePem(): string {
    return this.#intermediate.pem;
  }

  /** Returns the SHA-256 fingerprint of the signing root as colon-separated uppercase hex. */
  rootFingerprintSha256(): string {
    return this.#signingRoot.fingerprint256;
  }

  /**
   * Replaces the intermediate when at most 30 days of its validity remain and the root outlives
   * it. `open` and every issuance call this. Returns true when the intermediate changed.
   */
  async renewIntermediateIfDue(): Promise<boolean> {
    if (this.#renewal !== undefined) return this.#renewal;
    if (!this.#intermediateDue()) return false;

    this.#renewal = this.#runExclusive(async () => (this.#intermediateDue() ? this.#renewIntermediate() : false)).finally(() => {
      this.#renewal = undefined;
    });
    return this.#renewal;
  }

  /**
   * Issues an X509-SVID for the key in `csrPem`, naming `entitled` as its only URI SAN.
   *
   * `ttlSeconds` defaults to DEFAULT_SVID_TTL_SECONDS and must be an integer from
   * MIN_SVID_TTL_SECONDS to MAX_SVID_TTL_SECONDS, otherwise SEALMESH_ERR_TTL_OUT_OF_BOUNDS. notAfter
   * never passes the intermediate's notAfter, so the leaf may live shorter than requested. The CSR
   * is checked by `validateCsr`, which throws its SEALMESH_ERR_CSR_* codes. A caller that has
   * validated the CSR already passes the result as `csr` instead of `csrPem`, so that it is not
   * parsed and verified twice. That result must come from `validateCsr` for the same `entitled`
   * identity, otherwise SEALMESH_ERR_CSR_IDENTITY_MISMATCH.
   */
  async issueSvid(options: ({ csrPem: string } | { csr: ValidatedCsr }) & { entitled: SpiffeId; ttlSeconds?: number }): Promise<IssuedSvid> {
    const ttlSeconds = checkTtl(options.ttlSeconds);
    const spiffeId = formatSpiffeId(options.entitled);
    let spkiDer: Uint8Array;
    if ('csr' in options) {
      if (!isValidatedCsr(options.csr) || options.csr.spiffeId !== spiffeId) {
        throw new SealmeshError('SEALMESH_ERR_CSR_IDENTITY_MISMATCH', `the validated CSR was not validated for ${spiffeId}: validate the CSR against the identity the SVID is issued for`);
      }
      spkiDer = options.csr.spkiDer;
    } else {
      spkiDer = (await validateCsr(options.csrPem, options.entitled)).spkiDer;
    }
    const issued = await this.#issueLeaf({
      spkiDer,
      ttlSeconds,
      subject: `O=sealmesh, CN=${options.entitled.service}`,
      names: [{ type: 'url', value: spiffeId }],
      trackHorizon: true,
    });
    return { spiffeId, ...issued };
  }

  /**
   * Issues the TLS server certificate of the control plane for `publicKey`, an ECDSA P-256 key as
   * a CryptoKey or DER SubjectPublicKeyInfo. The certificate names every DNS name and IP address
   * given, plus `uri` when present, which must be a SPIFFE ID in this trust domain. It has the
   * leaf profile of an SVID and the same TTL rules.
   *
   * These certificates do not count towards the leaf horizon of their root, so a rotation does not
   * wait for them: the caller must replace its certificate after `rotateRoot` and after a prune.
   * Throws SEALMESH_ERR_INVALID_ARGUMENT for an invalid key, name or address.
   */
  async issueServerCertificate(options: {
    publicKey: webcrypto.CryptoKey | Uint8Array;
    dnsNames: string[];
    ipAddresses: string[];
    uri?: string;
    ttlSeconds?: number;
  }): Promise<IssuedCertificate> {
    const ttlSeconds = checkTtl(options.ttlSeconds);
    const spkiDer = options.publicKey instanceof Uint8Array ? options.publicKey : await exportSpki(options.publicKey);
    try {
      await importP256PublicKey(spkiDer);
    } catch (error) {
      throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `server key is not accepted (${(error as Error).message}): generate an ECDSA P-256 key`);
    }
    const names = serverCertificateNames(options, this.#trustDomain);
    return this.#issueLeaf({ spkiDer, ttlSeconds, subject: 'O=sealmesh, CN=sealmesh server', names, trackHorizon: false });
  }

  /**
   * Replaces the signing root. It generates a new root key and a new intermediate key in the same
   * custody, issues the new root (10 years) and cross-signs it with the current root. One
   * transaction then stores the new root, the new intermediate and the rotation record. From then on
   * leaves are issued under the new intermediate, and the bundle holds both roots until
   * `pruneRetiredRoot` removes the old one.
   *
   * A pending rotation is pruned first when its time has come. Throws
   * SEALMESH_ERR_CA_ROTATION_PENDING when it has not, SEALMESH_ERR_CONFLICT when another CA
   * object changed the CA state meanwhile, and the custody's errors.
   */
  async rotateRoot(): Promise<RootRotation> {
    return this.#runExclusive(() => this.#rotateRoot());
  }

  /**
   * Removes the root retired by the last rotation from the bundle once no leaf under it can still
   * be valid: the current time has passed its leaf horizon plus the clock skew allowance. Then
   * destroys the retired root key and the retired intermediate key in the custody. Returns
   * `pruned: false` with the time it becomes possible while that time has not come.
   */
  async pruneRetiredRoot(): Promise<RootPrune> {
    return this.#runExclusive(() => this.#pruneRetiredRoot());
  }

  /** Returns the roots, intermediate, custody and rotation state. */
  async status(): Promise<CaStatus> {
    const rotation = this.#rotation;
    const roots = this.#roots.map((pem): RootStatus => {
      const certificate = new NodeX509Certificate(pem);
      const serialNumber = certificate.serialNumber.toLowerCase();
      return {
        serialNumber,
        fingerprintSha256: certificate.fingerprint256,
        notBefore: new Date(certificate.validFrom).toISOString(),
        notAfter: new Date(certificate.validTo).toISOString(),
        state: serialNumber === rotation?.retiredRootSerial ? 'retiring' : 'signing',
      };
    });
    return {
      custody: this.#custody.name,
      roots,
      intermediate: { serialNumber: this.#intermediate.certificate.serialNumber, notAfter: this.#intermediate.certificate.notAfter.toISOString() },
      rotation:
        rotation === undefined
          ? null
          : { retiredRootSerial: rotation.retiredRootSerial, rotatedAt: rotation.rotatedAt, prunableAfter: (await this.#prunableAfter(rotation)).toISOString() },
    };
  }

  #issuerContext(): IssuerContext {
    return { custody: this.#custody, trustDomain: this.#trustDomain, now: this.#now };
  }

  #runExclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#exclusive.then(task);
    this.#exclusive = run.catch(() => undefined);
    return run;
  }

  #intermediateDue(): boolean {
    const remainingMs = this.#intermediate.certificate.notAfter.getTime() - this.#now().getTime();
    const rootOutlivesIntermediate = this.#signingRoot.certificate.notAfter > this.#intermediate.certificate.notAfter;
    return remainingMs <= INTERMEDIATE_RENEWAL_SECONDS * 1000 && rootOutlivesIntermediate;
  }

  async #issueLeaf(options: {
    spkiDer: Uint8Array;
    ttlSeconds: number;
    subject: string;
    names: x509.JsonGeneralNames;
    trackHorizon: boolean;
  }): Promise<IssuedCertificate> {
    await this.renewIntermediateIfDue();
    let intermediate = this.#intermediate;
    const now = truncateToSecond(this.#now());
    const notAfterFor = (issuer: IntermediateState): Date => {
      const requested = new Date(now.getTime() + options.ttlSeconds * 1000);
      return requested > issuer.certificate.notAfter ? issuer.certificate.notAfter : requested;
    };
    // The horizon is written before the leaf is signed, so a crash between the two leaves the
    // bound too high rather than too low. A rotation that lands during the write moves issuance
    // to the new intermediate, whose root then needs its own reservation.
    while (options.trackHorizon) {
      const untrackedUntil = new Date(now.getTime() + MAX_SVID_TTL_SECONDS * 1000);
      await this.#horizon.reserve(intermediate.rootSerial, notAfterFor(intermediate), untrackedUntil);
      if (this.#intermediate === intermediate) break;
      intermediate = this.#intermediate;
    }
    const notAfter = notAfterFor(intermediate);
    if (notAfter <= now) {
      throw new SealmeshError(
        'SEALMESH_ERR_INTERNAL',
        `the intermediate CA certificate expired at ${intermediate.certificate.notAfter.toISOString()} and the root cannot renew it: rotate the root with \`sealmesh operator ca rotate-root\``,
      );
    }

    const certificate = await signLeafCertificate({
      ...options,
      serialNumber: randomSerialNumber(),
      notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
      notAfter,
      issuer: intermediate,
    });
    const crossPem = this.#rotation?.crossCertificatePem ?? '';
    return {
      certificatePem: certificate.pem,
      chainPem: certificate.pem + intermediate.pem + crossPem,
      serialNumber: certificate.serialNumber,
      notBefore: certificate.notBefore,
      notAfter: certificate.notAfter,
    };
  }

  /** Loads the CA from the store. Returns false when the store contains no CA yet. */
  async #load(): Promise<boolean> {
    const [rootRecord, intermediateRecord, custodyRecord, rotationRecord] = await Promise.all([
      this.#store.get(STORE_KEYS.signingRoot),
      this.#store.get(STORE_KEYS.intermediate),
      this.#store.get(STORE_KEYS.custody),
      this.#store.get(STORE_KEYS.rotation),
    ]);
    if (rootRecord === undefined && intermediateRecord === undefined) return false;
    if (rootRecord === undefined || intermediateRecord === undefined) {
      const missing = rootRecord === undefined ? STORE_KEYS.signingRoot : STORE_KEYS.intermediate;
      throw inconsistent(`${missing} is missing while the rest of the CA exists`);
    }
    const custody = custodyRecord === undefined ? 'sealed' : decodeRecord<CustodyRecord>(custodyRecord, ['name']).name;
    if (custody !== this.#custody.name) {
      throw new SealmeshError(
        'SEALMESH_ERR_CA_CUSTODY_MISMATCH',
        `the CA keys of this cluster are in the ${custody} key custody, but the server was started with --ca-custody ${this.#custody.name}: start it with --ca-custody ${custody}`,
      );
    }

    const signingRoot = decodeRecord<SigningRootRecord>(rootRecord, ['serialNumber', 'keyLabel']);
    const rootPemRecord = await this.#store.get(STORE_KEYS.rootPrefix + signingRoot.serialNumber);
    if (rootPemRecord === undefined) throw inconsistent(`${STORE_KEYS.rootPrefix}${signingRoot.serialNumber} is missing`);
    const rootPem = Buffer.from(rootPemRecord.value).toString('utf8');
    const rootCertificate = parseCertificate(rootPem, rootPemRecord.key);
    this.#checkTrustDomain(rootCertificate);

    this.#roots = await this.#listRoots();
    // Only the label of the root key is kept: the key is loaded when an intermediate is due.
    this.#signingRoot = {
      certificate: rootCertificate,
      keyLabel: signingRoot.keyLabel,
      pem: rootPem,
      fingerprint256: new NodeX509Certificate(rootPem).fingerprint256,
      modRevision: rootRecord.modRevision,
    };
    this.#rotation =
      rotationRecord === undefined
        ? undefined
        : {
            ...decodeRecord<RotationRecord>(rotationRecord, ['retiredRootSerial', 'retiredRootKeyLabel', 'retiredIntermediateKeyLabel', 'rotatedAt', 'crossCertificatePem']),
            modRevision: rotationRecord.modRevision,
          };
    this.#intermediate = await this.#loadIntermediate(intermediateRecord);
    return true;
  }

  /** Reads the PEM of every root in the bundle, ordered by serial number as the store lists them. */
  async #listRoots(): Promise<string[]> {
    return (await this.#store.list(STORE_KEYS.rootPrefix)).map((record) => Buffer.from(record.value).toString('utf8'));
  }

  async #loadIntermediate(record: StoreRecord): Promise<IntermediateState> {
    const stored = decodeRecord<IntermediateRecord>(record, ['certificatePem', 'keyLabel']);
    const certificate = parseCertificate(stored.certificatePem, record.key);
    const key = await this.#loadKey(stored.keyLabel, certificate);

    const node = new NodeX509Certificate(stored.certificatePem);
    const root = new NodeX509Certificate(this.#signingRoot.pem);
    if (!node.checkIssued(root) || !node.verify(root.publicKey)) {
      throw inconsistent('the intermediate certificate is not signed by the signing root');
    }
    return {
      certificate,
      key,
      keyLabel: stored.keyLabel,
      pem: toPem(certificate),
      rootSerial: this.#signingRoot.certificate.serialNumber,
      modRevision: record.modRevision,
    };
  }

  /** Loads a CA key from the custody and checks that it belongs to `certificate`. */
  async #loadKey(label: string, certificate: x509.X509Certificate): Promise<CaSigningKey> {
    const key = await this.#custody.load(label);
    if (key === undefined) {
      throw new SealmeshError(
        'SEALMESH_ERR_CA_KEY_MISSING',
        `CA key ${JSON.stringify(label)} of certificate ${certificate.serialNumber} is missing from the ${this.#custody.name} key custody: restore the key, or the store and key custody from the same backup`,
      );
    }
    if (!Buffer.from(key.spki).equals(Buffer.from(certificate.publicKey.rawData))) {
      throw inconsistent(`key ${JSON.stringify(label)} does not match certificate ${certificate.serialNumber}`);
    }
    return key;
  }

  #checkTrustDomain(root: x509.X509Certificate): void {
    const expected = `spiffe://${this.#trustDomain}`;
    const names = root.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
    const actual = names.find((name) => name.type === 'url')?.value;
    if (actual !== expected) {
      throw new SealmeshError(
        'SEALMESH_ERR_CONFIG_INVALID',
        `the store contains the CA of ${actual ?? 'an unknown trust domain'}, not ${expected}: open it with its own trust domain`,
      );
    }
  }

  /** Creates the root and the first intermediate and stores both in one transaction. */
  async #initialize(): Promise<void> {
    const root = await createRootIssuer(this.#issuerContext(), false);
    const { certificate, keyLabel, pem } = root;
    const intermediate = await createIntermediateIssuer(this.#issuerContext(), root);

    const result = await this.#store.txn({
      compare: [
        { key: STORE_KEYS.signingRoot, modRevision: 0 },
        { key: STORE_KEYS.intermediate, modRevision: 0 },
      ],
      success: [
        { type: 'put', key: STORE_KEYS.rootPrefix + certificate.serialNumber, value: Buffer.from(pem) },
        { type: 'put', key: STORE_KEYS.signingRoot, value: encodeRecord({ serialNumber: certificate.serialNumber, keyLabel }) },
        { type: 'put', key: STORE_KEYS.intermediate, value: encodeRecord({ certificatePem: intermediate.pem, keyLabel: intermediate.keyLabel }) },
        { type: 'put', key: STORE_KEYS.custody, value: encodeRecord({ name: this.#custody.name }) },
        LeafHorizon.initialRecord(certificate.serialNumber, certificate.notBefore),
      ],
    });
    if (!result.succeeded) {
      // NOTE: another process created the CA first. The two keys generated above stay in the
      // custody unused; nothing deletes them.
      if (!(await this.#load())) throw inconsistent('the CA disappeared while it was being created');
      return;
    }
    this.#roots = [pem];
    this.#signingRoot = { certificate, keyLabel, pem, fingerprint256: new NodeX509Certificate(pem).fingerprint256, modRevision: result.revision };
    this.#rotation = undefined;
    this.#intermediate = { ...intermediate, modRevision: result.revision };
  }

  async #renewIntermediate(): Promise<boolean> {
    const root = this.#signingRoot;
    const rootKey = await this.#loadKey(root.keyLabel, root.certificate);
    const intermediate = await createIntermediateIssuer(this.#issuerContext(), { certificate: root.certificate, key: rootKey });
    const result = await this.#store.txn({
      compare: [{ key: STORE_KEYS.intermediate, modRevision: this.#intermediate.modRevision }],
      success: [
        { type: 'put', key: STORE_KEYS.intermediate, value: encodeRecord({ certificatePem: intermediate.pem, keyLabel: intermediate.keyLabel }) },
      ],
    });
    if (result.succeeded) {
      this.#intermediate = { ...intermediate, modRevision: result.revision };
      return true;
    }
    // Another CA object renewed first: use its intermediate.
    const record = await this.#store.get(STORE_KEYS.intermediate);
    if (record === undefined) throw inconsistent(`${STORE_KEYS.intermediate} is missing while the rest of the CA exists`);
    this.#intermediate = await this.#loadIntermediate(record);
    return true;
  }

  async #rotateRoot(): Promise<RootRotation> {
    if (this.#rotation !== undefined) {
      const prune = await this.#pruneRetiredRoot();
      if (!prune.pruned) {
        throw new SealmeshError(
          'SEALMESH_ERR_CA_ROTATION_PENDING',
          `root ${prune.retiredRootSerial ?? ''} retired by the previous rotation stays in the trust bundle until ${prune.prunableAfter ?? 'its SVIDs expire'}, when the last certificate under it expires: rotate again after that time`,
        );
      }
    }
    const retired = this.#signingRoot;
    const retiredKey = await this.#loadKey(retired.keyLabel, retired.certificate);
    const root = await createRootIssuer(this.#issuerContext(), true);
    const intermediate = await createIntermediateIssuer(this.#issuerContext(), root);
    const now = truncateToSecond(this.#now());
    const cross = await createCrossCertificate({
      root: root.certificate,
      issuer: { certificate: retired.certificate, key: retiredKey },
      trustDomain: this.#trustDomain,
      serialNumber: randomSerialNumber(),
      notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
      notAfter: root.certificate.notAfter < retired.certificate.notAfter ? root.certificate.notAfter : retired.certificate.notAfter,
    });
    const rotation: RotationRecord = {
      retiredRootSerial: retired.certificate.serialNumber,
      retiredRootKeyLabel: retired.keyLabel,
      retiredIntermediateKeyLabel: this.#intermediate.keyLabel,
      rotatedAt: now.toISOString(),
      crossCertificatePem: toPem(cross),
    };
    const serialNumber = root.certificate.serialNumber;
    const result = await this.#store.txn({
      compare: [
        { key: STORE_KEYS.signingRoot, modRevision: retired.modRevision },
        { key: STORE_KEYS.intermediate, modRevision: this.#intermediate.modRevision },
        { key: STORE_KEYS.rotation, modRevision: 0 },
      ],
      success: [
        { type: 'put', key: STORE_KEYS.rootPrefix + serialNumber, value: Buffer.from(root.pem) },
        { type: 'put', key: STORE_KEYS.signingRoot, value: encodeRecord({ serialNumber, keyLabel: root.keyLabel }) },
        { type: 'put', key: STORE_KEYS.intermediate, value: encodeRecord({ certificatePem: intermediate.pem, keyLabel: intermediate.keyLabel }) },
        { type: 'put', key: STORE_KEYS.rotation, value: encodeRecord(rotation) },
        LeafHorizon.initialRecord(serialNumber, root.certificate.notBefore),
      ],
    });
    if (!result.succeeded) {
      // The new keys were never used, so they go again.
      await Promise.allSettled([this.#custody.destroy(root.keyLabel), this.#custody.destroy(intermediate.keyLabel)]);
      throw new SealmeshError('SEALMESH_ERR_CONFLICT', 'the CA changed while the root was being rotated: restart the server and rotate again');
    }
    this.#roots = await this.#listRoots();
    this.#signingRoot = {
      certificate: root.certificate,
      keyLabel: root.keyLabel,
      pem: root.pem,
      fingerprint256: new NodeX509Certificate(root.pem).fingerprint256,
      modRevision: result.revision,
    };
    this.#intermediate = { ...intermediate, modRevision: result.revision };
    this.#rotation = { ...rotation, modRevision: result.revision };
    return {
      retiredRoot: { serialNumber: retired.certificate.serialNumber, fingerprintSha256: retired.fingerprint256 },
      root: { serialNumber, fingerprintSha256: this.#signingRoot.fingerprint256, notAfter: root.certificate.notAfter.toISOString() },
      intermediate: { serialNumber: intermediate.certificate.serialNumber, notAfter: intermediate.certificate.notAfter.toISOString() },
      prunableAfter: (await this.#prunableAfter(this.#rotation)).toISOString(),
    };
  }

  /**
   * Returns when the retired root may leave the bundle: the end of its leaf horizon plus the clock
   * skew allowance, because a peer whose clock runs behind still accepts a leaf that long. A root
   * without a horizon record gets the longest TTL after the rotation, which bounds any leaf
   * issued before tracking began.
   */
  async #prunableAfter(rotation: RotationRecord): Promise<Date> {
    const horizon = await this.#horizon.read(rotation.retiredRootSerial);
    const bound = horizon?.notAfterMs ?? Date.parse(rotation.rotatedAt) + MAX_SVID_TTL_SECONDS * 1000;
    return new Date(bound + CLOCK_SKEW_SECONDS * 1000);
  }

  async #pruneRetiredRoot(): Promise<RootPrune> {
    const rotation = this.#rotation;
    if (rotation === undefined) return { pruned: false };
    const retiredRootSerial = rotation.retiredRootSerial;
    const prunableAfter = await this.#prunableAfter(rotation);
    if (this.#now() < prunableAfter) return { pruned: false, retiredRootSerial, prunableAfter: prunableAfter.toISOString() };

    const horizon = await this.#horizon.read(retiredRootSerial);
    const result = await this.#store.txn({
      compare: [
        { key: STORE_KEYS.rotation, modRevision: rotation.modRevision },
        { key: STORE_KEYS.horizonPrefix + retiredRootSerial, modRevision: horizon?.modRevision ?? 0 },
      ],
      success: [
        { type: 'delete', key: STORE_KEYS.rootPrefix + retiredRootSerial },
        { type: 'delete', key: STORE_KEYS.rotation },
        { type: 'delete', key: STORE_KEYS.horizonPrefix + retiredRootSerial },
      ],
    });
    // A leaf issued meanwhile moved the horizon; the next prune looks again.
    if (!result.succeeded) return { pruned: false, retiredRootSerial, prunableAfter: (await this.#prunableAfter(rotation)).toISOString() };

    this.#rotation = undefined;
    this.#horizon.forget(retiredRootSerial);
    this.#roots = await this.#listRoots();
    const destroyedKeys: string[] = [];
    const keysNotDestroyed: string[] = [];
    for (const label of [rotation.retiredRootKeyLabel, rotation.retiredIntermediateKeyLabel]) {
      try {
        await this.#custody.destroy(label);
        destroyedKeys.push(label);
      } catch {
        keysNotDestroyed.push(label);
      }
    }
    return { pruned: true, retiredRootSerial, destroyedKeys, ...(keysNotDestroyed.length > 0 ? { keysNotDestroyed } : {}) };
  }
}
