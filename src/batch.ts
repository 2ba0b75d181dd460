/**
 * The batches a Reader hands to its handler, and the connections they come
 * from. A Batch is a view of received memory: an ArrayBuffer (the region) and
 * a table of message offsets in it. The Reader's inbox (src/reader/inbox.ts)
 * builds them and acknowledges and releases their memory.
 */
import { Buffer } from 'node:buffer';
import { outOfRange } from './errors';
import type { WriteOptions } from './writer/fds';

/**
 * One connection: on a Reader, one accepted writer; on a Writer (`onMessage`),
 * its connection to the reader. It carries the peer's credentials
 * (SO_PEERCRED, read when the connection was made) and is live: `write()`
 * and `send()` send a message back to the other end of this connection.
 */
export interface Connection {
  /** Identifier unique within this Reader (on a Writer: 1 for its first connection, 2 for the next, ...). */
  readonly id: number;
  /** The peer's process id as of its connect() or listen() (may have been reused since). */
  readonly pid: number;
  /** The peer's user id (65534 if unmapped in this user namespace). */
  readonly uid: number;
  /** The peer's group id. */
  readonly gid: number;
  /** False once this connection is closed: `write()` then throws and `send()` rejects with `ERR_NOT_CONNECTED`. */
  readonly connected: boolean;
  /** A Reader's connection: `'acked'` or `'at-most-once'` (see `ReaderOptions.delivery`). */
  readonly delivery?: 'acked' | 'at-most-once';
  /** A Reader's acked connection: the writer's session id (32 hex digits). */
  readonly session?: string | undefined;
  /**
   * Sends `data` to the other end as one message (copied). False: dropped,
   * because the connection's queue is full (a Reader's `maxReplyBytes` and
   * `maxPendingFds`, a Writer's `maxBufferedBytes`/`maxBufferedWrites`/
   * `maxBufferedFds`). `fds`: file descriptors sent with it (duplicated: the
   * caller may close its own once `write()` returns).
   */
  write(data: Uint8Array | string, options?: WriteOptions): boolean;
  /**
   * Like `write()`, but waits for room instead of dropping; `signal` gives up
   * the wait. `fds` are duplicated when `send()` is called, as by `write()`:
   * the caller may close its own at once.
   */
  send(data: Uint8Array | string, options?: { signal?: AbortSignal } & WriteOptions): Promise<void>;
}

/**
 * The Buffers handed out for messages: a Uint8Array subclass whose prototype
 * chain runs through Buffer.prototype (as Node's own FastBuffer does), so each
 * is a real Buffer (`Buffer.isBuffer`, every Buffer method) but costs only a
 * typed-array view to create, without going through `Buffer.from()`.
 */
class MessageBuffer extends Uint8Array {}
Object.setPrototypeOf(MessageBuffer.prototype, Buffer.prototype);

// What the inbox needs of a Batch to acknowledge and release it, without
// making it part of the public class (set by Batch's static block).
let memoryOf: (b: Batch) => ArrayBuffer;
let offsetsOf: (b: Batch) => Uint32Array;
let retainedOf: (b: Batch) => boolean;
let takeAllFdsOf: (b: Batch) => number[];

function view(ab: ArrayBuffer, start: number, length: number): Buffer {
  return new MessageBuffer(ab, start, length) as unknown as Buffer;
}

class BatchIterator implements Iterator<Buffer> {
  #i = 0;
  constructor(
    private readonly ab: ArrayBuffer,
    private readonly offsets: Uint32Array,
    private readonly n: number,
  ) {}
  next(): IteratorResult<Buffer> {
    const i = this.#i;
    if (i >= this.n) return { done: true, value: undefined };
    this.#i = i + 1;
    const s = this.offsets[2 * i];
    return { done: false, value: view(this.ab, s, this.offsets[2 * i + 1] - s) };
  }
  [Symbol.iterator](): Iterator<Buffer> {
    return this;
  }
}

/**
 * A batch of messages from one connection, in the order they were sent.
 *
 * Iterating yields one `Buffer` per message. The Buffers are views of the
 * reader's receive memory, without a copy, and **they are valid until the
 * handler returns** (or, for an async handler, until its promise settles).
 * Then the batch is released: its memory goes back to the reader for the next
 * reads, and every view of it ({@link Batch.bytes}, each message Buffer)
 * becomes empty (length 0), so a view kept by mistake reads as empty, never
 * as another message's bytes. To keep messages longer, call
 * {@link Batch.retain} inside the handler (the memory then lives until the
 * garbage collector finds no view of it) or copy them (`Buffer.from(msg)`).
 * For zero-allocation access use {@link Batch.bytes} with
 * {@link Batch.start}/{@link Batch.end} or {@link Batch.visit}.
 */
