/**
 * Writer: the client side. Connects to a Reader's socket in the background
 * and sends messages, reconnecting when the connection breaks.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Writable } from 'node:stream';
import { AbortGroup, abortError, onAbort } from './abort';
import type { Batch, Connection } from './batch';
import { binding, type NativeWriterHandle } from './binding';
import { fromNative, invalidValue, IpcError, type ErrorContext } from './errors';
import { formatMetrics, WRITER_METRICS, type MetricLabels } from './metrics';
import {
  notWithType,
  resolveSignalOptions,
  resolveStopOptions,
  resolveWriterOptions,
  validatePath,
  type ResolvedWriterOptions,
  type StopOptions,
  type WriterOptions,
} from './options';
import type { Protocol } from './protocol';
import { createWritable, kCommit, kCork, kDeferRelease, kQueueFramed, kReserve, kRingBytes, kTryQueue, type WritableOptions } from './stream';
import * as callerData from './writer/caller-data';
import { WriterInbox, type ReceivingWriterHandle } from './writer/inbox';
import { WriterConnection } from './writer/connection';
import { fdError, FdLedger, resolveFds, splitFds, WaitingFds, type WriteOptions } from './writer/fds';
import {
  splitReceiveOptions,
  WRITER_RECEIVE_METRICS,
  type ResolvedReceiveOptions,
  type WriterReceiveOptions,
} from './writer/receive-options';
import { allocateRing, RingProducer, type Target } from './writer/ring-producer';
import type { FlushOptions, SendOptions, WriterEvents, WriterListener, WriterMetrics, WriterStopResult } from './writer/types';

export type { MessageHandler, WriterReceiveOptions } from './writer/receive-options';
export type {
  FlushOptions,
  ReconnectingInfo,
  SendOptions,
  WriterEvents,
  WriterListener,
  WriterMetrics,
  WriterStopResult,
} from './writer/types';

// Typed overloads of the EventEmitter methods (declaration merging with the class).
export interface Writer {
  /** Adds a listener for a {@link WriterEvents} event. */
  on<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Adds a one-time listener for a {@link WriterEvents} event. */
  once<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Same as {@link Writer.on}. */
  addListener<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Adds a listener at the front of the list. */
  prependListener<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Adds a one-time listener at the front of the list. */
  prependOnceListener<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Removes a listener. */
  off<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
  /** Same as {@link Writer.off}. */
  removeListener<E extends keyof WriterEvents>(event: E, listener: WriterListener<E>): this;
}

/** A send() waiting for room in the queue. */
interface PendingSend {
  data: Uint8Array | string;
  write: WriteOptions | undefined; // its fds, if any
  resolve: () => void;
  reject: (e: Error) => void;
}

type State = 'idle' | 'running' | 'stopping' | 'stopped';

/** A flush() waiting for its target. */
interface Waiter extends Target {
  resolve: () => void;
  reject: (e: Error) => void;
}

const noop = (): void => {};
const RESOLVED = Promise.resolve();
// As module constants, for write() (see ring-producer.ts).
const { copyBytes, messageLength } = callerData;
// metricsText(): the one-way metrics, then the receive ones.
const ALL_WRITER_METRICS = [...WRITER_METRICS, ...WRITER_RECEIVE_METRICS];

// Indices of the receive counters (#rm): in a Float64Array rather than
// fields, as the Reader keeps its counters (no shape change past 2^31).
const RM_RECEIVED = 0;
const RM_BYTES = 1;
const RM_BATCHES = 2;
const RM_COUNT = 3;

