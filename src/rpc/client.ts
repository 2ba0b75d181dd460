/**
 * RpcClient: calls the methods of an {@link RpcServer} over a {@link Writer}
 * that also reads the replies on the same connection.
 */
import { EventEmitter } from 'node:events';
import { Writer } from '../writer';
import type { Batch } from '../batch';
import { invalidType, invalidValue, IpcError, type ErrorContext } from '../errors';
import { DEFAULT_MAX_MESSAGE_SIZE, checkObject, intOption, resolveStopOptions, validateSignal, type StopOptions, type WriterOptions } from '../options';
import { kCommit, kCork, kDeferRelease, kQueueFramed, kReserve, kRingBytes, kTryQueue } from '../stream';
import type { ReconnectingInfo, WriterMetrics } from '../writer/types';
import { ClientCore, type CallCallback, type RpcStream } from './client-core';
import type { BodyInput } from './envelope';
import type { CallOptions, FrameSink, StreamOptions } from './types';

/** Default of {@link RpcClientOptions.streamWindow}. */
export const DEFAULT_STREAM_WINDOW = 16;
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const MAX_WINDOW = 2 ** 20;

/** Options of {@link RpcClient}: the Writer's options, plus the RPC ones. */
export interface RpcClientOptions extends Omit<WriterOptions, 'onError'> {
  /** Default deadline of every call and stream, in ms; 0 (the default) = none. A call's own `timeoutMs` overrides it. */
  timeoutMs?: number;
  /** Stream parts the server may send ahead of the consumer (flow control window). Default 16. */
  streamWindow?: number;
  /**
   * Largest unacknowledged reply data held while replies are being handled,
   * above which the connection is not read (as the Writer's `maxPendingBytes`
   * for `onMessage`). Passed to the Writer.
   */
  maxPendingBytes?: number;
  /** Called for errors that are not the caller's fault (connect failures, frames from the server that break the protocol). */
  onError?: (error: Error, context: ErrorContext) => void;
}

/** Counters of an {@link RpcClient}. */
export interface RpcClientMetrics {
  /** Unary calls started. */
  calls: number;
  /** Streams started. */
  streams: number;
  /** Calls and streams that failed (remote errors, deadlines, aborts, lost connections). */
  failed: number;
  /** Calls whose deadline passed. */
  timedOut: number;
  /** Calls aborted by their signal or ended early by their consumer... (aborts only). */
  aborted: number;
  /** Calls failed with `ERR_CONNECTION_LOST`. */
  lost: number;
  /** Replies that came after their call ended (deadline, abort): discarded. */
  lateFrames: number;
  /** Frames from the server that were not valid envelopes: ignored. */
  invalidFrames: number;
  /** Calls and streams in flight now. */
  inFlight: number;
  /** The Writer's metrics. */
  transport: WriterMetrics;
}

/** The events of an {@link RpcClient} and their listener arguments. */
export interface RpcClientEvents {
  /** A connection to the server is up. */
  connect: [];
  /** The connection was lost: calls whose request had been sent failed with `ERR_CONNECTION_LOST`. */
  disconnect: [reason: IpcError];
  /** The client will try to connect again. */
  reconnecting: [info: ReconnectingInfo];
  /** The client stopped. */
  close: [];
  /** Emitted only while a listener is attached; see {@link RpcClientOptions.onError}. */
  error: [error: Error, context: ErrorContext];
}

const RPC_CLIENT_KEYS = ['timeoutMs', 'streamWindow', 'onError'];

/**
 * Calls the methods of an {@link RpcServer}. Many calls may be in flight on
 * its one connection; replies come back in any order, matched by id.
 *
 * The connection is made in the background and remade when it breaks (the
 * Writer's `reconnect` policy). A call whose request was already handed to
 * the kernel when the connection broke fails with `ERR_CONNECTION_LOST`
 * (it may have run; it is never re-sent); a call whose request was not sent
 * yet goes out on the next connection.
 *
 * @example
 * const client = new RpcClient('/run/app.sock', { timeoutMs: 5000 });
 * await client.start();
 * const reply = await client.call('hello', 'world');
 * for await (const part of client.stream('ticks', '')) console.log(part.toString());
 */
