/**
 * Writer: the client side. Connects to a Reader's socket in the background
 * and sends messages, reconnecting when the connection breaks.
 */
import { EventEmitter } from 'node:events';
import type { Writable } from 'node:stream';
import { types as utilTypes } from 'node:util';
import { AbortGroup, abortError, onAbort } from './abort';
import { binding, type NativeBinding, type NativeWriterHandle } from './binding';
import { fromNative, invalidType, IpcError, type ErrorContext } from './errors';
import { formatMetrics, WRITER_METRICS, type MetricLabels } from './metrics';
import {
  resolveSignalOptions,
  resolveStopOptions,
  resolveWriterOptions,
  validatePath,
  type ResolvedWriterOptions,
  type SignalOptions,
  type StopOptions,
  type WriterOptions,
} from './options';
import { createWritable, kTryQueue, type WritableOptions } from './stream';

/** Counters of a {@link Writer}. `written = sent + dropped + failed + queueDepth` always holds. */
export interface WriterMetrics {
  /** Calls to write() that did not throw. */
  written: number;
  /** Messages fully accepted by the kernel on some connection. */
  sent: number;
  /** Messages refused by write() because the queue was full. */
  dropped: number;
  /** Messages accepted by write() but discarded unsent by stop(). */
  failed: number;
  /** Messages waiting to be sent. */
  queueDepth: number;
  /** Bytes waiting to be sent (frames, length prefixes included). */
  queuedBytes: number;
  /** Payload bytes of the sent messages. */
  bytesSent: number;
  /** sendmsg(2) calls. */
  sendCalls: number;
  /** Successful connects. */
  connects: number;
  /** Connections lost. */
  disconnects: number;
  /** connect(2) attempts. */
  connectAttempts: number;
  /**
   * Connections closed unused because the process listening on the socket
   * (`SO_PEERCRED`) did not run as `expectOwner.uid`: nothing was sent on
   * them (`ERR_UNTRUSTED_SOCKET`; the Writer stops trying, so 0 or 1).
   */
  untrustedPeers: number;
  /** Whether a connection is up now. */
  connected: boolean;
  /** Effective SO_SNDBUF of the current connection (as the kernel reports it). */
  sendBufferSize: number;
}

/** Result of `stop()`. */
export interface WriterStopResult {
  /** Messages accepted by write() that were never sent. */
  discarded: number;
}

/** Payload of the `'reconnecting'` event. */
export interface ReconnectingInfo {
  /** Failed attempts in a row (1, 2, …); starts again at 1 once a connection got a frame through. */
  attempt: number;
  /** How long the writer waits before this attempt, in ms. */
  delayMs: number;
  /** Why the last attempt failed (`ERR_SOCKET`, with `errno` and `syscall: 'connect'`). */
  error: IpcError;
}

/** Options of {@link Writer.flush}. */
export type FlushOptions = SignalOptions;

/** Options of {@link Writer.send}. */
export type SendOptions = SignalOptions;

/** The events of a {@link Writer} and their listener arguments. */
export interface WriterEvents {
  /** A connection to the Reader is up. */
  connect: [];
  /** The connection was lost; `reason` says why. */
  disconnect: [reason: IpcError];
  /** The writer will try to connect again after `info.delayMs`. */
  reconnecting: [info: ReconnectingInfo];
  /** After write() returned false: there is room in the queue again. */
  drain: [];
  /** The Writer stopped. */
  close: [];
  /** An error that is not the caller's fault; emitted only while a listener is attached. */
  error: [error: IpcError, context: ErrorContext];
}

/** A listener of Writer event `E`. */
export type WriterListener<E extends keyof WriterEvents> = (...args: WriterEvents[E]) => void;

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
  resolve: () => void;
  reject: (e: Error) => void;
}

type State = 'idle' | 'running' | 'stopping' | 'stopped';

// Publish the ring's tail to the IO thread (or send it from the JS thread) at
// least every this many bytes, and at the end of every task. Large: each
// publish costs a sendmsg and wakes the reader, so 16 KiB chunks moved 1 KiB
// messages at about half the rate of 1 MiB chunks (bench/README.md). Capped at
// a quarter of maxBufferedBytes so that a small queue still streams.
const PUBLISH_BYTES = 1024 * 1024;
// %TypedArray%.prototype.set, called through a constant: optimized code
// then calls the builtin directly, where `ring.set(...)` looked the method up
// through a generic LoadIC on every write (~7 % of write() at 64 B).
const setBytes = Uint8Array.prototype.set;

