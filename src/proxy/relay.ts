import type { Socket } from 'node:net';

/**
 * Carries bytes both ways between two connected sockets, such as the app's plaintext connection
 * and the mTLS connection to a peer proxy.
 *
 * Each direction is a 'data' handler that writes the chunk straight to the other socket, which
 * costs less per chunk than `stream.pipe`. Backpressure follows the return value of `write()`:
 * when the receiving socket's buffer is full the sending socket is paused until 'drain'. An 'end'
 * from one side half-closes the other, as `pipe` does. Closing and errors stay with the caller.
 */
export function relay(a: Socket, b: Socket): void {
  forward(a, b);
  forward(b, a);
}

function forward(source: Socket, sink: Socket): void {
  const resume = (): void => {
    source.resume();
  };
  source.on('data', (chunk: Buffer) => {
    // A destroyed sink drops the chunk; its 'close' makes the caller tear down both sides.
    if (sink.destroyed) return;
    if (!sink.write(chunk)) {
      source.pause();
      sink.once('drain', resume);
    }
  });
  source.once('end', () => {
    if (!sink.destroyed) sink.end();
  });
}