export class RpcClient extends EventEmitter {
  /** The socket path. */
  readonly path: string;
  readonly #writer: Writer;
  readonly #core: ClientCore;
  readonly #onError: RpcClientOptions['onError'];
  #stopPromise: Promise<void> | undefined;

  /**
   * @param path - The server's socket path, or `'@name'` for an abstract socket.
   * @param options - The Writer's options plus `timeoutMs` and `streamWindow`; see {@link RpcClientOptions}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE`, `ERR_OUT_OF_RANGE`) for invalid options; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, options?: RpcClientOptions) {
    super();
    const o = checkObject('options', options);
    if ('onMessage' in o) throw invalidValue('The "onMessage" option is set by RpcClient itself and cannot be given');
    const timeoutMs = intOption('timeoutMs', o.timeoutMs, 0, 0, MAX_TIMEOUT_MS);
    const streamWindow = intOption('streamWindow', o.streamWindow, DEFAULT_STREAM_WINDOW, 1, MAX_WINDOW);
    if (o.onError !== undefined && typeof o.onError !== 'function') throw invalidType('onError', 'a function', o.onError);
    this.#onError = o.onError as RpcClientOptions['onError'];
    const writerOptions: Record<string, unknown> = {};
    for (const k of Object.keys(o)) if (!RPC_CLIENT_KEYS.includes(k)) writerOptions[k] = o[k];
    writerOptions.onError = (err: Error, context: ErrorContext) => this.#report(err, context);
    writerOptions.onMessage = (batch: Batch) => this.#onBatch(batch);
    const writer = new Writer(path, writerOptions as WriterOptions);
    this.#writer = writer;
    this.path = writer.path;
    const queue = writer as unknown as {
      [kTryQueue](data: Uint8Array): boolean;
      [kQueueFramed](src: Uint8Array, start: number, end: number, frames: number, payload: number): boolean;
      [kCork](corked: boolean): void;
      [kDeferRelease](): void;
      [kReserve](len: number): number;
      [kCommit](len: number): void;
      readonly [kRingBytes]: Buffer;
    };
    // Its batches are the RpcClient's own (replies are copied, or the batch
    // retained): a reply's caller need not wait for their release.
    queue[kDeferRelease]();
    // write(): queue only if it fits and nothing waits (not counted as a drop when it does not).
    const sink: FrameSink = {
      write: (frame) => queue[kTryQueue](frame),
      send: (frame) => writer.send(frame),
      writeFramed: (src, start, end, frames, payload) => queue[kQueueFramed](src, start, end, frames, payload),
      cork: () => queue[kCork](true),
      uncork: () => queue[kCork](false),
      reserve: (len) => queue[kReserve](len),
      bytes: () => queue[kRingBytes],
      commit: (len) => queue[kCommit](len),
    };
    // (The Writer validated maxMessageSize.)
    const maxFrameSize = typeof o.maxMessageSize === 'number' ? o.maxMessageSize : DEFAULT_MAX_MESSAGE_SIZE;
    this.#core = new ClientCore(sink, { timeoutMs, streamWindow, maxFrameSize, onError: (e) => this.#report(e, 'connection') });
    writer.on('connect', () => this.emit('connect'));
    writer.on('reconnecting', (info) => this.emit('reconnecting', info));
    writer.on('close', () => this.emit('close'));
    writer.on('disconnect', (reason: IpcError, info?: { sent?: number }) => {
      // Every frame the lost connection took is counted in `sent` by now
      // (src/writer/types.ts); an exact per-connection count, if the event
      // ever carries one, is preferred.
      const sent = typeof info?.sent === 'number' ? info.sent : writer.metrics().sent;
      this.#core.connectionLost(sent, reason);
      this.emit('disconnect', reason);
    });
  }

  /** True while a connection to the server is up. */
  get connected(): boolean {
    return this.#writer.connected;
  }

  /** Calls and streams in flight. */
  get inFlight(): number {
    return this.#core.inFlight;
  }

  /**
   * Starts connecting in the background. Calls made before the connection
   * is up wait in the queue (their deadlines run).
   * @throws IpcError `ERR_NOT_RUNNING` after stop().
   */
  async start(): Promise<void> {
    this.#writer.start();
  }