// The real type, length and position of caller data, read from the typed
// array's internal slots, never from anything the caller can override: a
// Uint8Array subclass, or an instance with own properties, may make
// `length`, `byteLength`, `byteOffset`, `buffer`, `subarray()` or `valueOf()`
// return anything (a lying `length` once filled the queue with frames of
// stale ring memory and sent queueDepth to 4e9). These are the
// %TypedArray%.prototype getters, captured when this module loads. On
// anything that is not a typed array the tag getter returns undefined without
// running caller code: a Proxy around a Buffer has no typed-array slots (it
// passes `instanceof Uint8Array`, and its traps would run for `.length`).
// The copy itself (setBytes, i.e. %TypedArray%.prototype.set with a typed
// array source) also reads the source's internal slots only.
const typedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
function intrinsicGetter<T>(key: PropertyKey): (this: unknown) => T {
  const get = Object.getOwnPropertyDescriptor(typedArrayPrototype, key)?.get;
  if (typeof get !== 'function') throw new Error(`uds-ipc: no %TypedArray%.prototype getter for ${String(key)}`);
  return get as (this: unknown) => T;
}
const typedArrayKind = intrinsicGetter<string | undefined>(Symbol.toStringTag);
const typedArrayLength = intrinsicGetter<number>('length');
const typedArrayByteOffset = intrinsicGetter<number>('byteOffset');
const typedArrayBuffer = intrinsicGetter<ArrayBufferLike>('buffer');

/** The byte length of a real Uint8Array (a Buffer, a subclass, another realm's), else -1. */
function uint8Length(data: unknown): number {
  if (typedArrayKind.call(data) !== 'Uint8Array') return -1;
  // A read of element 0, for the optimizing compiler only: it records the
  // receiver's map, which lets TurboFan turn the getter call below into a
  // field load. Without it the call stayed a call into the builtin (~2 ns
  // more per call in a micro-benchmark; write() costs ~24 ns at 64 B).
  // Reading an element of a real typed array never runs caller code
  // (integer indices go to the buffer, never to getters or the prototype
  // chain).
  void (data as Uint8Array)[0];
  return typedArrayLength.call(data);
}

/** A copy of a real Uint8Array's bytes (see uint8Length()). */
function copyBytes(data: Uint8Array): Buffer {
  const n = typedArrayLength.call(data);
  const copy = Buffer.allocUnsafe(n);
  if (n !== 0) setBytes.call(copy, data, 0);
  return copy;
}

// Describes a Proxy in an error message without touching it: describing it
// the usual way reads its `constructor`, i.e. runs the caller's traps.
const proxyStandIn = new (class Proxy {})();

/** The TypeError (ERR_INVALID_ARG_TYPE) of write()/send() for data of the wrong type: an argument, not an option. */
function invalidData(data: unknown): TypeError {
  return invalidType('data', 'a Uint8Array, Buffer or string', utilTypes.isProxy(data) ? proxyStandIn : data, 'argument');
}

const E_CONNECT = 0;
const E_DISCONNECT = 1;
const E_RECONNECTING = 2;
const E_ERROR = 3;
const E_NOTIFY = 4;
const E_STOPPED = 5;

interface Waiter {
  head: number;
  sent: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * Sends messages to a Reader. `write()` copies each message into a bounded
 * queue shared with the writer's IO thread and returns at once; `send()` is
 * its awaitable form, and `createWriteStream()` a `stream.Writable` over it.
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
  readonly #b: NativeBinding;
  readonly #handle: NativeWriterHandle;
  readonly #ctrl: Int32Array;
  readonly #ring: Uint8Array;
  readonly #ringBuf: Buffer;
  readonly #mask: number;
  readonly #cap: number;
  readonly #maxBytes: number;
  readonly #maxWrites: number;
  readonly #maxMessage: number;
  readonly #publishBytes: number;
  readonly #iTail: number;
  readonly #iHead: number;
  readonly #iSent: number;
  readonly #iSleep: number;
  // Positions and counts wrap at 2^32 and are kept as int32 (`| 0`), the
  // way the Int32Array control block holds them: a field that went past 2^31
  // as a u32 would turn from a small integer into a heap number, changing
  // this object's shape and deoptimizing write() and everything that had
  // been optimized with it (after 2 GiB, i.e. within a second at 10 KiB).
  // Differences are taken modulo 2^32 (`>>> 0`, or `| 0` for a signed one).
  #tail = 0; // ring position after the last frame
  #accepted = 0; // frames accepted
  #payload = 0; // payload bytes accepted
  #headCache = 0; // last head read from the IO thread (only moves forward)
  #sentCache = 0; // last sent count read from the IO thread
  #unpublished = 0; // bytes appended since the tail was last published
  #publishQueued = false;
  readonly #publishTask = (): void => {
    this.#publishQueued = false;
    if (this.#unpublished !== 0) this.#publish();
  };
  #state: State = 'idle';
  #written = 0;
  #dropped = 0;
  #failed = 0;
  #waiters: Waiter[] = [];
  #drainWanted: { head: number; sent: number } | undefined;
  #stopPromise: Promise<WriterStopResult> | undefined;
  #stopResolve: ((r: WriterStopResult) => void) | undefined;
  #lastNative: Record<string, number | boolean> = {};
  #sends: PendingSend[] = []; // send() calls waiting for room, in call order
  readonly #aborts = new AbortGroup(); // signals of waiting send()/flush() calls

