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

  // Attestation: SEV-SNP verifier.

  // Attestation: Intel DCAP verifier (TDX and SGX).

  // Attestation: evidence providers, collateral, policy and enrollment.

  // CA key custody and root rotation.

  // Process hardening.
  SEALMESH_ERR_PRODUCTION_INSPECTOR: { status: 500, summary: 'production mode rejects a process with the inspector enabled or requested' },
  SEALMESH_ERR_PRODUCTION_DIAGNOSTIC_FLAG: { status: 500, summary: 'production mode rejects a Node.js flag that exposes process memory or internals' },
  SEALMESH_ERR_PRODUCTION_CORE_DUMPS: { status: 500, summary: 'production mode rejects a process whose core file size limit is not 0' },
  SEALMESH_ERR_PRODUCTION_SANDBOX_REQUIRED: { status: 500, summary: 'production mode requires the Node.js permission model (--sandbox)' },
  SEALMESH_ERR_PRODUCTION_SECRET_IN_ARGV: { status: 500, summary: 'production mode rejects a secret on the command line, where other users can read it' },
  SEALMESH_ERR_SANDBOX_DENIED: { status: 403, summary: 'the Node.js permission model denied the process access to a file or capability' },
  SEALMESH_ERR_SANDBOX_LAUNCH_FAILED: { status: 500, summary: 'the sandboxed child process could not be started' },

  // L7 traffic.

} as const satisfies Record<string, { status: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;