  /**
   * Calls `method` with `body` and resolves with the reply body.
   * @param method - The method name (1 to 256 bytes of UTF-8).
   * @param body - The request body: bytes, or a string sent as UTF-8. Default empty.
   * @param options - `timeoutMs` (this call's deadline; 0 = none) and `signal`.
   * @returns The reply. Bodies up to 4 KiB are copies; larger ones are views of the received memory, kept alive for them.
   * @throws (as a rejection) IpcError `ERR_REMOTE` (the handler failed: `remoteCode`, message), `ERR_UNKNOWN_METHOD`,
   * `ERR_TIMEOUT`, `ERR_CONNECTION_LOST`, `ERR_NOT_RUNNING` (stopped), `ERR_MESSAGE_TOO_LARGE`; `AbortError` (`ABORT_ERR`);
   * TypeError for invalid arguments.
   */
  call(method: string, body?: BodyInput, options?: CallOptions): Promise<Buffer>;
  /**
   * The callback form of {@link RpcClient.call}: the same call, with the
   * outcome passed to `callback(err, reply)` instead of a promise. It saves
   * the promise and its microtask per call (see docs/rpc.md). `callback` is
   * called exactly once, never before call() returns; every error a
   * promise would reject with comes to it as `err`. An exception thrown by
   * `callback` is thrown again on a later tick (an uncaught exception, as
   * with Node's callback APIs); the client's other calls are unaffected.
   * @throws TypeError `ERR_INVALID_ARG_TYPE` when `callback` is not a function.
   */
  call(method: string, body: BodyInput | undefined, callback: CallCallback): void;
  call(method: string, body: BodyInput | undefined, options: CallOptions | undefined, callback: CallCallback): void;
  call(method: string, body: BodyInput = EMPTY, options?: CallOptions | CallCallback, callback?: CallCallback): Promise<Buffer> | void {
    if (typeof options === 'function') {
      if (callback !== undefined) throw invalidType('options', 'an object', options, 'argument');
      return this.#callWith(method, body, undefined, options);
    }
    if (callback !== undefined) return this.#callWith(method, body, options, callback);
    if (options === undefined) {
      if (typeof body !== 'string' && !(body instanceof Uint8Array)) return Promise.reject(badBody(body));
      return this.#core.call(method, body, undefined, undefined);
    }
    let o: { timeoutMs: number | undefined; signal: AbortSignal | undefined };
    try {
      if (typeof body !== 'string' && !(body instanceof Uint8Array)) throw badBody(body);
      o = callOptions(options, false);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#core.call(method, body, o.timeoutMs, o.signal);
  }

  #callWith(method: string, body: BodyInput, options: CallOptions | undefined, callback: CallCallback): void {
    if (typeof callback !== 'function') throw invalidType('callback', 'a function', callback, 'argument');
    if (typeof body !== 'string' && !(body instanceof Uint8Array)) {
      process.nextTick(callback, badBody(body));
      return;
    }
    if (options === undefined) {
      this.#core.callWith(method, body, undefined, undefined, callback);
      return;
    }
    let o: { timeoutMs: number | undefined; signal: AbortSignal | undefined };
    try {
      o = callOptions(options, false);
    } catch (e) {
      process.nextTick(callback, e);
      return;
    }
    this.#core.callWith(method, body, o.timeoutMs, o.signal, callback);
  }

  /**
   * Calls a streaming `method`: the parts come as an async iterable of
   * Buffers. The server sends at most `window` parts ahead of what the loop
   * has read; leaving the loop early cancels the call (the server's
   * generator is closed).
   * @param method - The method name.
   * @param body - The request body. Default empty.
   * @param options - `timeoutMs` (for the whole stream), `signal`, `window`.
   * @returns The stream; errors (as for {@link RpcClient.call}) are thrown by the loop.
   * @throws TypeError for invalid arguments; IpcError `ERR_NOT_RUNNING` after stop(); `AbortError` for an aborted signal.
   */
  stream(method: string, body: BodyInput = EMPTY, options?: StreamOptions): RpcStream {
    if (typeof body !== 'string' && !(body instanceof Uint8Array)) throw badBody(body);
    const o = options === undefined ? { timeoutMs: undefined, signal: undefined, window: undefined } : callOptions(options, true);
    return this.#core.stream(method, body, o.timeoutMs, o.signal, o.window);
  }

