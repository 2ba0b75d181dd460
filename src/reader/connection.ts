/**
 * A Reader's live connection: who the writer is, and the way back to it
 * (replies). Frames written in one tick are collected in one buffer and
 * handed to the native side together when the tick's microtasks run: one
 * call, one mutex and usually one `send(2)` on this thread for all of them
 * (native/core/reply_queue.h); what the socket cannot take at once waits in
 * the native reply queue and the IO thread sends it on EPOLLOUT.
 *
 * The bound: a connection's replies written and not yet taken by the kernel
 * (here and in the native queue) stay within `maxReplyBytes`. Nothing is
 * allocated for a connection until it replies.
 *
 * A reply with file descriptors (`{ fds }`) goes to the native side at once,
 * as one frame of its own (after the frames collected before it): the
 * native side dups the descriptors and sends that frame alone, with them.
 * The dups it holds while its queue is not empty are counted here
 * (`#fdsQueued`, reset whenever the native queue is seen empty) and bounded
 * by `maxReplyFds`.
 * @internal
 */
import { Buffer } from 'node:buffer';
import { abortError } from '../abort';
import type { Connection } from '../batch';
import { IpcError, invalidType } from '../errors';
import { resolveSignalOptions, type SignalOptions } from '../options';
import { putUvarint31, uvarintSize } from '../varint';
import { resolveFds, splitFds, WaitingFds, type WriteOptions } from '../writer/fds';

/** What a connection needs of its Reader. */
export interface ReplySink {
  /**
   * Native: sends or queues whole frames, the first `length` bytes of
   * `bytes` (default: all of them); returns the bytes queued natively, -1
   * if the connection is closed.
   */
  reply(connId: number, bytes: Uint8Array, length?: number): number;
  /** Native: sends or queues one frame that carries dups of `fds` (made now); as reply() otherwise. Throws for a descriptor that is not open. */
  replyFds(connId: number, frame: Uint8Array, fds: Int32Array): number;
  /** Calls `conn.flush()` once the current tick's writes are done. */
  schedule(conn: ReaderConnection): void;
  /** Counts a reply refused because the queue was full. */
  refused(): void;
  readonly maxReplyBytes: number;
  /** False on a socket type without replies (seqpacket): write()/send() throw. */
  readonly replies: boolean;
  /** Descriptors that may be held natively for one connection's queued replies. */
  readonly maxReplyFds: number;
}

interface Waiter {
  frame: Buffer; // the whole frame, copied
  fds: Int32Array | undefined; // sent with it
  resolve: () => void;
  reject: (e: unknown) => void;
  off: (() => void) | undefined;
}

const EMPTY = new Uint8Array(0);
const KEEP_BUFFER_UP_TO = 64 * 1024; // a larger collection buffer is dropped after its flush...
const SPARE_UP_TO = 4 * 1024 * 1024; // ...or kept as the one spare of the process, up to this size

// One large collection buffer for whichever connection next needs one: a
// flush hands its bytes to the native side (sent or copied) before it
// returns, so the buffer is free at once. Steady large replies then reuse
// warm memory instead of a fresh allocation (page faults) every tick, and
// the memory held stays one buffer per process, not one per connection.
let spare: Buffer | undefined;
const MAX_FRAME = 0x7fffffff; // frames are written with 31-bit length prefixes

function noReplies(): IpcError {
  return new IpcError(
    'ERR_INVALID_STATE',
    "Replies are not supported on this Reader: its socket type is 'seqpacket' or 'dgram', or its delivery is 'acked' (the connection carries acknowledgements back)",
  );
}

function notConnected(id: number): IpcError {
  return new IpcError('ERR_NOT_CONNECTED', `Connection ${id} is closed; its writer can no longer be replied to`);
}

// One frame: the length prefix, then the bytes.
function encodeFrame(data: Uint8Array | string, n: number, size: number): Buffer {
  const frame = Buffer.allocUnsafe(size);
  const p = putUvarint31(frame, 0, n);
  if (typeof data === 'string') frame.write(data, p, 'utf8');
  else frame.set(data, p);
  return frame;
}