/** The peer's credentials as a CONNECT event carries them. */
interface Credentials {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Sends messages to a Reader. `write()` copies each message into a bounded
 * queue shared with the writer's IO thread and returns at once; `send()` is
 * its awaitable form, and `createWriteStream()` a `stream.Writable` over it.
 *
 * With the `onMessage` option it also receives: what the reader sends back on
 * the connection is handed to `onMessage` in batches, as to a Reader's
 * handler (same {@link Batch} type, same backpressure: see
 * {@link WriterReceiveOptions}). Every batch of a connection is delivered
 * before that connection's `'disconnect'`.
 *
 * Events ({@link WriterEvents}): `'connect'`, `'disconnect'` (reason),
 * `'reconnecting'` (info), `'drain'` (after write() returned false, once there
 * is room again), `'close'`, `'error'` (err, context) — emitted only when a
 * listener is attached.
 */
export class Writer extends EventEmitter {
  /** The socket path. */
  readonly path: string;
  readonly #opts: ResolvedWriterOptions;
  readonly #handle: NativeWriterHandle;
  readonly #ring: RingProducer<Waiter>;
  readonly #maxMessage: number;
  #fdLedger: FdLedger | undefined; // descriptors held for unsent messages (made on first use)
  readonly #waitingFds = new WaitingFds(); // dups held by send()s waiting for room (at most maxBufferedFds)
  readonly #event: Protocol['event']; // tags and layout of the handle's events
  #state: State = 'idle';
  #written = 0;
  #dropped = 0;
  #failed = 0;
  #stopPromise: Promise<WriterStopResult> | undefined;
  #stopResolve: ((r: WriterStopResult) => void) | undefined;
  #lastNative: Record<string, number | boolean> = {};
  #sends: PendingSend[] = []; // send() calls waiting for room, in call order
  readonly #aborts = new AbortGroup(); // signals of waiting send()/flush() calls
  // Receiving (onMessage); all undefined/unused for a one-way Writer.
  readonly #receive: ResolvedReceiveOptions | undefined;
  readonly #inbox: WriterInbox | undefined; // every event goes through it, in order
  #conn: WriterConnection | undefined; // the connection batches come from (from its CONNECT event)
  #busy = false; // an async onMessage's promise is pending: the next events wait
  #deferRelease = false; // kDeferRelease (RpcClient)
  #toRelease: Batch[] = []; // batches done with, released by #releaseTask (kDeferRelease)
  readonly #releaseTask = (): void => this.#releaseDeferred();
  #forced = false; // the stop deadline passed: batches still queued are released undelivered
  #refed = true;
  #stopTimer: NodeJS.Timeout | undefined; // the stop deadline, for onMessage
  readonly #rm = new Float64Array(RM_COUNT);
  readonly #session: string | undefined; // delivery: 'acked'

  /**
   * @param path - The Reader's socket path, or `'@name'` for an abstract socket.
   * @param options - See {@link WriterOptions}, and {@link WriterReceiveOptions} (`onMessage`, `maxPendingBytes`).
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_VALUE`) for invalid options; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, options?: WriterOptions & WriterReceiveOptions) {
    super();
    this.path = validatePath(path);
    const { rest, receive } = splitReceiveOptions(options);
    this.#opts = resolveWriterOptions(rest, this.path);
    this.#receive = receive;
    if (receive && this.#opts.type !== 'stream') throw notWithType('onMessage', this.#opts.type);
    if (receive && this.#opts.delivery === 'acked') {
      throw invalidValue("onMessage is not supported with delivery: 'acked' (the reader sends acknowledgements on that connection)");
    }
    if (this.#opts.delivery === 'acked') this.#session = randomBytes(16).toString('hex');
    const b = binding();
    const p = b.protocol;
    this.#event = p.event;
    // A packet holds one message: no more than one packet can carry.
    this.#maxMessage =
      this.#opts.type === 'stream'
        ? this.#opts.maxMessageSize
        : Math.min(this.#opts.maxMessageSize, b.packetLimit(this.#opts.type, this.#opts.sendBufferSize));
    const o = this.#opts;
    const { shared, ctrl, ring } = allocateRing(p, o.maxBufferedBytes);
    this.#handle = new b.WriterHandle(
      this.path,
      {
        type: o.type,
        delivery: o.delivery,
        handshakeTimeoutMs: o.handshakeTimeoutMs,
        session: this.#session ?? '',
        sendBufferSize: o.sendBufferSize,
        writeTimeoutMs: o.writeTimeoutMs,
        expectOwner: o.expectOwner,
        reconnect: o.reconnect === false ? false : { ...o.reconnect },
        receive: receive
          ? {
              maxMessageSize: o.maxMessageSize,
              maxPendingBytes: receive.maxPendingBytes,
              acceptFds: receive.acceptFds,
              maxPendingFds: receive.maxPendingFds,
            }
          : undefined,
      },
      shared,
    );
    if (receive) {
      this.#inbox = new WriterInbox(p.event, this.#handle as ReceivingWriterHandle, (memory) => b.release(memory));
    }
    this.#ring = new RingProducer<Waiter>(
      ctrl,
      ring,
      this.#handle,
      p,
      { maxBytes: o.maxBufferedBytes, maxWrites: o.maxBufferedWrites },
      () => this.#settle(),
      o.delivery === 'acked',
    );
  }

  /** `delivery: 'acked'`: this Writer's session id (32 hex digits, random per Writer), which the reader sees as `connection.session`; undefined otherwise. */
  get session(): string | undefined {
    return this.#session;
  }

  /** The delivery mode this Writer was made with. */
  get delivery(): 'at-most-once' | 'acked' {
    return this.#opts.delivery;
  }

  /**
   * The largest message `write()` accepts, in bytes: `maxMessageSize`, and
   * for `type: 'seqpacket'` no more than one packet can hold (computed when
   * the Writer is made, from its `sendBufferSize`).
   */
  get maxMessageSize(): number {
    return this.#maxMessage;
  }

