import { createHash, generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { AttestationResult, Evidence, EvidenceVerifier } from '../../src/attest/index.ts';
import type { TeeFilesystem } from '../../src/attest/providers/index.ts';
import { SealmeshError } from '../../src/errors/index.ts';

/**
 * Emulators of the TEE interfaces that evidence providers use. Each one performs every call on
 * real files under a temporary directory, then applies the side effect that the kernel
 * (configfs-tsm) or Gramine (`/dev/attestation`) applies to the same call: attribute files appear
 * on mkdir, `generation` counts writes, `outblob` holds the report for the current `inblob`, and
 * rmdir removes the attribute files with the entry.
 */

function errno(code: string, path: string): NodeJS.ErrnoException {
  const error = new Error(`${code}: ${path}`) as NodeJS.ErrnoException;
  error.code = code;
  error.path = path;
  return error;
}

/** Offsets in an SEV-SNP attestation report (AMD SEV-SNP ABI specification, ATTESTATION_REPORT). */
export const SNP_REPORT = {
  size: 0x4a0,
  policy: 0x08,
  vmpl: 0x30,
  signatureAlgorithm: 0x34,
  reportData: 0x50,
  measurement: 0x90,
  hostData: 0xc0,
  reportedTcb: 0x180,
  chipId: 0x1a0,
  signature: 0x2a0,
} as const;

/** SEV-SNP guest policy bits (AMD SEV-SNP ABI specification, GUEST_POLICY). */
export const SNP_POLICY = { smt: 1n << 16n, reserved: 1n << 17n, migrationAgent: 1n << 18n, debug: 1n << 19n, singleSocket: 1n << 20n } as const;

export interface SnpGuest {
  measurement: Buffer;
  hostData: Buffer;
  policy: bigint;
  vmpl: number;
  reportedTcb: { bootloader: number; tee: number; snp: number; microcode: number };
  chipId: Buffer;
}

/** A software stand-in for the AMD secure processor: an ECDSA P-384 key that signs SNP-layout reports. */
export class SoftwareSnpSigner {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;

  constructor() {
    const pair = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    this.privateKey = pair.privateKey;
    this.publicKey = pair.publicKey;
  }

  /** Builds a 1184-byte report with `reportData` and the guest's fields, signed like a VCEK signs. */
  report(guest: SnpGuest, reportData: Buffer): Buffer {
    const report = Buffer.alloc(SNP_REPORT.size);
    report.writeUInt32LE(3, 0);
    report.writeBigUInt64LE(guest.policy, SNP_REPORT.policy);
    report.writeUInt32LE(guest.vmpl, SNP_REPORT.vmpl);
    report.writeUInt32LE(1, SNP_REPORT.signatureAlgorithm);
    reportData.copy(report, SNP_REPORT.reportData);
    guest.measurement.copy(report, SNP_REPORT.measurement);
    guest.hostData.copy(report, SNP_REPORT.hostData);
    report.writeUInt8(guest.reportedTcb.bootloader, SNP_REPORT.reportedTcb);
    report.writeUInt8(guest.reportedTcb.tee, SNP_REPORT.reportedTcb + 1);
    report.writeUInt8(guest.reportedTcb.snp, SNP_REPORT.reportedTcb + 6);
    report.writeUInt8(guest.reportedTcb.microcode, SNP_REPORT.reportedTcb + 7);
    guest.chipId.copy(report, SNP_REPORT.chipId);
    // The signature covers bytes 0x0 to 0x29f; r and s are stored little-endian in 72-byte fields.
    const signature = sign('sha384', report.subarray(0, SNP_REPORT.signature), { key: this.privateKey, dsaEncoding: 'ieee-p1363' });
    Buffer.from(signature.subarray(0, 48)).reverse().copy(report, SNP_REPORT.signature);
    Buffer.from(signature.subarray(48, 96)).reverse().copy(report, SNP_REPORT.signature + 72);
    return report;
  }
}

export function defaultSnpGuest(): SnpGuest {
  return {
    measurement: createHash('sha384').update('guest image').digest(),
    hostData: Buffer.alloc(32, 0x11),
    policy: SNP_POLICY.reserved | 0x0000n,
    vmpl: 0,
    reportedTcb: { bootloader: 4, tee: 0, snp: 22, microcode: 213 },
    chipId: Buffer.alloc(64, 0xc5),
  };
}

/** A fake SEV-SNP certificate table as `auxblob` returns it: one GUID entry and the terminator. */
export function fakeCertificateTable(): Buffer {
  const vcekGuid = Buffer.from('63da758dd3e64ec2afd0db4d6e6c5d9a', 'hex');
  const certificate = Buffer.from('not a real VCEK, only the shape of a certificate table');
  const header = Buffer.alloc(48);
  vcekGuid.copy(header, 0);
  header.writeUInt32LE(48, 16);
  header.writeUInt32LE(certificate.length, 20);
  return Buffer.concat([header, certificate]);
}

/** Offset of REPORTDATA in a TDX quote version 4: 48-byte header, then REPORTDATA at 520 in the TD report body. */
export const TDX_QUOTE_REPORT_DATA_OFFSET = 48 + 520;

export interface TsmEmulatorOptions {
  /** `sev_guest` or `tdx_guest`. */
  kernelProvider: string;
  /** SEV-SNP: signs reports. TDX: absent, quotes are unsigned bytes with REPORTDATA in place. */
  snp?: { signer: SoftwareSnpSigner; guest: SnpGuest };
  /** How many attempts have another writer write `inblob` between this provider's write and read. */
  contendedAttempts?: number;
}

/** The kernel side of configfs-tsm (drivers/virt/coco/tsm.c) for one mount point. */
export class TsmEmulator implements TeeFilesystem {
  readonly root: string;
  readonly options: TsmEmulatorOptions;
  /** Report entries created and not yet removed. */
  readonly entries = new Set<string>();
  /** Writes to `inblob` by this emulator's concurrent writer. */
  foreignWrites = 0;
  #contendedLeft: number;
  readonly #pendingRace = new Set<string>();

  constructor(root: string, options: TsmEmulatorOptions) {
    this.root = root;
    this.options = options;
    this.#contendedLeft = options.contendedAttempts ?? 0;
  }

  /** Creates `<root>/report`, as mounting configfs with the tsm module loaded does. */
  async install(): Promise<void> {
    await mkdir(join(this.root, 'report'), { recursive: true });
  }

  #isEntry(path: string): boolean {
    return dirname(path) === join(this.root, 'report');
  }

  async mkdir(path: string): Promise<void> {
    await mkdir(path);
    if (!this.#isEntry(path)) return;
    this.entries.add(path);
    await writeFile(join(path, 'generation'), '0\n');
    await writeFile(join(path, 'provider'), `${this.options.kernelProvider}\n`);
    await writeFile(join(path, 'inblob'), Buffer.alloc(0));
    await writeFile(join(path, 'outblob'), Buffer.alloc(0));
    await writeFile(join(path, 'privlevel'), Buffer.alloc(0));
    if (this.options.kernelProvider === 'sev_guest') await writeFile(join(path, 'auxblob'), Buffer.alloc(0));
  }

  async rmdir(path: string): Promise<void> {
    if (this.#isEntry(path)) {
      for (const name of ['generation', 'provider', 'inblob', 'outblob', 'auxblob', 'privlevel']) await rm(join(path, name), { force: true });
      this.entries.delete(path);
    }
    await rmdir(path);
  }

  async #bumpGeneration(entry: string): Promise<void> {
    const generation = Number.parseInt((await readFile(join(entry, 'generation'), 'utf8')).trim(), 10);
    await writeFile(join(entry, 'generation'), `${generation + 1}\n`);
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    const entry = dirname(path);
    const name = basename(path);
    if (!this.#isEntry(entry) || (name !== 'inblob' && name !== 'privlevel')) {
      await writeFile(path, data);
      return;
    }
    if (name === 'inblob' && data.length > 64) throw errno('EINVAL', path);
    await writeFile(path, data);
    await this.#bumpGeneration(entry);
    if (name === 'inblob' && this.#contendedLeft > 0) {
      this.#contendedLeft -= 1;
      this.#pendingRace.add(entry);
    }
  }

  async readFile(path: string): Promise<Buffer> {
    const entry = dirname(path);
    const name = basename(path);
    if (this.#isEntry(entry) && name === 'outblob') {
      if (this.#pendingRace.delete(entry)) {
        // Another process writes its own report data into the same entry before this read.
        await writeFile(join(entry, 'inblob'), randomBytes(64));
        await this.#bumpGeneration(entry);
        this.foreignWrites += 1;
      }
      await this.#generateReport(entry);
    }
    return readFile(path);
  }

  async #generateReport(entry: string): Promise<void> {
    const inblob = Buffer.alloc(64);
    (await readFile(join(entry, 'inblob'))).copy(inblob);
    if (this.options.snp !== undefined) {
      const privlevel = (await readFile(join(entry, 'privlevel'), 'utf8')).trim();
      const guest = { ...this.options.snp.guest, vmpl: privlevel === '' ? this.options.snp.guest.vmpl : Number(privlevel) };
      await writeFile(join(entry, 'outblob'), this.options.snp.signer.report(guest, inblob));
      await writeFile(join(entry, 'auxblob'), fakeCertificateTable());
      return;
    }
    const quote = Buffer.alloc(TDX_QUOTE_REPORT_DATA_OFFSET + 64 + 64);
    quote.writeUInt16LE(4, 0);
    quote.writeUInt32LE(0x81, 4);
    inblob.copy(quote, TDX_QUOTE_REPORT_DATA_OFFSET);
    await writeFile(join(entry, 'outblob'), quote);
  }
}

