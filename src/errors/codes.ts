/**
 * The registry of every stable error code that sealmesh emits.
 *
 * Scripts and tests match on these codes, never on message text. A code is never renamed and a
 * retired code is never reused for another failure. `status` is the HTTP status the control-plane
 * API returns for the code.
 */
export const ERROR_CODES = {
  // Request and input validation.
  SEALMESH_ERR_BAD_REQUEST: { status: 400, summary: 'the request body failed schema validation' },
  SEALMESH_ERR_BODY_TOO_LARGE: { status: 413, summary: 'the request body exceeds the size limit' },
  SEALMESH_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, summary: 'the request body is not JSON' },
  SEALMESH_ERR_NOT_FOUND: { status: 404, summary: 'the route or object does not exist' },
  SEALMESH_ERR_CONFLICT: { status: 409, summary: 'the object already exists or changed concurrently' },
  SEALMESH_ERR_INTERNAL: { status: 500, summary: 'an unexpected internal failure' },
  SEALMESH_ERR_INVALID_ARGUMENT: { status: 400, summary: 'a value passed to a function or command is invalid' },

  // ACL.
  SEALMESH_ERR_ACL_TOKEN_MISSING: { status: 401, summary: 'no ACL token was presented' },
  SEALMESH_ERR_ACL_TOKEN_INVALID: { status: 403, summary: 'the ACL token is unknown' },
  SEALMESH_ERR_ACL_TOKEN_EXPIRED: { status: 403, summary: 'the ACL token has expired' },
  SEALMESH_ERR_ACL_TOKEN_USED: { status: 403, summary: 'the single-use join token was already used' },
  SEALMESH_ERR_ACL_PERMISSION_DENIED: { status: 403, summary: 'the ACL token lacks the permission' },
  SEALMESH_ERR_ACL_ALREADY_BOOTSTRAPPED: { status: 409, summary: 'the first operator token was already issued' },

  // Certificate signing requests and SVID issuance.
  SEALMESH_ERR_CSR_MALFORMED: { status: 400, summary: 'the CSR is not valid PKCS#10' },
  SEALMESH_ERR_CSR_BAD_SIGNATURE: { status: 400, summary: 'the CSR self-signature does not verify' },
  SEALMESH_ERR_CSR_UNSUPPORTED_KEY: { status: 400, summary: 'the CSR public key type is not accepted' },
  SEALMESH_ERR_CSR_TOO_LARGE: { status: 413, summary: 'the CSR exceeds the size limit' },
  SEALMESH_ERR_CSR_SAN_INVALID: { status: 400, summary: 'the CSR requests names other than one SPIFFE ID' },
  SEALMESH_ERR_CSR_IDENTITY_MISMATCH: { status: 403, summary: 'the CSR requests an identity the caller is not entitled to' },
  SEALMESH_ERR_CSR_CA_REQUESTED: { status: 400, summary: 'the CSR requests a CA certificate' },
  SEALMESH_ERR_TTL_OUT_OF_BOUNDS: { status: 400, summary: 'the requested certificate TTL is outside the allowed bounds' },

  // SPIFFE identity.
  SEALMESH_ERR_SPIFFE_ID_INVALID: { status: 400, summary: 'the value is not a valid sealmesh SPIFFE ID' },
  SEALMESH_ERR_TRUST_DOMAIN_INVALID: { status: 400, summary: 'the trust domain name is invalid' },
  SEALMESH_ERR_SERVICE_NAME_INVALID: { status: 400, summary: 'the service or namespace name is invalid' },

  // Peer certificate checks (mTLS).
  SEALMESH_ERR_PEER_NO_CERTIFICATE: { status: 401, summary: 'the peer presented no client certificate' },
  SEALMESH_ERR_PEER_CERT_UNTRUSTED: { status: 401, summary: 'the peer certificate does not chain to the trust bundle' },
  SEALMESH_ERR_SVID_EXPIRED: { status: 503, summary: "the proxy's SVID expired before a renewal succeeded; the proxy needs a restart with a new join token" },
  SEALMESH_ERR_PEER_CERT_EXPIRED: { status: 401, summary: 'the client certificate of the connection has expired since its handshake' },
  SEALMESH_ERR_PEER_SAN_INVALID: { status: 401, summary: 'the peer certificate does not carry exactly one SPIFFE ID' },
  SEALMESH_ERR_PEER_FOREIGN_TRUST_DOMAIN: { status: 401, summary: 'the peer SPIFFE ID is in another trust domain' },
  SEALMESH_ERR_PEER_IDENTITY_MISMATCH: { status: 401, summary: 'the peer is not the expected workload' },

  SEALMESH_ERR_TLS_HANDSHAKE_FAILED: { status: 400, summary: 'a TLS handshake failed or timed out' },

  // Intentions.
  SEALMESH_ERR_INTENTION_DENIED: { status: 403, summary: 'an intention or the default policy denies the connection' },
  SEALMESH_ERR_INTENTIONS_MANAGED_BY_MANIFEST: { status: 409, summary: 'the manifest manages intentions, so the API does not accept intention writes' },

  // Attestation.
  SEALMESH_ERR_ATTESTATION_PROVIDER_UNSUPPORTED: { status: 400, summary: 'the server has no verifier for the evidence provider' },

  // Store.
  SEALMESH_ERR_STORE_OPEN_FAILED: { status: 500, summary: 'the data store could not be opened' },
  SEALMESH_ERR_STORE_CLOSED: { status: 503, summary: 'the data store is closed' },
  SEALMESH_ERR_STORE_OPERATION_FAILED: { status: 500, summary: 'a read or write on the data store failed' },
  SEALMESH_ERR_STORE_COMPACTED: { status: 410, summary: 'the requested store revision has been compacted away' },
  SEALMESH_ERR_STORE_KEY_INVALID: { status: 400, summary: 'the store key or prefix is empty, too long or not valid text' },
  SEALMESH_ERR_STORE_VALUE_INVALID: { status: 400, summary: 'the store value is not a byte array' },
  SEALMESH_ERR_STORE_VALUE_TOO_LARGE: { status: 413, summary: 'the store value exceeds the size limit' },
  SEALMESH_ERR_STORE_TXN_INVALID: { status: 400, summary: 'the store transaction is malformed or names a key twice in one branch' },

  // Server and proxy lifecycle.
  SEALMESH_ERR_SERVER_UNREACHABLE: { status: 503, summary: 'the control plane could not be reached' },
  SEALMESH_ERR_ENROLLMENT_FAILED: { status: 500, summary: 'the proxy could not obtain an SVID' },
  SEALMESH_ERR_NO_HEALTHY_ENDPOINT: { status: 503, summary: 'the upstream has no healthy instance' },
  SEALMESH_ERR_CONFIG_INVALID: { status: 400, summary: 'a command-line option or configuration value is invalid' },
  SEALMESH_ERR_NOT_INITIALIZED: { status: 503, summary: 'the cluster has not been initialised' },

  // Seal providers.
  SEALMESH_ERR_SEAL_KEY_MISSING: { status: 500, summary: 'the passphrase, key file, HSM token, HSM key or HSM counter object was not found' },
  SEALMESH_ERR_SEAL_KEY_WEAK: { status: 400, summary: 'the passphrase is too short' },
  SEALMESH_ERR_SEAL_KEY_PERMISSIONS: { status: 500, summary: 'the key file or HSM key is readable or exportable beyond its owner' },
  SEALMESH_ERR_SEAL_KEY_LOCATION: { status: 500, summary: 'the key file is a symbolic link or lies inside the data directory' },
  SEALMESH_ERR_SEAL_KEY_CORRUPT: { status: 500, summary: 'the key file, HSM key or HSM counter object does not have the expected format' },
  SEALMESH_ERR_SEAL_UNWRAP_FAILED: { status: 400, summary: 'the key-encryption key is wrong or the wrapped bytes or their associated data were altered' },
  SEALMESH_ERR_SEAL_CLOSED: { status: 503, summary: 'the seal provider was closed' },
  SEALMESH_ERR_SEAL_HSM_UNAVAILABLE: { status: 503, summary: 'the PKCS#11 module could not be loaded or the HSM failed' },
  SEALMESH_ERR_SEAL_HSM_LOGIN_FAILED: { status: 500, summary: 'the HSM rejected the PIN' },
  SEALMESH_ERR_SEAL_COUNTER_REGRESSION: { status: 409, summary: 'the monotonic counter is already higher than the requested value' },
  SEALMESH_ERR_SEAL_SHARE_INVALID: { status: 400, summary: 'a key share is malformed, fails its checksum, repeats another share or belongs to another split' },
  SEALMESH_ERR_SEAL_SHARES_INSUFFICIENT: { status: 400, summary: 'fewer key shares than the threshold were given' },

  // Sealed store and integrity.
  SEALMESH_ERR_SEALED_STORE_EXISTS: { status: 409, summary: 'the backend already contains a sealed store or other records' },
  SEALMESH_ERR_SEALED_FORMAT_UNSUPPORTED: { status: 500, summary: 'the sealed store was written in a format version this build does not read' },
  SEALMESH_ERR_INTEGRITY_HEAD_INVALID: { status: 500, summary: 'the chain head is missing, fails its MAC or does not match the store revision' },
  SEALMESH_ERR_INTEGRITY_CHAIN_BROKEN: { status: 500, summary: 'a chain entry is missing, out of order, duplicated or altered' },
  SEALMESH_ERR_INTEGRITY_RECORD_MISSING: { status: 500, summary: 'a record that the chain lists as live is missing' },
  SEALMESH_ERR_INTEGRITY_RECORD_UNEXPECTED: { status: 500, summary: 'the store contains a record that the chain does not list' },
  SEALMESH_ERR_INTEGRITY_RECORD_ALTERED: { status: 500, summary: 'a record differs from the chain or fails authenticated decryption' },
  SEALMESH_ERR_INTEGRITY_RECORD_REPLAYED: { status: 500, summary: 'a record contains an older version of itself' },
  SEALMESH_ERR_INTEGRITY_FOREIGN_RECORD: { status: 500, summary: 'a record was sealed by another store' },
  SEALMESH_ERR_INTEGRITY_STORE_MISMATCH: { status: 500, summary: 'the meta record and the keyring name different stores, or the meta record is missing' },
  SEALMESH_ERR_INTEGRITY_ROLLBACK: { status: 500, summary: 'the store is older than the monotonic counter allows' },
  SEALMESH_ERR_INTEGRITY_FILE_CORRUPT: { status: 500, summary: 'the store file is truncated or corrupted' },

  // Manifest.
  SEALMESH_ERR_MANIFEST_INVALID: { status: 400, summary: 'the manifest document cannot be parsed or fails schema validation' },
  SEALMESH_ERR_MANIFEST_SIGNATURE_INVALID: { status: 403, summary: 'a manifest signature does not verify against its operator key' },
  SEALMESH_ERR_MANIFEST_SIGNATURE_UNKNOWN_KEY: { status: 403, summary: 'a manifest signature names a key outside the operator set' },
  SEALMESH_ERR_MANIFEST_THRESHOLD_NOT_MET: { status: 403, summary: 'the manifest carries fewer valid operator signatures than the threshold' },
  SEALMESH_ERR_MANIFEST_VERSION_NOT_NEWER: { status: 409, summary: 'the manifest version is older than the current manifest' },
  SEALMESH_ERR_MANIFEST_FORK: { status: 409, summary: 'the manifest has the version of the current manifest but different content' },
  SEALMESH_ERR_MANIFEST_REPLAY: { status: 409, summary: 'the manifest is the current manifest' },
  SEALMESH_ERR_MANIFEST_PREDECESSOR_MISMATCH: { status: 409, summary: 'the manifest does not name the current manifest as its predecessor' },
  SEALMESH_ERR_MANIFEST_CHAIN_BROKEN: { status: 409, summary: 'a manifest chain does not start at the pinned genesis or has a link that is not accepted' },
  SEALMESH_ERR_MANIFEST_SIGNING_KEY_INVALID: { status: 400, summary: 'the operator signing key cannot be read, has the wrong type or is readable by other users' },

  // Local configuration.
  SEALMESH_ERR_CONFIG_SECURITY_SETTING: { status: 400, summary: 'a local file, flag or environment variable tries to set a security setting that only the signed manifest may set' },
  SEALMESH_ERR_CONFIG_UNKNOWN_KEY: { status: 400, summary: 'a local configuration key or SEALMESH_ environment variable is not recognised' },

  // Audit log.
  SEALMESH_ERR_AUDIT_ENTRY_ALTERED: { status: 500, summary: 'an audit entry is malformed or its hash does not match its content' },
  SEALMESH_ERR_AUDIT_ENTRY_MISSING: { status: 500, summary: 'an audit entry was removed, leaving a gap in the sequence or chain' },
  SEALMESH_ERR_AUDIT_ENTRY_REORDERED: { status: 500, summary: 'an audit entry is stored at another position than the one it was written at' },
  SEALMESH_ERR_AUDIT_HEAD_MISMATCH: { status: 500, summary: 'the audit head is missing or does not match the last entry' },

  // Local perimeter.
  SEALMESH_ERR_SOCKET_DIR_MISSING: { status: 500, summary: 'the directory of a Unix socket does not exist' },
  SEALMESH_ERR_SOCKET_DIR_WORLD_WRITABLE: { status: 500, summary: 'the directory of a Unix socket, or one above it, is writable by other users' },
  SEALMESH_ERR_SOCKET_DIR_GROUP_WRITABLE: { status: 500, summary: 'the directory of a Unix socket, or one above it, is writable by a group other than the socket group' },
  SEALMESH_ERR_SOCKET_DIR_OWNER: { status: 500, summary: 'the directory of a Unix socket, or one above it, is owned by a user other than the proxy\'s user or root' },
  SEALMESH_ERR_SOCKET_MODE_TOO_OPEN: { status: 400, summary: 'the Unix socket mode gives other users permission bits' },
  SEALMESH_ERR_SOCKET_PATH_EXISTS: { status: 500, summary: 'the Unix socket path exists and is not a stale socket of this proxy\'s user' },
  SEALMESH_ERR_SOCKET_IN_USE: { status: 409, summary: 'another process is listening on the Unix socket path' },
  SEALMESH_ERR_SOCKET_SETUP_FAILED: { status: 500, summary: 'binding the Unix socket or setting its owner, group or mode failed' },
  SEALMESH_ERR_APP_EXPOSED: { status: 503, summary: 'the app listens on a wildcard or non-loopback address that other hosts can reach around the proxy' },
  SEALMESH_ERR_PERIMETER_TOOL_MISSING: { status: 500, summary: 'nft (package nftables) or ip (package iproute2) is not installed' },
  SEALMESH_ERR_NETNS_NOT_FOUND: { status: 404, summary: 'the named network namespace does not exist' },
  SEALMESH_ERR_NFT_APPLY_FAILED: { status: 500, summary: 'nft rejected or failed to load the perimeter ruleset' },
  SEALMESH_ERR_NFT_LIST_FAILED: { status: 500, summary: 'nft failed to list the perimeter table' },

  // Benchmarks (`npm run bench`).
  SEALMESH_ERR_BENCH_TOOL_MISSING: { status: 500, summary: 'a program that a benchmark runs, such as wrk, HAProxy, nginx or SoftHSM2, is not installed' },

  // Attestation: SEV-SNP verifier.
  SEALMESH_ERR_SNP_REPORT_MALFORMED: { status: 400, summary: 'the SEV-SNP report is not valid base64, is not 0x4A0 bytes, or has a nonzero reserved field' },
  SEALMESH_ERR_SNP_REPORT_VERSION_UNSUPPORTED: { status: 400, summary: 'the SEV-SNP report version is not 2, 3, 4 or 5' },
  SEALMESH_ERR_SNP_POLICY_INVALID: { status: 400, summary: 'the SEV-SNP guest policy has reserved bit 17 clear or sets a bit this verifier does not know' },
  SEALMESH_ERR_SNP_SIGNATURE_ALGORITHM_UNSUPPORTED: { status: 400, summary: 'the SEV-SNP report is not signed with ECDSA P-384 and SHA-384' },
  SEALMESH_ERR_SNP_SIGNING_KEY_UNSUPPORTED: { status: 400, summary: 'the SEV-SNP report is signed by neither a VCEK nor a VLEK' },
  SEALMESH_ERR_SNP_PRODUCT_UNKNOWN: { status: 400, summary: 'the SEV-SNP product line (Milan, Genoa, Turin) cannot be determined' },
  SEALMESH_ERR_SNP_PRODUCT_MISMATCH: { status: 403, summary: 'the report, the ARK and the VCEK name different SEV-SNP product lines' },
  SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED: { status: 400, summary: 'the SEV-SNP certificate table (auxblob) is malformed' },
  SEALMESH_ERR_SNP_CERTIFICATES_MISSING: { status: 400, summary: 'neither the evidence nor a collateral source provides the VCEK or VLEK, ASK and ARK' },
  SEALMESH_ERR_SNP_COLLATERAL_UNAVAILABLE: { status: 503, summary: 'the SEV-SNP collateral source failed with an unexpected error while returning the certificates or the CRL' },
  SEALMESH_ERR_SNP_CERTIFICATE_MALFORMED: { status: 400, summary: 'an AMD certificate is not a single valid DER X.509 certificate' },
  SEALMESH_ERR_SNP_CERTIFICATE_ALGORITHM_UNSUPPORTED: { status: 403, summary: 'an AMD certificate is not signed with RSASSA-PSS, SHA-384, salt 48, or its key has the wrong type' },
  SEALMESH_ERR_SNP_CERTIFICATE_NOT_CA: { status: 403, summary: 'the ARK or ASK lacks basicConstraints cA or the keyCertSign key usage' },
  SEALMESH_ERR_SNP_CERTIFICATE_NOT_YET_VALID: { status: 403, summary: 'an AMD certificate is not yet valid at the verification time' },
  SEALMESH_ERR_SNP_CERTIFICATE_EXPIRED: { status: 403, summary: 'an AMD certificate has expired at the verification time' },
  SEALMESH_ERR_SNP_ARK_UNTRUSTED: { status: 403, summary: 'the ARK public key is not a pinned AMD root' },
  SEALMESH_ERR_SNP_ARK_SIGNATURE_INVALID: { status: 403, summary: 'the ARK is not self-signed' },
  SEALMESH_ERR_SNP_ASK_SIGNATURE_INVALID: { status: 403, summary: 'the ASK or ASVK is not signed by the ARK' },
  SEALMESH_ERR_SNP_VEK_SIGNATURE_INVALID: { status: 403, summary: 'the VCEK or VLEK is not signed by the ASK or ASVK' },
  SEALMESH_ERR_SNP_SIGNING_KEY_MISMATCH: { status: 403, summary: 'the report names a VCEK but the certificate is a VLEK, or the reverse' },
  SEALMESH_ERR_SNP_REPORT_SIGNATURE_INVALID: { status: 403, summary: 'the SEV-SNP report signature does not verify with the VCEK or VLEK' },
  SEALMESH_ERR_SNP_VEK_EXTENSION_INVALID: { status: 403, summary: 'a VCEK or VLEK TCB, product name or hardware id extension is missing or malformed' },
  SEALMESH_ERR_SNP_TCB_MISMATCH: { status: 403, summary: 'the reported TCB differs from the TCB in the VCEK or VLEK' },
  SEALMESH_ERR_SNP_CHIP_ID_MISMATCH: { status: 403, summary: 'the report chip id differs from the VCEK hardware id' },
  SEALMESH_ERR_SNP_REPORT_DATA_MISMATCH: { status: 403, summary: 'the SEV-SNP report data differs from the expected report data' },
  SEALMESH_ERR_SNP_CRL_INVALID: { status: 403, summary: 'the AMD CRL is malformed, not signed by the ARK, or outside its validity window' },
  SEALMESH_ERR_SNP_CERTIFICATE_REVOKED: { status: 403, summary: 'the AMD CRL revokes the ASK, ASVK, VCEK or VLEK' },

  // Attestation: Intel DCAP verifier (TDX and SGX).
  SEALMESH_ERR_DCAP_QUOTE_TRUNCATED: { status: 400, summary: 'the DCAP quote ends before a field its header or a length field announces' },
  SEALMESH_ERR_DCAP_QUOTE_MALFORMED: { status: 400, summary: 'the DCAP quote has inconsistent lengths or trailing bytes' },
  SEALMESH_ERR_DCAP_QUOTE_VERSION_UNSUPPORTED: { status: 400, summary: 'the DCAP quote version is not 3, 4 or 5' },
  SEALMESH_ERR_DCAP_QUOTE_KEY_TYPE_UNSUPPORTED: { status: 400, summary: 'the DCAP quote attestation key type is not 2 (ECDSA P-256)' },
  SEALMESH_ERR_DCAP_QUOTE_TEE_TYPE_UNSUPPORTED: { status: 400, summary: 'the DCAP quote TEE type is neither SGX (0x00) nor TDX (0x81), or not the one this verifier accepts' },
  SEALMESH_ERR_DCAP_QE_VENDOR_UNSUPPORTED: { status: 400, summary: 'the DCAP quote comes from a QE other than Intel\'s (QE vendor id 939a7233f79c4ca9940a0db3957f0607)' },
  SEALMESH_ERR_DCAP_QUOTE_BODY_TYPE_UNSUPPORTED: { status: 400, summary: 'the DCAP quote v5 body type is not an SGX enclave report or a TD report 1.0 or 1.5' },
  SEALMESH_ERR_DCAP_QUOTE_CERTIFICATION_DATA_UNSUPPORTED: { status: 400, summary: 'the DCAP quote certification data is not a QE report (type 6) carrying a PCK certificate chain (type 5)' },
  SEALMESH_ERR_DCAP_PCK_CHAIN_INVALID: { status: 403, summary: 'the PCK certificate chain in the quote is malformed, out of order or has a bad signature' },
  SEALMESH_ERR_DCAP_ROOT_UNTRUSTED: { status: 403, summary: 'a DCAP certificate chain does not end at the pinned Intel SGX Root CA' },
  SEALMESH_ERR_DCAP_CERT_NOT_VALID_AT_TIME: { status: 403, summary: 'a certificate of a DCAP chain is not yet valid or has expired at the verification time' },
  SEALMESH_ERR_DCAP_CRL_INVALID: { status: 503, summary: 'a DCAP CRL is malformed, has a bad signature or was not issued by the expected CA' },
  SEALMESH_ERR_DCAP_CRL_NOT_VALID_AT_TIME: { status: 503, summary: 'a DCAP CRL is not yet valid or past its nextUpdate at the verification time' },
  SEALMESH_ERR_DCAP_CA_REVOKED: { status: 403, summary: 'the PCK CA or the TCB signing certificate is revoked by the Intel SGX Root CA CRL' },
  SEALMESH_ERR_DCAP_PCK_REVOKED: { status: 403, summary: 'the PCK certificate is revoked by the PCK CRL' },
  SEALMESH_ERR_DCAP_PCK_EXTENSION_INVALID: { status: 403, summary: 'the PCK certificate lacks a valid Intel SGX extension (PPID, TCB, PCE-ID, FMSPC, SGX type)' },
  SEALMESH_ERR_DCAP_QE_REPORT_SIGNATURE_INVALID: { status: 403, summary: 'the QE report signature does not verify with the PCK certificate key' },
  SEALMESH_ERR_DCAP_QE_REPORT_DATA_MISMATCH: { status: 403, summary: 'the QE report data does not bind the attestation key and QE authentication data' },
  SEALMESH_ERR_DCAP_QUOTE_SIGNATURE_INVALID: { status: 403, summary: 'the quote signature does not verify with the attestation key' },
  SEALMESH_ERR_DCAP_COLLATERAL_CHAIN_INVALID: { status: 503, summary: 'the TCB info or QE identity issuer chain is malformed or does not chain to the Intel SGX Root CA' },
  SEALMESH_ERR_DCAP_TCB_INFO_INVALID: { status: 503, summary: 'the TCB info is not valid JSON of version 3 in the form Intel publishes' },
  SEALMESH_ERR_DCAP_TCB_INFO_SIGNATURE_INVALID: { status: 503, summary: 'the TCB info signature does not verify with the TCB signing certificate' },
  SEALMESH_ERR_DCAP_TCB_INFO_NOT_VALID_AT_TIME: { status: 503, summary: 'the TCB info is not yet issued or past its nextUpdate at the verification time' },
  SEALMESH_ERR_DCAP_TCB_INFO_MISMATCH: { status: 403, summary: 'the TCB info is for another TEE type, FMSPC or PCE id than the PCK certificate and quote' },
  SEALMESH_ERR_DCAP_TCB_LEVEL_NOT_FOUND: { status: 403, summary: 'no TCB level of the TCB info matches the platform TCB of the quote' },
  SEALMESH_ERR_DCAP_TCB_REVOKED: { status: 403, summary: 'the platform, TDX module or QE TCB level is revoked' },
  SEALMESH_ERR_DCAP_TDX_MODULE_MISMATCH: { status: 403, summary: 'the TDX module signer, attributes or version does not match the TCB info' },
  SEALMESH_ERR_DCAP_QE_IDENTITY_INVALID: { status: 503, summary: 'the QE identity is not valid JSON of version 2 in the form Intel publishes' },
  SEALMESH_ERR_DCAP_QE_IDENTITY_SIGNATURE_INVALID: { status: 503, summary: 'the QE identity signature does not verify with the TCB signing certificate' },
  SEALMESH_ERR_DCAP_QE_IDENTITY_NOT_VALID_AT_TIME: { status: 503, summary: 'the QE identity is not yet issued or past its nextUpdate at the verification time' },
  SEALMESH_ERR_DCAP_QE_IDENTITY_MISMATCH: { status: 403, summary: 'the QE report does not match the QE identity (id, MRSIGNER, ISVPRODID, attributes or MISCSELECT)' },
  SEALMESH_ERR_DCAP_QE_TCB_NOT_FOUND: { status: 403, summary: 'no TCB level of the QE identity matches the QE ISVSVN' },
  SEALMESH_ERR_DCAP_REPORT_DATA_MISMATCH: { status: 403, summary: 'the report data in the quote differs from the expected report data' },
  SEALMESH_ERR_DCAP_COLLATERAL_UNAVAILABLE: { status: 503, summary: 'the DCAP collateral source failed to return TCB info, QE identity and CRLs' },

  // Attestation: evidence providers, collateral, policy and enrollment.
  SEALMESH_ERR_ATTESTATION_REQUIRED: { status: 403, summary: 'the manifest requires attestation evidence for the service, and the request carries none' },
  SEALMESH_ERR_ATTESTATION_NONCE_MISSING: { status: 400, summary: 'the request carries evidence but no nonce from POST /v1/svid/nonce' },
  SEALMESH_ERR_ATTESTATION_NONCE_INVALID: { status: 403, summary: 'the nonce is unknown, expired, already used or was issued to another caller' },
  SEALMESH_ERR_ATTESTATION_NONCE_LIMIT: { status: 503, summary: 'the server holds the maximum number of outstanding nonces' },
  SEALMESH_ERR_ATTESTATION_EVIDENCE_INVALID: { status: 403, summary: 'the evidence is malformed or its signature does not verify' },
  SEALMESH_ERR_ATTESTATION_BINDING_MISMATCH: { status: 403, summary: 'the report data in the evidence is not SHA-512 of the CSR public key and the nonce' },
  SEALMESH_ERR_ATTESTATION_DEV_PROVIDER_REJECTED: { status: 403, summary: 'the evidence comes from the insecure dev provider, which the manifest does not allow' },
  SEALMESH_ERR_ATTESTATION_PROVIDER_NOT_ALLOWED: { status: 403, summary: 'the manifest does not list the evidence provider for the service' },
  SEALMESH_ERR_ATTESTATION_POLICY_MISSING: { status: 403, summary: 'the manifest requires attestation but has no attestation policy for the service' },
  SEALMESH_ERR_ATTESTATION_SNP_MEASUREMENT_MISMATCH: { status: 403, summary: 'the SEV-SNP launch measurement is not one of the values in the manifest\'s sev-snp.measurement' },
  SEALMESH_ERR_ATTESTATION_SNP_HOST_DATA_MISMATCH: { status: 403, summary: 'the SEV-SNP HOST_DATA is not one of the values in the manifest\'s sev-snp.hostData' },
  SEALMESH_ERR_ATTESTATION_TDX_MRTD_MISMATCH: { status: 403, summary: 'the TDX MRTD is not one of the values in the manifest\'s tdx.mrTd' },
  SEALMESH_ERR_ATTESTATION_TDX_RTMR0_MISMATCH: { status: 403, summary: 'the TDX RTMR0 is not one of the values in the manifest\'s tdx.rtMr0' },
  SEALMESH_ERR_ATTESTATION_TDX_RTMR1_MISMATCH: { status: 403, summary: 'the TDX RTMR1 is not one of the values in the manifest\'s tdx.rtMr1' },
  SEALMESH_ERR_ATTESTATION_TDX_RTMR2_MISMATCH: { status: 403, summary: 'the TDX RTMR2 is not one of the values in the manifest\'s tdx.rtMr2' },
  SEALMESH_ERR_ATTESTATION_TDX_RTMR3_MISMATCH: { status: 403, summary: 'the TDX RTMR3 is not one of the values in the manifest\'s tdx.rtMr3' },
  SEALMESH_ERR_ATTESTATION_SGX_MRENCLAVE_MISMATCH: { status: 403, summary: 'the SGX MRENCLAVE is not one of the values in the manifest\'s sgx.mrEnclave' },
  SEALMESH_ERR_ATTESTATION_SGX_MRSIGNER_MISMATCH: { status: 403, summary: 'the SGX MRSIGNER is not one of the values in the manifest\'s sgx.mrSigner' },
  SEALMESH_ERR_ATTESTATION_DEV_MEASUREMENT_MISMATCH: { status: 403, summary: 'the claimed dev measurement is not one of the values in the manifest\'s dev.measurement' },
  SEALMESH_ERR_ATTESTATION_TCB_STATUS_REJECTED: { status: 403, summary: 'the TCB status of the platform is not one the manifest accepts' },
  SEALMESH_ERR_ATTESTATION_DEBUG_REJECTED: { status: 403, summary: 'the TEE runs with debugging enabled and the manifest does not allow it' },
  SEALMESH_ERR_ATTESTATION_SNP_TCB_BOOTLOADER_TOO_OLD: { status: 403, summary: 'the reported SEV-SNP TCB bootloader version is below the manifest\'s sev-snp.minTcb.bootloader' },
  SEALMESH_ERR_ATTESTATION_SNP_TCB_TEE_TOO_OLD: { status: 403, summary: 'the reported SEV-SNP TCB tee version is below the manifest\'s sev-snp.minTcb.tee' },
  SEALMESH_ERR_ATTESTATION_SNP_TCB_SNP_TOO_OLD: { status: 403, summary: 'the reported SEV-SNP TCB snp version is below the manifest\'s sev-snp.minTcb.snp' },
  SEALMESH_ERR_ATTESTATION_SNP_TCB_MICROCODE_TOO_OLD: { status: 403, summary: 'the reported SEV-SNP TCB microcode version is below the manifest\'s sev-snp.minTcb.microcode' },
  SEALMESH_ERR_ATTESTATION_VMPL_REJECTED: { status: 403, summary: 'the SEV-SNP report was requested at a VMPL above the manifest\'s maximum' },
  SEALMESH_ERR_ATTESTATION_SMT_REJECTED: { status: 403, summary: 'the SEV-SNP guest policy allows SMT and the manifest does not' },
  SEALMESH_ERR_ATTESTATION_MIGRATION_AGENT_REJECTED: { status: 403, summary: 'the SEV-SNP guest policy allows a migration agent and the manifest does not' },
  SEALMESH_ERR_ATTESTATION_ISV_PROD_ID_MISMATCH: { status: 403, summary: 'the SGX enclave product id differs from the manifest\'s isvProdId' },
  SEALMESH_ERR_ATTESTATION_ISV_SVN_TOO_LOW: { status: 403, summary: 'the SGX enclave security version is below the manifest\'s minIsvSvn' },
  SEALMESH_ERR_ATTESTATION_PROVIDER_UNAVAILABLE: { status: 500, summary: 'the requested evidence provider is not present on this host, or detection found none' },
  SEALMESH_ERR_ATTESTATION_PROVIDER_MISMATCH: { status: 500, summary: 'the TEE interface belongs to another provider than the one requested' },
  SEALMESH_ERR_ATTESTATION_REPORT_FAILED: { status: 500, summary: 'reading or writing the TEE report interface (configfs-tsm or /dev/attestation) failed' },
  SEALMESH_ERR_ATTESTATION_REPORT_CONTENDED: { status: 503, summary: 'another writer kept changing the configfs-tsm report entry, and the retries ran out' },
  SEALMESH_ERR_ATTESTATION_COLLATERAL_UNAVAILABLE: { status: 503, summary: 'attestation collateral could not be read from the directory or fetched from the caching service' },
  SEALMESH_ERR_ATTESTATION_COLLATERAL_INVALID: { status: 502, summary: 'attestation collateral is malformed, expired or lacks its issuer chain' },

  // CA key custody and root rotation.
  SEALMESH_ERR_CA_CUSTODY_MISMATCH: { status: 500, summary: 'the CA in the store was created with another key custody than the server was started with' },
  SEALMESH_ERR_CA_KEY_MISSING: { status: 500, summary: 'a CA private key that the store names is not in the key custody' },
  SEALMESH_ERR_CA_KEY_INVALID: { status: 500, summary: 'a CA key in the HSM is not a sensitive, non-extractable ECDSA P-256 signing key' },
  SEALMESH_ERR_CA_HSM_UNAVAILABLE: { status: 503, summary: 'the PKCS#11 module of the CA key custody could not be loaded or the HSM failed' },
  SEALMESH_ERR_CA_HSM_TOKEN_MISSING: { status: 500, summary: 'no token with the configured label holds the CA keys' },
  SEALMESH_ERR_CA_HSM_PIN_MISSING: { status: 500, summary: 'the environment variable that holds the CA token PIN is unset or empty' },
  SEALMESH_ERR_CA_HSM_LOGIN_FAILED: { status: 500, summary: 'the HSM that holds the CA keys rejected the PIN' },
  SEALMESH_ERR_CA_ROTATION_PENDING: { status: 409, summary: 'the root retired by the previous rotation stays in the trust bundle until every certificate under it has expired' },

  // Attestation: revocation, renewal ownership and result consistency.
  SEALMESH_ERR_SNP_CRL_SOURCE_MISSING: { status: 503, summary: 'the server has no source of AMD CRLs, so SEV-SNP revocation cannot be checked' },
  SEALMESH_ERR_SVID_INSTANCE_MISMATCH: { status: 403, summary: 'the instance id is not registered for the caller\'s service or was issued to another SVID' },
  SEALMESH_ERR_ATTESTATION_RESULT_INCONSISTENT: { status: 403, summary: 'the verifier result names another provider than the evidence, or is insecure where the manifest does not allow it' },
  SEALMESH_ERR_ATTESTATION_SNP_TCB_FMC_TOO_OLD: { status: 403, summary: 'the reported SEV-SNP TCB fmc version is below the manifest\'s sev-snp.minTcb.fmc, or the report has none' },

  // Process hardening.
  SEALMESH_ERR_PRODUCTION_INSPECTOR: { status: 500, summary: 'production mode rejects a process with the inspector enabled or requested' },
  SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG: { status: 500, summary: 'production mode rejects a Node.js flag that exposes process memory or internals' },
  SEALMESH_ERR_PRODUCTION_CORE_DUMPS: { status: 500, summary: 'production mode rejects a process whose core file size limit is not 0' },
  SEALMESH_ERR_PRODUCTION_SANDBOX_REQUIRED: { status: 500, summary: 'production mode requires the Node.js permission model (--sandbox)' },
  SEALMESH_ERR_PRODUCTION_SECRET_IN_ARGV: { status: 500, summary: 'production mode rejects a secret on the command line, where other users can read it' },
  SEALMESH_ERR_SANDBOX_DENIED: { status: 403, summary: 'the Node.js permission model denied the process access to a file or capability' },
  SEALMESH_ERR_SANDBOX_LAUNCH_FAILED: { status: 500, summary: 'the sandboxed child process could not be started' },

  // L7 traffic.
  SEALMESH_ERR_L7_PROTOCOL_INVALID: { status: 400, summary: 'the service protocol is not one of tcp, http, http2 and grpc' },
  SEALMESH_ERR_L7_PERMISSION_INVALID: { status: 400, summary: 'an L7 permission of an intention is malformed or its regular expression is invalid' },
  SEALMESH_ERR_L7_REQUEST_DENIED: { status: 403, summary: 'an L7 intention denies the HTTP request' },
  SEALMESH_ERR_L7_PATH_INVALID: { status: 400, summary: 'the request path cannot be normalised safely (encoded slash or backslash, NUL, bad escape, dot segment above root)' },
  SEALMESH_ERR_L7_PERMISSIONS_ON_TCP: { status: 403, summary: 'an intention with L7 permissions applies to a destination that speaks plain TCP' },
  SEALMESH_ERR_L7_PROTOCOL_MISMATCH: { status: 502, summary: 'the peer proxy does not speak the protocol declared for the service' },
  SEALMESH_ERR_L7_UPSTREAM_UNAVAILABLE: { status: 503, summary: 'no instance of the upstream could be reached' },
  SEALMESH_ERR_L7_UPSTREAM_TIMEOUT: { status: 504, summary: 'the upstream did not respond within the request timeout' },
  SEALMESH_ERR_TRAFFIC_CONFIG_INVALID: { status: 400, summary: 'a traffic setting of an upstream has the wrong form, is out of range, or contradicts another setting' },
  SEALMESH_ERR_TRAFFIC_CONFIG_UNKNOWN_KEY: { status: 400, summary: 'a traffic setting key of an upstream is not known' },
  SEALMESH_ERR_TRAFFIC_UPSTREAM_UNKNOWN: { status: 400, summary: '--upstream-config names an upstream that no --upstream or upstreams entry declares' },
  SEALMESH_ERR_TRAFFIC_CIRCUIT_OPEN: { status: 503, summary: 'the upstream\'s circuit-breaker limit on connections, pending requests or concurrent requests is reached' },
  SEALMESH_ERR_TRAFFIC_RETRY_BUDGET_EXHAUSTED: { status: 503, summary: 'a retry was not made because the upstream\'s retry budget had no room' },

  // Production mode required by the manifest.
  SEALMESH_ERR_PRODUCTION_MODE_REQUIRED: { status: 409, summary: 'the manifest requires production mode, and the server or proxy does not run in --mode production' },

  // The proxy's TLS private key in a PKCS#11 token.
  SEALMESH_ERR_TLS_KEY_HSM_UNAVAILABLE: { status: 500, summary: 'the PKCS#11 module of the proxy\'s TLS key could not be loaded or the token failed' },
  SEALMESH_ERR_TLS_KEY_ENGINE_MISSING: { status: 500, summary: 'the OpenSSL pkcs11 engine (libengine-pkcs11-openssl) could not be loaded' },
  SEALMESH_ERR_TLS_KEY_HSM_TOKEN_MISSING: { status: 500, summary: 'no token with the configured label holds the proxy\'s TLS key' },
  SEALMESH_ERR_TLS_KEY_HSM_PIN_MISSING: { status: 500, summary: 'the PIN of the token that holds the proxy\'s TLS key is unset, empty or unreadable' },
  SEALMESH_ERR_TLS_KEY_HSM_LOGIN_FAILED: { status: 500, summary: 'the token that holds the proxy\'s TLS key rejected the PIN' },
  SEALMESH_ERR_TLS_KEY_INVALID: { status: 500, summary: 'the proxy\'s TLS key in the token is not a sensitive, non-extractable ECDSA P-256 signing key' },
  SEALMESH_ERR_TLS_KEY_SANDBOX_UNSUPPORTED: { status: 500, summary: 'a TLS key in a PKCS#11 token cannot be used under the Node.js permission model (--sandbox)' },

} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;
