/**
 * Parser for the certificate table that the host attaches to an extended SEV-SNP report, as the
 * GHCB specification (AMD publication 56421, "SNP Extended Guest Request") defines it and as Linux
 * configfs-tsm returns it in `auxblob`.
 *
 * The table is a list of 24-byte entries (a 16-byte GUID, then a u32 offset and a u32 length, both
 * little-endian), ended by an all-zero entry. Each offset counts from the start of the table and
 * points at one DER certificate after the entries. The buffer may carry zero padding at the end.
 */
import { SealmeshError } from '../../errors/index.ts';

/** GUIDs of the certificate types, in their text form. */
export const SNP_CERT_TABLE_GUIDS = {
  vcek: '63da758d-e664-4564-adc5-f4b93be8accd',
  vlek: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
  ask: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ark: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
} as const;

export type SnpCertTableRole = keyof typeof SNP_CERT_TABLE_GUIDS;

/** The certificates found in a table. Entries with other GUIDs (such as a CRL) are listed in `other`. */
export interface SnpCertTable {
  vcek?: Uint8Array;
  vlek?: Uint8Array;
  ask?: Uint8Array;
  ark?: Uint8Array;
  other: { guid: string; data: Uint8Array }[];
}

const ENTRY_SIZE = 24;

/** Largest table accepted, in bytes. Four AMD certificates take about 6 KiB; kernels pad to pages. */
export const MAX_SNP_CERT_TABLE_BYTES = 64 * 1024;

/**
 * Parses a certificate table.
 *
 * Throws SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED when the table is larger than
 * MAX_SNP_CERT_TABLE_BYTES or lacks the all-zero terminating entry. The same code rejects a
 * terminator with a nonzero offset or length, a GUID named twice, and an entry that is empty,
 * points into the entry list or reaches past the end of the buffer.
 */
export function parseSnpCertTable(bytes: Uint8Array): SnpCertTable {
  if (bytes.length > MAX_SNP_CERT_TABLE_BYTES) {
    throw malformed(`is ${bytes.length} bytes, above the maximum of ${MAX_SNP_CERT_TABLE_BYTES}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

  const entries: { guid: string; offset: number; length: number }[] = [];
  let headerEnd = -1;
  for (let position = 0; position + ENTRY_SIZE <= bytes.length; position += ENTRY_SIZE) {
    const guidBytes = bytes.subarray(position, position + 16);
    const offset = view.getUint32(position + 16, true);
    const length = view.getUint32(position + 20, true);
    if (guidBytes.every((byte) => byte === 0)) {
      if (offset !== 0 || length !== 0) {
        throw malformed(`has a terminating entry at byte ${position} with a nonzero offset or length`);
      }
      headerEnd = position + ENTRY_SIZE;
      break;
    }
    entries.push({ guid: formatGuid(guidBytes), offset, length });
  }
  if (headerEnd < 0) {
    throw malformed('has no all-zero terminating entry');
  }

  const table: SnpCertTable = { other: [] };
  const seen = new Set<string>();
  for (const entry of entries) {
    if (seen.has(entry.guid)) {
      throw malformed(`names GUID ${entry.guid} twice`);
    }
    seen.add(entry.guid);
    if (entry.length === 0 || entry.offset < headerEnd || entry.offset + entry.length > bytes.length) {
      throw malformed(
        `has an entry for GUID ${entry.guid} at offset ${entry.offset} with length ${entry.length}, outside the certificate area [${headerEnd}, ${bytes.length})`,
      );
    }
    const data = bytes.slice(entry.offset, entry.offset + entry.length);
    const role = roleOf(entry.guid);
    if (role === undefined) {
      table.other.push({ guid: entry.guid, data });
    } else {
      table[role] = data;
    }
  }
  return table;
}

/**
 * Builds a certificate table from certificates by role, in the layout `parseSnpCertTable` reads:
 * entries in the order given, the terminator, then the certificates.
 */
export function encodeSnpCertTable(certificates: Partial<Record<SnpCertTableRole, Uint8Array>>): Buffer {
  const present = (Object.keys(SNP_CERT_TABLE_GUIDS) as SnpCertTableRole[]).filter((role) => certificates[role] !== undefined);
  const headerSize = (present.length + 1) * ENTRY_SIZE;
  const header = Buffer.alloc(headerSize);
  const bodies: Uint8Array[] = [];
  let offset = headerSize;
  present.forEach((role, index) => {
    const data = certificates[role]!;
    header.set(parseGuid(SNP_CERT_TABLE_GUIDS[role]), index * ENTRY_SIZE);
    header.writeUInt32LE(offset, index * ENTRY_SIZE + 16);
    header.writeUInt32LE(data.length, index * ENTRY_SIZE + 20);
    bodies.push(data);
    offset += data.length;
  });
  return Buffer.concat([header, ...bodies]);
}

// The wire bytes of a GUID are its hex digits in the order written. This is the form that libuuid's
// uuid_parse produces, and the one that AMD's sev-guest tool and virtee/sev write.
function formatGuid(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function parseGuid(text: string): Buffer {
  return Buffer.from(text.replaceAll('-', ''), 'hex');
}

function roleOf(guid: string): SnpCertTableRole | undefined {
  for (const [role, known] of Object.entries(SNP_CERT_TABLE_GUIDS)) {
    if (known === guid) {
      return role as SnpCertTableRole;
    }
  }
  return undefined;
}

function malformed(detail: string): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_SNP_CERT_TABLE_MALFORMED', `SEV-SNP certificate table ${detail}`);
}