export class Batch implements Iterable<Buffer> {
  /** The connection these messages came from. */
  readonly connection: Connection;
  /** Number of messages. */
  readonly length: number;
  /** Total payload bytes of the messages (length prefixes excluded). */
  readonly byteLength: number;
  readonly #buffer: ArrayBuffer;
  #bytes: Uint8Array | undefined; // made on first use: most handlers never ask
  readonly #offsets: Uint32Array;
  #retained = false;
  // Descriptors that came with messages (acceptFds), by message index, until
  // taken or closed at release; undefined when none came.
  #fds: Map<number, number[]> | undefined;
  readonly #creds: Int32Array | undefined; // type 'dgram' with credentials: 3 per message
  readonly #firstSeq: number; // acked: sequence number of message 0 (0: not acked)
  readonly #redelivered: number; // acked: how many of the first messages were sent before
  static {
    memoryOf = (b) => b.#buffer;
    offsetsOf = (b) => b.#offsets;
    retainedOf = (b) => b.#retained;
    takeAllFdsOf = (b) => {
      const m = b.#fds;
      if (m === undefined) return [];
      const all: number[] = [];
      for (const fds of m.values()) for (const fd of fds) all.push(fd);
      m.clear();
      return all;
    };
  }

  /**
   * @internal
   * @param fds - `[index, count, fd x count, ...]` (a reader FDS item), or undefined.
   */
  constructor(
    connection: Connection,
    buffer: ArrayBuffer,
    offsets: Uint32Array,
    byteLength: number,
    fds?: Int32Array,
    creds?: Int32Array,
    firstSeq = 0,
    redelivered = 0,
  ) {
    this.connection = connection;
    this.#creds = creds;
    this.#firstSeq = firstSeq;
    this.#redelivered = redelivered;
    this.#buffer = buffer;
    this.#offsets = offsets;
    this.length = offsets.length >>> 1;
    this.byteLength = byteLength;
    if (fds !== undefined) {
      const m = new Map<number, number[]>();
      for (let k = 0; k < fds.length; ) {
        const index = fds[k];
        const count = fds[k + 1];
        m.set(index, Array.from(fds.subarray(k + 2, k + 2 + count)));
        k += 2 + count;
      }
      this.#fds = m;
    }
  }

  /**
   * The file descriptors that came with message `i` (a Reader with
   * `acceptFds: true`), handed over to the caller, who must close them
   * (`fs.closeSync(fd)`, or wrap them: `new net.Socket({ fd })`,
   * `fs.createReadStream('', { fd })`). Returns `[]` when the message carried
   * none, or they were taken already, or the batch was released: descriptors
   * not taken by then are closed by the library (counted in
   * `metrics().fdsClosedUnclaimed`), also for a retained batch.
   * @throws RangeError `ERR_OUT_OF_RANGE` when `i` is not a message index.
   */
  takeFds(i: number): number[] {
    this.#checkIndex(i);
    const m = this.#fds;
    if (m === undefined) return [];
    const fds = m.get(i);
    if (fds === undefined) return [];
    m.delete(i);
    return fds;
  }

  /**
   * The credentials of message `i`'s sender, for a Reader of `type: 'dgram'`
   * with `passCredentials` (or `allowUids`/`allowGids`): `{ pid, uid, gid }`
   * as the kernel stamped the datagram (`SCM_CREDENTIALS`). Undefined
   * otherwise: on the other types every message of a batch comes from
   * `batch.connection`, whose `pid`/`uid`/`gid` are its sender's.
   * @throws RangeError `ERR_OUT_OF_RANGE` when `i` is not a message index.
   */
  credentials(i: number): { pid: number; uid: number; gid: number } | undefined {
    this.#checkIndex(i);
    const c = this.#creds;
    if (c === undefined) return undefined;
    const id = (x: number): number => (x === -1 ? -1 : x >>> 0);
    return { pid: c[3 * i], uid: id(c[3 * i + 1]), gid: id(c[3 * i + 2]) };
  }

