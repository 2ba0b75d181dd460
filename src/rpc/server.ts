/**
 * RpcServer: request/response over a {@link Reader}. Each connection is a
 * client; its frames are RPC envelopes (docs/rpc.md); replies go back on the
 * same connection.
 */
import { EventEmitter } from 'node:events';
import { Reader } from '../reader';
import type { ReaderConnection } from '../reader/connection';
import { Batch, type Connection } from '../batch';
import { invalidType, invalidValue, IpcError, type ErrorContext } from '../errors';
import { DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_REPLY_BYTES, checkObject, intOption, resolveStopOptions, type ReaderOptions, type StopOptions } from '../options';
import type { ReaderMetrics, StartOptions } from '../reader/types';
import { MAX_METHOD_BYTES } from './envelope';
import { ServerCore, type ServerConnection } from './server-core';
import type { DuplexConnection, RpcMethods } from './types';

/** Default of {@link RpcServerOptions.maxConcurrentCalls}. */
export const DEFAULT_MAX_CONCURRENT_CALLS = 128;

/** Options of {@link RpcServer}: the Reader's options, plus the RPC ones. */
export interface RpcServerOptions extends Omit<ReaderOptions, 'onError'> {
  /**
   * Calls running at once on one connection (unary and streams). Beyond it a
   * connection's requests wait unread, in order, until one ends — backpressure,
   * not memory; other connections are not affected. Default 128.
   */
  maxConcurrentCalls?: number;
  /**
   * Called for errors that are not the caller's fault: a handler that threw
   * without a `code` (the client only gets `ERR_INTERNAL`, "internal error";
   * the stack is here), a reply of the wrong type or too large, and the
   * Reader's own errors. `context` is `'handler'` for handler failures.
   */
  onError?: (error: Error, context: ErrorContext, connection?: Connection) => void;
}

/** Counters of an {@link RpcServer}. */
export interface RpcServerMetrics {
  /** Calls started (requests that named a method of the right kind). */
  calls: number;
  /** Calls whose handler threw or rejected. */
  failed: number;
  /** Calls the client cancelled (abort, early end of a stream). */
  cancelled: number;
  /** Calls whose deadline passed on the server. */
  timedOut: number;
  /** Requests for a method the server does not have. */
  unknownMethods: number;
  /** Frames that were not valid envelopes (or not allowed from a client). */
  invalidFrames: number;
  /** Calls running now, over all connections. */
  running: number;
  /** Requests waiting for a free slot (maxConcurrentCalls), over all connections. */
  queued: number;
  /** The Reader's metrics. */
  transport: ReaderMetrics;
}

/** The events of an {@link RpcServer} and their listener arguments. */
export interface RpcServerEvents {
  /** start() succeeded. */
  listening: [];
  /** A client connected. */
  connection: [connection: Connection];
  /** A client's connection closed: its calls' `ctx.signal` aborted. */
  disconnect: [connection: Connection, reason: IpcError | undefined];
  /** The server stopped. */
  close: [];
  /** Emitted only while a listener is attached; see {@link RpcServerOptions.onError}. */
  error: [error: Error, context: ErrorContext, connection: Connection | undefined];
}

const RPC_SERVER_KEYS = ['maxConcurrentCalls', 'onError'];

/**
 * Serves methods to {@link RpcClient}s on a Unix socket.
 *
 * `methods` maps names to handlers: `(body, ctx) => reply` (a Buffer,
 * Uint8Array, string, nothing, or a promise of one) for unary calls, or an
 * async generator function for server streaming (each `yield` is one part).
 * The body is a view of received memory, valid until the handler returns or
 * its promise settles (copy it to keep it). `ctx` carries the method, the
 * caller's credentials (`peer`), `signal` (aborted on deadline,
 * cancellation or disconnect) and `deadline`. Throw an error with a string
 * `code` to send that code and message to the caller; any other throw sends
 * only `ERR_INTERNAL` ("internal error") and is reported to `onError`.
 *
 * @example
 * const server = new RpcServer('/run/app.sock', {
 *   hello: (body, ctx) => `hello ${body} (uid ${ctx.peer.uid})`,
 *   async *ticks(body, ctx) { for (let i = 0; !ctx.signal.aborted; i++) yield String(i); },
 * });
 * await server.start();
 */
export class RpcServer extends EventEmitter {
  /** The socket path. */
  readonly path: string;
  readonly #reader: Reader;
  readonly #core: ServerCore;
  readonly #conns = new Map<number, ServerConnection>();
  readonly #open = new Set<Connection>(); // the Reader's live connections (for a stop that flushes replies)
  readonly #onError: RpcServerOptions['onError'];
  #stopPromise: Promise<void> | undefined;