function byteLengthOf(data: unknown): number {
  if (typeof data === 'string') return Buffer.byteLength(data);
  if (data instanceof Uint8Array) return data.byteLength;
  throw invalidType('data', 'a Uint8Array, a Buffer or a string', data, 'argument');
}

/**
 * writeParts() (the RPC server's replies) hands the tick's frames over once
 * this many wait, without waiting for the end of the tick: a server that
 * answers a batch of 64 requests lets the client start on the first replies
 * while it makes the rest (with 64 calls in flight, 64 B bodies: 504 k ->
 * 714 k calls/s, 4 interleaved rounds; groups of 8: 678 k). write() keeps
 * "one tick, one hand-over".
 */
const REPLY_GROUP = 16;

// Writes the frame `uvarint(n) head[0, headLen) body` at buf[at].
function putParts(buf: Buffer, at: number, n: number, head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number): void {
  let p = putUvarint31(buf, at, n);
  for (let i = 0; i < headLen; i++) buf[p + i] = head[i];
  p += headLen;
  if (bodyLen === 0) return;
  if (typeof body === 'string') buf.write(body, p, bodyLen, 'utf8');
  else if (bodyLen <= 8) for (let i = 0; i < bodyLen; i++) buf[p + i] = body[i];
  else buf.set(body, p);
}

/**
 * One writer connected to a {@link Reader}, with its credentials
 * (SO_PEERCRED, read at accept), live: replies go back to that writer on the
 * same connection, with the same framing (`write()`, `send()`).
 */
export class ReaderConnection implements Connection {
  readonly id: number;
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /**
   * How this connection's messages are delivered: `'acked'` when the Reader
   * and the writer both use acknowledged delivery, else `'at-most-once'`
   * (always, on a Reader in the default mode). On an acked Reader it is
   * known once the writer's first message came: `'at-most-once'` until then.
   */
  delivery: 'acked' | 'at-most-once' = 'at-most-once';
  /** `delivery: 'acked'`: the writer's session id (32 hex digits, see `writer.session`); undefined otherwise. */
  session: string | undefined;
  #sink: ReplySink | undefined; // undefined once closed
  #buf: Buffer | undefined; // frames written this tick, not yet handed to the native side
  #len = 0;
  #peak = 0; // the most one tick collected lately: the next buffer starts that large
  #native = 0; // bytes queued natively as of the last call
  #scheduled = false;
  // Between hold() and flush(): the holder hands the frames over itself, so
  // a write schedules no end-of-tick flush (a queueMicrotask per tick, which
  // Node wraps in an AsyncResource; see bench/README.md, RPC).
  #held = false;
  #parts = 0; // writeParts() frames in this tick's buffer
  #waiters: Waiter[] = [];
  #head = 0; // first live waiter
  #flushed: Array<() => void> = []; // whenFlushed() callers
  #fdsQueued = 0; // descriptors sent with frames still in the native queue (0 once it is seen empty)
  readonly #waitingFds = new WaitingFds(); // dups held by send()s waiting for room (at most maxReplyFds)

  /** @internal */
  constructor(id: number, pid: number, uid: number, gid: number, sink: ReplySink | undefined) {
    this.id = id;
    this.pid = pid;
    this.uid = uid;
    this.gid = gid;
    this.#sink = sink;
  }

  /** False once the connection closed (or the Reader stopped): replies then throw `ERR_NOT_CONNECTED`. */
  get connected(): boolean {
    return this.#sink !== undefined;
  }

  /** Reply bytes (frames) written and not yet taken by the kernel. */
  get bufferedBytes(): number {
    return this.#len + this.#native;
  }