  /**
   * Stops: new calls reject `ERR_NOT_RUNNING`; calls in flight may finish
   * until `timeoutMs`, then the ones left reject `ERR_NOT_RUNNING`, and the
   * Writer stops. Idempotent.
   * @param options - `timeoutMs` (default 5000) and `signal` (aborting it gives up on calls in flight at once).
   * @throws TypeError/RangeError for invalid options (synchronously).
   */
  stop(options?: StopOptions): Promise<void> {
    const { timeoutMs, signal } = resolveStopOptions(options);
    if (this.#stopPromise) return this.#stopPromise;
    const core = this.#core;
    const started = performance.now();
    core.refuse(new IpcError('ERR_NOT_RUNNING', 'The RpcClient is stopping: no new calls'));
    this.#stopPromise = (async () => {
      if (core.inFlight !== 0 && !signal?.aborted) {
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
      core.close(new IpcError('ERR_NOT_RUNNING', 'The RpcClient was stopped'));
      const left = Math.max(0, timeoutMs - Math.round(performance.now() - started));
      await this.#writer.stop({ timeoutMs: left, signal });
    })();
    return this.#stopPromise;
  }

  /** `await using client = ...`: calls {@link RpcClient.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Counters: see {@link RpcClientMetrics}. */
  metrics(): RpcClientMetrics {
    return { ...this.#core.m, inFlight: this.#core.inFlight, transport: this.#writer.metrics() };
  }

  /** Lets the process exit while the client runs (as `Writer.unref()`). */
  unref(): this {
    this.#writer.unref();
    return this;
  }

  /** Undoes {@link RpcClient.unref}. */
  ref(): this {
    this.#writer.ref();
    return this;
  }

  #onBatch(batch: Batch): void {
    const core = this.#core;
    let keep = false;
    const bytes = batch.bytes;
    for (let i = 0, n = batch.length; i < n; i++) if (core.onFrameAt(bytes, batch.start(i), batch.end(i))) keep = true;
    if (keep) batch.retain();
  }

  #report(err: Error, context: ErrorContext): void {
    const f = this.#onError;
    if (f) {
      try {
        f(err, context);
      } catch (e) {
        process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    if (this.listenerCount('error') > 0) this.emit('error', err, context);
  }
}

// Typed overloads of the EventEmitter methods.
export interface RpcClient {
  /** Adds a listener for an {@link RpcClientEvents} event. */
  on<E extends keyof RpcClientEvents>(event: E, listener: (...args: RpcClientEvents[E]) => void): this;
  /** Adds a one-time listener for an {@link RpcClientEvents} event. */
  once<E extends keyof RpcClientEvents>(event: E, listener: (...args: RpcClientEvents[E]) => void): this;
  /** Removes a listener. */
  off<E extends keyof RpcClientEvents>(event: E, listener: (...args: RpcClientEvents[E]) => void): this;
}

const EMPTY = Buffer.alloc(0);

function badBody(body: unknown): TypeError {
  return invalidType('body', 'a Uint8Array or a string', body, 'argument');
}

function callOptions(options: unknown, stream: boolean): { timeoutMs: number | undefined; signal: AbortSignal | undefined; window: number | undefined } {
  const o = checkObject('options', options);
  for (const k of Object.keys(o)) {
    if (k !== 'timeoutMs' && k !== 'signal' && !(stream && k === 'window')) {
      throw invalidValue(`Unknown option "${k}" in ${stream ? 'stream' : 'call'} options. Known options: timeoutMs, signal${stream ? ', window' : ''}`);
    }
  }
  return {
    timeoutMs: o.timeoutMs === undefined ? undefined : intOption('timeoutMs', o.timeoutMs, 0, 0, MAX_TIMEOUT_MS),
    signal: validateSignal(o.signal),
    window: stream && o.window !== undefined ? intOption('window', o.window, DEFAULT_STREAM_WINDOW, 1, MAX_WINDOW) : undefined,
  };
}
