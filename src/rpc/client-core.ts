/**
 * The client side of the RPC protocol, independent of any transport: call
 * ids, the calls in flight, deadlines, cancellation, streams with credit
 * flow control, and what a lost connection does to calls in flight.
 * src/rpc/client.ts plugs it into a Writer; the tests drive it with an
 * in-memory pair.
 * @internal
 */
import { Buffer } from 'node:buffer';
import { AbortGroup, abortError } from '../abort';
import { IpcError, type AbortError } from '../errors';
import { DeadlineQueue, type Timed } from './deadlines';
import {
  EnvelopeView,
  RpcKind,
  Scratch,
  bodyLength,
  decodeAt,
  encodeRequest,
  methodBytes,
  putControl,
  putRequest,
  requestSize,
  type BodyInput,
} from './envelope';
import type { FrameSink } from './types';
import { writeUvarint } from '../varint';

/** Reply bodies up to this size are copied; larger ones are views of the received memory (the caller retains it). */
const COPY_LIMIT = 4096;
const MAX_ID = 2 ** 32 - 1;
const EMPTY = Buffer.alloc(0);
const noop = (): void => {};
const METHOD_CACHE_LIMIT = 1024;
/** Frames up to this size wait for the end of the tick and go out with the tick's others; larger ones go at once. */
const DEFER_MAX = 64 * 1024;
/** The tick's frames are handed over early once they fill this much... */
const QUEUE_FLUSH_AT = 256 * 1024;
/**
 * ...or once there are this many (see ClientCore#q). Measured with 64 calls
 * in flight (bench/README.md, RPC): 8, 16 and 32 within noise of each other,
 * all far ahead of handing the tick over whole.
 */
const CHUNK_FRAMES = 16;
/** frameIndex of a call whose request is still in the tick's queue (not handed to the sink). */
const NOT_HANDED = Number.MAX_SAFE_INTEGER;

/** Options of a {@link ClientCore}. */
export interface ClientCoreOptions {
  /** Default deadline of a call in ms; 0 = none. */
  timeoutMs: number;
  /** Default stream window (parts the server may send ahead). */
  streamWindow: number;
  /** Frames that are not valid envelopes, or replies that break the protocol: for the operator. */
  onError?: (err: Error) => void;
  /**
   * Largest frame the sink takes (the Writer's maxMessageSize): larger
   * requests are handed over at once, so that the sink's refusal is thrown
   * by call()/stream() itself. Default: no limit known.
   */
  maxFrameSize?: number;
}

/** Counters of a {@link ClientCore}. */
export interface ClientCoreMetrics {
  calls: number;
  streams: number;
  failed: number;
  timedOut: number;
  aborted: number;
  lost: number;
  lateFrames: number;
  invalidFrames: number;
}

class ClientCall implements Timed {
  deadlineAt = Infinity;
  heapIndex = -1;
  /** Index of its request frame among the frames this core handed to the sink. */
  frameIndex = -1;
  done = false;
  // Called as methods (c.resolve(...)): the promise's functions, or
  // callbackResolve/callbackReject with `cb` (the callback form of call()).
  resolve: (this: ClientCall, b: Buffer) => void = noop;
  reject: (this: ClientCall, e: Error) => void = noop;
  cb: CallCallback | undefined = undefined;
  offAbort: (() => void) | undefined = undefined;
  stream: RpcStream | undefined = undefined;
  constructor(
    readonly id: number,
    readonly method: string,
  ) {}
}

/** The callback of {@link RpcClient.call}'s callback form: `(err, reply)`, called once. */
export type CallCallback = (err: Error | null, reply?: Buffer) => void;

function callbackResolve(this: ClientCall, reply: Buffer): void {
  invoke(this.cb!, null, reply);
}

function callbackReject(this: ClientCall, err: Error): void {
  invoke(this.cb!, err, undefined);
}

// A callback runs inside the loop over a batch of replies (or over the
// calls a lost connection fails): one that throws must not cut that loop
// short, so its exception is thrown again on a tick of its own, where it is
// an uncaught exception as with Node's own callback APIs.
function invoke(cb: CallCallback, err: Error | null, reply: Buffer | undefined): void {
  try {
    cb(err, reply);
  } catch (e) {
    process.nextTick(rethrow, e);
  }
}

function rethrow(e: unknown): never {
  throw e;
}

