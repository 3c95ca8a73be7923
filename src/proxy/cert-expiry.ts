import type { Socket } from 'node:net';

/** Maximum delay that setTimeout accepts; a longer one fires at once. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/**
 * Calls `callback` once the wall clock `now` reaches `at` (milliseconds since the epoch), at once
 * when it already has. Returns a function that cancels the call. The timer does not keep the
 * process running.
 */
export function runAtWallClock(at: number, callback: () => void, now: () => number = Date.now): () => void {
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    const remainingMs = at - now();
    if (remainingMs <= 0) {
      callback();
      return;
    }
    // A far time is reached in steps of the maximum delay.
    timer = setTimeout(check, Math.min(remainingMs, MAX_TIMER_DELAY_MS));
    timer.unref();
  };
  check();
  return () => clearTimeout(timer);
}

/**
 * Calls `onExpire` once the wall clock `now` reaches `notAfter` (milliseconds since the epoch),
 * unless `socket` closes first. A proxy uses it to close a connection when the certificate that its
 * peer authenticated with expires, so that no connection outlives the SVID behind it.
 */
export function onPeerCertificateExpiry(socket: Socket, notAfter: number, onExpire: () => void, now: () => number = Date.now): void {
  const cancel = runAtWallClock(notAfter, onExpire, now);
  socket.once('close', cancel);
}