  /**
   * @param path - The Reader's socket path, or `'@name'` for an abstract socket.
   * @param options - See {@link WriterOptions}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`, `ERR_INVALID_ARG_VALUE`) for invalid options; IpcError `ERR_PATH_TOO_LONG`.
   */
  constructor(path: string, options?: WriterOptions) {
    super();
    this.path = validatePath(path);
    this.#opts = resolveWriterOptions(options, this.path);
    this.#b = binding();
    const c = this.#b.protocol.ctrl;
    let cap = 1;
    while (cap < this.#opts.maxBufferedBytes) cap *= 2;
    const shared = new ArrayBuffer(c.BYTES + cap);
    this.#ctrl = new Int32Array(shared, 0, c.BYTES / 4);
    this.#ring = new Uint8Array(shared, c.BYTES, cap);
    this.#ringBuf = Buffer.from(shared, c.BYTES, cap);
    this.#cap = cap;
    this.#mask = cap - 1;
    this.#maxBytes = this.#opts.maxBufferedBytes;
    this.#maxWrites = this.#opts.maxBufferedWrites;
    this.#maxMessage = this.#opts.maxMessageSize;
    this.#publishBytes = Math.max(1, Math.min(PUBLISH_BYTES, Math.floor(this.#maxBytes / 4)));
    this.#iTail = c.TAIL;
    this.#iHead = c.HEAD;
    this.#iSent = c.SENT;
    this.#iSleep = c.SLEEP;
    const o = this.#opts;
    this.#handle = new this.#b.WriterHandle(
      this.path,
      {
        sendBufferSize: o.sendBufferSize,
        writeTimeoutMs: o.writeTimeoutMs,
        expectOwner: o.expectOwner,
        reconnect: o.reconnect === false ? false : { ...o.reconnect },
      },
      shared,
    );
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
    this.#handle.start(() => this.#onEvent());
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
  write(data: Uint8Array | string): boolean {
    if (this.#state === 'stopping' || this.#state === 'stopped') {
      throw new IpcError('ERR_NOT_RUNNING', 'write() after stop(): this Writer no longer sends');
    }
    let len: number;
    const isString = typeof data === 'string';
    if (isString) len = Buffer.byteLength(data, 'utf8');
    // The real length (see uint8Length()), never `data.length`: a caller's
    // getter or own property could say anything.
    else if ((len = uint8Length(data)) < 0) throw invalidData(data);
    if (len > this.#maxMessage) {
      throw new IpcError(
        'ERR_MESSAGE_TOO_LARGE',
        `Message of ${len} bytes exceeds maxMessageSize (${this.#maxMessage} bytes)`,
      );
    }
    const total = len + (len < 0x80 ? 1 : len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5);
    this.#written++;
    // Room is checked against cached head/sent values first; the shared ones
    // are only read when the cache says the queue might be full.
    if (!this.#fits(total) && !this.#roomAfterAll(total)) {
      this.#dropped++;
      this.#wantDrain(total);
      return false;
    }
    const tail = this.#tail; // read after #roomAfterAll(): a publish may rewind the ring
    const ring = this.#ring;
    let pos = tail & this.#mask;
    if (pos + total <= this.#cap) {
      let v = len;
      while (v >= 0x80) {
        ring[pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      ring[pos++] = v;
      if (isString) this.#ringBuf.write(data as string, pos, len, 'utf8');
      else if (len > 0) setBytes.call(ring, data as Uint8Array, pos);
    } else {
      this.#writeWrapped(pos, len, data);
    }
    this.#tail = (tail + total) | 0;
    this.#accepted = (this.#accepted + 1) | 0;
    this.#payload = (this.#payload + len) | 0;
    // The first message of a burst goes out at once (nothing waits behind it
    // yet: no added latency); the rest of the burst is published every
    // #publishBytes and when the task ends (one microtask per burst).
    this.#unpublished += total;
    if (this.#unpublished >= this.#publishBytes) this.#publish();
    else if (!this.#publishQueued) {
      this.#publishQueued = true;
      this.#publish();
      queueMicrotask(this.#publishTask);
    }
    return true;
  }

  // The ring was rewound: everything up to the old tail is sent, and head and
  // tail moved on to `tail`. Every pending flush()/'drain' target is reached:
  // move it to the new head (a target more than 2^31 behind, e.g. from the
  // previous lap of a 2 GiB ring or after several rewinds, would read as not
  // reached in the 32-bit comparison) and settle it now (promises and
  // 'drain' stay asynchronous).
  #rewound(tail: number): void {
    this.#tail = this.#headCache = tail;
    if (this.#waiters.length === 0 && !this.#drainWanted) return;
    for (const w of this.#waiters) w.head = tail;
    if (this.#drainWanted) this.#drainWanted.head = tail;
    this.#check(false);
  }

  // The cached head/sent say the queue may be full. Looks at the shared
  // values; if the queue is still full, publishes what waits (a direct send
  // may empty it at once, e.g. when maxBufferedWrites small messages fill it
  // before a publish chunk does) and looks again.
  #roomAfterAll(total: number): boolean {
    for (;;) {
      this.#headCache = Atomics.load(this.#ctrl, this.#iHead);
      this.#sentCache = Atomics.load(this.#ctrl, this.#iSent);
      if (this.#fits(total)) return true;
      if (this.#unpublished === 0) return false;
      this.#publish();
    }
  }

  // Whether a frame of `total` bytes fits, by the cached head and sent count.
  #fits(total: number): boolean {
    return (
      ((this.#tail - this.#headCache) >>> 0) + total <= this.#maxBytes &&
      ((this.#accepted - this.#sentCache) >>> 0) < this.#maxWrites
    );
  }

  // Makes every appended frame visible to the IO thread, or sends it directly.
  #publish(): void {
    const ctrl = this.#ctrl;
    this.#unpublished = 0;
    Atomics.store(ctrl, this.#iTail, this.#tail);
    // The IO thread sleeps with nothing in flight: send from here rather than
    // pay a thread wake-up (it hands back if the socket fills up). The counts
    // spare it walking every frame header of a send that empties the ring,
    // which may also rewind the ring (see #rewound()).
    if (Atomics.load(ctrl, this.#iSleep) === 1 && Atomics.compareExchange(ctrl, this.#iSleep, 1, 2) === 1) {
      const tail = this.#handle.sendDirect(this.#accepted, this.#payload);
      if (typeof tail === 'number' && tail !== this.#tail) this.#rewound(tail);
    }
  }

  // A frame that runs past the end of the ring: header byte by byte (it may
  // wrap too), then the payload in at most two copies, without a temporary
  // (a fresh allocation per wrap cost page faults at 100 KiB).
  #writeWrapped(pos: number, len: number, data: Uint8Array | string): void {
    const ring = this.#ring;
    const mask = this.#mask;
    let p = pos;
    let v = len;
    while (v >= 0x80) {
      ring[p] = (v & 0x7f) | 0x80;
      p = (p + 1) & mask;
      v >>>= 7;
    }
    ring[p] = v;
    p = (p + 1) & mask;
    if (len === 0) return;
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const first = Math.min(len, this.#cap - p);
    if (first === len) {
      setBytes.call(ring, bytes, p);
      return;
    }
    // Two views of the real bytes, built from the internal buffer and offset
    // (not the caller's `subarray()`, `buffer` or `byteOffset`).
    const buf = typedArrayBuffer.call(bytes);
    const off = typedArrayByteOffset.call(bytes);
    setBytes.call(ring, new Uint8Array(buf, off, first), p);
    setBytes.call(ring, new Uint8Array(buf, off + first, len - first), 0);
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
      const { signal } = resolveSignalOptions('send options', options);
      if (signal?.aborted) throw abortError(signal);
      if (this.#state === 'stopping' || this.#state === 'stopped') {
        throw new IpcError('ERR_NOT_RUNNING', 'send() after stop(): this Writer no longer sends');
      }
      if (this.#sends.length === 0 && this.#queue(data)) return Promise.resolve();
      // The queue is full (or earlier sends wait): wait in line for 'drain'.
      if (this.#sends.length !== 0) this.#checkMessage(data);
      return new Promise<void>((resolve, reject) => {
        // A copy of the real bytes (write() or #checkMessage() checked the type).
        const s: PendingSend = { data: typeof data === 'string' ? data : copyBytes(data), resolve, reject };
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

  // write() for send(): a refused message is not counted as written/dropped,
  // since send() will queue it later.
  #queue(data: Uint8Array | string): boolean {
    if (this.write(data)) return true;
    this.#written--;
    this.#dropped--;
    return false;
  }

  // The checks write() makes, for a message that has to wait.
  #checkMessage(data: Uint8Array | string): void {
    const len = typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : uint8Length(data);
    if (len < 0) throw invalidData(data);
    if (len > this.#maxMessage) {
      throw new IpcError('ERR_MESSAGE_TOO_LARGE', `Message of ${len} bytes exceeds maxMessageSize (${this.#maxMessage} bytes)`);
    }
  }

  // On 'drain': queues waiting sends in order. True when none is left waiting.
  #pumpSends(): boolean {
    const q = this.#sends;
    while (q.length !== 0) {
      if (this.#state !== 'running' && this.#state !== 'idle') return true;
      const s = q[0];
      let ok: boolean;
      try {
        ok = this.#queue(s.data);
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
    let signal: AbortSignal | undefined;
    try {
      signal = resolveSignalOptions('flush options', options).signal;
    } catch (e) {
      return Promise.reject(e);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.#unpublished !== 0) this.#publish();
    const w: Waiter = { head: this.#tail, sent: this.#accepted, resolve: () => {}, reject: () => {} };
    if (this.#reached(w.head, w.sent)) return Promise.resolve();
    if (this.#state === 'stopped') {
      return Promise.reject(new IpcError('ERR_NOT_RUNNING', 'The Writer stopped with messages unsent'));
    }
    const p = new Promise<void>((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    if (signal) {
      const { resolve, reject } = w;
      const off = this.#aborts.add(signal, () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
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
    this.#waiters.push(w);
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
      const discarded = (this.#accepted - Atomics.load(this.#ctrl, this.#iSent)) >>> 0;
      this.#failed += discarded;
      this.#handle.close();
      this.#settleWaiters();
      this.#stopPromise = Promise.resolve({ discarded });
      return this.#stopPromise;
    }
    if (this.#unpublished !== 0) this.#publish();
    this.#state = 'stopping';
    this.#stopPromise = new Promise<WriterStopResult>((resolve) => {
      this.#stopResolve = resolve;
    });
    this.#handle.beginStop(signal?.aborted ? 0 : timeoutMs);
    if (signal) this.#forceOnAbort(signal);
    return this.#stopPromise;
  }

  // While stopping, an abort of `signal` moves the deadline to now.
  #forceOnAbort(signal: AbortSignal): void {
    if (this.#state !== 'stopping') return;
    const force = (): void => {
      if (this.#state === 'stopping') this.#handle.beginStop(0);
    };
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
    return formatMetrics(prefix, labels, WRITER_METRICS, this.metrics());
  }

  /**
   * Counters and gauges; `written = sent + dropped + failed + queueDepth` always holds.
   * @returns A fresh snapshot (a plain object).
   */
  metrics(): WriterMetrics {
    const n = this.#state === 'stopped' ? this.#lastNative : this.#handle.metrics();
    const queueDepth = this.#state === 'stopped' ? 0 : (this.#accepted - Atomics.load(this.#ctrl, this.#iSent)) >>> 0;
    const queuedBytes = this.#state === 'stopped' ? 0 : (this.#tail - Atomics.load(this.#ctrl, this.#iHead)) >>> 0;
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
    };
  }

  /**
   * Lets the process exit while this Writer runs (like `socket.unref()`).
   * @returns this Writer.
   */
  unref(): this {
    this.#handle.unref();
    return this;
  }

  /**
   * Undoes {@link Writer.unref}: a running Writer keeps the process alive again.
   * @returns this Writer.
   */
  ref(): this {
    this.#handle.ref();
    return this;
  }

  /** `await using writer = ...`: calls {@link Writer.stop} with the default timeout. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #reached(head: number, sent: number): boolean {
    const ctrl = this.#ctrl;
    return (
      ((Atomics.load(ctrl, this.#iHead) - head) | 0) >= 0 && ((Atomics.load(ctrl, this.#iSent) - sent) | 0) >= 0
    );
  }

  #wantDrain(total: number): void {
    if (this.#drainWanted || this.#state === 'idle') {
      if (!this.#drainWanted) this.#drainWanted = this.#drainTarget(total);
      return;
    }
    this.#drainWanted = this.#drainTarget(total);
    this.#arm();
  }

  // 'drain' when the queue is at most half full and the refused message fits.
  #drainTarget(total: number): { head: number; sent: number } {
    const room = Math.min(Math.floor(this.#maxBytes / 2), this.#maxBytes - total);
    return {
      head: (this.#tail - room) | 0,
      sent: (this.#accepted - Math.floor(this.#maxWrites / 2)) | 0,
    };
  }

  // Asks the IO thread to tell us when the nearest target is reached.
  #arm(): void {
    const c = this.#b.protocol.ctrl;
    const ctrl = this.#ctrl;
    for (;;) {
      this.#check(false);
      const head = Atomics.load(ctrl, this.#iHead);
      let best: { head: number; sent: number } | undefined = this.#drainWanted;
      for (const w of this.#waiters) {
        if (!best || ((w.head - head) | 0) < ((best.head - head) | 0)) best = w;
      }
      if (!best) return;
      ctrl[c.NOTIFY_HEAD] = best.head;
      ctrl[c.NOTIFY_SENT] = best.sent;
      Atomics.store(ctrl, c.NOTIFY_ARMED, 1);
      // The IO thread may have passed the target before it saw the request.
      if (!this.#reached(best.head, best.sent)) return;
      Atomics.store(ctrl, c.NOTIFY_ARMED, 0);
    }
  }

  // Resolves reached waiters; emits 'drain' when due.
  #check(rearm: boolean): void {
    if (this.#waiters.length) {
      const left: Waiter[] = [];
      for (const w of this.#waiters) {
        if (this.#reached(w.head, w.sent)) w.resolve();
        else left.push(w);
      }
      this.#waiters = left;
    }
    if (this.#drainWanted && this.#reached(this.#drainWanted.head, this.#drainWanted.sent)) {
      this.#drainWanted = undefined;
      process.nextTick(() => {
        // Waiting send()s go first; 'drain' once none is left waiting.
        if (this.#pumpSends()) this.emit('drain');
      });
    }
    if (rearm) this.#arm();
  }

  #settleWaiters(): void {
    for (const w of this.#waiters) {
      if (this.#reached(w.head, w.sent)) w.resolve();
      else w.reject(new IpcError('ERR_NOT_RUNNING', 'The Writer stopped with messages unsent'));
    }
    this.#waiters = [];
    this.#drainWanted = undefined;
  }

  #onEvent(): void {
    const ev = this.#handle.drain();
    for (let i = 0; i < ev.length; i += 4) {
      switch (ev[i] as number) {
        case E_CONNECT:
          this.emit('connect');
          break;
        case E_DISCONNECT:
          this.emit('disconnect', toError(ev[i + 1]));
          break;
        case E_RECONNECTING:
          this.emit('reconnecting', { attempt: ev[i + 2] as number, delayMs: ev[i + 3] as number, error: toError(ev[i + 1]) });
          break;
        case E_ERROR: {
          const err = toError(ev[i + 1]);
          this.#report(err, err.code === 'ERR_WRITE_TIMEOUT' ? 'send' : 'connect');
          break;
        }
        case E_NOTIFY:
          break;
        case E_STOPPED:
          this.#onStopped(ev[i + 1] as number);
          return;
      }
    }
    if (this.#state === 'running' || this.#state === 'stopping') {
      if (this.#state === 'running' && this.#drainWanted === undefined && this.#waiters.length === 0) return;
      this.#check(true);
    }
  }

  #onStopped(discarded: number): void {
    this.#lastNative = this.#handle.metrics();
    this.#handle.close();
    this.#failed += discarded;
    this.#state = 'stopped';
    this.#settleWaiters();
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

function toError(o: unknown): IpcError {
  const e = fromNative(Object.assign(new Error((o as { message?: string })?.message ?? 'unknown error'), o as object));
  return e instanceof IpcError ? e : new IpcError('ERR_SOCKET', String((e as Error)?.message ?? e));
}