  /**
   * Sends `data` back to this connection's writer as one message. Copies it
   * (the caller may reuse its buffer at once). Messages written in one tick
   * go out together.
   * @returns false when the reply was dropped because this connection's
   * queue is full (`maxReplyBytes`; counted in `metrics().repliesDropped`).
   * @throws IpcError `ERR_NOT_CONNECTED` if the connection is closed;
   * `ERR_MESSAGE_TOO_LARGE` if the message can never fit `maxReplyBytes`;
   * TypeError for data that is not a Uint8Array or string.
   */
  write(data: Uint8Array | string, options?: WriteOptions): boolean {
    const sink = this.#sink;
    if (!sink) throw notConnected(this.id);
    if (!sink.replies) throw noReplies();
    const fds = options === undefined ? undefined : resolveFds(options);
    const n = byteLengthOf(data);
    const size = this.#frameSize(n, sink);
    if (!this.#fits(size, fds, sink)) {
      sink.refused();
      return false;
    }
    if (fds === undefined) this.#put(data, n, size, sink);
    else this.#sendWithFds(encodeFrame(data, n, size), fds, sink);
    return true;
  }

  // Room for a frame of `size` bytes with `fds`, and nothing waiting before it.
  #fits(size: number, fds: Int32Array | undefined, sink: ReplySink): boolean {
    if (this.#head < this.#waiters.length || this.#len + this.#native + size > sink.maxReplyBytes) return false;
    return fds === undefined || this.#fdsQueued === 0 || this.#fdsQueued + fds.length <= sink.maxReplyFds;
  }

  // Hands the frames collected this tick over, then `frame` with its descriptors.
  #sendWithFds(frame: Uint8Array, fds: Int32Array, sink: ReplySink): void {
    if (this.#len > 0) {
      const r = sink.reply(this.id, this.#buf!, this.#len);
      this.#len = 0;
      if (r >= 0) this.#native = r;
    }
    const r = sink.replyFds(this.id, frame, fds);
    if (r < 0) return; // closed natively: the close item follows
    this.#native = r;
    this.#fdsQueued = r === 0 ? 0 : this.#fdsQueued + fds.length;
  }

  /**
   * @internal {@link ReaderConnection.write} of the message `head[0,
   * headLen) + body` (`bodyLen`: its bytes, a string's UTF-8 length),
   * copied straight into this tick's buffer: for the RPC server's replies,
   * whose envelope header is put in front of the handler's bytes.
   */
  writeParts(head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number): boolean {
    const sink = this.#sink;
    if (!sink) throw notConnected(this.id);
    if (!sink.replies) throw noReplies();
    const n = headLen + bodyLen;
    const size = this.#frameSize(n, sink);
    if (this.#head < this.#waiters.length || this.#len + this.#native + size > sink.maxReplyBytes) {
      sink.refused();
      return false;
    }
    this.#putParts(head, headLen, body, bodyLen, n, size, sink);
    return true;
  }

