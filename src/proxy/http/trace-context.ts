import { randomBytes } from 'node:crypto';
import type { HeaderMap } from './headers.ts';

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/, Recommendation of 23 November 2021):
 * `traceparent: VERSION-TRACEID-PARENTID-FLAGS`, all lower-case hex, with an optional `tracestate`
 * of vendor entries that a proxy passes on unchanged.
 */
export const TRACEPARENT_HEADER = 'traceparent';
export const TRACESTATE_HEADER = 'tracestate';

/** The fields of a valid traceparent. */
export interface TraceParent {
  /** 32 lower-case hex digits, not all zero. */
  traceId: string;
  /** Span id of the caller, 16 lower-case hex digits, not all zero. */
  parentId: string;
  /** The trace flags byte; bit 0 is `sampled`. */
  flags: number;
}

const VERSION_00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
/** A later version: the version 00 fields come first, and any further field follows a dash. */
const LATER_VERSION = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);
const SAMPLED = 0x01;

/**
 * Parses a traceparent value. Returns undefined for a malformed value: version `ff`, upper-case or
 * non-hex digits, wrong field lengths, an all-zero trace id or parent id, or a version 00 value
 * with extra fields. A version above 00 is read by the version 00 rules and its extra fields are
 * ignored, as the specification requires.
 */
export function parseTraceparent(value: string | string[] | undefined): TraceParent | undefined {
  // Two traceparent headers cannot be combined into one valid value.
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  const match = text.startsWith('00-') ? VERSION_00.exec(text) : LATER_VERSION.exec(text);
  if (match === null) return undefined;
  const [traceId, parentId, flags] = text.startsWith('00-') ? [match[1]!, match[2]!, match[3]!] : [match[2]!, match[3]!, match[4]!];
  if (!text.startsWith('00-') && match[1] === 'ff') return undefined;
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return undefined;
  return { traceId, parentId, flags: Number.parseInt(flags, 16) };
}

/** Formats a version 00 traceparent. */
export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    const hex = randomBytes(bytes).toString('hex');
    if (hex !== zero) return hex;
  }
}

export function newTraceId(): string {
  return randomHex(16, ZERO_TRACE_ID);
}

export function newSpanId(): string {
  return randomHex(8, ZERO_SPAN_ID);
}

/** The trace position of one request as a proxy forwards it. */
export interface RequestTrace {
  traceId: string;
  /** The span id this proxy sends as the new parent id. */
  spanId: string;
  /** The caller's span id; absent when this proxy started the trace. */
  parentSpanId?: string;
  /** True when the request carried no valid traceparent. */
  started: boolean;
  /** The traceparent value to send on. */
  traceparent: string;
}

/**
 * Reads the trace of a request without changing its headers. A valid traceparent keeps its trace
 * id and flags and gets this proxy's span as the new parent id. Without one the proxy starts a
 * trace, with the sampled flag set to `sampled`.
 */
export function traceRequest(headers: HeaderMap, sampled: boolean): RequestTrace {
  const incoming = parseTraceparent(headers[TRACEPARENT_HEADER]);
  const spanId = newSpanId();
  if (incoming !== undefined) {
    // Only the flags of version 00 (sampled and random) are sent on; later flags have no meaning here.
    return { traceId: incoming.traceId, spanId, parentSpanId: incoming.parentId, started: false, traceparent: formatTraceparent(incoming.traceId, spanId, incoming.flags & 0x03) };
  }
  const traceId = newTraceId();
  return { traceId, spanId, started: true, traceparent: formatTraceparent(traceId, spanId, sampled ? SAMPLED : 0) };
}

/**
 * Sets the traceparent of `trace` in `headers`. A started trace drops any tracestate, which
 * belonged to the discarded traceparent; a continued one passes tracestate unchanged.
 */
export function setTraceHeaders(headers: HeaderMap, trace: RequestTrace): void {
  headers[TRACEPARENT_HEADER] = trace.traceparent;
  if (trace.started) delete headers[TRACESTATE_HEADER];
}

/** Reads the trace of a request and sets its headers; see `traceRequest` and `setTraceHeaders`. */
export function continueTrace(headers: HeaderMap, sampled: boolean): RequestTrace {
  const trace = traceRequest(headers, sampled);
  setTraceHeaders(headers, trace);
  return trace;
}