  /**
   * Acknowledged delivery (`delivery: 'acked'` on both ends): the writer's
   * sequence number of message `i` (1 for the first message of a writer
   * session, then consecutive; see `batch.connection.session`). Undefined on
   * a connection that is not acked. With the session id it names a message
   * for good: an application that must not act twice on one message across
   * reader restarts records the pair.
   * @throws RangeError `ERR_OUT_OF_RANGE` when `i` is not a message index.
   */
  sequence(i: number): number | undefined {
    this.#checkIndex(i);
    return this.#firstSeq === 0 ? undefined : this.#firstSeq + i;
  }

  /**
   * Acknowledged delivery: true exactly when the writer had sent message
   * `i` before, on an earlier connection (it got no acknowledgement for it,
   * so it sent it again). This Reader did not deliver it before (it drops
   * copies of what it delivered), but a Reader that ran before it may have:
   * a restarted reader remembers nothing. False on a connection that is not acked.
   * @throws RangeError `ERR_OUT_OF_RANGE` when `i` is not a message index.
   */
  redelivered(i: number): boolean {
    this.#checkIndex(i);
    return i < this.#redelivered;
  }

  /** How many descriptors message `i` carries that were not taken yet (see {@link Batch.takeFds}). */
  fdCount(i: number): number {
    this.#checkIndex(i);
    return this.#fds?.get(i)?.length ?? 0;
  }

  #checkIndex(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) {
      throw outOfRange('index', `an integer from 0 to ${this.length - 1}`, i);
    }
  }

  /** The batch's memory: message i is `bytes.subarray(start(i), end(i))`. */
  get bytes(): Uint8Array {
    // A released batch's buffer is detached (byteLength 0): an empty view.
    return (this.#bytes ??= this.#buffer.byteLength === 0 ? new Uint8Array(0) : new Uint8Array(this.#buffer));
  }

  /**
   * Keeps this batch's memory (and every view of it) valid after the handler
   * is done, until the garbage collector finds no view of it left, instead of
   * releasing it for reuse. Call it inside the handler. Retained memory is not
   * recycled, so retaining every batch costs memory and speed: copy what you
   * keep when it is a small part of the batch.
   * @returns this batch
   */
  retain(): this {
    this.#retained = true;
    return this;
  }

  /** True once {@link Batch.retain} was called. */
  get retained(): boolean {
    return this.#retained;
  }

  /** Offset in {@link Batch.bytes} where message `i` starts. */
  start(i: number): number {
    return this.#offsets[2 * i];
  }

  /** Offset in {@link Batch.bytes} just past message `i`. */
  end(i: number): number {
    return this.#offsets[2 * i + 1];
  }

  /** Message `i` as a Buffer view (no copy); undefined when out of range. Negative counts from the end. */
  at(i: number): Buffer | undefined {
    if (i < 0) i += this.length;
    if (!(i >= 0 && i < this.length)) return undefined;
    const s = this.#offsets[2 * i];
    return view(this.#buffer, s, this.#offsets[2 * i + 1] - s);
  }

  /** Calls `fn(bytes, start, end, index)` for each message without creating any object. */
  visit(fn: (bytes: Uint8Array, start: number, end: number, index: number) => void): void {
    const o = this.#offsets;
    const b = this.bytes;
    for (let i = 0, n = this.length; i < n; i++) fn(b, o[2 * i], o[2 * i + 1], i);
  }

  /** All messages as Buffer views. */
  toArray(): Buffer[] {
    const out = new Array<Buffer>(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.at(i)!;
    return out;
  }

  /** Yields each message as a Buffer view (no copy), in order. */
  [Symbol.iterator](): Iterator<Buffer> {
    return new BatchIterator(this.#buffer, this.#offsets, this.length);
  }
}

/** @internal The region (ArrayBuffer) a batch's messages are views of. */
export function batchMemory(b: Batch): ArrayBuffer {
  return memoryOf(b);
}

/** @internal A batch's offsets table: start and end of each message in its region. */
export function batchOffsets(b: Batch): Uint32Array {
  return offsetsOf(b);
}

/** @internal Every descriptor not taken yet; the batch forgets them (the caller closes them). */
export function takeAllFds(b: Batch): number[] {
  return takeAllFdsOf(b);
}

/** @internal True once {@link Batch.retain} was called. */
export function isRetained(b: Batch): boolean {
  return retainedOf(b);
}
