import type { Logger } from '../log/index.ts';
import type { ServerMetrics } from './metrics.ts';
import type { PeerSvid } from './peer-svid.ts';

/**
 * Time a watch stream opened with an SVID stays open after a renewal supersedes that SVID. The
 * proxy moves its stream to a connection with the new SVID right after the renewal, and the
 * server ends a stream that has not moved by then.
 */
export const WATCH_SUPERSEDED_GRACE_MS = 10_000;

/** Maximum delay of a Node.js timer in ms, about 24.8 days. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type EndCode = 'SEALMESH_ERR_PEER_CERT_EXPIRED' | 'SEALMESH_ERR_SVID_INSTANCE_MISMATCH';

/** A watch stream, with the SVID it was opened with, that the server ends once that SVID is no longer current. */
interface BoundWatchStream {
  serial: string;
  /** Ends the stream, and logs and counts the reason. */
  end: (code: EndCode, reason: string) => void;
}

/**
 * Binds each open watch stream to the SVID of its connection, and ends the stream when that SVID
 * expires or a renewal supersedes it.
 */
export class WatchStreamBindings {
  /** Open watch streams by instance id. */
  readonly #streams = new Map<string, Set<BoundWatchStream>>();
  readonly #options: { log: Logger; metrics: ServerMetrics; now: () => Date };

  constructor(options: { log: Logger; metrics: ServerMetrics; now: () => Date }) {
    this.#options = options;
  }

  /**
   * Binds the stream of `instanceId` opened with `svid`. `end` ends the response. Returns the
   * function that releases the binding when the stream closes.
   */
  bind(instanceId: string, svid: PeerSvid, end: () => void): () => void {
    const { log, metrics, now } = this.#options;
    let open = true;
    let expiry: NodeJS.Timeout | undefined;
    const bound: BoundWatchStream = {
      serial: svid.serial,
      end: (code, reason) => {
        if (!open) return;
        open = false;
        metrics.rejections.inc({ code });
        log.warn({ code, instance: instanceId, serial: svid.serial, reason }, 'watch stream ended by the server');
        end();
      },
    };
    // A stream lives no longer than the certificate of its connection. A timer cannot wait longer
    // than MAX_TIMER_MS, so a longer-lived SVID's stream is checked again then.
    const armExpiry = (): void => {
      const remaining = svid.notAfterMs - now().getTime();
      expiry = setTimeout(() => {
        if (svid.notAfterMs - now().getTime() > 0) armExpiry();
        else bound.end('SEALMESH_ERR_PEER_CERT_EXPIRED', `the client certificate with serial ${svid.serial} expired`);
      }, Math.min(Math.max(remaining, 0), MAX_TIMER_MS));
      expiry.unref();
    };
    let bindings = this.#streams.get(instanceId);
    if (bindings === undefined) {
      bindings = new Set();
      this.#streams.set(instanceId, bindings);
    }
    bindings.add(bound);
    armExpiry();
    return () => {
      open = false;
      clearTimeout(expiry);
      bindings.delete(bound);
      if (bindings.size === 0 && this.#streams.get(instanceId) === bindings) this.#streams.delete(instanceId);
    };
  }

  /**
   * Ends, after WATCH_SUPERSEDED_GRACE_MS, each watch stream of `instanceId` that was opened with
   * another SVID than `serial`, the one the instance now records.
   */
  supersede(instanceId: string, serial: string): void {
    for (const stream of this.#streams.get(instanceId) ?? []) {
      if (stream.serial === serial) continue;
      setTimeout(
        () => stream.end('SEALMESH_ERR_SVID_INSTANCE_MISMATCH', `a renewal superseded the SVID with serial ${stream.serial} that opened this stream`),
        WATCH_SUPERSEDED_GRACE_MS,
      ).unref();
    }
  }
}