/** @internal Maps an ERROR frame to the error the caller sees. */
export function remoteError(code: string, message: string): IpcError {
  if (code === 'ERR_UNKNOWN_METHOD') return new IpcError('ERR_UNKNOWN_METHOD', message || 'unknown method', { remoteCode: code });
  if (code === 'ERR_TIMEOUT') return new IpcError('ERR_TIMEOUT', message || 'deadline exceeded', { remoteCode: code });
  return new IpcError('ERR_REMOTE', message || code, { remoteCode: code });
}

/** @internal */
export class ClientCore {
  readonly #sink: FrameSink;
  readonly opts: ClientCoreOptions;
  // Calls in flight, by id: a table of a power-of-two size indexed by
  // `id & mask`, at most half full. Ids are handed out counting up and skip
  // those whose slot is taken, so a slot holds at most one call.
  #table: (ClientCall | undefined)[] = new Array<ClientCall | undefined>(64).fill(undefined);
  #mask = 63;
  #count = 0;
  readonly #view = new EnvelopeView();
  readonly #scratch = new Scratch();
  readonly #deadlines = new DeadlineQueue<ClientCall>((c) => this.#expire(c));
  readonly #aborts = new AbortGroup();
  readonly #methods = new Map<string, Buffer>();
  #nextId = 1;
  #idle: (() => void) | undefined;
  #sending = 0;
  #closed: Error | undefined;
  #refused: Error | undefined;
  // The frames of this tick (requests made while others are in flight,
  // cancels, credits), encoded back to back and handed to the sink in groups
  // of CHUNK_FRAMES, each group corked so that it goes out in one send, and
  // what is left on process.nextTick. Handed over only at the end of the
  // tick, a tick's requests reached the server together, after the client
  // had made them all: the two processes took turns, each idle while the
  // other worked (a third of both CPUs idle with 64 calls in flight). In
  // groups, the server answers the first ones while the client makes the
  // rest.
  // Each frame as the Writer's queue holds it, uvarint(length) + envelope,
  // so that a group whose calls are all live is queued with one copy.
  #q: Buffer = Buffer.allocUnsafeSlow(16 * 1024);
  #qLen = 0;
  #qPayload = 0; // envelope bytes in #q
  readonly #qEnds: number[] = [];
  readonly #qCalls: (ClientCall | undefined)[] = [];
  #qScheduled = false;
  // A group of frames written in place (#inPlace) is open: the sink is corked.
  #grouping = false;
  #groupFrames = 0;
  readonly #flushQueue = (): void => {
    this.#qScheduled = false;
    this.#flush();
  };
  /** Frames handed to the sink (requests, cancels, credits), in order. */
  framesWritten = 0;
  readonly m: ClientCoreMetrics = { calls: 0, streams: 0, failed: 0, timedOut: 0, aborted: 0, lost: 0, lateFrames: 0, invalidFrames: 0 };
  readonly #sentOk = (): void => {
    this.#sending--;
  };
  readonly #sentFail = (): void => {
    this.#sending--;
  };

  readonly #deferMax: number;

  constructor(sink: FrameSink, opts: ClientCoreOptions) {
    this.#sink = sink;
    this.opts = opts;
    this.#deferMax = Math.min(DEFER_MAX, opts.maxFrameSize ?? Infinity);
  }

  /** Calls (and streams) in flight. */
  get inFlight(): number {
    return this.#count;
  }

  /**
   * Starts a unary call. `timeoutMs` undefined = the default; `signal` as given (checked by the caller).
   * Rejects (never throws) with what went wrong.
   */
  call(method: string, body: BodyInput, timeoutMs: number | undefined, signal: AbortSignal | undefined): Promise<Buffer> {
    let c: ClientCall;
    try {
      c = this.#begin(method, body, timeoutMs, signal, undefined, 0);
    } catch (e) {
      return Promise.reject(e);
    }
    this.m.calls++;
    return new Promise<Buffer>((resolve, reject) => {
      c.resolve = resolve;
      c.reject = reject;
    });
  }

  /**
   * {@link ClientCore.call} with an error-first callback instead of a
   * promise: `cb` is called once, never before this returns.
   */
  callWith(method: string, body: BodyInput, timeoutMs: number | undefined, signal: AbortSignal | undefined, cb: CallCallback): void {
    let c: ClientCall;
    try {
      c = this.#begin(method, body, timeoutMs, signal, undefined, 0);
    } catch (e) {
      process.nextTick(cb, e);
      return;
    }
    this.m.calls++;
    c.cb = cb;
    c.resolve = callbackResolve;
    c.reject = callbackReject;
  }

  /** Starts a server-streaming call. Throws synchronously for bad arguments or a closed client. */
  stream(method: string, body: BodyInput, timeoutMs: number | undefined, signal: AbortSignal | undefined, window: number | undefined): RpcStream {
    const w = window ?? this.opts.streamWindow;
    const s = new RpcStream(this, w);
    const c = this.#begin(method, body, timeoutMs, signal, s, w);
    s.attach(c);
    this.m.streams++;
    return s;
  }

  #methodBytes(method: string): Buffer {
    let b = this.#methods.get(method);
    if (b === undefined) {
      b = methodBytes(method);
      if (this.#methods.size >= METHOD_CACHE_LIMIT) this.#methods.clear();
      this.#methods.set(method, b);
    }
    return b;
  }

  #begin(
    method: string,
    body: BodyInput,
    timeoutMs: number | undefined,
    signal: AbortSignal | undefined,
    stream: RpcStream | undefined,
    credit: number,
  ): ClientCall {
    if (this.#refused) throw this.#refused;
    const mb = this.#methodBytes(method);
    if (signal?.aborted) throw abortError(signal);
    const len = bodyLength(body);
    const ms = timeoutMs ?? this.opts.timeoutMs;
    const id = this.#allocId();
    const c = new ClientCall(id, method);
    c.stream = stream;
    const isStream = stream !== undefined;
    const size = requestSize(id, isStream, ms, credit, mb.length, len);
    // A call made while others are in flight (or wait in the tick's queue)
    // joins the tick's frames: encoded in place in the sink's queue
    // (#inPlace) when nothing waits in the tick's queue, else there
    // (#enqueue). A lone call goes at once, without waiting for whatever
    // else its caller does in this tick (latency).
    if (size <= this.#deferMax && !this.#closed && (this.#count !== 0 || this.#qEnds.length !== 0)) {
      if (this.#qEnds.length === 0 && this.#sending === 0 && this.#inPlace(id, isStream, ms, credit, mb, body, len, size)) {
        c.frameIndex = this.framesWritten++;
        this.#add(c);
      } else {
        this.#enqueue(id, isStream, ms, credit, mb, body, len, size, c);
      }
    } else {
      this.#flush(); // the tick's frames first: frames keep their order
      const frame = encodeRequest(this.#scratch, id, isStream, ms, credit, mb, body, len);
      c.frameIndex = this.framesWritten;
      const p = this.#out(frame); // throws for a frame the sink refuses (too large, stopped)
      this.#add(c);
      if (p !== undefined) p.catch((e: Error) => this.#fail(c, e));
    }
    if (ms !== 0) {
      c.deadlineAt = performance.now() + ms;
      this.#deadlines.add(c);
    }
    if (signal) c.offAbort = this.#aborts.add(signal, () => this.#abort(c, signal));
    return c;
  }

  // A deferred request into the tick's queue (#q), after its length prefix.
  #enqueue(id: number, isStream: boolean, ms: number, credit: number, mb: Buffer, body: BodyInput, len: number, size: number, c: ClientCall): void {
    const q = this.#reserve(size + 3); // size <= DEFER_MAX: a uvarint of at most 3 bytes
    const at = size < 0x80 ? ((q[this.#qLen] = size), this.#qLen + 1) : this.#qLen + writeUvarint(size, q, this.#qLen);
    this.#queued(putRequest(q, at, id, isStream, ms, credit, mb, body, len), size, c);
    c.frameIndex = NOT_HANDED;
    this.#add(c);
  }

  // A deferred request encoded straight into the sink's queue, with no copy
  // of its own (the tick's queue costs one more copy per request), when
  // nothing waits in the tick's queue before it. The frames so written make
  // a group, corked from its first frame and sent at CHUNK_FRAMES frames or
  // at the end of the tick (#flush), as the tick's queue hands its groups
  // over. False when the sink cannot take it that way.
  #inPlace(id: number, isStream: boolean, ms: number, credit: number, mb: Buffer, body: BodyInput, len: number, size: number): boolean {
    const sink = this.#sink;
    if (sink.reserve === undefined) return false;
    if (!this.#grouping) {
      sink.cork?.();
      this.#grouping = true;
      if (!this.#qScheduled) {
        this.#qScheduled = true;
        process.nextTick(this.#flushQueue);
      }
    }
    const at = sink.reserve(size);
    if (at < 0) return false;
    putRequest(sink.bytes!(), at, id, isStream, ms, credit, mb, body, len);
    sink.commit!(size);
    if (++this.#groupFrames >= CHUNK_FRAMES) this.#endGroup();
    return true;
  }

  // Sends the group of frames written in place, if one is open.
  #endGroup(): void {
    if (!this.#grouping) return;
    this.#grouping = false;
    this.#groupFrames = 0;
    this.#sink.uncork?.();
  }

  // Registers a call whose id came from #allocId() (its slot is free).
  #add(c: ClientCall): void {
    if (2 * (this.#count + 1) > this.#table.length) this.#grow();
    this.#table[c.id & this.#mask] = c;
    this.#count++;
  }

  // Doubles the table. Ids stay as they are: two calls whose ids share a
  // slot in the larger table cannot both be in flight (they shared one in
  // the smaller table too, where a slot holds one call).
  #grow(): void {
    const old = this.#table;
    const size = 2 * old.length;
    const t = new Array<ClientCall | undefined>(size).fill(undefined);
    const mask = size - 1;
    for (const c of old) if (c !== undefined) t[c.id & mask] = c;
    this.#table = t;
    this.#mask = mask;
  }

  // The calls in flight (a copy: failing them removes them).
  #calls(): ClientCall[] {
    const out: ClientCall[] = [];
    for (const c of this.#table) if (c !== undefined) out.push(c);
    return out;
  }

  /** The call in flight with this id, if any. */
  #lookup(id: number): ClientCall | undefined {
    const c = this.#table[id & this.#mask];
    return c !== undefined && c.id === id ? c : undefined;
  }

  #allocId(): number {
    let id = this.#nextId;
    const t = this.#table;
    const mask = this.#mask;
    while (t[id & mask] !== undefined) id = id === MAX_ID ? 1 : id + 1;
    this.#nextId = id === MAX_ID ? 1 : id + 1;
    return id;
  }

  // Hands a frame to the sink: write() while nothing waits, else send(), so
  // frames keep their order. Counts it. Returns the send() promise when the
  // frame had to wait (it rejects if it never gets queued).
  #out(frame: Uint8Array): Promise<void> | undefined {
    if (this.#sending === 0 && this.#sink.write(frame)) {
      this.framesWritten++;
      return undefined;
    }
    const p = this.#sink.send(frame);
    this.framesWritten++;
    this.#sending++;
    p.then(this.#sentOk, this.#sentFail);
    return p;
  }

  #control(kind: number, id: number, n = 0): void {
    if (this.#closed) return;
    const q = this.#reserve(22);
    const at = this.#qLen;
    const end = putControl(q, at + 1, kind, id, n);
    q[at] = end - at - 1; // at most 21: a one-byte uvarint
    this.#queued(end, end - at - 1, undefined);
  }

  // Room for `n` more bytes in the tick's queue (they go at #qLen); returns the queue.
  #reserve(n: number): Buffer {
    const len = this.#qLen;
    if (len + n > this.#q.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * this.#q.length, len + n));
      this.#q.copy(grown, 0, 0, len);
      this.#q = grown;
    }
    return this.#q;
  }

  // A frame (`payload` bytes after its length prefix) was encoded into the
  // queue up to `end`; `c`: the call whose request it is.
  #queued(end: number, payload: number, c: ClientCall | undefined): void {
    this.#qLen = end;
    this.#qPayload += payload;
    this.#qEnds.push(end);
    this.#qCalls.push(c);
    if (end >= QUEUE_FLUSH_AT || this.#qEnds.length >= CHUNK_FRAMES) this.#flush();
    else if (!this.#qScheduled) {
      this.#qScheduled = true;
      process.nextTick(this.#flushQueue);
    }
  }

  // Hands the tick's frames to the sink, in order, corked (one send). A
  // request whose call already ended (aborted, timed out) is not sent: its
  // CANCEL, if any, follows and is ignored by the server.
  #flush(): void {
    this.#endGroup(); // frames written in place come first
    const ends = this.#qEnds;
    const n = ends.length;
    if (n === 0) return;
    const sink = this.#sink;
    sink.cork?.();
    try {
      this.#handOver(ends, n);
    } finally {
      sink.uncork?.();
    }
  }

  #handOver(ends: number[], n: number): void {
    const calls = this.#qCalls;
    const q = this.#q;
    if (this.#sending === 0 && !this.#closed && this.#sink.writeFramed !== undefined && this.#allLive(calls, n)) {
      const first = this.framesWritten;
      if (this.#sink.writeFramed(q, 0, this.#qLen, n, this.#qPayload)) {
        for (let i = 0; i < n; i++) {
          const c = calls[i];
          if (c !== undefined) c.frameIndex = first + i;
        }
        this.framesWritten = first + n;
        this.#qLen = 0;
        this.#qPayload = 0;
        ends.length = 0;
        calls.length = 0;
        return;
      }
    }
    const ab = q.buffer;
    const base = q.byteOffset;
    let start = 0;
    for (let i = 0; i < n; i++) {
      const end = ends[i];
      const c = calls[i];
      while (q[start++] & 0x80); // past the length prefix
      const frame = new Uint8Array(ab, base + start, end - start);
      start = end;
      if (c === undefined) {
        if (this.#closed) continue;
        try {
          const p = this.#out(frame);
          if (p !== undefined) p.catch(noop);
        } catch {
          // the transport is stopping: nothing to tell the server any more
        }
        continue;
      }
      if (c.done) continue;
      c.frameIndex = this.framesWritten;
      try {
        const p = this.#out(frame);
        if (p !== undefined) p.catch((e: Error) => this.#fail(c, e));
      } catch (e) {
        this.#fail(c, e as Error);
      }
    }
    this.#qLen = 0;
    this.#qPayload = 0;
    ends.length = 0;
    calls.length = 0;
  }

  // Whether no request among the first `n` queued frames belongs to a call that already ended.
  #allLive(calls: (ClientCall | undefined)[], n: number): boolean {
    for (let i = 0; i < n; i++) {
      const c = calls[i];
      if (c !== undefined && c.done) return false;
    }
    return true;
  }

  /** @internal The stream wants `n` more parts. */
  credit(c: ClientCall, n: number): void {
    if (!c.done) this.#control(RpcKind.CREDIT, c.id, n);
  }

  /** @internal The stream's consumer stopped early: forget the call, tell the server. */
  cancel(c: ClientCall): void {
    if (c.done) return;
    this.#remove(c);
    this.#control(RpcKind.CANCEL, c.id);
  }

  #remove(c: ClientCall): void {
    c.done = true;
    const t = this.#table;
    const i = c.id & this.#mask;
    if (t[i] === c) {
      t[i] = undefined;
      this.#count--;
    }
    if (c.heapIndex >= 0) this.#deadlines.remove(c);
    if (c.offAbort) {
      c.offAbort();
      c.offAbort = undefined;
    }
    if (this.#idle !== undefined && this.#count === 0) {
      const f = this.#idle;
      this.#idle = undefined;
      f();
    }
  }

  #fail(c: ClientCall, e: Error): void {
    if (c.done) return;
    this.#remove(c);
    this.m.failed++;
    if (c.stream) c.stream.fail(e, true);
    else c.reject(e);
  }

  #expire(c: ClientCall): void {
    if (c.done) return;
    this.m.timedOut++;
    this.#fail(c, new IpcError('ERR_TIMEOUT', `The call of ${JSON.stringify(c.method)} did not finish within its deadline`));
    this.#control(RpcKind.CANCEL, c.id);
  }

  #abort(c: ClientCall, signal: AbortSignal): void {
    if (c.done) return;
    this.m.aborted++;
    c.offAbort = undefined; // the group already dropped it
    this.#fail(c, abortError(signal) as AbortError);
    this.#control(RpcKind.CANCEL, c.id);
  }

  /**
   * One frame from the server. Returns true when a view of `payload` was
   * handed out (a large reply or part): the caller must keep its memory valid.
   */
  onFrame(payload: Uint8Array): boolean {
    return this.onFrameAt(payload, 0, payload.length);
  }

  /** {@link ClientCore.onFrame} for the payload `bytes[start, end)`. */
  onFrameAt(bytes: Uint8Array, start: number, end: number): boolean {
    const v = this.#view;
    if (!decodeAt(bytes, start, end, v)) {
      this.m.invalidFrames++;
      this.#report(new IpcError('ERR_INVALID_FRAME', `The server sent a frame that is not a valid RPC envelope: ${v.error}`));
      return false;
    }
    const c = this.#lookup(v.id);
    if (c === undefined) {
      if (v.kind >= RpcKind.REPLY && v.kind <= RpcKind.END) this.m.lateFrames++;
      else this.m.invalidFrames++;
      return false;
    }
    switch (v.kind) {
      case RpcKind.REPLY: {
        if (c.stream) return this.#protocolError(c, 'a REPLY to a stream call');
        this.#remove(c);
        const len = v.bodyEnd - v.bodyStart;
        if (len <= COPY_LIMIT) {
          c.resolve(len === 0 ? Buffer.alloc(0) : copyOf(bytes, v.bodyStart, len));
          return false;
        }
        c.resolve(Buffer.from(bytes.buffer, bytes.byteOffset + v.bodyStart, len));
        return true;
      }
      case RpcKind.ERROR: {
        this.#remove(c);
        this.m.failed++;
        const err = remoteError(v.code, v.message);
        if (c.stream) c.stream.fail(err, false);
        else c.reject(err);
        return false;
      }
      case RpcKind.PART: {
        const s = c.stream;
        if (!s) return this.#protocolError(c, 'a PART to a unary call');
        const len = v.bodyEnd - v.bodyStart;
        const view = len > COPY_LIMIT;
        const body = len === 0 ? EMPTY : view ? Buffer.from(bytes.buffer, bytes.byteOffset + v.bodyStart, len) : copyOf(bytes, v.bodyStart, len);
        if (!s.push(body)) return this.#protocolError(c, 'more stream parts than its flow control window allows');
        return view;
      }
      case RpcKind.END: {
        const s = c.stream;
        if (!s) return this.#protocolError(c, 'an END to a unary call');
        this.#remove(c);
        s.end();
        return false;
      }
      default:
        this.m.invalidFrames++;
        return false;
    }
  }

  #protocolError(c: ClientCall, what: string): false {
    this.m.invalidFrames++;
    const err = new IpcError('ERR_INVALID_FRAME', `The server broke the RPC protocol: ${what} (call ${c.id}, method ${JSON.stringify(c.method)})`);
    this.#report(err);
    this.#fail(c, err);
    this.#control(RpcKind.CANCEL, c.id);
    return false;
  }

  #report(err: Error): void {
    const f = this.opts.onError;
    if (!f) return;
    try {
      f(err);
    } catch (e) {
      process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  /**
   * The transport lost its connection, and `sentFrames` of the frames handed
   * to it had been fully sent: the calls whose request was among them fail
   * with `ERR_CONNECTION_LOST` (they may have run); the others stay pending
   * (their request goes out on the next connection).
   */
  connectionLost(sentFrames: number, reason?: Error): void {
    for (const c of this.#calls()) {
      if (c.frameIndex < sentFrames) {
        this.m.lost++;
        this.#fail(
          c,
          new IpcError('ERR_CONNECTION_LOST', `The connection was lost while the call of ${JSON.stringify(c.method)} was in flight; it may have run`, {
            cause: reason,
          }),
        );
      }
    }
  }

  /** New calls fail with `err` (thrown / rejected); calls in flight go on. */
  refuse(err: Error): void {
    this.#refused = err;
  }

  /** No more calls: every pending one fails with `err`. */
  close(err: Error): void {
    this.#closed = err;
    // The tick's frames are not sent: their calls fail below.
    this.#qLen = 0;
    this.#qEnds.length = 0;
    this.#qCalls.length = 0;
    for (const c of this.#calls()) {
      this.#fail(c, err);
    }
    this.#deadlines.clear();
  }

  /** Resolves once no call is in flight. */
  whenIdle(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.#idle;
      this.#idle = () => {
        prev?.();
        resolve();
      };
    });
  }
}

