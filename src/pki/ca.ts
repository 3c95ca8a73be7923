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
  type IntermediateRecord,
  type SigningRootRecord,
} from './ca-records.ts';
import {
  createIntermediateCertificate,
  createLeafCertificate,
  createRootCertificate,
  serverCertificateNames,
  type CertificateTiming,
  type Issuer,
} from './certificates.ts';
import { validateCsr } from './csr.ts';
import type { CaSigningKey, KeyCustody } from './custody.ts';
import { exportSpki, importP256PublicKey, randomSerialNumber } from './keys.ts';
import { x509 } from './x509.ts';

/** Shortest SVID lifetime a caller may request, in seconds (5 minutes). */
export const MIN_SVID_TTL_SECONDS = 5 * 60;
/** Longest SVID lifetime a caller may request, in seconds (7 days). */
export const MAX_SVID_TTL_SECONDS = 7 * 24 * 3600;
/** SVID lifetime when the caller requests none, in seconds (24 hours). */
export const DEFAULT_SVID_TTL_SECONDS = 24 * 3600;
/**
 * Seconds by which every certificate's notBefore precedes its issue time, so that a peer whose
 * clock runs slightly behind the CA's still accepts a certificate issued a moment ago.
 */
export const CLOCK_SKEW_SECONDS = 60;

const ROOT_VALIDITY_YEARS = 10;
const INTERMEDIATE_VALIDITY_SECONDS = 365 * 24 * 3600;
/** An intermediate whose remaining validity is at most this is replaced. */
const INTERMEDIATE_RENEWAL_SECONDS = 30 * 24 * 3600;

interface SigningRootState {
  certificate: x509.X509Certificate;
  keyLabel: string;
  pem: string;
  fingerprint256: string;
}

interface IntermediateState extends Issuer {
  pem: string;
  keyLabel: string;
  /** modRevision of `ca/intermediate` when this state was read or written. */
  modRevision: number;
}

/** An SVID issued by `CertificateAuthority.issueSvid`. */
export interface IssuedSvid {
  spiffeId: string;
  certificatePem: string;
  /** The leaf followed by the intermediate, the chain a TLS endpoint presents. */
  chainPem: string;
  /** Lowercase hex. */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

/** A certificate issued by `CertificateAuthority.issueServerCertificate`. */
export type IssuedCertificate = Omit<IssuedSvid, 'spiffeId'>;

/** Options of `CertificateAuthority.open`. */
export interface CertificateAuthorityOptions {
  store: Store;
  custody: KeyCustody;
  trustDomain: string;
  /** Clock used for every validity period; `() => new Date()` when absent. */
  now?: () => Date;
}

/**
 * The mesh certificate authority: a root, an intermediate with pathLenConstraint 0 that signs
 * every leaf, and the trust bundle of root certificates.
 *
 * Certificates live in the store and private keys in a `KeyCustody`. Several CertificateAuthority
 * objects may share one store: creation and renewal are compare-and-swap transactions, and the
 * loser of a race loads the winner's certificates.
 * NOTE: root rotation is not implemented. Once the root's remaining validity falls below the
 * renewal window, each intermediate is cut to the root's notAfter and issuance stops when it ends.
 */
export class CertificateAuthority {
  readonly #store: Store;
  readonly #custody: KeyCustody;
  readonly #trustDomain: string;
  readonly #now: () => Date;
  #roots: string[] = [];
  #signingRoot!: SigningRootState;
  #intermediate!: IntermediateState;
  #renewal: Promise<boolean> | undefined;

  private constructor(options: CertificateAuthorityOptions) {
    this.#store = options.store;
    this.#custody = options.custody;
    this.#trustDomain = options.trustDomain;
    this.#now = options.now ?? (() => new Date());
  }

