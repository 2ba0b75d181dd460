/**
 * Reader: the server side. Listens on a Unix socket path and hands the
 * handler batches of messages received from any number of writers.
 */
import { readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { abortError, onAbort } from './abort';
import { Batch, type Connection } from './batch';
import { binding, type NativeReaderHandle } from './binding';
import { fromNative, invalidArg, invalidValue, IpcError, type ErrorContext } from './errors';
import { BatchChannel } from './iterate';
import { formatMetrics, READER_METRICS, type MetricLabels } from './metrics';
import {
  isAbstract,
  resolveReaderOptions,
  resolveSignalOptions,
  resolveStopOptions,
  validatePath,
  type ReaderOptions,
  type ResolvedReaderOptions,
  type StopOptions,
} from './options';
import type { Protocol } from './protocol';
import { ReaderConnection, type ReplySink } from './reader/connection';
import { fdError } from './writer/fds';
import { Inbox } from './reader/inbox';
import { notify as notifySystemd, takeListener } from './systemd';

import type { BatchHandler, ReaderEvents, ReaderListener, ReaderMetrics, StartOptions, StopResult } from './reader/types';

export { Batch, type Connection, ReaderConnection };
export type { BatchHandler, ReaderEvents, ReaderListener, ReaderMetrics, StartOptions, StopResult } from './reader/types';

// Typed overloads of the EventEmitter methods (declaration merging with the class).
export interface Reader {
  /** Adds a listener for a {@link ReaderEvents} event. */
  on<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Adds a one-time listener for a {@link ReaderEvents} event. */
  once<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Same as {@link Reader.on}. */
  addListener<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Adds a listener at the front of the list. */
  prependListener<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Adds a one-time listener at the front of the list. */
  prependOnceListener<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Removes a listener. */
  off<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
  /** Same as {@link Reader.off}. */
  removeListener<E extends keyof ReaderEvents>(event: E, listener: ReaderListener<E>): this;
}

type State = 'idle' | 'running' | 'stopping' | 'stopped';

// Indices of the Reader's counters (#m).
const M_RECEIVED = 0;
const M_BYTES = 1;
const M_BATCHES = 2;
const M_ERRORS = 3;
const M_HANDLER_ERRORS = 4;
const M_DISCARDED = 5;
const M_REJECTED = 6;
const M_REPLIES_DROPPED = 7;
const M_COUNT = 8;

// A connection's batches and events held back while its handler is busy
// (concurrency 'connection').
type Deferred = { batch: Batch } | { id: number; close: IpcError | undefined } | { id: number; error: IpcError };

// net.unix.max_dgram_qlen: how many datagrams a datagram reader's socket
// queues (the kernel holds one more) before senders get EAGAIN. 0 if unknown.
function readDgramQueueLength(): number {
  try {
    return Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
}

/**
 * Listens on a Unix socket and delivers the messages that writers send, to a
 * handler or (constructed without one) to `for await (const batch of reader)`.
 *
 * Events ({@link ReaderEvents}): `'listening'`, `'connection'` (conn),
 * `'disconnect'` (conn, reason?: an IpcError when the Reader closed it, e.g.
 * `ERR_INACTIVITY_TIMEOUT`, or when it failed), `'close'` ({ forced }),
 * `'error'` (err, context, conn) — emitted only when a listener is attached,
 * so an unobserved error never crashes the process.
 */
export class Reader extends EventEmitter {
  /** The socket path. */
  readonly path: string;
  readonly #handler: BatchHandler;
  readonly #opts: ResolvedReaderOptions;
  #state: State = 'idle';
  #handle: NativeReaderHandle | undefined;
  #refed = true;
  #systemdActivated = false;
  #inbox: Inbox | undefined; // items from the IO thread, and the batches' memory (from start())
  #item: Protocol['item'] | undefined; // the item tags
  #busy = false; // an async handler's promise is pending
  #stopFinished = false; // the engine reported stop finished (item STOPPED)
  #conns = new Map<number, ReaderConnection>();
  // concurrency 'connection': connections whose handler is busy, each with
  // what arrived for it meanwhile, in order. An acked connection's lane is
  // its writer's session (#laneOf()): a writer's batches run in order even
  // when a newer connection of it delivers while an older one's batch is
  // still in the handler.
  #lanes = new Map<number | string, Deferred[]>();
  #dirty: ReaderConnection[] = []; // connections with replies written this tick
  readonly #sink: ReplySink;
  #held = new Set<number>(); // connections waiting for authorize()
  #stopPromise: Promise<StopResult> | undefined;
  #stopResolve: ((r: StopResult) => void) | undefined;
  #stopTimer: NodeJS.Timeout | undefined;
  #lastNative: Record<string, number> = {};
  #dgramQueue = 0; // type 'dgram': net.unix.max_dgram_qlen, read at start()
  // Counters (the M_* indices) in a Float64Array rather than object fields: a
  // field that passes 2^31 (bytesReceived after 2 GiB) turns from a small
  // integer into a heap number, which changes the object's shape and
  // deoptimizes #pump.
  readonly #m = new Float64Array(M_COUNT);
  readonly #channel: BatchChannel | undefined; // handler-less: batches wait here for the async iterator
  #offStartSignal: (() => void) | undefined;

  /**
   * A Reader without a handler: iterate it (`for await (const batch of reader)`).
   * @param path - Socket path (at most 107 bytes of UTF-8) or `'@name'` for an abstract socket.
   * @param options - See {@link ReaderOptions}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_VALUE`) for invalid options; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, options?: ReaderOptions);
  /**
   * @param path - Socket path (at most 107 bytes of UTF-8) or `'@name'` for an abstract socket.
   * @param handler - Called with each {@link Batch}; return a promise to hold back the next one. `undefined`: iterate the Reader instead.
   * @param options - See {@link ReaderOptions}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_VALUE`) for invalid arguments; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, handler: BatchHandler | undefined, options?: ReaderOptions);
  constructor(path: string, handler?: BatchHandler | ReaderOptions, options?: ReaderOptions) {
    super();
    this.path = validatePath(path);
    if (handler !== undefined && typeof handler !== 'function') {
      // new Reader(path, options): a plain object in the handler's place.
      if (options !== undefined || handler === null || typeof handler !== 'object' || Array.isArray(handler)) {
        throw invalidArg(
          'ERR_INVALID_ARG_TYPE',
          `The "handler" argument must be a function, or omitted to iterate the Reader. Received ${handler === null ? 'null' : Array.isArray(handler) ? 'an array' : typeof handler}`,
        );
      }
      options = handler;
      handler = undefined;
    }
    if (handler === undefined) {
      const channel = new BatchChannel();
      this.#channel = channel;
      this.#handler = (batch) => channel.deliver(batch);
    } else {
      this.#handler = handler;
    }
    this.#opts = resolveReaderOptions(options, this.path);
    const flushAll = (): void => {
      const d = this.#dirty;
      this.#dirty = [];
      for (let i = 0; i < d.length; i++) d[i].flush();
    };
    this.#sink = {
      replies: this.#opts.type === 'stream' && this.#opts.delivery !== 'acked',
      maxReplyBytes: this.#opts.maxReplyBytes,
      maxReplyFds: this.#opts.maxPendingFds,
      reply: (id, bytes, length) => (this.#handle ? this.#handle.reply(id, bytes, undefined, length) : -1),
      replyFds: (id, frame, fds) => {
        if (!this.#handle) return -1;
        try {
          return this.#handle.reply(id, frame, fds);
        } catch (e) {
          throw fdError(e);
        }
      },
      schedule: (conn) => {
        if (this.#dirty.push(conn) === 1) queueMicrotask(flushAll);
      },
      refused: () => {
        this.#m[M_REPLIES_DROPPED]++;
      },
    };
  }

  /** True between a successful start() and stop(). */
  get listening(): boolean {
    return this.#state === 'running';
  }

  /**
   * Binds and listens. Resolves once connections are accepted; rejects with an
   * IpcError (`ERR_ADDRESS_IN_USE`, `ERR_NOT_A_SOCKET`, `ERR_PATH_TOO_LONG`,
   * `ERR_SOCKET`). Calling it again while running does nothing; a stopped
   * Reader cannot be restarted (`ERR_NOT_RUNNING`).
   *
   * @param options - `signal`: like `server.listen({ signal })`, aborting it
   * later stops the Reader (a graceful `stop()`); an already-aborted signal
   * rejects with an `AbortError` and nothing is bound.
   * @throws `AbortError` (`ABORT_ERR`) when `signal` is already aborted; TypeError for invalid options.
   */
  async start(options?: StartOptions): Promise<void> {
    if (this.#opts.type === 'dgram') this.#dgramQueue = readDgramQueueLength();
    const { signal } = resolveSignalOptions('start options', options);
    if (signal?.aborted) throw abortError(signal);
    if (this.#state === 'running') return;
    if (this.#state !== 'idle') throw new IpcError('ERR_NOT_RUNNING', 'This Reader was stopped; create a new one');
    const o = this.#opts;
    const b = binding();
    const abstract = isAbstract(this.path);
    const uid = resolveId('uid', o.uid, b.lookupUser);
    const gid = resolveId('gid', o.gid, b.lookupGroup);
    const fd = o.systemd === false ? undefined : takeListener(this.path, typeof o.systemd === 'object' ? o.systemd.name : undefined);
    const handle = new b.ReaderHandle(
      this.path,
      {
        maxMessageSize: o.maxMessageSize,
        maxPendingBytes: o.maxPendingBytes,
        backlog: o.backlog,
        mode: abstract ? -1 : o.mode,
        uid,
        gid,
        directoryMode: abstract ? -1 : o.directoryMode,
        slabSize: o.slabSize,
        inactivityTimeoutMs: o.inactivityTimeoutMs,
        frameTimeoutMs: o.frameTimeoutMs,
        replyTimeoutMs: o.replyTimeoutMs,
        acceptFds: o.acceptFds,
        maxPendingFds: o.maxPendingFds,
        type: o.type,
        passCredentials: o.passCredentials,
        delivery: o.delivery,
        requireAcked: o.requireAcked,
        maxSessions: o.maxSessions,
        jsThreadPolling: o.jsThreadPolling !== 'off',
        jsThreadUnderLoad: o.jsThreadPolling === 'always',
        allowUids: o.allowUids,
        allowGids: o.allowGids,
        authorize: o.authorize !== undefined,
        fd: fd ?? -1,
      },
    );
    if (!this.#refed) handle.unref();
    try {
      handle.listen((taken) => this.#onReady(taken));
    } catch (e) {
      throw fromNative(e);
    }
    this.#item = b.protocol.item;
    this.#inbox = new Inbox(this.#item, (memory) => b.release(memory));
    this.#inbox.attach(handle);
    this.#handle = handle;
    this.#state = 'running';
    if (fd === undefined && !abstract) removeSocketAtExit(handle);
    if (signal) this.#offStartSignal = onAbort(signal, () => void this.stop());
    this.#systemdActivated = fd !== undefined;
    if (o.notifySystemd) this.#notify('READY=1');
    this.emit('listening');
  }

  /** True when the listening socket was passed in by systemd (socket activation). */
  get systemdActivated(): boolean {
    return this.#systemdActivated;
  }

  #notify(state: string): void {
    try {
      notifySystemd(state);
    } catch (e) {
      this.#report(e as Error, 'systemd');
    }
  }

  /**
   * Stops accepting, delivers every message already received (including what
   * writers had in the kernel's buffers and clients still in the backlog),
   * waits for the handler, then closes. After `timeoutMs` it closes anyway and
   * reports how many received messages it discarded. Idempotent.
   *
   * @param options - `timeoutMs` (default 5000); `signal`: aborting it (or
   * passing one already aborted) forces the stop as if the deadline had passed
   * now. The promise still resolves with what was discarded.
   * @returns `{ discarded }`: messages received but never delivered.
   * @throws TypeError/RangeError for invalid options (synchronously).
   */
  stop(options?: StopOptions): Promise<StopResult> {
    const { timeoutMs, signal } = resolveStopOptions(options);
    if (this.#stopPromise) {
      if (signal) this.#forceOnAbort(signal);
      return this.#stopPromise;
    }
    if (this.#state !== 'running') {
      this.#state = 'stopped';
      this.#stopPromise = Promise.resolve({ discarded: 0 });
      this.#afterStop();
      return this.#stopPromise;
    }
    this.#state = 'stopping';
    if (this.#opts.notifySystemd) this.#notify('STOPPING=1');
    this.#stopPromise = new Promise<StopResult>((resolve) => {
      this.#stopResolve = resolve;
    });
    this.#stopTimer = setTimeout(() => this.#finishStop(true), signal?.aborted ? 0 : timeoutMs);
    if (!this.#refed) this.#stopTimer.unref();
    this.#handle!.beginStop();
    if (signal) this.#forceOnAbort(signal);
    return this.#stopPromise;
  }

  // While stopping, an abort of `signal` moves the deadline to now.
  #forceOnAbort(signal: AbortSignal): void {
    if (this.#state !== 'stopping') return;
    if (signal.aborted) return this.#forceNow();
    const off = onAbort(signal, () => this.#forceNow());
    void this.#stopPromise!.then(off);
  }

  #forceNow(): void {
    if (this.#state !== 'stopping') return;
    clearTimeout(this.#stopTimer);
    this.#stopTimer = setTimeout(() => this.#finishStop(true), 0);
    if (!this.#refed) this.#stopTimer.unref();
  }

  // Runs once the Reader is stopped: ends iteration, drops the start() signal's listener.
  #afterStop(): void {
    this.#channel?.end();
    this.#offStartSignal?.();
    this.#offStartSignal = undefined;
  }

  /**
   * Iterates the batches of a Reader constructed without a handler, with the
   * same backpressure as an async handler: a batch is acknowledged (its bytes
   * freed from the connection's `maxPendingBytes` budget) when the loop asks
   * for the next one. The loop ends when the Reader stops (after every batch a
   * graceful stop delivers). Leaving it early (`break`, `return`, a throw)
   * stops the Reader at once, like `stop({ timeoutMs: 0 })`, and waits for it;
   * messages not yet yielded are counted in `metrics().discarded`.
   * @throws IpcError `ERR_INVALID_STATE` if the Reader has a handler, or is already being iterated.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Batch> {
    if (!this.#channel) {
      throw new IpcError(
        'ERR_INVALID_STATE',
        'This Reader has a handler, which receives every batch; construct it without one (new Reader(path, options)) to iterate it',
      );
    }
    return this.#channel.iterate(
      () => {
        const p = this.stop({ timeoutMs: 0 });
        this.#forceNow();
        return p;
      },
      (held) => this.#inbox?.closeUntakenFds(held),
    );
  }

  /**
   * The metrics in Prometheus text exposition format (0.0.4): `# HELP` and
   * `# TYPE` lines, counters named `*_total`, gauges. Serve it with the
   * `PROMETHEUS_CONTENT_TYPE` content type.
   * @param prefix - Metric name prefix. Default `'uds_ipc_reader'`.
   * @param labels - Labels added to every sample, e.g. `{ socket: 'main' }`.
   * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE` for a prefix or label that is not a valid Prometheus name.
   */
  metricsText(prefix = 'uds_ipc_reader', labels?: MetricLabels): string {
    return formatMetrics(prefix, labels, READER_METRICS, this.metrics());
  }

  /**
   * Counters and gauges; cheap enough to call often.
   * @returns A fresh snapshot (a plain object); after stop() the last values are kept.
   */
  metrics(): ReaderMetrics {
    const n = this.#handle ? this.#handle.metrics() : this.#lastNative;
    return {
      received: this.#m[M_RECEIVED],
      bytesReceived: this.#m[M_BYTES],
      batches: this.#m[M_BATCHES],
      connections: n.connections ?? 0,
      activeConnections: n.activeConnections ?? 0,
      errors: this.#m[M_ERRORS],
      handlerErrors: this.#m[M_HANDLER_ERRORS],
      bytesRead: n.bytesRead ?? 0,
      readCalls: n.readCalls ?? 0,
      pauses: n.pauses ?? 0,
      discarded: this.#m[M_DISCARDED],
      rejected: this.#m[M_REJECTED],
      rejectedDatagrams: n.rejectedDatagrams ?? 0,
      maxDgramQlen: this.#dgramQueue,
      jsThreadReads: n.jsThreadReads ?? 0,
      handoffs: n.handoffs ?? 0,
      repliesDropped: this.#m[M_REPLIES_DROPPED],
      replyBytesSent: n.replyBytesSent ?? 0,
      replySendCalls: n.replySendCalls ?? 0,
      replyBytesDropped: n.replyBytesDropped ?? 0,
      fdsSent: n.fdsSent ?? 0,
      fdsReceived: n.fdsReceived ?? 0,
      fdsRefused: n.fdsRefused ?? 0,
      fdsClosedUnclaimed: this.#inbox?.closedFds ?? 0,
      acked: n.acked ?? 0,
      duplicatesDropped: n.duplicatesDropped ?? 0,
      redelivered: n.redelivered ?? 0,
      plainPeers: n.plainPeers ?? 0,
    };
  }

  /**
   * Lets the process exit while this Reader runs (like `server.unref()`).
   * @returns this Reader.
   */
  unref(): this {
    this.#refed = false;
    this.#handle?.unref();
    this.#stopTimer?.unref();
    return this;
  }

  /**
   * Undoes {@link Reader.unref}: a running Reader keeps the process alive again.
   * @returns this Reader.
   */
  ref(): this {
    this.#refed = true;
    this.#handle?.ref();
    this.#stopTimer?.ref();
    return this;
  }

  /** `await using reader = ...`: calls {@link Reader.stop} with the default timeout. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  // The IO thread has items for us (`taken`: already taken, when the
  // JS-thread poller calls).
  #onReady(taken?: unknown[] | ArrayBuffer): void {
    if (!this.#handle) return;
    const inbox = this.#inbox!;
    const lanes = this.#opts.concurrency === 'connection' ? this.#lanes : undefined;
    if (taken !== undefined && !Array.isArray(taken) && !this.#busy && (lanes === undefined || lanes.size === 0) && inbox.idle()) {
      // A lone small batch and nothing waiting (messages one at a time; with
      // concurrency 'connection', no handler of any connection pending):
      // straight to the handler, as #pump() would run it.
      const connId = inbox.loneConnId();
      const conn = this.#conns.get(connId) ?? new ReaderConnection(connId, -1, -1, -1, undefined);
      if (!this.#run(inbox.loneBatch(taken, conn))) {
        if (lanes === undefined) this.#busy = true;
        else lanes.set(laneKey(conn), []);
      }
      if (this.#state === 'stopping' && this.#stopFinished && this.#lanes.size === 0) this.#finishStop(false);
      return;
    }
    if (!inbox.take(taken)) return;
    if (this.#busy) this.#drainedAhead();
    this.#pump();
  }

  // A busy handler (concurrency 'serial') may be awaiting connection.send():
  // the news that a reply queue drained must reach it now, not wait behind it.
  #drainedAhead(): void {
    this.#inbox!.handleAhead(this.#item!.DRAINED, (connId, dropped) => this.#drained(connId, dropped));
  }

  // A connection's reply queue emptied (dropped: bytes the reply timeout discarded).
  #drained(connId: number, dropped: number): void {
    const conn = this.#conns.get(connId);
    if (dropped > 0) {
      const err = new IpcError(
        'ERR_WRITE_TIMEOUT',
        `Connection ${connId}'s writer read none of its replies for ${this.#opts.replyTimeoutMs} ms (replyTimeoutMs): ${dropped} bytes of replies discarded`,
      );
      this.#report(err, 'connection', conn);
    }
    conn?.drained();
  }

  // Handles items in order until none is left, or (concurrency 'serial') an
  // async handler's promise holds back the rest.
  #pump(): void {
    if (this.#busy) return;
    const inbox = this.#inbox!;
    const I = this.#item!;
    const lanes = this.#opts.concurrency === 'connection' ? this.#lanes : undefined;
    while (this.#handle) {
      const tag = inbox.next();
      if (tag < 0) break;
      const connId = inbox.connId();
      if (tag === I.BATCH) {
        const conn = this.#conns.get(connId) ?? new ReaderConnection(connId, -1, -1, -1, undefined);
        const batch = inbox.batch(conn);
        if (lanes) {
          const key = laneKey(conn);
          const lane = lanes.get(key);
          if (lane) lane.push({ batch });
          else if (!this.#run(batch)) lanes.set(key, []);
          continue;
        }
        if (!this.#run(batch)) {
          this.#busy = true;
          this.#drainedAhead(); // those already taken behind this batch
          return;
        }
      } else if (tag === I.OPEN) {
        const cred = inbox.peer();
        const conn = new ReaderConnection(connId, cred.pid, cred.uid, cred.gid, this.#sink);
        this.#conns.set(connId, conn);
        if (this.#opts.authorize) this.#authorize(conn);
        else this.emit('connection', conn);
      } else if (tag === I.SESSION) {
        const conn = this.#conns.get(connId);
        const session = inbox.session();
        if (conn) {
          conn.delivery = session === undefined ? 'at-most-once' : 'acked';
          conn.session = session;
        }
      } else if (tag === I.REJECTED) {
        const cred = inbox.peer();
        this.#rejected(new ReaderConnection(0, cred.pid, cred.uid, cred.gid, undefined), 'not in allowUids/allowGids');
      } else if (tag === I.CLOSE) {
        const lane = lanes?.get(laneKeyOf(this.#conns.get(connId), connId));
        if (lane) lane.push({ id: connId, close: inbox.error() });
        else this.#closed(connId, inbox.error());
      } else if (tag === I.ERROR) {
        const lane = lanes?.get(laneKeyOf(this.#conns.get(connId), connId));
        if (lane) lane.push({ id: connId, error: inbox.error() as IpcError });
        else this.#report(inbox.error() as Error, connId === 0 ? 'accept' : 'connection', this.#conns.get(connId));
      } else if (tag === I.DRAINED) {
        this.#drained(connId, inbox.dropped());
      } else if (tag === I.STOPPED) {
        this.#stopFinished = true;
      }
    }
    if (this.#state === 'stopping' && this.#stopFinished && this.#lanes.size === 0) this.#finishStop(false);
  }

  // Runs the handler on a batch. True: done with it (released); false: its
  // promise is pending (#settled() follows).
  #run(batch: Batch): boolean {
    const conn = batch.connection as ReaderConnection;
    const m = this.#m;
    m[M_RECEIVED] += batch.length;
    m[M_BYTES] += batch.byteLength;
    m[M_BATCHES]++;
    let r: unknown;
    try {
      r = this.#handler(batch);
    } catch (e) {
      this.#handlerFailed(e, conn);
    }
    if (r !== undefined && r !== null && typeof (r as PromiseLike<void>).then === 'function') {
      (r as PromiseLike<void>).then(
        () => this.#settled(batch),
        (e: unknown) => {
          this.#handlerFailed(e, conn);
          this.#settled(batch);
        },
      );
      return false;
    }
    this.#inbox!.done(batch);
    return true;
  }

  // An async handler settled.
  #settled(batch: Batch): void {
    this.#inbox!.done(batch);
    if (this.#opts.concurrency === 'serial') {
      this.#busy = false;
      this.#pump();
      return;
    }
    // Its connection's lane: what arrived meanwhile, in order, until the
    // handler goes async again.
    const key = laneKey(batch.connection);
    const lane = this.#lanes.get(key);
    if (!lane) return;
    while (lane.length > 0) {
      const d = lane.shift()!;
      if ('batch' in d) {
        if (!this.#handle) {
          this.#inbox!.done(d.batch); // stopped meanwhile: released
          this.#m[M_DISCARDED] += d.batch.length;
          continue;
        }
        if (!this.#run(d.batch)) return;
      } else if ('close' in d) this.#closed(d.id, d.close);
      else this.#report(d.error, 'connection', this.#conns.get(d.id));
    }
    this.#lanes.delete(key);
    if (this.#state === 'stopping' && this.#stopFinished && this.#lanes.size === 0) this.#finishStop(false);
  }

  #closed(connId: number, why: IpcError | undefined): void {
    const conn = this.#conns.get(connId) ?? new ReaderConnection(connId, -1, -1, -1, undefined);
    conn.closed();
    const announced = this.#conns.delete(connId) && !this.#held.has(connId);
    this.#held.delete(connId);
    if (announced) this.emit('disconnect', conn, why);
  }

  // Runs the authorize option for a held connection; nothing of it is read
  // until the verdict, and a refusal closes it unread.
  #authorize(conn: Connection): void {
    this.#held.add(conn.id);
    const verdict = (ok: boolean, why: string, cause?: unknown): void => {
      if (!this.#held.delete(conn.id)) return;
      this.#handle?.authorize(conn.id, ok);
      if (ok) this.emit('connection', conn);
      else {
        this.#conns.delete(conn.id);
        this.#rejected(conn, why, cause);
      }
    };
    let r: boolean | Promise<boolean>;
    try {
      r = this.#opts.authorize!(conn);
    } catch (e) {
      verdict(false, `authorize() threw: ${(e as Error)?.message ?? String(e)}`, e);
      return;
    }
    if (r !== null && typeof r === 'object' && typeof (r as Promise<boolean>).then === 'function') {
      (r as Promise<boolean>).then(
        (ok) => verdict(ok === true, 'authorize() resolved false'),
        (e: unknown) => verdict(false, `authorize() rejected: ${(e as Error)?.message ?? String(e)}`, e),
      );
    } else {
      verdict(r === true, 'authorize() returned false');
    }
  }

  #rejected(peer: Connection, why: string, cause?: unknown): void {
    this.#m[M_REJECTED]++;
    const err = new IpcError(
      'ERR_PEER_REJECTED',
      `Refused a connection from pid ${peer.pid} (uid ${peer.uid}, gid ${peer.gid}): ${why}`,
      { cause },
    );
    this.#report(err, 'authorize', peer);
  }

  #handlerFailed(e: unknown, conn: Connection): void {
    this.#m[M_HANDLER_ERRORS]++;
    const err = new IpcError('ERR_HANDLER', `The batch handler failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    this.#report(err, 'handler', conn);
  }

  #report(err: Error, context: ErrorContext, conn?: Connection): void {
    this.#m[M_ERRORS]++;
    const onError = this.#opts.onError;
    if (onError) {
      try {
        onError(err, context, conn);
      } catch (e) {
        process.emitWarning(`uds-ipc: onError threw: ${(e as Error)?.message ?? String(e)}`);
      }
    }
    if (this.listenerCount('error') > 0) this.emit('error', err, context, conn);
  }

  #finishStop(forced: boolean): void {
    if (this.#state !== 'stopping') return;
    if (this.#stopTimer) clearTimeout(this.#stopTimer);
    const h = this.#handle!;
    removeAtExit.delete(h);
    this.#lastNative = h.metrics();
    this.#lastNative.activeConnections = 0;
    // Anything still queued, here or in the engine, could not be delivered in time.
    let discarded = h.close() + this.#inbox!.discard();
    for (const lane of this.#lanes.values()) {
      for (const d of lane) {
        if (!('batch' in d)) continue;
        discarded += d.batch.length;
        this.#inbox!.done(d.batch); // detached from the source: released
      }
      lane.length = 0;
    }
    for (const conn of this.#conns.values()) conn.closed();
    this.#m[M_DISCARDED] += discarded;
    this.#handle = undefined;
    this.#state = 'stopped';
    this.#afterStop();
    this.#stopResolve!({ discarded });
    this.emit('close', { forced });
  }
}

// process.exit() ends the process without the environment cleanup hooks that
// let stop() or a worker's exit remove a Reader's socket file: an 'exit'
// listener (one for all Readers) removes the files of the running Readers
// that bound their own path, synchronously, if each still is that Reader's
// socket (same device and inode). A process killed by a signal without an
// 'exit' event leaves the file; the next start() replaces it as stale.
const removeAtExit = new Set<NativeReaderHandle>();
let exitListener = false;
function removeSocketAtExit(h: NativeReaderHandle): void {
  if (!exitListener) {
    exitListener = true;
    process.on('exit', () => {
      for (const x of removeAtExit) x.removeSocketFile();
      removeAtExit.clear();
    });
  }
  removeAtExit.add(h);
}

function resolveId(name: string, v: number | string | undefined, lookup: (n: string) => number): number {
  if (v === undefined) return -1;
  if (typeof v === 'number') return v;
  const id = lookup(v);
  if (id < 0) throw invalidValue(`The "${name}" option names ${name === 'uid' ? 'a user' : 'a group'} that does not exist: ${v}`);
  return id;
}

/**
 * The handler lane of a connection under `concurrency: 'connection'`: its id,
 * or in acked mode its writer's session, one lane across that writer's
 * connections. Kept apart per peer uid, as the native side keeps sessions: a
 * peer of another user presenting a writer's session id gets a lane of its own.
 */
function laneKey(conn: { readonly id: number; readonly uid: number; readonly session?: string }): number | string {
  return conn.session === undefined ? conn.id : `${conn.uid}:${conn.session}`;
}

function laneKeyOf(conn: ReaderConnection | undefined, connId: number): number | string {
  return conn === undefined ? connId : laneKey(conn);
}