/** Offset of REPORTDATA in an SGX quote version 3: 48-byte header, then REPORTDATA at 320 in the report body. */
export const SGX_QUOTE_REPORT_DATA_OFFSET = 48 + 320;

/** Gramine's `/dev/attestation` pseudo-files (Gramine 1.x, libos/src/fs/dev/attestation.c). */
export class GramineEmulator implements TeeFilesystem {
  readonly root: string;
  readonly attestationType: string;

  constructor(root: string, attestationType = 'dcap') {
    this.root = root;
    this.attestationType = attestationType;
  }

  async install(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await writeFile(join(this.root, 'attestation_type'), `${this.attestationType}\n`);
    await writeFile(join(this.root, 'user_report_data'), Buffer.alloc(64));
    await writeFile(join(this.root, 'quote'), Buffer.alloc(0));
  }

  async mkdir(path: string): Promise<void> {
    await mkdir(path);
  }

  async rmdir(path: string): Promise<void> {
    await rmdir(path);
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    if (path === join(this.root, 'user_report_data') && data.length !== 64) throw errno('EINVAL', path);
    await writeFile(path, data);
  }

  async readFile(path: string): Promise<Buffer> {
    if (path === join(this.root, 'quote')) {
      if (this.attestationType !== 'dcap') throw errno('EACCES', path);
      const quote = Buffer.alloc(SGX_QUOTE_REPORT_DATA_OFFSET + 64 + 64);
      quote.writeUInt16LE(3, 0);
      (await readFile(join(this.root, 'user_report_data'))).copy(quote, SGX_QUOTE_REPORT_DATA_OFFSET);
      await writeFile(path, quote);
    }
    return readFile(path);
  }
}