  /**
   * Opens the CA kept in `store`, creating the root and intermediate on first use, and replaces
   * the intermediate when it expires within 30 days.
   * Throws SEALMESH_ERR_CONFIG_INVALID when the store contains a CA of another trust domain and
   * SEALMESH_ERR_INTERNAL when the stored CA state is incomplete or inconsistent.
   */
  static async open(options: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    assertTrustDomain(options.trustDomain);
    const ca = new CertificateAuthority(options);
    if (!(await ca.#load())) await ca.#initialize();
    await ca.renewIntermediateIfDue();
    return ca;
  }

  /** The trust domain whose SPIFFE IDs this CA issues. */
  get trustDomain(): string {
    return this.#trustDomain;
  }

  /** Returns the PEM of every root in the trust bundle, read when the CA was opened. */
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
    const remainingMs = this.#intermediate.certificate.notAfter.getTime() - this.#now().getTime();
    const rootOutlivesIntermediate = this.#signingRoot.certificate.notAfter > this.#intermediate.certificate.notAfter;
    if (remainingMs > INTERMEDIATE_RENEWAL_SECONDS * 1000 || !rootOutlivesIntermediate) return false;

    this.#renewal = this.#renewIntermediate().finally(() => {
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
   * is checked by `validateCsr`, which throws its SEALMESH_ERR_CSR_* codes.
   */
  async issueSvid(options: { csrPem: string; entitled: SpiffeId; ttlSeconds?: number }): Promise<IssuedSvid> {
    const ttlSeconds = checkTtl(options.ttlSeconds);
    const { spkiDer } = await validateCsr(options.csrPem, options.entitled);
    const spiffeId = formatSpiffeId(options.entitled);
    const issued = await this.#issueLeaf({
      spkiDer,
      ttlSeconds,
      subject: `O=sealmesh, CN=${options.entitled.service}`,
      names: [{ type: 'url', value: spiffeId }],
    });
    return { spiffeId, ...issued };
  }

  /**
   * Issues the TLS server certificate of the control plane for `publicKey`, an ECDSA P-256 key as
   * a CryptoKey or DER SubjectPublicKeyInfo. The certificate names every DNS name and IP address
   * given, plus `uri` when present, which must be a SPIFFE ID in this trust domain. It has the
   * leaf profile of an SVID and the same TTL rules.
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
    return this.#issueLeaf({ spkiDer, ttlSeconds, subject: 'O=sealmesh, CN=sealmesh server', names });
  }

  async #issueLeaf(options: {
    spkiDer: Uint8Array;
    ttlSeconds: number;
    subject: string;
    names: x509.JsonGeneralNames;
  }): Promise<IssuedCertificate> {
    await this.renewIntermediateIfDue();
    const intermediate = this.#intermediate;
    const now = truncateToSecond(this.#now());
    const intermediateNotAfter = intermediate.certificate.notAfter;
    const requestedNotAfter = new Date(now.getTime() + options.ttlSeconds * 1000);
    const notAfter = requestedNotAfter > intermediateNotAfter ? intermediateNotAfter : requestedNotAfter;
    if (notAfter <= now) {
      throw new SealmeshError(
        'SEALMESH_ERR_INTERNAL',
        `the intermediate CA certificate expired at ${intermediateNotAfter.toISOString()} and the root cannot renew it: create a new CA`,
      );
    }

    const certificate = await createLeafCertificate({
      ...options,
      serialNumber: randomSerialNumber(),
      notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
      notAfter,
      issuer: intermediate,
    });
    const certificatePem = toPem(certificate);
    return {
      certificatePem,
      chainPem: certificatePem + intermediate.pem,
      serialNumber: certificate.serialNumber,
      notBefore: certificate.notBefore,
      notAfter: certificate.notAfter,
    };
  }

  /** Loads the CA from the store. Returns false when the store contains no CA yet. */
  async #load(): Promise<boolean> {
    const [rootRecord, intermediateRecord] = await Promise.all([
      this.#store.get(STORE_KEYS.signingRoot),
      this.#store.get(STORE_KEYS.intermediate),
    ]);
    if (rootRecord === undefined && intermediateRecord === undefined) return false;
    if (rootRecord === undefined || intermediateRecord === undefined) {
      const missing = rootRecord === undefined ? STORE_KEYS.signingRoot : STORE_KEYS.intermediate;
      throw inconsistent(`${missing} is missing while the rest of the CA exists`);
    }

    const signingRoot = decodeRecord<SigningRootRecord>(rootRecord, ['serialNumber', 'keyLabel']);
    const rootPemRecord = await this.#store.get(STORE_KEYS.rootPrefix + signingRoot.serialNumber);
    if (rootPemRecord === undefined) throw inconsistent(`${STORE_KEYS.rootPrefix}${signingRoot.serialNumber} is missing`);
    const rootPem = Buffer.from(rootPemRecord.value).toString('utf8');
    const rootCertificate = parseCertificate(rootPem, rootPemRecord.key);
    this.#checkTrustDomain(rootCertificate);

