import type { Socket } from 'node:net';

/**
 * Size of the first read buffer of a `BufferedReader`: one full TLS record, so that a connection
 * that carries little costs little.
 */
export const FIRST_READ_BUFFER_BYTES = 16 * 1024;
/**
 * Size of the read buffer after a read that filled the first one: the 64 KiB that libuv suggests
 * for one TCP read, and room for four full TLS records.
 */
export const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Carries bytes both ways between two connected sockets, such as the app's plaintext connection
 * and the mTLS connection to a peer proxy.
 *
 * Each direction is a 'data' handler that writes the chunk straight to the other socket, which
 * costs less per chunk than `stream.pipe`. Backpressure follows the return value of `write()`:
 * when the receiving socket's buffer is full the sending socket is paused until 'drain'. An 'end'
 * from one side half-closes the other, as `pipe` does. Closing and errors stay with the caller.
 *
 * A socket created with the `onread` option of a `BufferedReader` is passed as `readers` instead:
 * its reads then arrive in that reader, which starts writing them to the other socket here.
 */
export function relay(a: Socket, b: Socket, readers: { a?: BufferedReader; b?: BufferedReader } = {}): void {
  if (readers.a !== undefined) readers.a.start(a, b);
  else forward(a, b);
  if (readers.b !== undefined) readers.b.start(b, a);
  else forward(b, a);
}

/** Time a socket gets to write out its queued bytes after the other leg closed. */
export const FLUSH_TIMEOUT_MS = 30_000;

/**
 * Closes `socket` after the other leg of its connection closed. With nothing queued it is destroyed
 * at once. Otherwise it is ended and destroyed once its queued bytes are written, so a slow reader
 * still receives the last bytes its peer sent. A reader slower than `timeoutMs` is cut off, so a
 * peer that stops reading cannot keep the socket and its data open.
 */
export function closeAfterFlush(socket: Socket, timeoutMs = FLUSH_TIMEOUT_MS): void {
  if (socket.destroyed) return;
  if (socket.writableLength === 0) {
    socket.destroy();
    return;
  }
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('finish', () => socket.destroy());
  if (!socket.writableEnded) socket.end();
}

function forward(source: Socket, sink: Socket): void {
  const resume = (): void => {
    source.resume();
  };
  source.on('data', (chunk: Buffer) => {
    // A destroyed sink drops the chunk. Its 'close' makes the caller tear down both sides.
    if (sink.destroyed) return;
    if (!sink.write(chunk)) {
      source.pause();
      sink.once('drain', resume);
    }
  });
  forwardEnd(source, sink);
}

function forwardEnd(source: Socket, sink: Socket): void {
  source.once('end', () => {
    if (!sink.destroyed) sink.end();
  });
}

/**
 * Reads one socket into a buffer that it reuses from read to read, and writes each chunk to the
 * sink that `start` names. Pass `onread` to `net.connect` or `tls.connect` when creating the socket.
 *
 * Without it, Node.js allocates a new buffer of up to 64 KiB for every read (every TLS record on a
 * TLS socket), and under bulk traffic the garbage collector spends a large share of the process's
 * CPU time freeing them. A chunk must stay unchanged until the sink has consumed it. So the next
 * read reuses the buffer only when the sink took the chunk at once, and gets a new buffer otherwise:
 *
 * - A write to a sink with nothing queued goes straight to the socket's handle. A TCP socket is
 *   done with the chunk when the write completed at once (`writableLength` is 0 afterwards).
 * - A TLS socket's handle (Node.js 24's TLSWrap) encrypts the whole chunk into its own buffer
 *   within the write call once the handshake is done. It is done with the chunk as soon as the
 *   chunk went to the handle, even while the encrypted bytes wait for the network.
 * - A write while an earlier one is pending stays queued in the stream, and keeps the chunk.
 *
 * Chunks that arrive before `start`, such as data a TLS server sends right after its handshake
 * while the caller still checks the peer, are copied and written on `start`, followed by the end
 * when the source has ended by then.
 */
export class BufferedReader {
  #buffer = Buffer.allocUnsafeSlow(FIRST_READ_BUFFER_BYTES);
  /** Set when the sink may still refer to the current buffer, which must then not be read into again. */
  #retained = false;
  /** Set after a read filled the buffer, so that the next buffer has READ_BUFFER_BYTES. */
  #grow = false;
  #source: Socket | undefined;
  #sink: Socket | undefined;
  #sinkEncrypts = false;
  #early: Buffer[] = [];
  #waitingForDrain = false;
  readonly #resume = (): void => {
    this.#waitingForDrain = false;
    this.#source?.resume();
  };

  /** The `onread` option for the socket that this reader serves. */
  readonly onread = {
    buffer: (): Buffer => this.#nextBuffer(),
    callback: (bytes: number, buffer: Buffer): boolean => this.#forward(bytes, buffer),
  };

  /** Starts writing the source's reads to `sink`, first those that arrived before. */
  start(source: Socket, sink: Socket): void {
    this.#source = source;
    this.#sink = sink;
    this.#sinkEncrypts = (sink as Socket & { encrypted?: boolean }).encrypted === true;
    const early = this.#early;
    this.#early = [];
    for (const chunk of early) this.#write(chunk);
    // The source may have ended before the relay started, when its 'end' had no listener yet.
    if (source.readableEnded) {
      if (!sink.destroyed) sink.end();
    } else {
      forwardEnd(source, sink);
    }
  }

  #nextBuffer(): Buffer {
    if (this.#grow && this.#buffer.length < READ_BUFFER_BYTES) {
      this.#buffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);
      this.#retained = false;
    } else if (this.#retained) {
      this.#buffer = Buffer.allocUnsafeSlow(this.#buffer.length);
      this.#retained = false;
    }
    return this.#buffer;
  }

  #forward(bytes: number, buffer: Buffer): boolean {
    if (bytes === buffer.length) this.#grow = true;
    const chunk = buffer.subarray(0, bytes);
    if (this.#sink === undefined) {
      this.#early.push(Buffer.from(chunk));
      return true;
    }
    this.#write(chunk);
    return true;
  }

  #write(chunk: Buffer): void {
    const sink = this.#sink!;
    // A destroyed sink drops the chunk; its 'close' makes the caller tear down both sides.
    if (sink.destroyed) return;
    const toHandle = sink.writableLength === 0 && sink.writableCorked === 0;
    const flushed = sink.write(chunk);
    if (!toHandle || (!this.#sinkEncrypts && sink.writableLength > 0)) this.#retained = true;
    // A TLS source still hands over the records it has decrypted after a pause, so only the
    // first write that fills the sink waits for 'drain'.
    if (!flushed && !this.#waitingForDrain) {
      this.#waitingForDrain = true;
      this.#source!.pause();
      sink.once('drain', this.#resume);
    }
  }
}
