import type { Socket } from 'node:net';

/** Maximum delay that setTimeout accepts; a longer one fires at once. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/**
 * Calls `onExpire` once the wall clock `now` reaches `notAfter` (milliseconds since the epoch),
 * unless `socket` closes first. A proxy uses it to close a connection when the certificate that its
 * peer authenticated with expires, so that no connection outlives the SVID behind it.
 */
export function onPeerCertificateExpiry(socket: Socket, notAfter: number, onExpire: () => void, now: () => number = Date.now): void {
  let timer: NodeJS.Timeout | undefined;
  const check = (): void => {
    const remainingMs = notAfter - now();
    if (remainingMs <= 0) {
      onExpire();
      return;
    }
    // A far expiry is reached in steps of the maximum delay.
    timer = setTimeout(check, Math.min(remainingMs, MAX_TIMER_DELAY_MS));
    timer.unref();
  };
  check();
  socket.once('close', () => clearTimeout(timer));
}