    this.#roots = (await this.#store.list(STORE_KEYS.rootPrefix)).map((record) => Buffer.from(record.value).toString('utf8'));
    // Only the label of the root key is kept: the key is loaded when an intermediate is due.
    this.#signingRoot = {
      certificate: rootCertificate,
      keyLabel: signingRoot.keyLabel,
      pem: rootPem,
      fingerprint256: new NodeX509Certificate(rootPem).fingerprint256,
    };
    this.#intermediate = await this.#loadIntermediate(intermediateRecord);
    return true;
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
    return { certificate, key, keyLabel: stored.keyLabel, pem: toPem(certificate), modRevision: record.modRevision };
  }

  /** Loads a CA key from the custody and checks that it belongs to `certificate`. */
  async #loadKey(label: string, certificate: x509.X509Certificate): Promise<CaSigningKey> {
    const key = await this.#custody.load(label);
    if (key === undefined) throw inconsistent(`key ${JSON.stringify(label)} is missing from the ${this.#custody.name} key custody`);
    const spkiDer = await exportSpki(key.publicKey, key.crypto);
    if (!Buffer.from(spkiDer).equals(Buffer.from(certificate.publicKey.rawData))) {
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
    const now = truncateToSecond(this.#now());
    const notAfter = new Date(now);
    notAfter.setUTCFullYear(notAfter.getUTCFullYear() + ROOT_VALIDITY_YEARS);
    const serialNumber = randomSerialNumber();
    const keyLabel = `root-${serialNumber}`;
    const key = await this.#custody.generate(keyLabel);
    const certificate = await createRootCertificate({
      key,
      trustDomain: this.#trustDomain,
      serialNumber,
      notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
      notAfter,
    });
    const pem = toPem(certificate);
    const intermediate = await this.#createIntermediate({ certificate, key });

    const result = await this.#store.txn({
      compare: [
        { key: STORE_KEYS.signingRoot, modRevision: 0 },
        { key: STORE_KEYS.intermediate, modRevision: 0 },
      ],
      success: [
        { type: 'put', key: STORE_KEYS.rootPrefix + certificate.serialNumber, value: Buffer.from(pem) },
        { type: 'put', key: STORE_KEYS.signingRoot, value: encodeRecord({ serialNumber: certificate.serialNumber, keyLabel }) },
        { type: 'put', key: STORE_KEYS.intermediate, value: encodeRecord({ certificatePem: intermediate.pem, keyLabel: intermediate.keyLabel }) },
      ],
    });
    if (!result.succeeded) {
      // NOTE: another process created the CA first. The two keys generated above stay in the
      // custody unused; nothing deletes them.
      if (!(await this.#load())) throw inconsistent('the CA disappeared while it was being created');
      return;
    }
    this.#roots = [pem];
    this.#signingRoot = { certificate, keyLabel, pem, fingerprint256: new NodeX509Certificate(pem).fingerprint256 };
    this.#intermediate = { ...intermediate, modRevision: result.revision };
  }

  async #renewIntermediate(): Promise<boolean> {
    const root = this.#signingRoot;
    const rootKey = await this.#loadKey(root.keyLabel, root.certificate);
    const intermediate = await this.#createIntermediate({ certificate: root.certificate, key: rootKey });
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

  async #createIntermediate(root: Issuer): Promise<Omit<IntermediateState, 'modRevision'>> {
    const now = truncateToSecond(this.#now());
    const fullTerm = new Date(now.getTime() + INTERMEDIATE_VALIDITY_SECONDS * 1000);
    const timing: CertificateTiming = {
      serialNumber: randomSerialNumber(),
      notBefore: new Date(now.getTime() - CLOCK_SKEW_SECONDS * 1000),
      notAfter: fullTerm > root.certificate.notAfter ? root.certificate.notAfter : fullTerm,
    };
    const keyLabel = `intermediate-${timing.serialNumber}`;
    const key = await this.#custody.generate(keyLabel);
    const certificate = await createIntermediateCertificate({ ...timing, key, issuer: root, trustDomain: this.#trustDomain });
    return { certificate, key, keyLabel, pem: toPem(certificate) };
  }
}

/** Returns `ttlSeconds` or the default, or throws SEALMESH_ERR_TTL_OUT_OF_BOUNDS. */
function checkTtl(ttlSeconds: number | undefined): number {
  const ttl = ttlSeconds ?? DEFAULT_SVID_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < MIN_SVID_TTL_SECONDS || ttl > MAX_SVID_TTL_SECONDS) {
    throw new SealmeshError(
      'SEALMESH_ERR_TTL_OUT_OF_BOUNDS',
      `certificate TTL ${String(ttlSeconds)} is out of bounds: request an integer number of seconds from ${MIN_SVID_TTL_SECONDS} to ${MAX_SVID_TTL_SECONDS}`,
    );
  }
  return ttl;
}

/** X.509 validity has a resolution of one second, so issue times are cut to whole seconds. */
function truncateToSecond(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}

/** Returns the PEM of a certificate, ending with a line break so PEMs can be concatenated. */
function toPem(certificate: x509.X509Certificate): string {
  const pem = certificate.toString('pem');
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}