  /**
   * @param path - Socket path (at most 107 bytes of UTF-8) or `'@name'` for an abstract socket.
   * @param methods - The methods, by name (1 to 256 bytes of UTF-8 each).
   * @param options - The Reader's options plus `maxConcurrentCalls`; see {@link RpcServerOptions}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`, `ERR_OUT_OF_RANGE`) for invalid methods or options; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, methods: RpcMethods, options?: RpcServerOptions) {
    super();
    checkMethods(methods);
    const o = checkObject('options', options);
    for (const k of ['concurrency', 'handler']) {
      if (k in o) throw invalidValue(`The "${k}" option is set by RpcServer itself and cannot be given`);
    }
    if (o.type !== undefined && o.type !== 'stream') {
      throw invalidValue(`RpcServer needs replies, which type ${JSON.stringify(o.type)} does not have yet: use type 'stream'`);
    }
    if (o.delivery === 'acked') {
      throw invalidValue("RpcServer does not take delivery: 'acked' (a call's reply is its acknowledgement; see docs/acked.md)");
    }
    const maxConcurrentCalls = intOption('maxConcurrentCalls', o.maxConcurrentCalls, DEFAULT_MAX_CONCURRENT_CALLS, 1, 2 ** 20);
    if (o.onError !== undefined && typeof o.onError !== 'function') throw invalidType('onError', 'a function', o.onError);
    this.#onError = o.onError as RpcServerOptions['onError'];
    const readerOptions: Record<string, unknown> = {};
    for (const k of Object.keys(o)) if (!RPC_SERVER_KEYS.includes(k)) readerOptions[k] = o[k];
    readerOptions.concurrency = 'connection';
    readerOptions.onError = (err: Error, context: ErrorContext, conn?: unknown) => this.#report(err, context, conn as Connection | undefined);
    // A reply frame must fit the connection's reply queue too (its 5-byte length prefix included).
    const maxReplyBytes = typeof o.maxReplyBytes === 'number' ? o.maxReplyBytes : DEFAULT_MAX_REPLY_BYTES;
    const maxFrameSize = Math.min(typeof o.maxMessageSize === 'number' ? o.maxMessageSize : DEFAULT_MAX_MESSAGE_SIZE, maxReplyBytes - 5);
    this.#core = new ServerCore(methods, {
      maxConcurrentCalls,
      maxFrameSize,
      onError: (err, _method, conn) => this.#report(err, 'handler', conn),
    });
    this.#reader = new Reader(path, (batch) => this.#onBatch(batch), readerOptions as ReaderOptions);
    this.path = this.#reader.path;
    this.#reader.on('listening', () => this.emit('listening'));
    this.#reader.on('connection', (c) => {
      this.#open.add(c);
      this.emit('connection', c);
    });
    this.#reader.on('disconnect', (c, reason) => {
      this.#open.delete(c);
      const st = this.#conns.get(c.id);
      if (st) {
        this.#conns.delete(c.id);
        st.close(reason ?? new IpcError('ERR_NOT_CONNECTED', 'The client closed its connection'));
      }
      this.emit('disconnect', c, reason);
    });
  }

  /** True between a successful start() and stop(). */
  get listening(): boolean {
    return this.#reader.listening;
  }

  /**
   * Binds and listens, as {@link Reader.start}.
   * @param options - `signal`, as for `Reader.start()`.
   * @throws IpcError `ERR_ADDRESS_IN_USE`, `ERR_NOT_A_SOCKET`, ... as `Reader.start()`.
   */
  async start(options?: StartOptions): Promise<void> {
    await this.#reader.start(options);
  }

