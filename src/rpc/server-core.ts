/**
 * The server side of the RPC protocol, independent of any transport: one
 * {@link ServerCore} (the methods, shared state) and one
 * {@link ServerConnection} per connection (its calls, queue, deadlines and
 * replies). src/rpc/server.ts plugs it into a Reader; the tests drive it
 * with an in-memory pair.
 * @internal
 */
import { Buffer } from 'node:buffer';
import { AbortError, IpcError } from '../errors';
import { DeadlineQueue, type Timed } from './deadlines';
import {
  EnvelopeView,
  RpcKind,
  Scratch,
  bodyLength,
  decodeAt,
  encodeBodyFrame,
  encodeControl,
  encodeError,
  isWireCode,
  FLAG_STREAM,
} from './envelope';
import type { Connection } from '../batch';
import { writeUvarint } from '../varint';
import type { CallContext, FrameSink, Holder, MethodHandler, PartValue, RpcMethods, RpcPeer } from './types';

/** Codes the server puts on the wire for its own errors (docs/rpc.md). */
export const WireCodes = {
  UNKNOWN_METHOD: 'ERR_UNKNOWN_METHOD',
  TIMEOUT: 'ERR_TIMEOUT',
  CANCELLED: 'ERR_CANCELLED',
  BAD_REQUEST: 'ERR_BAD_REQUEST',
  NOT_STREAMING: 'ERR_NOT_STREAMING',
  STREAMING: 'ERR_STREAMING',
  INTERNAL: 'ERR_INTERNAL',
  UNAVAILABLE: 'ERR_UNAVAILABLE',
  TOO_LARGE: 'ERR_MESSAGE_TOO_LARGE',
} as const;

/** Bodies up to this size are copied for a handler that keeps them past the frame (else the frame's memory is retained). */
const COPY_LIMIT = 4096;
/** Longest error message put on the wire (characters); longer ones are cut. */
const MAX_ERROR_MESSAGE = 8192;
/** Credits beyond this are not counted (a stream never needs more). */
const MAX_CREDIT = 2 ** 31 - 1;
const EMPTY = Buffer.alloc(0);
const noop = (): void => {};

/** @internal A method, as the core dispatches it. */
export interface MethodEntry {
  readonly name: string;
  readonly fn: MethodHandler;
  /** An async generator function (or marked so): the client must use stream(). */
  readonly stream: boolean;
  /** Declared async (AsyncFunction / AsyncGeneratorFunction): may read the body after returning. */
  readonly asyncFn: boolean;
  /** Marked as reading its body synchronously (the codec wrappers): no copy needed. */
  readonly bodySync: boolean;
}

/** @internal Set on a function to mark it as a streaming method (the codec helpers use it). */
export const kStreaming: unique symbol = Symbol('uds-ipc.rpc.streaming');
/** @internal Set on a function whose handler reads the body before it returns (e.g. decodes it). */
export const kBodySync: unique symbol = Symbol('uds-ipc.rpc.bodySync');

function tagOf(fn: unknown): string {
  return Object.prototype.toString.call(fn);
}

/** @internal Classifies one method. */
export function methodEntry(name: string, fn: MethodHandler): MethodEntry {
  const tag = tagOf(fn);
  const marked = fn as unknown as { [kStreaming]?: boolean; [kBodySync]?: boolean };
  return {
    name,
    fn,
    stream: tag === '[object AsyncGeneratorFunction]' || marked[kStreaming] === true,
    asyncFn: tag === '[object AsyncFunction]' || tag === '[object AsyncGeneratorFunction]',
    bodySync: marked[kBodySync] === true,
  };
}

// ─── The context handed to handlers ──────────────────────────────────────────

let abortCtx: (ctx: Ctx, reason: unknown) => void;