  /** True while the Writer runs and a connection is up. */
  get connected(): boolean {
    return this.#state === 'running' && this.#handle.metrics().connected === true;
  }

  /**
   * Starts connecting in the background (idempotent). Messages written before
   * start() wait in the queue. A stopped Writer cannot be restarted.
   * @returns this Writer.
   * @throws IpcError `ERR_NOT_RUNNING` after stop().
   */
  start(): this {
    if (this.#state === 'running') return this;
    if (this.#state !== 'idle') throw new IpcError('ERR_NOT_RUNNING', 'This Writer was stopped; create a new one');
    this.#state = 'running';
    this.#handle.start((taken) => this.#onEvent(taken));
    return this;
  }

  /**
   * Queues one message. Returns true if it was queued, false if the queue was
   * full (the message is dropped and counted; wait for `'drain'`). The bytes
   * are copied: the caller may reuse its buffer at once. Throws
   * `ERR_MESSAGE_TOO_LARGE` above `maxMessageSize`, `ERR_NOT_RUNNING` once
   * stop() was called, and a TypeError for anything but a Uint8Array or string.
   * @param data - One message: bytes, or a string sent as UTF-8.
   * @returns true if queued; false if dropped because the queue is full.
   */
  write(data: Uint8Array | string, options?: WriteOptions): boolean {
    if (this.#state === 'stopping' || this.#state === 'stopped') {
      throw new IpcError('ERR_NOT_RUNNING', 'write() after stop(): this Writer no longer sends');
    }
    const len = messageLength(data, this.#maxMessage);
    if (options !== undefined) {
      const fds = resolveFds(options);
      if (fds !== undefined) return this.#writeWithFds(data, len, fds);
    }
    this.#written++;
    if (this.#ring.append(data, len)) return true;
    this.#dropped++;
    this.#wantDrain(len);
    return false;
  }

  // write() of a message that carries descriptors.
  #writeWithFds(data: Uint8Array | string, len: number, fds: Int32Array): boolean {
    if (this.#opts.type === 'dgram') throw notWithType('fds', this.#opts.type);
    const ring = this.#ring;
    const ledger = (this.#fdLedger ??= new FdLedger());
    const max = this.#opts.maxBufferedFds;
    this.#written++;
    if (!ledger.fits(ring.releasedFrames(), fds.length, max)) {
      this.#dropped++;
      if (ring.drainTarget === undefined) {
        // 'drain' once the messages holding the descriptors needed are sent.
        ring.drainTarget = { head: ring.roomHead(), sent: ledger.sentTarget(fds.length, max) };
        if (this.#state !== 'idle') this.#arm();
      }
      return false;
    }
    const handle = this.#handle;
    let queued: boolean;
    try {
      queued = ring.append(data, len, (start, end) => handle.attachFds(start, end, fds));
    } catch (e) {
      this.#written--;
      throw fdError(e);
    }
    if (!queued) {
      this.#dropped++;
      this.#wantDrain(len);
      return false;
    }
    ledger.add(ring.accepted, fds.length);
    return true;
  }

  /**
   * Queues one message, waiting for room (`'drain'`) while the queue is full,
   * instead of dropping it as write() would. Resolves once the message is in
   * the queue — not once it is sent: `await flush()` for that. Concurrent
   * send() calls queue their messages in call order (a write() made meanwhile
   * may overtake messages that are still waiting). The bytes are copied: the
   * caller may reuse its buffer at once.
   * @param data - One message: bytes, or a string sent as UTF-8.
   * @param options - `signal`: abort to give up waiting; the message is then not queued.
   * @throws (as a rejection) `AbortError` (`ABORT_ERR`) when aborted before the message was queued;
   * IpcError `ERR_NOT_RUNNING` after stop() (including for sends still waiting when stop() is called);
   * `ERR_MESSAGE_TOO_LARGE`; TypeError `ERR_INVALID_ARG_TYPE` for other data or options.
   */
  send(data: Uint8Array | string, options?: SendOptions): Promise<void> {
    try {
      const { fds, rest } = splitFds(options);
      const { signal } = resolveSignalOptions('send options', rest);
      if (signal?.aborted) throw abortError(signal);
      if (this.#state === 'stopping' || this.#state === 'stopped') {
        throw new IpcError('ERR_NOT_RUNNING', 'send() after stop(): this Writer no longer sends');
      }
      if (this.#sends.length === 0 && this.#queue(data, fds === undefined ? undefined : { fds: Array.from(fds) })) {
        return Promise.resolve();
      }
      // The queue is full (or earlier sends wait): wait in line for 'drain'.
      if (this.#sends.length !== 0) messageLength(data, this.#maxMessage);
      if (fds !== undefined && this.#opts.type === 'dgram') throw notWithType('fds', this.#opts.type);
      // Its descriptors are taken now, as write() takes them: the caller may
      // close its own once send() returns. Ours are closed once the message
      // is queued (write() dups them again) or the send fails. The dups of
      // waiting send()s are bounded by maxBufferedFds too (a burst must not
      // fill the process's descriptor table, or the writer could not even
      // connect): beyond it, a send() takes its descriptors when its message
      // is queued, and the caller must keep them open until then.
      const held = this.#waitingFds.take(fds, this.#opts.maxBufferedFds);
      return new Promise<void>((outerResolve, outerReject) => {
        const resolve = (): void => (held.release(), outerResolve());
        const reject = (e: Error): void => (held.release(), outerReject(e));
        // A copy of the real bytes (write() or messageLength() checked the type).
        const write: WriteOptions | undefined = held.fds === undefined ? undefined : { fds: Array.from(held.fds) };
        const s: PendingSend = { data: typeof data === 'string' ? data : copyBytes(data), write, resolve, reject };
        if (signal) {
          const off = this.#aborts.add(signal, () => {
            const i = this.#sends.indexOf(s);
            if (i >= 0) this.#sends.splice(i, 1);
            reject(abortError(signal));
          });
          s.resolve = () => {
            off();
            resolve();
          };
          s.reject = (e) => {
            off();
            reject(e);
          };
        }
        this.#sends.push(s);
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** @internal For the stream adapter: queue now if it fits and no send() waits. */
  [kTryQueue](data: Uint8Array | string): boolean {
    return this.#sends.length === 0 && this.#queue(data);
  }

  // Frames already encoded back to back (RpcClient's groups of requests),
  // queued with one copy; false (nothing queued) when sends wait, the queue
  // lacks room, or the Writer no longer sends: the caller then writes them
  // one by one.
  [kQueueFramed](src: Uint8Array, start: number, end: number, frames: number, payload: number): boolean {
    if (this.#sends.length !== 0 || this.#state === 'stopping' || this.#state === 'stopped') return false;
    if (!this.#ring.appendFramed(src, start, end, frames, payload)) return false;
    this.#written += frames;
    return true;
  }

  // A frame encoded in place in the queue (RpcClient's requests): the
  // offset where its payload goes, or -1 when sends wait, the queue lacks
  // room (or the frame would wrap) or the Writer no longer sends. The caller
  // writes the payload into [kRingBytes] and commits it at once.
  [kReserve](len: number): number {
    if (this.#sends.length !== 0 || this.#state === 'stopping' || this.#state === 'stopped') return -1;
    return this.#ring.reserve(len);
  }

  [kCommit](len: number): void {
    this.#ring.commit(len);
    this.#written++;
  }

  get [kRingBytes](): Buffer {
    return this.#ring.bytes;
  }

  // See kDeferRelease (src/stream.ts): RpcClient's batches are released
  // after the replies' callbacks.
  [kDeferRelease](): void {
    this.#deferRelease = true;
  }

  // Releases the batches whose release was deferred (kDeferRelease), in
  // order; called before any other release so that acks keep their order.
  #releaseDeferred(): void {
    const q = this.#toRelease;
    if (q.length === 0) return;
    this.#toRelease = [];
    for (let i = 0; i < q.length; i++) this.#inbox!.done(q[i]);
  }

  // Frames written while corked go out together, when uncorked (RpcClient:
  // one send per group of requests).
  [kCork](corked: boolean): void {
    this.#ring.corked = corked;
    if (!corked) this.#ring.publishPending();
  }

  // write() for send(): a refused message is not counted as written/dropped,
  // since send() will queue it later.
  #queue(data: Uint8Array | string, options?: WriteOptions): boolean {
    if (this.write(data, options)) return true;
    this.#written--;
    this.#dropped--;
    return false;
  }

  // On 'drain': queues waiting sends in order. True when none is left waiting.
  #pumpSends(): boolean {
    const q = this.#sends;
    while (q.length !== 0) {
      if (this.#state !== 'running' && this.#state !== 'idle') return true;
      const s = q[0];
      let ok: boolean;
      try {
        ok = this.#queue(s.data, s.write);
      } catch (e) {
        q.shift();
        s.reject(e as Error);
        continue;
      }
      if (!ok) return false;
      q.shift();
      s.resolve();
    }
    return true;
  }

  /**
   * Resolves once every message queued so far has been accepted by the
   * kernel. Rejects with `ERR_NOT_RUNNING` if the Writer stops first with
   * those messages unsent.
   * @param options - `signal`: abort to stop waiting (the messages stay queued and are still sent).
   * @throws (as a rejection) `AbortError` (`ABORT_ERR`) when aborted first; IpcError `ERR_NOT_RUNNING`; TypeError for invalid options.
   */
  flush(options?: FlushOptions): Promise<void> {
    return this.#waitFor('flush', options);
  }

  /**
   * `delivery: 'acked'`: resolves once the reader has acknowledged every
   * message queued so far, that is once its handler was done with each of
   * them (returned, or its promise settled). Unlike {@link Writer.flush},
   * which resolves once they are handed to the kernel. Rejects with
   * `ERR_NOT_RUNNING` if the Writer stops first with some of them not
   * acknowledged.
   * @param options - `signal`: abort to stop waiting (nothing else changes).
   * @throws (as a rejection) IpcError `ERR_INVALID_STATE` on a Writer in the default delivery mode; `AbortError` (`ABORT_ERR`); IpcError `ERR_NOT_RUNNING`.
   */
  acknowledged(options?: FlushOptions): Promise<void> {
    if (this.#opts.delivery !== 'acked') {
      return Promise.reject(
        new IpcError('ERR_INVALID_STATE', "acknowledged() needs delivery: 'acked' (this Writer delivers at most once; flush() tells when messages are sent)"),
      );
    }
    return this.#waitFor('acknowledged', options);
  }

  // flush() and acknowledged(): a target at the tail, reached when HEAD/SENT
  // (flush) or ACK_HEAD/ACKED (acknowledged) pass it; settled by #settle().
  #waitFor(what: 'flush' | 'acknowledged', options: FlushOptions | undefined): Promise<void> {
    let signal: AbortSignal | undefined;
    try {
      signal = resolveSignalOptions(`${what} options`, options).signal;
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const ring = this.#ring;
    const flush = what === 'flush';
    const w: Waiter = { head: 0, sent: 0, resolve: noop, reject: noop };
    ring.aimAtTail(w);
    if (flush ? ring.reachedSent(w) : ring.reached(w)) return Promise.resolve();
    if (this.#state === 'stopped') {
      return Promise.reject(new IpcError('ERR_NOT_RUNNING', flush ? 'The Writer stopped with messages unsent' : 'The Writer stopped with messages not acknowledged'));
    }
    const p = new Promise<void>((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    if (signal) {
      const { resolve, reject } = w;
      const off = this.#aborts.add(signal, () => {
        const list = flush ? ring.flushTargets : ring.ackTargets;
        const i = list.indexOf(w);
        if (i >= 0) list.splice(i, 1);
        reject(abortError(signal));
      });
      w.resolve = () => {
        off();
        resolve();
      };
      w.reject = (e) => {
        off();
        reject(e);
      };
    }
    (flush ? ring.flushTargets : ring.ackTargets).push(w);
    this.#arm();
    return p;
  }

  /**
   * Sends what is queued (through reconnects) until `timeoutMs`, then closes
   * and resolves with how many queued messages were discarded. Never waits
   * past its deadline. Idempotent. send() calls still waiting for room reject
   * with `ERR_NOT_RUNNING`.
   * @param options - `timeoutMs` (default 5000); `signal`: aborting it (or
   * passing one already aborted) moves the deadline to now — the Writer closes
   * at once, discarding what is still queued. The promise still resolves.
   * @returns `{ discarded }`: queued messages never sent.
   * @throws TypeError/RangeError for invalid options (synchronously).
   */
  stop(options?: StopOptions): Promise<WriterStopResult> {
    const { timeoutMs, signal } = resolveStopOptions(options);
    if (this.#stopPromise) {
      if (signal) this.#forceOnAbort(signal);
      return this.#stopPromise;
    }
    for (const s of this.#sends.splice(0)) {
      s.reject(new IpcError('ERR_NOT_RUNNING', 'stop() was called before this message could be queued'));
    }
    if (this.#state === 'idle') {
      this.#state = 'stopped';
      const discarded = this.#ring.unsentFrames();
      this.#failed += discarded;
      this.#handle.close();
      this.#releaseDeferred();
      this.#inbox?.discard();
      this.#settleAtStop();
      this.#stopPromise = Promise.resolve({ discarded });
      return this.#stopPromise;
    }
    this.#ring.publishPending();
    this.#state = 'stopping';
    this.#stopPromise = new Promise<WriterStopResult>((resolve) => {
      this.#stopResolve = resolve;
    });
    this.#handle.beginStop(signal?.aborted ? 0 : timeoutMs);
    if (this.#inbox) {
      // onMessage may hold the stop back (batches received before it are
      // delivered first), but never past the deadline.
      this.#stopTimer = setTimeout(() => this.#forceStop(), signal?.aborted ? 0 : timeoutMs);
      if (!this.#refed) this.#stopTimer.unref();
    }
    if (signal) this.#forceOnAbort(signal);
    return this.#stopPromise;
  }

  // The stop deadline passed (or its signal aborted): stop sending now, and
  // release the batches not yet delivered instead of waiting for onMessage.
  #forceStop(): void {
    if (this.#state !== 'stopping') return;
    this.#handle.beginStop(0);
    if (this.#inbox && !this.#forced) {
      this.#forced = true;
      this.#pump();
    }
  }

  // While stopping, an abort of `signal` moves the deadline to now.
  #forceOnAbort(signal: AbortSignal): void {
    if (this.#state !== 'stopping') return;
    const force = (): void => this.#forceStop();
    if (signal.aborted) return force();
    const off = onAbort(signal, force);
    void this.#stopPromise!.then(off);
  }

  /**
   * An object-mode `stream.Writable` over this Writer: each chunk (Buffer,
   * Uint8Array or string) is one message, queued with {@link Writer.send}, so
   * the stream's `highWaterMark` and `'drain'` follow the Writer's queue, and
   * `end()` finishes once {@link Writer.flush} resolves. The Writer is not
   * stopped when the stream ends or is destroyed. See {@link createWritable}.
   * @param options - `highWaterMark` (chunks, default 16) and `signal` (destroys the stream).
   */
  createWriteStream(options?: WritableOptions): Writable {
    return createWritable(this, options);
  }

  /**
   * The metrics in Prometheus text exposition format (0.0.4): `# HELP` and
   * `# TYPE` lines, counters named `*_total`, gauges. Serve it with the
   * `PROMETHEUS_CONTENT_TYPE` content type.
   * @param prefix - Metric name prefix. Default `'uds_ipc_writer'`.
   * @param labels - Labels added to every sample, e.g. `{ socket: 'main' }`.
   * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` for a prefix or label that is not a valid Prometheus name.
   */
  metricsText(prefix = 'uds_ipc_writer', labels?: MetricLabels): string {
    return formatMetrics(prefix, labels, ALL_WRITER_METRICS, this.metrics());
  }

  /**
   * Counters and gauges; see {@link WriterMetrics} for when `written = sent + dropped + failed + queueDepth` holds.
   * @returns A fresh snapshot (a plain object).
   */
  metrics(): WriterMetrics {
    const n = this.#state === 'stopped' ? this.#lastNative : this.#handle.metrics();
    const queueDepth = this.#state === 'stopped' ? 0 : this.#ring.unsentFrames();
    const queuedBytes = this.#state === 'stopped' ? 0 : this.#ring.unsentBytes();
    return {
      written: this.#written,
      sent: (n.sent as number) ?? 0,
      dropped: this.#dropped,
      failed: this.#failed,
      queueDepth,
      queuedBytes,
      bytesSent: (n.bytesSent as number) ?? 0,
      sendCalls: (n.sendCalls as number) ?? 0,
      connects: (n.connects as number) ?? 0,
      disconnects: (n.disconnects as number) ?? 0,
      connectAttempts: (n.connectAttempts as number) ?? 0,
      untrustedPeers: (n.untrustedPeers as number) ?? 0,
      connected: this.#state === 'running' && n.connected === true,
      sendBufferSize: (n.sendBufferSize as number) ?? 0,
      received: this.#rm[RM_RECEIVED],
      bytesReceived: this.#rm[RM_BYTES],
      batches: this.#rm[RM_BATCHES],
      readCalls: (n.readCalls as number) ?? 0,
      bytesRead: (n.bytesRead as number) ?? 0,
      pauses: (n.pauses as number) ?? 0,
      jsThreadReads: (n.jsThreadReads as number) ?? 0,
      fdsSent: (n.fdsSent as number) ?? 0,
      fdsBuffered: (n.fdsBuffered as number) ?? 0,
      fdsReceived: (n.fdsReceived as number) ?? 0,
      fdsRefused: (n.fdsRefused as number) ?? 0,
      replyBytesDropped: (n.replyBytesDropped as number) ?? 0,
      fdsClosedUnclaimed: this.#inbox?.closedFds ?? 0,
      acked: (n.acked as number) ?? 0,
      unacked: this.#state === 'stopped' || this.#opts.delivery !== 'acked' ? 0 : this.#ring.unreleasedFrames(),
      resent: (n.resent as number) ?? 0,
    };
  }

  /**
   * Lets the process exit while this Writer runs (like `socket.unref()`).
   * @returns this Writer.
   */
  unref(): this {
    this.#refed = false;
    this.#handle.unref();
    this.#stopTimer?.unref();
    return this;
  }

  /**
   * Undoes {@link Writer.unref}: a running Writer keeps the process alive again.
   * @returns this Writer.
   */
  ref(): this {
    this.#refed = true;
    this.#handle.ref();
    this.#stopTimer?.ref();
    return this;
  }

  /** `await using writer = ...`: calls {@link Writer.stop} with the default timeout. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // write() refused a message of `len` bytes: 'drain' once there is room.
  // The target is set once per full queue; it is armed once running.
  #wantDrain(len: number): void {
    const ring = this.#ring;
    if (ring.drainTarget !== undefined) return;
    ring.drainTarget = ring.drainTargetFor(len);
    if (this.#state !== 'idle') this.#arm();
  }

  // Settles the targets already reached, then asks the IO thread for an event
  // when the nearest one left is reached.
  #arm(): void {
    do this.#settle();
    while (!this.#ring.armNearest());
  }

  // Resolves the flush() calls whose target is reached; emits 'drain' when due.
  #settle(): void {
    const ring = this.#ring;
    if (ring.flushTargets.length !== 0) {
      const left: Waiter[] = [];
      for (const w of ring.flushTargets) {
        if (ring.reachedSent(w)) w.resolve();
        else left.push(w);
      }
      ring.flushTargets = left;
    }
    if (ring.ackTargets.length !== 0) {
      const left: Waiter[] = [];
      for (const w of ring.ackTargets) {
        if (ring.reached(w)) w.resolve();
        else left.push(w);
      }
      ring.ackTargets = left;
    }
    if (ring.drainTarget !== undefined && ring.reached(ring.drainTarget)) {
      ring.drainTarget = undefined;
      process.nextTick(() => {
        // Waiting send()s go first; 'drain' once none is left waiting.
        if (this.#pumpSends()) this.emit('drain');
      });
    }
  }

  // Stopped: the flush() calls whose messages were all sent resolve, the others reject.
  #settleAtStop(): void {
    const ring = this.#ring;
    for (const w of ring.flushTargets) {
      if (ring.reachedSent(w)) w.resolve();
      else w.reject(new IpcError('ERR_NOT_RUNNING', 'The Writer stopped with messages unsent'));
    }
    ring.flushTargets = [];
    for (const w of ring.ackTargets) {
      if (ring.reached(w)) w.resolve();
      else w.reject(new IpcError('ERR_NOT_RUNNING', 'The Writer stopped with messages not acknowledged'));
    }
    ring.ackTargets = [];
    ring.drainTarget = undefined;
  }

  // The IO thread has events for us: take them all (the handle's take()
  // dequeues them; nothing to do with the 'drain' event) and act on each.
  // A receiving Writer handles them in order through its inbox (#pump()),
  // where an async onMessage holds back the events after its batch.
  // `taken`: the events, already taken (the addon's receiver calls with them).
  #onEvent(taken?: unknown[] | ArrayBuffer): void {
    const inbox = this.#inbox;
    if (inbox !== undefined) {
      if (taken !== undefined && !Array.isArray(taken) && !this.#busy && !this.#forced && this.#state !== 'stopped' && inbox.idle()) {
        // A lone small batch and nothing waiting (replies one at a time):
        // straight to onMessage, as #pump() would run it.
        this.#run(inbox.loneBatch(taken, this.#conn ?? UNKNOWN_CONNECTION));
      } else if (inbox.take(taken)) this.#pump();
    } else {
      const E = this.#event;
      const events = (taken ?? this.#handle.take()) as unknown[]; // an array: takeWords() is the inbox's
      for (let i = 0; i < events.length; i += E.SLOTS) {
        const tag = events[i] as number;
        if (tag === E.STOPPED) {
          this.#onStopped(events[i + 1] as number);
          return;
        }
        this.#onPlainEvent(tag, events[i + 1], events[i + 2], events[i + 3]);
      }
    }
    // NOTIFY (a flush or drain target reached) needs no order: settled here
    // even while onMessage holds the other events back.
    if (this.#state === 'running' || this.#state === 'stopping') {
      const ring = this.#ring;
      if (this.#state === 'running' && ring.drainTarget === undefined && ring.flushTargets.length === 0 && ring.ackTargets.length === 0) return;
      this.#arm();
    }
  }

  // An event other than BATCH and STOPPED (CONNECT of a one-way Writer).
  #onPlainEvent(tag: number, a: unknown, b: unknown, c: unknown): void {
    const E = this.#event;
    if (tag === E.CONNECT) this.emit('connect');
    else if (tag === E.DISCONNECT) this.emit('disconnect', toError(a), { sent: b as number });
    else if (tag === E.RECONNECTING) {
      this.emit('reconnecting', { attempt: b as number, delayMs: c as number, error: toError(a) });
    } else if (tag === E.ERROR) {
      const err = toError(a);
      const code = err.code;
      this.#report(
        err,
        code === 'ERR_WRITE_TIMEOUT' || code === 'ERR_FDS_REFUSED'
          ? 'send'
          : code === 'ERR_MESSAGE_TOO_LARGE' || code === 'ERR_INVALID_FRAME' || code === 'ERR_UNEXPECTED_FDS' || code === 'ERR_FDS_TRUNCATED' || code === 'ERR_REPLIES_DROPPED'
            ? 'connection'
            : 'connect',
      );
    }
    // E.NOTIFY: a target was reached; settled in #onEvent().
  }

  // Receiving: handles the inbox's events in order until none is left, or an
  // async onMessage's promise holds back the rest. After a forced stop the
  // batches left are released undelivered and the rest runs on to STOPPED.
  #pump(): void {
    if (this.#busy && !this.#forced) return;
    const inbox = this.#inbox!;
    const E = this.#event;
    while (this.#state !== 'stopped') {
      const tag = inbox.next();
      if (tag < 0) return;
      if (tag === E.BATCH) {
        if (this.#forced) {
          this.#releaseDeferred();
          inbox.drop();
          continue;
        }
        if (!this.#run(inbox.batch(this.#conn ?? UNKNOWN_CONNECTION))) return;
      } else if (tag === E.CONNECT) {
        const cred = inbox.a() as Credentials;
        this.#conn?.closed();
        this.#conn = new WriterConnection(inbox.b() as number, cred.pid, cred.uid, cred.gid, this);
        this.emit('connect');
      } else if (tag === E.STOPPED) {
        this.#onStopped(inbox.a() as number);
        return;
      } else {
        if (tag === E.DISCONNECT) this.#conn?.closed();
        this.#onPlainEvent(tag, inbox.a(), inbox.b(), inbox.c());
      }
    }
  }

  // Runs onMessage on a batch. True: done with it (released); false: its
  // promise is pending (#afterAsync() follows, and #pump() with it).
  #run(batch: Batch): boolean {
    const m = this.#rm;
    m[RM_RECEIVED] += batch.length;
    m[RM_BYTES] += batch.byteLength;
    m[RM_BATCHES]++;
    let r: unknown;
    try {
      r = this.#receive!.onMessage(batch);
    } catch (e) {
      this.#handlerFailed(e);
    }
    if (r !== undefined && r !== null && typeof (r as PromiseLike<void>).then === 'function') {
      this.#busy = true;
      (r as PromiseLike<void>).then(
        () => this.#afterAsync(batch),
        (e: unknown) => {
          this.#handlerFailed(e);
          this.#afterAsync(batch);
        },
      );
      return false;
    }
    if (this.#deferRelease) {
      if (this.#toRelease.push(batch) === 1) RESOLVED.then(this.#releaseTask);
      return true;
    }
    this.#releaseDeferred();
    this.#inbox!.done(batch);
    return true;
  }

  #afterAsync(batch: Batch): void {
    this.#busy = false;
    this.#releaseDeferred();
    this.#inbox!.done(batch); // after the stop: released (the inbox has no source any more)
    if (this.#state !== 'stopped') this.#pump();
  }

  #handlerFailed(e: unknown): void {
    const err = new IpcError('ERR_HANDLER', `onMessage failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    this.#report(err, 'handler');
  }

  #onStopped(discarded: number): void {
    clearTimeout(this.#stopTimer);
    this.#stopTimer = undefined;
    this.#lastNative = this.#handle.metrics();
    this.#handle.close();
    // Closing dropped the descriptors still held for unsent messages.
    this.#lastNative.fdsBuffered = this.#handle.metrics().fdsBuffered as number;
    this.#releaseDeferred();
    this.#inbox?.discard(); // nothing follows STOPPED; detaches: later acks become releases
    this.#conn?.closed();
    this.#failed += discarded;
    this.#state = 'stopped';
    this.#settleAtStop();
    this.#stopResolve!({ discarded });
    this.emit('close');
  }

  #report(err: IpcError, context: ErrorContext): void {
    const onError = this.#opts.onError;
    if (onError) {
      try {
        onError(err, context);
      } catch (e) {
        process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    if (this.listenerCount('error') > 0) this.emit('error', err, context);
  }
}

// batch.connection before any CONNECT (never expected: the engine connects first).
const UNKNOWN_CONNECTION = new WriterConnection(0, -1, -1, -1, undefined);

function toError(o: unknown): IpcError {
  const e = fromNative(Object.assign(new Error((o as { message?: string })?.message ?? 'unknown error'), o as object));
  return e instanceof IpcError ? e : new IpcError('ERR_SOCKET', String((e as Error)?.message ?? e));
}
