/**
 * TCB level evaluation, following the rules of Intel's SGX/TDX DCAP Quote Verification Library
 * (QVL, `TcbLevelCheck.cpp`, `TdxModuleCheck.cpp`, `EnclaveReportVerifier.cpp`):
 *
 * - Platform: the first TCB level, in the document's order (Intel publishes the highest first),
 *   whose 16 SGX component SVNs and PCESVN are all ≤ the PCK certificate's. For TDX, its 16 TDX
 *   component SVNs must also be ≤ the quote's TEE_TCB_SVN. When the TDX module major version
 *   (TEE_TCB_SVN[1]) is not 0, components 0 and 1 are left to the TDX module identity instead.
 * - TDX module: MRSIGNERSEAM and SEAMATTRIBUTES must match the TCB info's `tdxModule`, or for module
 *   version v > 0 its `tdxModuleIdentities` entry `TDX_vv`, whose first level with
 *   isvsvn ≤ TEE_TCB_SVN[0] gives the module status.
 * - QE: the QE report must match the QE identity under its masks. The first level with
 *   isvsvn ≤ the QE's ISVSVN gives the QE status.
 * - Combination, applied for the TDX module and then for the QE: a Revoked part makes the result
 *   Revoked; an OutOfDate part turns UpToDate and SWHardeningNeeded into OutOfDate, and
 *   ConfigurationNeeded and ConfigurationAndSWHardeningNeeded into OutOfDateConfigurationNeeded;
 *   otherwise the platform status stands.
 */
import { SealmeshError } from '../../errors/index.ts';
import type { TcbStatus } from '../index.ts';
import type { IsvSvnTcbLevel, QeIdentity, TcbInfo, TcbLevel } from './documents.ts';
import type { PckTcb } from './pck.ts';
import type { SgxReportBody, TdReportBody } from './quote.ts';

export interface LevelMatch {
  status: TcbStatus;
  advisoryIds: string[];
  tcbDate: string;
}

function fromLevel(level: TcbLevel | IsvSvnTcbLevel): LevelMatch {
  return { status: level.tcbStatus, advisoryIds: level.advisoryIDs ?? [], tcbDate: level.tcbDate };
}

/** Selects the platform TCB level for a PCK TCB and, for TDX, the quote's TEE_TCB_SVN. */
export function matchPlatformTcbLevel(tcbInfo: TcbInfo, pck: PckTcb, teeTcbSvn?: Buffer): LevelMatch {
  for (const level of tcbInfo.tcbLevels) {
    const sgxHigherOrEqual = level.tcb.sgxtcbcomponents.every((component, index) => pck.componentSvns[index]! >= component.svn);
    if (!sgxHigherOrEqual || pck.pceSvn < level.tcb.pcesvn) continue;
    if (teeTcbSvn === undefined) return fromLevel(level);

    const tdxComponents = level.tcb.tdxtcbcomponents;
    if (tdxComponents === undefined) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_TCB_INFO_INVALID', `TDX TCB info has a TCB level (${level.tcbDate}) without tdxtcbcomponents`);
    }
    const first = teeTcbSvn[1]! > 0 ? 2 : 0;
    let tdxHigherOrEqual = true;
    for (let index = first; index < 16; index += 1) {
      if (teeTcbSvn[index]! < tdxComponents[index]!.svn) tdxHigherOrEqual = false;
    }
    if (tdxHigherOrEqual) return fromLevel(level);
  }
  throw new SealmeshError(
    'SEALMESH_ERR_DCAP_TCB_LEVEL_NOT_FOUND',
    `no TCB level of the ${tcbInfo.id} TCB info for FMSPC ${tcbInfo.fmspc} covers the platform TCB ` +
      `(SGX SVNs ${pck.componentSvns.join(',')}, PCESVN ${pck.pceSvn}${teeTcbSvn === undefined ? '' : `, TEE_TCB_SVN ${teeTcbSvn.toString('hex')}`})`,
  );
}

function maskedEqual(actual: Buffer, expected: Buffer, mask: Buffer): boolean {
  if (actual.length !== expected.length || actual.length !== mask.length) return false;
  let difference = 0;
  for (let index = 0; index < actual.length; index += 1) {
    difference |= (actual[index]! & mask[index]!) ^ (expected[index]! & mask[index]!);
  }
  return difference === 0;
}

/**
 * Checks the TDX module against the TCB info and returns its TCB level, or undefined for module
 * version 0, which TCB info v3 describes only through `tdxModule` without levels.
 */
