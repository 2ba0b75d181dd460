/**
 * A `stream.Writable` over a Writer: one chunk, one message.
 */
import { Writable } from 'node:stream';
import { checkKeys, checkObject, intOption, validateSignal } from './options';
import type { Writer } from './writer';

/** Options of {@link createWritable} / `writer.createWriteStream()`. */
export interface WritableOptions {
  /** Chunks the stream buffers before `write()` returns false. Default 16 (Node's object-mode default). */
  highWaterMark?: number;
  /** Aborting it destroys the stream with an `AbortError` (chunks not yet queued are not sent). */
  signal?: AbortSignal;
}

const KEYS = ['highWaterMark', 'signal'];

/**
 * @internal Writer method: queue `data` now if it fits and no send() waits
 * (true), else do nothing (false). Throws what write() throws.
 */
export const kTryQueue: unique symbol = Symbol('uds-ipc.tryQueue');
/** @internal Writer method `(src, start, end, frames, payload) => boolean`: RingProducer.appendFramed, when nothing waits. */
export const kQueueFramed: unique symbol = Symbol('uds-ipc.queueFramed');
/**
 * @internal Writer method `(len: number) => number`: RingProducer.reserve
 * (the offset in the ring's bytes where a frame's `len` payload bytes go, or
 * -1), when nothing waits and the Writer sends; then `[kCommit](len)`.
 */
export const kReserve: unique symbol = Symbol('uds-ipc.reserve');
/** @internal Writer method `(len: number) => void`: RingProducer.commit of the frame reserved with kReserve. */
export const kCommit: unique symbol = Symbol('uds-ipc.commit');
/** @internal Writer getter: the ring's memory as a Buffer (RingProducer.bytes), for kReserve. */
export const kRingBytes: unique symbol = Symbol('uds-ipc.ringBytes');
/** @internal Writer method `(corked: boolean) => void`: see RingProducer.corked; uncorking publishes what waits. */
export const kCork: unique symbol = Symbol('uds-ipc.cork');
/**
 * @internal Writer method `() => void`: from now on a batch that onMessage
 * is done with synchronously is released in a microtask queued after it
 * returns (behind the promise reactions it queued), not at once: for
 * RpcClient, whose batches no caller sees, so that a reply's callback does
 * not wait for the release (an N-API call that detaches the batch's buffer).
 */
export const kDeferRelease: unique symbol = Symbol('uds-ipc.deferRelease');

interface Queueing {
  [kTryQueue](data: Uint8Array | string): boolean;
}

/**
 * An object-mode `stream.Writable` that sends each chunk (Buffer, Uint8Array
 * or string) as one message through `writer`.
 *
 * Each chunk is queued with `writer.send()`: while the Writer's queue is full
 * the chunk waits, the stream buffers up to `highWaterMark` chunks, then its
 * `write()` returns false and `pipeline()` pauses the source — memory stays
 * bounded however slow the Reader is. `end()` (and so `pipeline()`) finishes
 * once `writer.flush()` resolves: every message is in the kernel's socket
 * buffer. The Writer is neither started nor stopped by the stream; destroying
 * the stream gives up on chunks still waiting for room (already queued ones
 * are still sent). A chunk of another type, or a stopped Writer, errors the
 * stream (`ERR_INVALID_ARG_TYPE`, `ERR_NOT_RUNNING`, `ERR_MESSAGE_TOO_LARGE`).
 *
 * @param writer - The Writer to send through.
 * @param options - `highWaterMark` and `signal`.
 * @returns The stream.
 * @throws TypeError/RangeError for invalid options.
 * @example
 * await pipeline(Readable.from(lines()), createWritable(writer));
 */
export function createWritable(writer: Writer, options?: WritableOptions): Writable {
  const o = checkObject('options', options);
  checkKeys('write stream options', o, KEYS);
  const highWaterMark = intOption('highWaterMark', o.highWaterMark, 16, 0, 2 ** 30);
  const signal = validateSignal(o.signal);
  // Aborts the send()s still waiting for room when the stream is destroyed.
  const ac = new AbortController();
  const send = (chunk: unknown): Promise<void> => writer.send(chunk as Uint8Array | string, { signal: ac.signal });
  const tryQueue = (chunk: unknown): boolean => (writer as unknown as Queueing)[kTryQueue](chunk as Uint8Array | string);
  // Queues chunks [i..] in order: synchronously while they fit (so that a
  // burst of chunks is published to the IO thread at once), then one send() at
  // a time, so that nothing after a refused chunk is queued.
  const queueFrom = (chunks: readonly unknown[], i: number, callback: (e?: Error | null) => void): void => {
    try {
      while (i < chunks.length && tryQueue(chunks[i])) i++;
    } catch (e) {
      callback(e as Error);
      return;
    }
    if (i === chunks.length) {
      callback();
      return;
    }
    send(chunks[i]).then(
      () => queueFrom(chunks, i + 1, callback),
      (e: Error) => {
        if (!stream.destroyed) callback(e);
      },
    );
  };
  const stream: Writable = new Writable({
    objectMode: true,
    highWaterMark,
    signal,
    write(chunk: unknown, _encoding, callback) {
      queueFrom([chunk], 0, callback);
    },
    writev(chunks, callback) {
      queueFrom(
        chunks.map((c) => c.chunk as unknown),
        0,
        callback,
      );
    },
    final(callback) {
      writer.flush().then(() => callback(), callback);
    },
    destroy(err, callback) {
      ac.abort(err ?? undefined);
      callback(err);
    },
  });
  return stream;
}
