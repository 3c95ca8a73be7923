import { SealmeshError } from '../../errors/index.ts';

/** Size of the report data field of SEV-SNP reports, TDX quotes and SGX reports. */
export const REPORT_DATA_BYTES = 64;

/** Throws SEALMESH_ERR_INVALID_ARGUMENT unless `reportData` is exactly 64 bytes. */
export function checkReportData(reportData: Uint8Array): void {
  if (reportData.length !== REPORT_DATA_BYTES) {
    throw new SealmeshError('SEALMESH_ERR_INVALID_ARGUMENT', `report data is ${reportData.length} bytes; a TEE report binds exactly ${REPORT_DATA_BYTES} bytes`);
  }
}