const u8subarray = Uint8Array.prototype.subarray;

function copyOf(bytes: Uint8Array, start: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  if (len <= 8) for (let i = 0; i < len; i++) b[i] = bytes[start + i];
  else b.set(u8subarray.call(bytes, start, start + len));
  return b;
}

/**
 * The parts of a server-streaming call, as an async iterable of Buffers:
 * `for await (const part of client.stream(...))`. Reading is what lets the
 * server go on: it may send at most `window` parts the consumer has not
 * read yet. Leaving the loop early (`break`, `return`, a throw) cancels the
 * call: the server's generator is closed.
 */
export class RpcStream implements AsyncIterableIterator<Buffer> {
  readonly #core: ClientCore;
  #call: ClientCall | undefined;
  readonly #window: number;
  readonly #grantEvery: number;
  readonly #parts: Buffer[] = [];
  #head = 0;
  #received = 0;
  #granted: number;
  #unreported = 0; // parts read since the last CREDIT
  #ended = false;
  #error: Error | undefined;
  #finished = false;
  #waiter: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: Error) => void } | undefined;

  /** @internal */
  constructor(core: ClientCore, window: number) {
    this.#core = core;
    this.#window = window;
    this.#granted = window;
    this.#grantEvery = Math.max(1, Math.ceil(window / 2));
  }