/** @internal The `ctx` of one call; its AbortController is made only if the handler asks for the signal. */
export class Ctx implements CallContext {
  readonly method: string;
  readonly peer: RpcPeer;
  readonly connection: Connection;
  readonly deadline: number | undefined;
  #ac: AbortController | undefined;
  #reason: unknown;
  #aborted = false;
  static {
    abortCtx = (ctx, reason) => {
      if (ctx.#aborted) return;
      ctx.#aborted = true;
      ctx.#reason = reason;
      ctx.#ac?.abort(reason);
    };
  }
  constructor(method: string, peer: RpcPeer, connection: Connection, deadline: number | undefined) {
    this.method = method;
    this.peer = peer;
    this.connection = connection;
    this.deadline = deadline;
  }
  get signal(): AbortSignal {
    if (!this.#ac) {
      this.#ac = new AbortController();
      if (this.#aborted) this.#ac.abort(this.#reason);
    }
    return this.#ac.signal;
  }
}

// ─── Calls ───────────────────────────────────────────────────────────────────

const QUEUED = 0;
const RUNNING = 1;
const DONE = 2;

class ServerCall implements Timed {
  deadlineAt = Infinity;
  heapIndex = -1;
  state = QUEUED;
  /** Stream: parts the client allows; the iterator; a next() in progress; parked for credit. */
  credit = 0;
  iter: AsyncIterator<PartValue> | undefined = undefined;
  pulling = false;
  parked = false;
  constructor(
    readonly conn: ServerConnection,
    readonly id: number,
    readonly entry: MethodEntry,
    readonly ctx: Ctx,
    /** Queued calls: the body view and the memory that holds it. */
    public body: Buffer,
    public holder: Holder | undefined,
  ) {}
}

/** Options of a {@link ServerCore}. */
export interface ServerCoreOptions {
  /** Calls running at once per connection; more wait (in order) until one ends. */
  maxConcurrentCalls: number;
  /** Largest frame sent; a larger reply or part is replaced by an ERROR `ERR_MESSAGE_TOO_LARGE`. */
  maxFrameSize: number;
  /** Handler failures without a code, replies of a wrong type, and similar: for the operator, never for the peer. */
  onError?: (err: Error, method: string | undefined, connection: Connection) => void;
}

/** Counters of a {@link ServerCore}. */
export interface ServerCoreMetrics {
  calls: number;
  failed: number;
  cancelled: number;
  timedOut: number;
  unknownMethods: number;
  invalidFrames: number;
  running: number;
  queued: number;
}

/** @internal The methods and what all connections share. */
export class ServerCore {
  readonly methods = new Map<string, MethodEntry>();
  readonly opts: ServerCoreOptions;
  readonly view = new EnvelopeView();
  readonly scratch = new Scratch();
  /** The envelope header of a reply (kind, id), written in front of its body. */
  readonly head = new Uint8Array(16);
  readonly deadlines = new DeadlineQueue<ServerCall>((c) => c.conn.expire(c));
  readonly connections = new Set<ServerConnection>();
  stopping = false;
  readonly m: ServerCoreMetrics = { calls: 0, failed: 0, cancelled: 0, timedOut: 0, unknownMethods: 0, invalidFrames: 0, running: 0, queued: 0 };
  #idle: (() => void) | undefined;

  constructor(methods: RpcMethods, opts: ServerCoreOptions) {
    for (const name of Object.keys(methods)) this.methods.set(name, methodEntry(name, methods[name]));
    this.opts = opts;
  }

  /** State for a new connection. */
  connection(sink: FrameSink, connection: Connection): ServerConnection {
    const c = new ServerConnection(this, sink, connection);
    this.connections.add(c);
    return c;
  }

  /** Calls running or queued, on all connections. */
  get active(): number {
    return this.m.running + this.m.queued;
  }

  /** Resolves once no call is running or queued. */
  whenIdle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.#idle;
      this.#idle = () => {
        prev?.();
        resolve();
      };
    });
  }

  /** @internal */
  checkIdle(): void {
    if (this.#idle && this.active === 0) {
      const f = this.#idle;
      this.#idle = undefined;
      f();
    }
  }

  /** Ends every call: ERROR `code` to the client, ctx.signal aborted with `reason`. */
  abortAll(code: string, message: string, reason: unknown): void {
    for (const c of this.connections) c.abortAll(code, message, reason);
  }

  report(err: Error, method: string | undefined, connection: Connection): void {
    const f = this.opts.onError;
    if (!f) return;
    try {
      f(err, method, connection);
    } catch (e) {
      process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
    }
  }
}

