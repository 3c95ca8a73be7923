/**
 * The Intel SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1), as Intel's "SGX PCK
 * Certificate and Certificate Revocation List Profile Specification" defines it: a SEQUENCE of
 * (OID, value) pairs for PPID, TCB, PCE-ID, FMSPC, SGX type and, for platform CA certificates,
 * the platform instance id and configuration.
 */
import type { X509Certificate } from 'node:crypto';
import { SealmeshError } from '../../errors/index.ts';
import { x509 } from '../../pki/x509.ts';
import {
  TAG_BOOLEAN,
  TAG_ENUMERATED,
  TAG_INTEGER,
  TAG_OBJECT_IDENTIFIER,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
  decodeOid,
  decodeUnsigned,
  readDerElement,
  readDerElements,
  type DerElement,
} from './der.ts';

export const SGX_EXTENSION_OID = '1.2.840.113741.1.13.1';
const OID_PPID = `${SGX_EXTENSION_OID}.1`;
const OID_TCB = `${SGX_EXTENSION_OID}.2`;
const OID_PCESVN = `${OID_TCB}.17`;
const OID_CPUSVN = `${OID_TCB}.18`;
const OID_PCEID = `${SGX_EXTENSION_OID}.3`;
const OID_FMSPC = `${SGX_EXTENSION_OID}.4`;
const OID_SGX_TYPE = `${SGX_EXTENSION_OID}.5`;
const OID_PLATFORM_INSTANCE_ID = `${SGX_EXTENSION_OID}.6`;
const OID_CONFIGURATION = `${SGX_EXTENSION_OID}.7`;

export interface PckTcb {
  /** SGX TCB component SVNs 1 to 16, in order. */
  componentSvns: number[];
  pceSvn: number;
  /** CPUSVN, 16 bytes. */
  cpuSvn: Buffer;
}

export interface PckExtension {
  /** Platform provisioning id, 16 bytes. */
  ppid: Buffer;
  tcb: PckTcb;
  /** PCE id, 2 bytes. */
  pceId: Buffer;
  /** Family-model-stepping-platform-custom SKU, 6 bytes. */
  fmspc: Buffer;
  /** 0 standard, 1 scalable, 2 scalable with integrity. */
  sgxType: number;
  platformInstanceId?: Buffer;
  configuration?: { dynamicPlatform?: boolean; cachedKeys?: boolean; smtEnabled?: boolean };
}

function invalid(message: string, cause?: unknown): SealmeshError {
  return new SealmeshError('SEALMESH_ERR_DCAP_PCK_EXTENSION_INVALID', `PCK certificate SGX extension: ${message}`, { cause });
}

/** Splits a SEQUENCE of SEQUENCE { OID, value } into a map; a repeated OID is rejected. */
function readPairs(sequence: Buffer, where: string): Map<string, DerElement> {
  const pairs = new Map<string, DerElement>();
  for (const pair of readDerElements(sequence)) {
    if (pair.tag !== TAG_SEQUENCE) throw invalid(`${where} contains a non-SEQUENCE entry`);
    const parts = readDerElements(pair.value);
    if (parts.length !== 2 || parts[0]!.tag !== TAG_OBJECT_IDENTIFIER) throw invalid(`${where} contains an entry that is not (OID, value)`);
    const oid = decodeOid(parts[0]!.value);
    if (pairs.has(oid)) throw invalid(`${where} repeats ${oid}`);
    pairs.set(oid, parts[1]!);
  }
  return pairs;
}

function required(pairs: Map<string, DerElement>, oid: string, tag: number, name: string, length?: number): Buffer {
  const element = pairs.get(oid);
  if (element === undefined) throw invalid(`${name} (${oid}) is missing`);
  if (element.tag !== tag) throw invalid(`${name} (${oid}) has DER tag 0x${element.tag.toString(16)}`);
  if (length !== undefined && element.value.length !== length) {
    throw invalid(`${name} is ${element.value.length} bytes; expected ${length}`);
  }
  return element.value;
}

function parseTcb(value: Buffer): PckTcb {
  const pairs = readPairs(value, 'TCB');
  const componentSvns: number[] = [];
  for (let index = 1; index <= 16; index += 1) {
    componentSvns.push(decodeUnsigned(required(pairs, `${OID_TCB}.${index}`, TAG_INTEGER, `SGX TCB component ${index} SVN`)));
  }
  const pceSvn = decodeUnsigned(required(pairs, OID_PCESVN, TAG_INTEGER, 'PCESVN'));
  const cpuSvn = required(pairs, OID_CPUSVN, TAG_OCTET_STRING, 'CPUSVN', 16);
  if (componentSvns.some((svn) => svn > 255) || pceSvn > 0xffff) throw invalid('a TCB SVN is out of range');
  return { componentSvns, pceSvn, cpuSvn };
}

function parseConfiguration(value: Buffer): PckExtension['configuration'] {
  const pairs = readPairs(value, 'configuration');
  const flag = (suffix: number): boolean | undefined => {
    const element = pairs.get(`${OID_CONFIGURATION}.${suffix}`);
    if (element === undefined) return undefined;
    if (element.tag !== TAG_BOOLEAN || element.value.length !== 1) throw invalid(`configuration flag ${suffix} is not a BOOLEAN`);
    return element.value[0] !== 0;
  };
  return { dynamicPlatform: flag(1), cachedKeys: flag(2), smtEnabled: flag(3) };
}

/** Decodes the contents (extnValue) of the SGX extension. */
export function parsePckExtensionValue(extensionValue: Buffer): PckExtension {
  try {
    const pairs = readPairs(readDerElement(extensionValue, TAG_SEQUENCE).value, 'extension');
    const extension: PckExtension = {
      ppid: required(pairs, OID_PPID, TAG_OCTET_STRING, 'PPID', 16),
      tcb: parseTcb(required(pairs, OID_TCB, TAG_SEQUENCE, 'TCB')),
      pceId: required(pairs, OID_PCEID, TAG_OCTET_STRING, 'PCE-ID', 2),
      fmspc: required(pairs, OID_FMSPC, TAG_OCTET_STRING, 'FMSPC', 6),
      sgxType: decodeUnsigned(required(pairs, OID_SGX_TYPE, TAG_ENUMERATED, 'SGX type')),
    };
    const instance = pairs.get(OID_PLATFORM_INSTANCE_ID);
    if (instance !== undefined) {
      if (instance.tag !== TAG_OCTET_STRING) throw invalid('platform instance id is not an OCTET STRING');
      extension.platformInstanceId = instance.value;
    }
    const configuration = pairs.get(OID_CONFIGURATION);
    if (configuration !== undefined) {
      if (configuration.tag !== TAG_SEQUENCE) throw invalid('configuration is not a SEQUENCE');
      extension.configuration = parseConfiguration(configuration.value);
    }
    return extension;
  } catch (error) {
    if (error instanceof SealmeshError) throw error;
    throw invalid(`malformed DER (${(error as Error).message})`, error);
  }
}

/** Finds and decodes the SGX extension of a PCK certificate. */
export function parsePckExtension(certificate: X509Certificate): PckExtension {
  const parsed = new x509.X509Certificate(certificate.raw);
  const extensions = parsed.getExtensions(SGX_EXTENSION_OID);
  if (extensions.length !== 1) {
    throw invalid(`the certificate has ${extensions.length} extensions with OID ${SGX_EXTENSION_OID}; expected exactly 1`);
  }
  return parsePckExtensionValue(Buffer.from(extensions[0]!.value));
}