export function checkTdxModule(tcbInfo: TcbInfo, report: TdReportBody): LevelMatch | undefined {
  const moduleVersion = report.teeTcbSvn[1]!;
  const moduleIsvSvn = report.teeTcbSvn[0]!;
  if (tcbInfo.tdxModule === undefined) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_TCB_INFO_INVALID', 'TDX TCB info has no tdxModule');
  }
  let expected: { mrsigner: string; attributes: string; attributesMask: string } = tcbInfo.tdxModule;
  let levels: IsvSvnTcbLevel[] | undefined;
  if (moduleVersion > 0) {
    const id = `TDX_${moduleVersion.toString(16).padStart(2, '0').toUpperCase()}`;
    const identity = tcbInfo.tdxModuleIdentities?.find((candidate) => candidate.id.toUpperCase() === id);
    if (identity === undefined) {
      throw new SealmeshError('SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH', `TCB info has no TDX module identity ${id} for the quote's TDX module version ${moduleVersion}`);
    }
    expected = identity;
    levels = identity.tcbLevels;
  }

  if (!Buffer.from(expected.mrsigner, 'hex').equals(report.mrSignerSeam)) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH',
      `quote MRSIGNERSEAM ${report.mrSignerSeam.toString('hex')} differs from the TCB info's TDX module signer ${expected.mrsigner.toLowerCase()}`,
    );
  }
  if (!maskedEqual(report.seamAttributes, Buffer.from(expected.attributes, 'hex'), Buffer.from(expected.attributesMask, 'hex'))) {
    throw new SealmeshError(
      'SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH',
      `quote SEAMATTRIBUTES ${report.seamAttributes.toString('hex')} differ from the TCB info's TDX module attributes under its mask`,
    );
  }
  if (levels === undefined) return undefined;

  const level = levels.find((candidate) => moduleIsvSvn >= candidate.tcb.isvsvn);
  if (level === undefined) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_TCB_LEVEL_NOT_FOUND', `no TDX module TCB level of TDX_${moduleVersion} covers module ISVSVN ${moduleIsvSvn}`);
  }
  return fromLevel(level);
}

/**
 * Checks the QE report against the QE identity: id for the TEE type, MISCSELECT and ATTRIBUTES
 * under their masks, MRSIGNER and ISVPRODID; then selects the QE TCB level by ISVSVN.
 */
export function checkQeIdentity(identity: QeIdentity, qeReport: SgxReportBody, teeType: 'sgx' | 'tdx'): LevelMatch {
  const expectedId = teeType === 'tdx' ? 'TD_QE' : 'QE';
  const mismatch = (detail: string): SealmeshError =>
    new SealmeshError('SEALMESH_ERR_DCAP_QE_IDENTITY_MISMATCH', `QE report does not match the ${identity.id} identity: ${detail}`);
  if (identity.id !== expectedId) {
    throw mismatch(`a ${teeType.toUpperCase()} quote needs the ${expectedId} identity`);
  }
  // MISCSELECT and ATTRIBUTES hex strings list bytes in their order in the report, as the QVL compares them.
  if (!maskedEqual(qeReport.miscSelectBytes, Buffer.from(identity.miscselect, 'hex'), Buffer.from(identity.miscselectMask, 'hex'))) {
    throw mismatch(`MISCSELECT ${qeReport.miscSelectBytes.toString('hex')} under mask ${identity.miscselectMask}`);
  }
  if (!maskedEqual(qeReport.attributes, Buffer.from(identity.attributes, 'hex'), Buffer.from(identity.attributesMask, 'hex'))) {
    throw mismatch(`ATTRIBUTES ${qeReport.attributes.toString('hex')} under mask ${identity.attributesMask}`);
  }
  if (!Buffer.from(identity.mrsigner, 'hex').equals(qeReport.mrSigner)) {
    throw mismatch(`MRSIGNER ${qeReport.mrSigner.toString('hex')}`);
  }
  if (qeReport.isvProdId !== identity.isvprodid) {
    throw mismatch(`ISVPRODID ${qeReport.isvProdId}`);
  }
  const level = identity.tcbLevels.find((candidate) => qeReport.isvSvn >= candidate.tcb.isvsvn);
  if (level === undefined) {
    throw new SealmeshError('SEALMESH_ERR_DCAP_QE_TCB_NOT_FOUND', `no TCB level of the ${identity.id} identity covers QE ISVSVN ${qeReport.isvSvn}`);
  }
  return fromLevel(level);
}

/**
 * Combines the platform status with the status of a component measured apart from it (TDX module or
 * QE), as the QVL does: Revoked wins, OutOfDate downgrades the platform status, any other
 * component status leaves the platform status unchanged.
 */
export function combineTcbStatus(platform: TcbStatus, component: TcbStatus | undefined): TcbStatus {
  if (component === undefined || component === 'UpToDate') return platform;
  if (component === 'Revoked') return 'Revoked';
  if (component === 'OutOfDate') {
    if (platform === 'UpToDate' || platform === 'SWHardeningNeeded') return 'OutOfDate';
    if (platform === 'ConfigurationNeeded' || platform === 'ConfigurationAndSWHardeningNeeded') return 'OutOfDateConfigurationNeeded';
  }
  return platform;
}

/** Advisory ids of several levels, deduplicated, in the order first seen. */
export function mergeAdvisoryIds(...levels: Array<LevelMatch | undefined>): string[] {
  const ids = new Set<string>();
  for (const level of levels) {
    for (const id of level?.advisoryIds ?? []) ids.add(id);
  }
  return [...ids];
}