  /** @internal */
  attach(c: ClientCall): void {
    this.#call = c;
  }

  /** Parts received and not read yet (at most the window). */
  get buffered(): number {
    return this.#parts.length - this.#head;
  }

  /** @internal A part arrived. False when it exceeds the credit given. */
  push(part: Buffer): boolean {
    if (this.#received >= this.#granted) return false;
    this.#received++;
    const w = this.#waiter;
    if (w && this.buffered === 0) {
      this.#waiter = undefined;
      this.#consumed();
      w.resolve({ done: false, value: part });
      return true;
    }
    this.#parts.push(part);
    return true;
  }

  /** @internal The server ended the stream. */
  end(): void {
    this.#ended = true;
    this.#settleWaiter();
  }

  /** @internal The call failed; `now`: drop what is buffered (a local cause), else deliver it first. */
  fail(e: Error, now: boolean): void {
    this.#error = e;
    this.#ended = true;
    if (now) {
      this.#parts.length = 0;
      this.#head = 0;
    }
    this.#settleWaiter();
  }

  #settleWaiter(): void {
    const w = this.#waiter;
    if (!w || this.buffered !== 0) return;
    this.#waiter = undefined;
    this.#finish();
    if (this.#error) w.reject(this.#error);
    else w.resolve({ done: true, value: undefined });
  }

  #finish(): void {
    this.#finished = true;
  }

