/**
 * The AMD root keys (ARKs) that SEV-SNP evidence must chain to, one per product line, pinned by
 * the SHA-256 of their DER SubjectPublicKeyInfo. The values were computed from the ARK
 * certificates in the chains that AMD's Key Distribution Service serves for each product line
 * (`/vcek/v1/<product>/cert_chain`). The VLEK chains carry the same ARKs. Pinning the key rather than the certificate keeps a reissued ARK certificate valid
 * as long as AMD keeps the key.
 */
import type { SnpProductLine } from './report.ts';

export const AMD_ARK_SPKI_SHA256: Readonly<Record<SnpProductLine, string>> = {
  // CN=ARK-Milan, valid 2020-10-22 to 2045-10-22.
  Milan: '9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9',
  // CN=ARK-Genoa, valid 2022-01-26 to 2047-01-26.
  Genoa: '429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831',
  // CN=ARK-Turin, valid 2023-05-15 to 2048-05-15.
  Turin: '4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08',
};