/** @internal One connection's calls. */
export class ServerConnection {
  readonly #core: ServerCore;
  #startingQueued = false; // inside #startQueued()
  readonly #sink: FrameSink;
  readonly connection: Connection;
  readonly peer: RpcPeer;
  readonly #calls = new Map<number, ServerCall>();
  #running = 0;
  readonly #queue: ServerCall[] = [];
  #qHead = 0;
  #drained: (() => void) | undefined;
  #drainedP: Promise<void> | undefined;
  #sending = 0; // send()s in progress: later frames go through send() too, in order
  #sent: (() => void) | undefined; // whenSent()'s
  #sentP: Promise<void> | undefined;
  #closed = false;
  readonly #sentOk = (): void => {
    this.#sending--;
    this.#checkSent();
  };
  readonly #sentFail = (e: unknown): void => {
    this.#sending--;
    this.close(e);
    this.#checkSent();
  };

  #checkSent(): void {
    if (this.#sending !== 0 || this.#sent === undefined) return;
    const f = this.#sent;
    this.#sent = undefined;
    this.#sentP = undefined;
    f();
  }

  /** Frames waiting for room in the connection's reply queue (maxReplyBytes). */
  get sending(): number {
    return this.#sending;
  }

  /**
   * Resolves once no frame waits for room: the caller reads no more of this
   * connection meanwhile, so a client that does not read its replies cannot
   * make the server run calls and hold their replies without end.
   */
  whenSent(): Promise<void> {
    if (this.#sending === 0) return Promise.resolve();
    return (this.#sentP ??= new Promise<void>((resolve) => (this.#sent = resolve)));
  }

  constructor(core: ServerCore, sink: FrameSink, connection: Connection) {
    this.#core = core;
    this.#sink = sink;
    this.connection = connection;
    this.peer = Object.freeze({ pid: connection.pid, uid: connection.uid, gid: connection.gid });
  }

  /** Requests waiting for a free slot. */
  get queued(): number {
    return this.#queue.length - this.#qHead;
  }

  /** Calls running now. */
  get running(): number {
    return this.#running;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Resolves once no request waits for a slot (or the connection closed) —
   * or once a running stream waits for the client's CREDIT: holding the
   * connection unread then would hold back that very CREDIT (a deadlock), so
   * the waiting requests take ownership of their bytes and reading goes on
   * (beyond maxConcurrentCalls waiting requests, new ones are then refused
   * with ERR_UNAVAILABLE).
   */
  whenDrained(): Promise<void> {
    if (this.queued === 0) return Promise.resolve();
    if (this.#anyParked()) {
      this.#ownQueued();
      return Promise.resolve();
    }
    return (this.#drainedP ??= new Promise<void>((resolve) => (this.#drained = resolve)));
  }

  // A running stream is waiting for the client's credit.
  #anyParked(): boolean {
    for (const c of this.#calls.values()) if (c.parked && c.state === RUNNING) return true;
    return false;
  }

  // Waiting requests stop depending on their batch staying held: copied, or their batch retained.
  #ownQueued(): void {
    const q = this.#queue;
    for (let i = this.#qHead; i < q.length; i++) {
      const c = q[i];
      if (c.holder === undefined) continue;
      c.body = keep(c.body, c.holder);
      c.holder = undefined;
    }
  }

  /**
   * Handles one frame from the client. `holder` owns the payload's memory:
   * it is retained when a call keeps a view of it past this frame (an async
   * handler given a large body). A queued request keeps its view until it
   * starts: the caller keeps the memory valid until {@link whenDrained}.
   */
  onFrame(payload: Uint8Array, holder: Holder): void {
    this.onFrameAt(payload, 0, payload.length, holder);
  }

  /** {@link ServerConnection.onFrame} for the payload `bytes[start, end)`. */
  onFrameAt(bytes: Uint8Array, start: number, end: number, holder: Holder): void {
    const core = this.#core;
    const v = core.view;
    if (!decodeAt(bytes, start, end, v)) {
      core.m.invalidFrames++;
      if (v.id >= 0) this.#error(v.id, WireCodes.BAD_REQUEST, v.error);
      return;
    }
    const id = v.id;
    switch (v.kind) {
      case RpcKind.REQUEST:
        return this.#request(bytes, holder, v);
      case RpcKind.CANCEL: {
        const c = this.#calls.get(id);
        if (c) {
          core.m.cancelled++;
          this.#end(c, new AbortError('The client cancelled the call'));
        }
        return;
      }
      case RpcKind.CREDIT: {
        const c = this.#calls.get(id);
        if (c && c.entry.stream) {
          c.credit = Math.min(MAX_CREDIT, c.credit + v.credit);
          if (c.parked && c.credit > 0) {
            c.parked = false;
            this.#pump(c);
          }
        }
        return;
      }
      default:
        core.m.invalidFrames++;
        this.#error(id, WireCodes.BAD_REQUEST, `a client may not send frames of kind ${v.kind}`);
    }
  }

  #request(payload: Uint8Array, holder: Holder, v: EnvelopeView): void {
    const core = this.#core;
    const id = v.id;
    if (this.#closed) return;
    if (this.#calls.has(id)) {
      core.m.invalidFrames++;
      return this.#error(id, WireCodes.BAD_REQUEST, `call id ${id} is already in use on this connection`);
    }
    if (core.stopping) return this.#error(id, WireCodes.UNAVAILABLE, 'the server is stopping; the call did not run');
    const method = v.method;
    const entry = core.methods.get(method);
    if (entry === undefined) {
      core.m.unknownMethods++;
      return this.#error(id, WireCodes.UNKNOWN_METHOD, `unknown method ${JSON.stringify(method)}`);
    }
    const stream = (v.flags & FLAG_STREAM) !== 0;
    if (stream !== entry.stream) {
      return stream
        ? this.#error(id, WireCodes.NOT_STREAMING, `method ${JSON.stringify(method)} is unary: use call(), not stream()`)
        : this.#error(id, WireCodes.STREAMING, `method ${JSON.stringify(method)} streams: use stream(), not call()`);
    }
    core.m.calls++;
    const len = v.bodyEnd - v.bodyStart;
    const body = len === 0 ? EMPTY : bodyView(payload.buffer as ArrayBuffer, payload.byteOffset + v.bodyStart, len);
    const ms = v.deadlineMs;
    const ctx = new Ctx(method, this.peer, this.connection, ms === 0 ? undefined : Date.now() + ms);
    if (this.#running < core.opts.maxConcurrentCalls && this.queued === 0) {
      if (!stream) return this.#runUnary(id, entry, ctx, body, holder, ms);
      const c = new ServerCall(this, id, entry, ctx, body, holder);
      c.credit = Math.min(MAX_CREDIT, v.credit);
      this.#register(c, ms);
      this.#setRunning(c);
      return this.#start(c);
    }
    // Full: wait in line (the caller holds the memory until whenDrained()).
    // While a stream waits for credit the connection is not held (see
    // whenDrained()): the line is then bounded by maxConcurrentCalls.
    if (this.queued >= core.opts.maxConcurrentCalls && this.#anyParked()) {
      core.m.calls--;
      return this.#error(
        id,
        WireCodes.UNAVAILABLE,
        `the server is running maxConcurrentCalls (${core.opts.maxConcurrentCalls}) calls on this connection with as many waiting; the call did not run`,
      );
    }
    const c = new ServerCall(this, id, entry, ctx, body, holder);
    c.credit = Math.min(MAX_CREDIT, v.credit);
    this.#register(c, ms);
    this.#queue.push(c);
    core.m.queued++;
  }

  #register(c: ServerCall, ms: number): void {
    this.#calls.set(c.id, c);
    if (ms !== 0) {
      c.deadlineAt = performance.now() + ms;
      this.#core.deadlines.add(c);
    }
  }

  // A unary call with a free slot: run it; no record unless it goes async.
  #runUnary(id: number, entry: MethodEntry, ctx: Ctx, body: Buffer, holder: Holder | undefined, ms: number, queued?: ServerCall): void {
    if (entry.asyncFn && !entry.bodySync) body = keep(body, holder);
    let r: unknown;
    try {
      r = (entry.fn as (b: Buffer, c: CallContext) => unknown)(body, ctx);
    } catch (e) {
      if (queued) this.#finish(queued);
      return this.#handlerError(id, entry.name, e);
    }
    if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function') {
      if (!entry.asyncFn && !entry.bodySync && body.length !== 0 && holder) holder.retain();
      let call = queued; // already registered and counted as running
      if (call === undefined) {
        call = new ServerCall(this, id, entry, ctx, EMPTY, undefined);
        this.#register(call, ms);
        this.#setRunning(call);
      }
      (r as PromiseLike<unknown>).then(
        (value) => {
          if (call.state !== RUNNING) return;
          this.#finish(call);
          this.#reply(call.id, entry.name, value);
        },
        (e) => {
          if (call.state !== RUNNING) return;
          this.#finish(call);
          this.#handlerError(call.id, entry.name, e);
        },
      );
      return;
    }
    if (queued) this.#finish(queued);
    this.#reply(id, entry.name, r);
  }

  // Starts a registered call already counted as running (a stream, or a queued unary call).
  #start(c: ServerCall): void {
    const entry = c.entry;
    const body = c.body;
    const holder = c.holder;
    c.body = EMPTY;
    c.holder = undefined;
    if (!entry.stream) return this.#runUnary(c.id, entry, c.ctx, body, holder, 0, c);
    const b = entry.bodySync ? body : keep(body, holder);
    let it: AsyncIterable<PartValue>;
    try {
      it = (entry.fn as (b: Buffer, c: CallContext) => AsyncIterable<PartValue>)(b, c.ctx);
      c.iter = it[Symbol.asyncIterator]();
    } catch (e) {
      this.#finish(c);
      return this.#handlerError(c.id, entry.name, e);
    }
    this.#pump(c);
  }

  #setRunning(c: ServerCall): void {
    c.state = RUNNING;
    this.#running++;
    this.#core.m.running++;
  }

  // Pulls the next part while the client gives credit.
  #pump(c: ServerCall): void {
    if (c.state !== RUNNING || c.pulling) return;
    if (c.credit <= 0) {
      c.parked = true;
      this.#checkDrained(); // a held connection must be read again: the CREDIT comes through it
      return;
    }
    c.pulling = true;
    let p: Promise<IteratorResult<PartValue>>;
    try {
      p = c.iter!.next();
    } catch (e) {
      c.pulling = false;
      this.#finish(c);
      return this.#handlerError(c.id, c.entry.name, e);
    }
    p.then(
      (r) => this.#onPart(c, r),
      (e) => {
        c.pulling = false;
        if (c.state !== RUNNING) return;
        this.#finish(c);
        this.#handlerError(c.id, c.entry.name, e);
      },
    );
  }

  #onPart(c: ServerCall, r: IteratorResult<PartValue>): void {
    c.pulling = false;
    if (c.state !== RUNNING) {
      // Ended (cancel, deadline, close) while the generator produced this part: close it now.
      if (!r.done) closeIter(c.iter!);
      return;
    }
    const core = this.#core;
    if (r.done) {
      this.#finish(c);
      this.#out(encodeControl(core.scratch, RpcKind.END, c.id));
      return;
    }
    const value = r.value;
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
      this.#finish(c);
      closeIter(c.iter!);
      core.report(
        new TypeError(`RPC method ${JSON.stringify(c.entry.name)} yielded ${describe(value)}; yield a Uint8Array or a string`),
        c.entry.name,
        this.connection,
      );
      return this.#error(c.id, WireCodes.INTERNAL, 'internal error');
    }
    const len = bodyLength(value);
    if (len + 11 > core.opts.maxFrameSize) {
      this.#finish(c);
      closeIter(c.iter!);
      return this.#tooLarge(c.id, c.entry.name, len);
    }
    c.credit--;
    const w = this.#out(encodeBodyFrame(core.scratch, RpcKind.PART, c.id, value, len));
    if (w === undefined) this.#pump(c);
    else w.then(() => this.#pump(c), noop);
  }

  // Ends a call early: ctx.signal aborts with `reason`, a stream's generator is closed.
  #end(c: ServerCall, reason: unknown): void {
    if (c.state === DONE) return;
    const wasQueued = c.state === QUEUED;
    this.#finish(c);
    if (!wasQueued) {
      abortCtx(c.ctx, reason);
      if (c.iter && !c.pulling) closeIter(c.iter);
    }
  }

  /** The call's deadline passed: ERROR ERR_TIMEOUT to the client, ctx.signal aborted. */
  expire(c: ServerCall): void {
    if (c.state === DONE) return;
    this.#core.m.timedOut++;
    this.#end(c, new IpcError('ERR_TIMEOUT', "The call's deadline passed"));
    this.#error(c.id, WireCodes.TIMEOUT, 'deadline exceeded');
  }

  /** Ends every call of this connection with ERROR `code` (server stop). */
  abortAll(code: string, message: string, reason: unknown): void {
    for (const c of [...this.#calls.values()]) {
      this.#end(c, reason);
      this.#error(c.id, code, message);
    }
  }

  // The call is over: free its slot and let a queued one start.
  #finish(c: ServerCall): void {
    const core = this.#core;
    const was = c.state;
    c.state = DONE;
    this.#calls.delete(c.id);
    if (c.heapIndex >= 0) core.deadlines.remove(c);
    if (was === QUEUED) {
      const i = this.#queue.indexOf(c, this.#qHead);
      if (i >= 0) this.#queue.splice(i, 1);
      core.m.queued--;
      this.#checkDrained();
    } else if (was === RUNNING) {
      this.#running--;
      core.m.running--;
      this.#startQueued();
    }
    core.checkIdle();
  }

  #startQueued(): void {
    // A queued call that finishes at once (a synchronous method) frees its
    // slot from inside #start(): the loop below takes the next one, rather
    // than a nested call per queued request (thousands deep: the stack).
    if (this.#startingQueued) return;
    const q = this.#queue;
    const core = this.#core;
    this.#startingQueued = true;
    try {
      while (this.#running < core.opts.maxConcurrentCalls && this.#qHead < q.length && !this.#closed) {
        const c = q[this.#qHead++];
        core.m.queued--;
        this.#setRunning(c);
        this.#start(c);
      }
    } finally {
      this.#startingQueued = false;
    }
    if (this.#qHead === q.length) {
      q.length = 0;
      this.#qHead = 0;
    }
    this.#checkDrained();
  }

  #checkDrained(): void {
    if (this.#drained && this.queued !== 0 && this.#anyParked()) this.#ownQueued();
    else if (this.queued !== 0) return;
    if (this.#drained) {
      const f = this.#drained;
      this.#drained = undefined;
      this.#drainedP = undefined;
      f();
    }
  }

  /** The connection is gone: every call ends (ctx.signal aborted with `reason`); nothing more is sent. */
  close(reason?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    const why = reason instanceof Error ? reason : new IpcError('ERR_NOT_CONNECTED', 'The connection closed');
    for (const c of [...this.#calls.values()]) this.#end(c, why);
    this.#queue.length = 0;
    this.#qHead = 0;
    this.#checkDrained();
    this.#core.connections.delete(this);
    this.#core.checkIdle();
  }

  #reply(id: number, method: string, value: unknown): void {
    const core = this.#core;
    let body: Uint8Array | string;
    if (value === undefined) body = EMPTY;
    else if (typeof value === 'string' || value instanceof Uint8Array) body = value;
    else {
      core.report(
        new TypeError(`RPC method ${JSON.stringify(method)} returned ${describe(value)}; return a Uint8Array, a string or nothing`),
        method,
        this.connection,
      );
      return this.#error(id, WireCodes.INTERNAL, 'internal error');
    }
    const len = bodyLength(body);
    if (len + 11 > core.opts.maxFrameSize) return this.#tooLarge(id, method, len);
    const sink = this.#sink;
    if (sink.writeParts === undefined || sink.sendParts === undefined) {
      this.#out(encodeBodyFrame(core.scratch, RpcKind.REPLY, id, body, len));
      return;
    }
    // As #out(), but the envelope header and the body go straight into the
    // connection's buffer (or a waiting send's), never assembled here first.
    if (this.#closed) return;
    const head = core.head;
    head[0] = RpcKind.REPLY;
    let hlen: number;
    if (id < 0x80) {
      head[1] = id;
      hlen = 2;
    } else hlen = 1 + writeUvarint(id, head, 1);
    if (this.#sending === 0) {
      try {
        if (sink.writeParts(head, hlen, body, len)) return;
      } catch (e) {
        this.close(e);
        return;
      }
    }
    this.#sending++;
    let p: Promise<void>;
    try {
      p = sink.sendParts(head, hlen, body, len);
    } catch (e) {
      this.#sending--;
      this.close(e);
      return;
    }
    p.then(this.#sentOk, this.#sentFail);
  }

  #tooLarge(id: number, method: string, len: number): void {
    const msg = `the reply of ${len} bytes does not fit the server's maxMessageSize or maxReplyBytes (a frame of at most ${this.#core.opts.maxFrameSize} bytes)`;
    this.#core.report(new IpcError('ERR_MESSAGE_TOO_LARGE', `RPC method ${JSON.stringify(method)}: ${msg}`), method, this.connection);
    this.#error(id, WireCodes.TOO_LARGE, msg);
  }

  // A handler threw or rejected: its code and message if it has a code, else a generic error (reported locally).
  #handlerError(id: number, method: string, e: unknown): void {
    const core = this.#core;
    core.m.failed++;
    const code = e !== null && typeof e === 'object' ? (e as { code?: unknown }).code : undefined;
    if (isWireCode(code)) {
      const m = (e as { message?: unknown }).message;
      const msg = typeof m === 'string' ? cutUtf8(m, MAX_ERROR_MESSAGE) : '';
      return this.#error(id, code, msg);
    }
    core.report(e instanceof Error ? e : new Error(`RPC method ${JSON.stringify(method)} threw ${describe(e)}`), method, this.connection);
    this.#error(id, WireCodes.INTERNAL, 'internal error');
  }

  // An ERROR frame. Its message is cut (in UTF-8 bytes) so that the frame
  // fits the largest reply this connection may send: the caller always gets
  // the code, never a frame the transport refuses.
  #error(id: number, code: string, message: string): void {
    const core = this.#core;
    let frame = encodeError(core.scratch, id, code, message);
    const max = core.opts.maxFrameSize;
    if (frame.length > max && message.length !== 0) {
      const overhead = frame.length - Buffer.byteLength(message, 'utf8');
      frame = encodeError(core.scratch, id, code, cutUtf8(message, Math.max(0, max - overhead - ELLIPSIS_BYTES)));
    }
    this.#out(frame);
  }

  // Sends a frame: write() while nothing waits, else send() (in order).
  // Returns a promise when the frame had to wait for room.
  #out(frame: Uint8Array): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (this.#sending === 0) {
      try {
        if (this.#sink.write(frame)) return undefined;
      } catch (e) {
        // Never silent: a frame the transport refuses is reported, and the
        // connection's calls end (its later requests get no answer).
        this.#core.report(e as Error, undefined, this.connection);
        this.close(e);
        return undefined;
      }
    }
    this.#sending++;
    let p: Promise<void>;
    try {
      p = this.#sink.send(frame);
    } catch (e) {
      this.#sending--;
      this.close(e);
      return undefined;
    }
    return p.then(this.#sentOk, this.#sentFail);
  }
}