/**
 * A verifier for the reports of SoftwareSnpSigner, written for tests in the shape of a real
 * SEV-SNP verifier: it checks the report size and signature algorithm, the ECDSA P-384 signature
 * with the signer's public key (in place of the VCEK chain), and the report data binding, then
 * returns the claims from the report's fields. Its TCB status is `UpToDate`, because no TCB
 * collateral exists for a software signer.
 */
export class SoftwareSnpVerifier implements EvidenceVerifier {
  readonly provider = 'sev-snp';
  readonly #publicKey: KeyObject;

  constructor(publicKey: KeyObject) {
    this.#publicKey = publicKey;
  }

  async verify(evidence: Evidence, expectedReportData: Uint8Array, now: Date): Promise<AttestationResult> {
    const report = Buffer.from(evidence.data, 'base64');
    if (report.length !== SNP_REPORT.size || report.readUInt32LE(SNP_REPORT.signatureAlgorithm) !== 1) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID', `SEV-SNP report is ${report.length} bytes or has another signature algorithm`);
    }
    const r = Buffer.from(report.subarray(SNP_REPORT.signature, SNP_REPORT.signature + 48)).reverse();
    const s = Buffer.from(report.subarray(SNP_REPORT.signature + 72, SNP_REPORT.signature + 120)).reverse();
    const signed = report.subarray(0, SNP_REPORT.signature);
    if (!verify('sha384', signed, { key: this.#publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]))) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID', 'SEV-SNP report signature does not verify');
    }
    const reportData = report.subarray(SNP_REPORT.reportData, SNP_REPORT.reportData + 64);
    if (!reportData.equals(Buffer.from(expectedReportData))) {
      throw new SealmeshError('SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH', 'SEV-SNP report data does not match the enrollment binding');
    }
    const policy = report.readBigUInt64LE(SNP_REPORT.policy);
    const tcb = SNP_REPORT.reportedTcb;
    return {
      provider: 'sev-snp',
      insecure: false,
      verifiedAt: now.toISOString(),
      debug: (policy & SNP_POLICY.debug) !== 0n,
      reportData: reportData.toString('hex'),
      measurements: {
        measurement: report.subarray(SNP_REPORT.measurement, SNP_REPORT.measurement + 48).toString('hex'),
        hostData: report.subarray(SNP_REPORT.hostData, SNP_REPORT.hostData + 32).toString('hex'),
      },
      tcbStatus: 'UpToDate',
      snp: {
        vmpl: report.readUInt32LE(SNP_REPORT.vmpl),
        policy: {
          debug: (policy & SNP_POLICY.debug) !== 0n,
          smt: (policy & SNP_POLICY.smt) !== 0n,
          migrationAgent: (policy & SNP_POLICY.migrationAgent) !== 0n,
          singleSocket: (policy & SNP_POLICY.singleSocket) !== 0n,
          abiMajor: Number((policy >> 8n) & 0xffn),
          abiMinor: Number(policy & 0xffn),
        },
        reportedTcb: { bootloader: report.readUInt8(tcb), tee: report.readUInt8(tcb + 1), snp: report.readUInt8(tcb + 6), microcode: report.readUInt8(tcb + 7) },
        productLine: 'Genoa',
        chipId: report.subarray(SNP_REPORT.chipId, SNP_REPORT.chipId + 64).toString('hex'),
        signingKey: 'vcek',
      },
    };
  }
}