  // One part was read: give credit back in batches of half the window.
  #consumed(): void {
    if (this.#ended) return;
    if (++this.#unreported >= this.#grantEvery) {
      const n = this.#unreported;
      this.#unreported = 0;
      this.#granted += n;
      this.#core.credit(this.#call!, n);
    }
  }

  /** The next part; `done` once the server ended the stream. Rejects with the call's error. */
  next(): Promise<IteratorResult<Buffer>> {
    if (this.buffered !== 0) {
      const part = this.#parts[this.#head];
      this.#parts[this.#head++] = EMPTY;
      if (this.#head === this.#parts.length) {
        this.#parts.length = 0;
        this.#head = 0;
      }
      this.#consumed();
      return Promise.resolve({ done: false, value: part });
    }
    if (this.#finished) return Promise.resolve({ done: true, value: undefined });
    if (this.#ended) {
      this.#finish();
      return this.#error ? Promise.reject(this.#error) : Promise.resolve({ done: true, value: undefined });
    }
    if (this.#waiter) return Promise.reject(new IpcError('ERR_INVALID_STATE', 'next() was called while another next() of this stream was pending'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Stops reading: cancels the call unless it already ended (the server closes its generator). */
  return(): Promise<IteratorResult<Buffer>> {
    this.#stop();
    return Promise.resolve({ done: true, value: undefined });
  }

  /** Same as {@link RpcStream.return}, then rejects with `e`. */
  throw(e?: unknown): Promise<IteratorResult<Buffer>> {
    this.#stop();
    return Promise.reject(e);
  }

  #stop(): void {
    if (!this.#finished) {
      this.#finished = true;
      this.#ended = true;
      this.#parts.length = 0;
      this.#head = 0;
      if (this.#call) this.#core.cancel(this.#call);
      const w = this.#waiter;
      this.#waiter = undefined;
      w?.resolve({ done: true, value: undefined });
    }
  }

  /** This stream itself. */
  [Symbol.asyncIterator](): this {
    return this;
  }
}