/**
 * The Buffers handed to handlers as request bodies: views made without
 * going through `Buffer.from()` (as src/batch.ts's message views).
 */
class BodyBuffer extends Uint8Array {}
Object.setPrototypeOf(BodyBuffer.prototype, Buffer.prototype);

function bodyView(ab: ArrayBuffer, offset: number, len: number): Buffer {
  return new BodyBuffer(ab, offset, len) as unknown as Buffer;
}

// A body the handler may read after the frame is handled: small ones are
// copied, larger ones keep the frame's memory.
function keep(body: Buffer, holder: Holder | undefined): Buffer {
  if (body.length === 0) return body;
  if (body.length <= COPY_LIMIT || holder === undefined) {
    const copy = Buffer.allocUnsafe(body.length);
    copy.set(body);
    return copy;
  }
  holder.retain();
  return body;
}

function closeIter(it: AsyncIterator<PartValue>): void {
  if (typeof it.return !== 'function') return;
  try {
    const p = it.return();
    if (p && typeof p.then === 'function') p.then(noop, noop);
  } catch {
    // a generator that throws from its finally block: nothing to tell the client any more
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return `an instance of ${(v as object).constructor?.name ?? 'Object'}`;
  return `a ${typeof v}`;
}

/** '…' in UTF-8. */
const ELLIPSIS_BYTES = 3;

/** `s` cut to at most `max` bytes of UTF-8 (plus '…' when cut), at a character boundary. */
function cutUtf8(s: string, max: number): string {
  if (s.length <= max / 3 || Buffer.byteLength(s, 'utf8') <= max) return s;
  const b = Buffer.from(s, 'utf8');
  let end = max;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--; // not inside a character
  return b.subarray(0, end).toString('utf8') + '…';
}