  #putParts(head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number, n: number, size: number, sink: ReplySink): void {
    let buf = this.#buf;
    const need = this.#len + size;
    if (!buf || buf.length < need) buf = this.#grow(need);
    putParts(buf, this.#len, n, head, headLen, body, bodyLen);
    this.#len = need;
    if (!this.#scheduled && !this.#held) {
      this.#scheduled = true;
      sink.schedule(this);
    }
    // RPC replies go in groups, as the client's requests do (see
    // REPLY_GROUP); the end of the tick hands over the rest.
    if (++this.#parts >= REPLY_GROUP) this.#handOver();
  }

  /**
   * @internal {@link ReaderConnection.send} of the message `head[0,
   * headLen) + body`: when it has to wait, the frame is assembled once, in
   * the waiting send's own buffer.
   */
  sendParts(head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number): Promise<void> {
    try {
      const sink = this.#sink;
      if (!sink) throw notConnected(this.id);
      if (!sink.replies) throw noReplies();
      const n = headLen + bodyLen;
      const size = this.#frameSize(n, sink);
      if (this.#head === this.#waiters.length && this.#len + this.#native + size <= sink.maxReplyBytes) {
        this.#putParts(head, headLen, body, bodyLen, n, size, sink);
        return Promise.resolve();
      }
      const frame = Buffer.allocUnsafe(size);
      putParts(frame, 0, n, head, headLen, body, bodyLen);
      return new Promise<void>((resolve, reject) => {
        this.#waiters.push({ frame, fds: undefined, resolve, reject, off: undefined });
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Like {@link ReaderConnection.write}, but waits for room instead of
   * dropping. Resolves once the message is queued (in order with other
   * sends), not when the writer has read it.
   * @param options - `signal`: aborting it gives up the wait (rejects with an `AbortError`).
   * @throws (rejects) IpcError `ERR_NOT_CONNECTED` if the connection is closed or closes while waiting.
   */
  send(data: Uint8Array | string, options?: SignalOptions & WriteOptions): Promise<void> {
    try {
      const { fds, rest } = splitFds(options);
      const { signal } = resolveSignalOptions('send options', rest);
      if (signal?.aborted) return Promise.reject(abortError(signal));
      const sink = this.#sink;
      if (!sink) throw notConnected(this.id);
      if (!sink.replies) throw noReplies();
      const n = byteLengthOf(data);
      const size = this.#frameSize(n, sink);
      if (this.#fits(size, fds, sink)) {
        if (fds === undefined) this.#put(data, n, size, sink);
        else this.#sendWithFds(encodeFrame(data, n, size), fds, sink);
        return Promise.resolve();
      }
      const frame = encodeFrame(data, n, size);
      // Its descriptors are taken now (the caller may close its own once
      // send() returns); ours are closed once the frame is handed over, or
      // the send fails.
      // (Bounded by maxReplyFds as the Writer's by maxBufferedFds: beyond
      // it, the descriptors are taken when the frame is handed over.)
      const held = this.#waitingFds.take(fds, sink.maxReplyFds);
      return new Promise<void>((outerResolve, outerReject) => {
        const resolve = (): void => (held.release(), outerResolve());
        const reject = (e: unknown): void => (held.release(), outerReject(e));
        const w: Waiter = { frame, fds: held.fds, resolve, reject, off: undefined };
        if (signal) {
          const onAbort = (): void => {
            const i = this.#waiters.indexOf(w, this.#head);
            if (i >= 0) this.#waiters.splice(i, 1);
            reject(abortError(signal));
          };
          signal.addEventListener('abort', onAbort, { once: true });
          w.off = () => signal.removeEventListener('abort', onAbort);
        }
        this.#waiters.push(w);
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #frameSize(n: number, sink: ReplySink): number {
    const size = uvarintSize(n) + n;
    if (size > sink.maxReplyBytes || n > MAX_FRAME) {
      throw new IpcError(
        'ERR_MESSAGE_TOO_LARGE',
        `A reply of ${n} bytes can never fit this connection's reply queue (maxReplyBytes ${sink.maxReplyBytes}); raise maxReplyBytes`,
      );
    }
    return size;
  }

  // Appends one frame to this tick's buffer.
  #put(data: Uint8Array | string, n: number, size: number, sink: ReplySink): void {
    let buf = this.#buf;
    const need = this.#len + size;
    if (!buf || buf.length < need) buf = this.#grow(need);
    const p = putUvarint31(buf, this.#len, n);
    if (typeof data === 'string') buf.write(data, p, 'utf8');
    else buf.set(data, p);
    this.#len = need;
    if (!this.#scheduled && !this.#held) {
      this.#scheduled = true;
      sink.schedule(this);
    }
  }

  /**
   * @internal Resolves once every reply written so far was taken by the
   * kernel (or the connection closed): for a server's graceful stop.
   */
  whenFlushed(): Promise<void> {
    if (!this.#sink || (this.#len === 0 && this.#native === 0 && this.#head === this.#waiters.length)) return Promise.resolve();
    return new Promise<void>((resolve) => this.#flushed.push(resolve));
  }

  #checkFlushed(): void {
    if (this.#native === 0) this.#fdsQueued = 0;
    if (this.#flushed.length === 0 || this.#len !== 0 || this.#native !== 0 || this.#head !== this.#waiters.length) return;
    const f = this.#flushed;
    this.#flushed = [];
    for (const r of f) r();
  }

  // A larger collection buffer, starting as large as a recent tick needed,
  // so that a steady stream of large replies is not copied at every doubling.
  #grow(need: number): Buffer {
    const old = this.#buf;
    const size = Math.max(4096, need, old ? 2 * old.length : this.#peak);
    let grown: Buffer;
    if (spare !== undefined && spare.length >= size) {
      grown = spare;
      spare = undefined;
    } else grown = Buffer.allocUnsafeSlow(size);
    if (old && this.#len > 0) old.copy(grown, 0, 0, this.#len);
    this.#buf = grown;
    return grown;
  }

  /** @internal Hands this tick's frames to the native side; ends a {@link ReaderConnection.hold}. */
  flush(): void {
    this.#scheduled = false;
    this.#held = false;
    this.#handOver();
  }

  /**
   * @internal Until the next {@link ReaderConnection.flush}, which the
   * caller makes before it returns to the event loop (the RPC server, around
   * a batch's synchronous handlers), writes do not schedule the end-of-tick
   * flush. A flush already scheduled stays so.
   */
  hold(): void {
    this.#held = true;
  }

  // flush() without the end of the tick: what is written later in the tick
  // still goes with the flush already scheduled.
  #handOver(): void {
    this.#parts = 0;
    const sink = this.#sink;
    if (!sink || this.#len === 0) return;
    const r = sink.reply(this.id, this.#buf!, this.#len);
    // Decays, so that one burst does not make every later tick start huge.
    this.#peak = Math.max(this.#len, this.#peak >>> 1);
    this.#len = 0;
    const buf = this.#buf!;
    if (buf.length > KEEP_BUFFER_UP_TO) {
      if (buf.length <= SPARE_UP_TO && (spare === undefined || spare.length < buf.length)) spare = buf;
      this.#buf = undefined;
    }
    // -1: closed natively; the close item follows and rejects what waits.
    if (r >= 0) {
      this.#native = r;
      this.#admitWaiters(sink);
    }
    this.#checkFlushed();
  }

  /** @internal The native reply queue emptied (or was discarded after replyTimeoutMs). */
  drained(): void {
    const sink = this.#sink;
    if (!sink) return;
    const r = sink.reply(this.id, EMPTY);
    if (r >= 0) this.#native = r;
    this.#admitWaiters(sink);
    this.#checkFlushed();
  }

  // Moves waiting sends into this tick's buffer while they fit.
  #admitWaiters(sink: ReplySink): void {
    const q = this.#waiters;
    while (this.#head < q.length) {
      const w = q[this.#head];
      if (this.#len + this.#native + w.frame.length > sink.maxReplyBytes) break;
      if (w.fds !== undefined) {
        if (this.#native === 0) this.#fdsQueued = 0;
        if (this.#fdsQueued !== 0 && this.#fdsQueued + w.fds.length > sink.maxReplyFds) break;
        q[this.#head++] = undefined as unknown as Waiter;
        w.off?.();
        try {
          this.#sendWithFds(w.frame, w.fds, sink);
        } catch (e) {
          w.reject(e); // no descriptor could be duplicated: nothing was sent
          continue;
        }
        w.resolve();
        if (!this.#sink) return; // closed natively meanwhile
        continue;
      }
      q[this.#head++] = undefined as unknown as Waiter;
      let buf = this.#buf;
      const need = this.#len + w.frame.length;
      if (!buf || buf.length < need) buf = this.#grow(need);
      w.frame.copy(buf, this.#len);
      this.#len = need;
      w.off?.();
      w.resolve();
    }
    if (this.#head === q.length) {
      this.#waiters = [];
      this.#head = 0;
    }
    if (this.#len > 0 && !this.#scheduled) {
      this.#scheduled = true;
      sink.schedule(this);
    }
  }

  /** @internal The connection closed (or the Reader stopped): what waits is rejected, what is buffered dropped. */
  closed(): void {
    if (!this.#sink) return;
    this.#sink = undefined;
    this.#buf = undefined;
    this.#len = 0;
    this.#native = 0;
    const q = this.#waiters;
    const from = this.#head;
    this.#waiters = [];
    this.#head = 0;
    for (let i = from; i < q.length; i++) {
      q[i].off?.();
      q[i].reject(notConnected(this.id));
    }
    const f = this.#flushed;
    this.#flushed = [];
    for (const r of f) r();
  }
}