  /**
   * Stops: new requests are answered `ERR_UNAVAILABLE` (they did not run),
   * calls in flight may finish until `timeoutMs`; then the ones left are
   * ended (`ctx.signal` aborted, the client gets `ERR_CANCELLED`) and the
   * Reader stops. Idempotent.
   * @param options - `timeoutMs` (default 5000) and `signal` (aborting it ends the calls at once).
   * @throws TypeError/RangeError for invalid options (synchronously).
   */
  stop(options?: StopOptions): Promise<void> {
    const { timeoutMs, signal } = resolveStopOptions(options);
    if (this.#stopPromise) return this.#stopPromise;
    const core = this.#core;
    core.stopping = true;
    const started = performance.now();
    this.#stopPromise = (async () => {
      if (core.active !== 0 && !signal?.aborted) {
        let timer: NodeJS.Timeout | undefined;
        let off: (() => void) | undefined;
        await Promise.race([
          core.whenIdle(),
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, timeoutMs);
            if (signal) {
              const onAbort = (): void => resolve();
              signal.addEventListener('abort', onAbort, { once: true });
              off = () => signal.removeEventListener('abort', onAbort);
            }
          }),
        ]);
        clearTimeout(timer);
        off?.();
      }
      core.abortAll('ERR_CANCELLED', 'the server stopped before the call finished', new IpcError('ERR_NOT_RUNNING', 'The server is stopping'));
      // The replies of the calls that finished go out before the connections close.
      let left = Math.max(0, timeoutMs - Math.round(performance.now() - started));
      if (left > 0 && !signal?.aborted) {
        await new Promise<void>((resolve) => queueMicrotask(resolve)); // this tick's replies handed over
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.all([...this.#open].map((c) => (c as ReaderConnection).whenFlushed())),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, left))),
        ]);
        clearTimeout(timer);
        left = Math.max(0, timeoutMs - Math.round(performance.now() - started));
      }
      await this.#reader.stop({ timeoutMs: left, signal });
      for (const st of this.#conns.values()) st.close(new IpcError('ERR_NOT_RUNNING', 'The server stopped'));
      this.#conns.clear();
      this.emit('close');
    })();
    return this.#stopPromise;
  }

  /** `await using server = ...`: calls {@link RpcServer.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Counters: see {@link RpcServerMetrics}. */
  metrics(): RpcServerMetrics {
    return { ...this.#core.m, transport: this.#reader.metrics() };
  }

  /** Lets the process exit while the server runs (as `Reader.unref()`). */
  unref(): this {
    this.#reader.unref();
    return this;
  }

  /** Undoes {@link RpcServer.unref}. */
  ref(): this {
    this.#reader.ref();
    return this;
  }

  // One batch of frames from one connection (concurrency 'connection': a
  // pending promise holds back only this connection's next batches).
  #onBatch(batch: Batch): void | Promise<void> {
    const conn = batch.connection as DuplexConnection;
    let st = this.#conns.get(conn.id);
    if (st === undefined) {
      st = this.#core.connection(conn, conn);
      this.#conns.set(conn.id, st);
    }
    return this.#frames(st, conn, batch, 0);
  }

  // The frames of `batch` from `from` on. While replies wait for room in the
  // connection's reply queue (a client that does not read them), no further
  // request is taken, not even from this batch, and the connection is not
  // read (the returned promise holds the batch): what the server holds for
  // it stays bounded by maxReplyBytes.
  #frames(st: ServerConnection, conn: DuplexConnection, batch: Batch, from: number): void | Promise<void> {
    const bytes = batch.bytes;
    const n = batch.length;
    let i = from;
    // The replies of the synchronous handlers go out when the loop ends, not
    // at the end of the tick: before the Reader acknowledges the batch and
    // before the microtasks run. Meanwhile the connection schedules no flush
    // of its own (hold()); what async handlers write later schedules one as
    // usual.
    const rc = conn as Partial<ReaderConnection>;
    const flush = rc.flush;
    if (flush !== undefined) rc.hold?.();
    try {
      while (i < n && st.sending === 0) {
        st.onFrameAt(bytes, batch.start(i), batch.end(i), batch);
        i++;
      }
    } finally {
      if (flush !== undefined) flush.call(conn);
    }
    if (i < n) return st.whenSent().then(() => this.#frames(st, conn, batch, i));
    // Requests beyond maxConcurrentCalls wait in the connection's queue as
    // views of this batch: keep it (and this connection paused) until they start.
    const queued = st.queued !== 0;
    const sending = st.sending !== 0;
    if (queued && sending) return Promise.all([st.whenDrained(), st.whenSent()]).then(noop);
    if (queued) return st.whenDrained();
    if (sending) return st.whenSent();
  }

  #report(err: Error, context: ErrorContext, conn: Connection | undefined): void {
    const f = this.#onError;
    if (f) {
      try {
        f(err, context, conn);
      } catch (e) {
        process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    if (this.listenerCount('error') > 0) this.emit('error', err, context, conn);
  }
}

// Typed overloads of the EventEmitter methods.
export interface RpcServer {
  /** Adds a listener for an {@link RpcServerEvents} event. */
  on<E extends keyof RpcServerEvents>(event: E, listener: (...args: RpcServerEvents[E]) => void): this;
  /** Adds a one-time listener for an {@link RpcServerEvents} event. */
  once<E extends keyof RpcServerEvents>(event: E, listener: (...args: RpcServerEvents[E]) => void): this;
  /** Removes a listener. */
  off<E extends keyof RpcServerEvents>(event: E, listener: (...args: RpcServerEvents[E]) => void): this;
}

function checkMethods(methods: unknown): asserts methods is RpcMethods {
  if (methods === null || typeof methods !== 'object' || Array.isArray(methods)) {
    throw invalidType('methods', 'an object of handler functions', methods, 'argument');
  }
  for (const [name, fn] of Object.entries(methods)) {
    const n = Buffer.byteLength(name, 'utf8');
    if (n === 0 || n > MAX_METHOD_BYTES) throw invalidValue(`Method names must be 1 to ${MAX_METHOD_BYTES} bytes of UTF-8; ${JSON.stringify(name.slice(0, 40))} is ${n}`);
    if (typeof fn !== 'function') throw invalidType(`methods.${name}`, 'a function', fn, 'argument');
  }
}

function noop(): void {}
