/**
 * Options, their defaults and their validation. Everything a user passes is
 * checked here, before anything reaches native code.
 * @internal
 */
import { availableParallelism } from 'node:os';
import { invalidType, invalidValue, outOfRange, IpcError, type ErrorContext } from './errors';

// ─── Defaults and limits ─────────────────────────────────────────────────────
// Their one place in TypeScript. Those marked (core) reach the native engines
// and are declared in native/core/protocol.h too; test/protocol.test.ts
// checks that both sides agree.

/** Largest `maxMessageSize` accepted (1 GiB). (core) */
export const MAX_MESSAGE_SIZE_LIMIT = 1024 * 1024 * 1024;
/** Default maximum message size: 10 MiB, as in the Go library. (core) */
export const DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024;
/** Longest socket path in bytes of UTF-8 (sun_path is 108 bytes with the NUL). (core) */
export const MAX_PATH_BYTES = 107;
/** @internal Reader `slabSize`: default and range. (core) */
export const DEFAULT_SLAB_SIZE = 512 * 1024;
/** @internal */
export const MIN_SLAB_SIZE = 64 * 1024;
/** @internal */
export const MAX_SLAB_SIZE = 64 * 1024 * 1024;
/** @internal Reader `maxPendingBytes`. (core) */
export const DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024;
/** @internal Reader `frameTimeoutMs`: 30 s (see ReaderOptions.frameTimeoutMs). (core) */
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;
/** @internal Reader `backlog`, as `net.Server`. (core) */
export const DEFAULT_BACKLOG = 511;
/** @internal Writer `reconnect` policy. (core: all but maxAttempts) */
export const DEFAULT_RECONNECT: Readonly<Required<ReconnectOptions>> = Object.freeze({
  initialDelayMs: 100,
  maxDelayMs: 5000,
  multiplier: 2,
  maxAttempts: 0,
});
/** @internal Reader `mode` and `directoryMode`: owner only. */
export const DEFAULT_MODE = 0o600;
/** @internal */
export const DEFAULT_DIRECTORY_MODE = 0o700;
/** @internal Writer `maxBufferedWrites`. */
export const DEFAULT_MAX_BUFFERED_WRITES = 10_000;
/**
 * @internal Writer `maxBufferedWrites` with `delivery: 'acked'`: the window of
 * unacknowledged messages must hold more than one of the reader's batches (a
 * 512 KiB slab holds about 8,000 messages of 64 B) for acknowledgements to
 * overlap with sending; `maxBufferedBytes` still bounds the memory.
 */
export const DEFAULT_MAX_BUFFERED_WRITES_ACKED = 100_000;
/** @internal Writer `maxBufferedBytes` (or maxMessageSize + 10 when that is larger). */
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/** @internal Writer `sendBufferSize`. */
export const DEFAULT_SEND_BUFFER_SIZE = 4 * 1024 * 1024;
/** @internal Reader `maxReplyBytes`: per connection. (core) */
export const DEFAULT_MAX_REPLY_BYTES = 1024 * 1024;
/** @internal Reader `replyTimeoutMs`. (core) */
export const DEFAULT_REPLY_TIMEOUT_MS = 30_000;
/** @internal Reader `maxPendingFds`: per connection. (core) */
export const DEFAULT_MAX_PENDING_FDS = 256;
/** @internal Writer `maxBufferedFds`. (core) */
export const DEFAULT_MAX_BUFFERED_FDS = 256;
/** @internal Writer `handshakeTimeoutMs` (acked delivery). (core) */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
/** @internal Reader `maxSessions` (acked delivery). (core) */
export const DEFAULT_MAX_SESSIONS = 1024;
/**
 * Delivery guarantee: `'at-most-once'` (the default, wire-compatible with the
 * Go library: what a reader that dies had received and not handled is lost)
 * or `'acked'` (both ends must use it: the writer keeps every message until
 * the reader's handler is done with it, and sends again after a reconnect
 * what was not acknowledged). See docs/acked.md.
 */
export type Delivery = 'at-most-once' | 'acked';
/** @internal The most descriptors one message may carry (the kernel's SCM_MAX_FD). (core) */
export const MAX_FDS_PER_MESSAGE = 253;
/**
 * The kind of Unix socket: `'stream'` (SOCK_STREAM, the default: frames with
 * a length prefix, Go-compatible), `'seqpacket'` (SOCK_SEQPACKET: one packet
 * per message, boundaries kept by the kernel, no prefix) or `'dgram'`
 * (SOCK_DGRAM: the Reader binds a datagram socket that any number of Writers
 * send to, one datagram per message).
 */
export type SocketType = 'stream' | 'seqpacket' | 'dgram';

/** @internal `timeoutMs` of stop(). */
export const DEFAULT_STOP_TIMEOUT_MS = 5000;
/** Largest timeout in ms (a setTimeout() delay). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * The `onError` option: called with errors that are not the caller's fault.
 * @param error - Usually an `IpcError` with a stable `code`.
 * @param context - Where it happened (`'connection'`, `'handler'`, `'connect'`, ...).
 * @param connection - The Reader's connection concerned, if any (Reader only).
 */
export type ErrorHandler = (error: Error, context: ErrorContext, connection?: unknown) => void;

/** Options of {@link Reader}. */
export interface ReaderOptions {
  /** Largest message accepted from a peer, in bytes. A peer announcing more is disconnected (`ERR_MESSAGE_TOO_LARGE`). Default 10 MiB; at most 1 GiB. */
  maxMessageSize?: number;
  /**
   * Memory a connection may hold in batches handed to the handler but not yet
   * finished with, above which that connection is no longer read until the
   * handler catches up. Counted as the memory the batches occupy, not their
   * payload alone: payload and length prefixes, 8 bytes per message (its
   * entry in the batch's offsets table) and 1 KiB per batch, so a flood of
   * empty or tiny frames is held to it like any other traffic. Default 8 MiB.
   */
  maxPendingBytes?: number;
  /** listen(2) backlog. Default 511. */
  backlog?: number;
  /** Permission bits of the socket file, applied before the socket listens. Default `0o600` (owner only). */
  mode?: number;
  /** Size of the receive slabs in bytes (advanced). Default 512 KiB. */
  slabSize?: number;
  /** Close a connection that sends nothing for this many ms (0 = never). The `'disconnect'` event's reason has code `ERR_INACTIVITY_TIMEOUT`. Default 0. */
  inactivityTimeoutMs?: number;
  /**
   * Close a connection whose frame takes longer than this many ms to arrive,
   * from its first byte to its last (0 = never): a peer trickling a frame a
   * byte at a time is not inactive, but it is holding a buffer. The
   * `'disconnect'` event's reason has code `ERR_FRAME_TIMEOUT`. Time the
   * Reader itself stopped reading the connection (backpressure: the handler
   * fell behind) does not count. Default 30000: a local writer hands a whole
   * frame to the kernel at once, so even a maxMessageSize frame arrives in
   * milliseconds unless the writer process is stalled or hostile.
   */
  frameTimeoutMs?: number;
  /**
   * Where received bytes are read. While traffic is light, on the JavaScript
   * thread (the reader's IO thread hands its event loop over), so a message
   * wakes one thread instead of two: lower latency, like `node:net`. Under
   * load: `'light'` moves reading back to the IO thread, beside the handler
   * (worth it with spare cores); `'always'` keeps it on the JavaScript thread
   * (fewer threads and wake-ups; the IO thread still takes over if the
   * JavaScript thread is blocked for 50 ms). `true` (the default) is
   * `'always'` when at most 2 CPUs are available to the process
   * (`os.availableParallelism()`), else `'light'`. `false` always reads on
   * the IO thread.
   */
  jsThreadPolling?: boolean | 'light' | 'always';
  /** Owner of the socket file: a uid or a user name. Applied before the socket listens. Not for abstract names. */
  uid?: number | string;
  /** Group of the socket file: a gid or a group name. Applied before the socket listens. Not for abstract names. */
  gid?: number | string;
  /** Mode for parent directories that do not exist yet and are created. Default `0o700`. Not for abstract names. */
  directoryMode?: number;
  /** Only peers whose uid (SO_PEERCRED, read at accept) is listed may connect (or whose gid is in `allowGids`). Ids from 0 to 2^32−2. */
  allowUids?: number[];
  /** Only peers whose gid is listed may connect (or whose uid is in `allowUids`). Ids from 0 to 2^32−2. */
  allowGids?: number[];
  /** Decides per connection, before any of its messages is read; false, a throw or a rejection refuses it (`ERR_PEER_REJECTED`). */
  authorize?: (peer: PeerInfo) => boolean | Promise<boolean>;
  /** systemd socket activation: `'auto'` (default) takes a listener systemd passed to this process (by path, or the only one); `{ name }` takes the one named in LISTEN_FDNAMES; `false` never does. */
  systemd?: 'auto' | false | { name: string };
  /** Send `READY=1` to $NOTIFY_SOCKET once listening and `STOPPING=1` on stop. Default false. */
  notifySystemd?: boolean;
  /** Called for errors that are not the caller's fault (a peer's bad frame, a failing handler). Never throws into the IO path. */
  onError?: ErrorHandler;
  /**
   * Replies (`connection.write()`/`send()`): bytes (frames, length prefixes
   * included) that may wait per connection for its writer to read them,
   * beyond which `write()` returns false and `send()` waits. Nothing is
   * reserved until a connection replies. Default 1 MiB.
   */
  maxReplyBytes?: number;
  /**
   * A connection's queued replies that make no progress for this many ms (its
   * writer does not read them: a Go writer never does) are discarded, counted
   * in `metrics().replyBytesDropped` and reported as an `ERR_WRITE_TIMEOUT`
   * error; the connection stays open and is still read. 0 = never. Default 30000.
   */
  replyTimeoutMs?: number;
  /**
   * How the handler's batches are scheduled. `'serial'` (default): one batch
   * at a time across all connections; an async handler holds back every
   * connection. `'connection'`: one batch at a time per connection; an async
   * handler holds back only its own connection (which is paused at
   * `maxPendingBytes`), the others go on. Order within a connection is kept
   * either way.
   */
  concurrency?: 'serial' | 'connection';
  /**
   * Accept file descriptors sent with messages (SCM_RIGHTS): `batch.takeFds(i)`
   * hands message i's to the handler; those not taken are closed when the
   * batch is released. When false (default), a connection that sends any is
   * closed with `ERR_UNEXPECTED_FDS` and what it sent is closed at once.
   */
  acceptFds?: boolean;
  /**
   * The socket type: `'stream'` (default), `'seqpacket'` (one packet per
   * message) or `'dgram'` (one datagram per message, from any number of
   * writers, no connections). No replies, descriptors or systemd activation
   * on the packet types yet. Writers must use the same type (a writer of
   * another type is refused by the kernel).
   */
  type?: SocketType;
  /**
   * `type: 'dgram'` only: read each datagram's sender credentials
   * (`SCM_CREDENTIALS`), as `batch.credentials(i)`. Implied by
   * `allowUids`/`allowGids`, which then apply per datagram (others are
   * dropped and counted in `rejected`). Default false.
   */
  passCredentials?: boolean;
  /**
   * With `acceptFds`: descriptors received on one connection and not yet
   * released (their batches not done with) beyond which that connection is
   * paused, as at `maxPendingBytes`. Default 256.
   */
  maxPendingFds?: number;
  /**
   * `'acked'`: acknowledged delivery (docs/acked.md). Each message is
   * acknowledged to its writer once the handler is done with its batch
   * (returned, or its promise settled, rejected included); copies a writer
   * sends again after a reconnect are dropped if this reader delivered them
   * already; `batch.sequence(i)` and `batch.redelivered(i)` tell the handler
   * where a message stands. Writers in the default mode (or the Go library)
   * are still served, at most once, unless `requireAcked`. Stream sockets only;
   * no replies on acked connections. Default `'at-most-once'`.
   */
  delivery?: Delivery;
  /** With `delivery: 'acked'`: refuse writers that do not speak it (`ERR_PROTOCOL_MISMATCH`). Default false. */
  requireAcked?: boolean;
  /** With `delivery: 'acked'`: writer sessions remembered to drop copies (least recently used forgotten first). Default 1024. */
  maxSessions?: number;
}

/** A peer's credentials, read with SO_PEERCRED when its connection was accepted. */
export interface PeerInfo {
  /** Connection id (0 for a peer refused by allowUids/allowGids before it got one). */
  readonly id: number;
  /** Process id as of its connect() (may have been reused since). */
  readonly pid: number;
  /** User id (65534 if unmapped in this user namespace). */
  readonly uid: number;
  /** Group id. */
  readonly gid: number;
}

/** Reconnection policy of a {@link Writer}. */
export interface ReconnectOptions {
  /** First retry delay upper bound in ms (full jitter). Default 100. */
  initialDelayMs?: number;
  /** Largest retry delay in ms. Default 5000. */
  maxDelayMs?: number;
  /** Growth of the delay bound per attempt. Default 2. */
  multiplier?: number;
  /** Attempts before giving up (`ERR_CONNECT_FAILED`); 0 = never give up. Default 0. */
  maxAttempts?: number;
}

/** Options of {@link Writer}. */
export interface WriterOptions {
  /** Largest message `write()` accepts, in bytes; larger throws `ERR_MESSAGE_TOO_LARGE`. Default 10 MiB; at most 1 GiB. */
  maxMessageSize?: number;
  /** Messages that may wait in the queue (`delivery: 'acked'`: not yet acknowledged); beyond it `write()` returns false. Default 10,000 (100,000 with `delivery: 'acked'`). */
  maxBufferedWrites?: number;
  /** Bytes (frames, headers included) that may wait in the queue. Default the larger of 16 MiB and maxMessageSize + 10. Must be at least maxMessageSize + 10. */
  maxBufferedBytes?: number;
  /** SO_SNDBUF to ask for, in bytes; only ever raised, capped by net.core.wmem_max. Default 4 MiB. */
  sendBufferSize?: number;
  /** Replace a connection that accepts no bytes for this many ms while messages are queued, reporting `ERR_WRITE_TIMEOUT` (0 = never). Default 0. */
  writeTimeoutMs?: number;
  /** Reconnect with exponential backoff and full jitter; `false` disables (the writer stops trying after the first failure). */
  reconnect?: ReconnectOptions | false;
  /** Refuse (`ERR_UNTRUSTED_SOCKET`, the writer stops trying) unless the socket file has owner `uid`, group `gid` and no permission bits beyond `mode`, and the process listening on it runs as `uid` (`SO_PEERCRED`, checked after connect and before anything is sent). Not for abstract names. */
  expectOwner?: { uid?: number; gid?: number; mode?: number };
  /** Called for errors that are not the caller's fault (connect failures, lost connections). */
  onError?: ErrorHandler;
  /**
   * Descriptors (`write(data, { fds })`) held for messages not yet fully sent,
   * beyond which `write()` returns false and `send()` waits. Default 256.
   */
  maxBufferedFds?: number;
  /**
   * The socket type, `'stream'` (default) or `'seqpacket'`: each message is
   * one packet, so `maxMessageSize` is capped by what one packet can hold
   * (`writer.maxMessageSize`, about 4 MiB with the default `sendBufferSize`
   * and sysctls). No `onMessage` or descriptors on seqpacket yet.
   */
  type?: SocketType;
  /**
   * `'acked'`: acknowledged delivery (docs/acked.md). Every message is kept
   * until the reader acknowledges it (its handler is done with it), and what
   * was not acknowledged is sent again, in order, after a reconnect. The
   * queue limits (`maxBufferedWrites`, `maxBufferedBytes`) bound the messages
   * not yet acknowledged. Needs a reader in acked mode: without its greeting
   * within `handshakeTimeoutMs` the writer reports `ERR_PROTOCOL_MISMATCH`
   * and keeps trying. Stream sockets only; no `onMessage`. Default
   * `'at-most-once'`.
   */
  delivery?: Delivery;
  /** With `delivery: 'acked'`: how long to wait for the reader's greeting after connecting, in ms. Default 5000. */
  handshakeTimeoutMs?: number;
}

/** @internal */
export interface ResolvedReaderOptions {
  maxMessageSize: number;
  maxPendingBytes: number;
  backlog: number;
  mode: number;
  slabSize: number;
  inactivityTimeoutMs: number;
  frameTimeoutMs: number;
  /** Resolved: never, light traffic only, or also under load. */
  jsThreadPolling: 'off' | 'light' | 'always';
  uid: number | string | undefined;
  gid: number | string | undefined;
  directoryMode: number;
  allowUids: number[];
  allowGids: number[];
  authorize: ((peer: PeerInfo) => boolean | Promise<boolean>) | undefined;
  systemd: 'auto' | false | { name: string };
  notifySystemd: boolean;
  onError: ErrorHandler | undefined;
  maxReplyBytes: number;
  replyTimeoutMs: number;
  concurrency: 'serial' | 'connection';
  acceptFds: boolean;
  maxPendingFds: number;
  type: SocketType;
  passCredentials: boolean;
  delivery: Delivery;
  requireAcked: boolean;
  maxSessions: number;
}

/** @internal */
export interface ResolvedWriterOptions {
  maxMessageSize: number;
  maxBufferedWrites: number;
  maxBufferedBytes: number;
  sendBufferSize: number;
  writeTimeoutMs: number;
  expectOwner: { uid: number; gid: number; mode: number } | undefined;
  reconnect: Required<ReconnectOptions> | false;
  onError: ErrorHandler | undefined;
  maxBufferedFds: number;
  type: SocketType;
  delivery: Delivery;
  handshakeTimeoutMs: number;
}

/** @internal Validates an options object (undefined → `{}`): TypeError ERR_INVALID_ARG_TYPE otherwise. */
export function checkObject(name: string, v: unknown): Record<string, unknown> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalidType(name, 'an object', v);
  return v as Record<string, unknown>;
}

/** @internal Refuses keys of `o` not in `allowed` (ERR_INVALID_ARG_VALUE): `name` says which options, e.g. "Reader options". */
export function checkKeys(name: string, o: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw invalidValue(`Unknown option "${k}" in ${name}. Known options: ${allowed.join(', ')}`);
  }
}

/**
 * @internal Validates an integer from `min` to `max`: TypeError
 * ERR_INVALID_ARG_TYPE unless a number (`expected` words the type), RangeError
 * ERR_OUT_OF_RANGE otherwise.
 */
export function checkInteger(
  name: string,
  v: unknown,
  min: number,
  max: number,
  kind: 'option' | 'argument' = 'option',
  expected = 'a number',
): number {
  if (typeof v !== 'number') throw invalidType(name, expected, v, kind);
  if (!Number.isInteger(v) || v < min || v > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, v);
  return v;
}

/** Validates an integer option (undefined → default). */
export function intOption(name: string, v: unknown, def: number, min: number, max: number): number {
  return v === undefined ? def : checkInteger(name, v, min, max);
}

function numberOption(name: string, v: unknown, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number') throw invalidType(name, 'a number', v);
  if (!Number.isFinite(v) || v < min || v > max) throw outOfRange(name, `>= ${min} and <= ${max}`, v);
  return v;
}

function fnOption<T>(name: string, v: unknown): T | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'function') throw invalidType(name, 'a function', v);
  return v as T;
}

/** True for a Linux abstract socket name ("@name"). */
export function isAbstract(path: string): boolean {
  return path.startsWith('@');
}

/**
 * Validates a socket path: a non-empty string with no NUL, at most 107 bytes
 * of UTF-8; or "@name" for an abstract socket, the name 1 to 107 bytes.
 */
export function validatePath(path: unknown): string {
  if (typeof path !== 'string') throw invalidType('path', 'a string', path);
  if (path.length === 0 || path.includes('\0')) {
    throw invalidValue(`The socket path must be a non-empty string without NUL bytes. Received ${JSON.stringify(path)}`);
  }
  const abstract = isAbstract(path);
  const bytes = Buffer.byteLength(abstract ? path.slice(1) : path, 'utf8');
  if (abstract && bytes === 0) throw invalidValue('An abstract socket name ("@name") needs at least one byte after the "@"');
  if (bytes > MAX_PATH_BYTES) {
    if (abstract) {
      throw new IpcError(
        'ERR_PATH_TOO_LONG',
        `The abstract socket name is ${bytes} bytes of UTF-8; at most ${MAX_PATH_BYTES} are allowed: ${path}`,
      );
    }
    throw new IpcError(
      'ERR_PATH_TOO_LONG',
      `The socket path is ${bytes} bytes of UTF-8; Unix sockets allow at most ${MAX_PATH_BYTES}: ${path}`,
    );
  }
  return path;
}

const READER_KEYS = [
  'maxMessageSize',
  'maxPendingBytes',
  'backlog',
  'mode',
  'slabSize',
  'inactivityTimeoutMs',
  'frameTimeoutMs',
  'jsThreadPolling',
  'uid',
  'gid',
  'directoryMode',
  'allowUids',
  'allowGids',
  'authorize',
  'systemd',
  'notifySystemd',
  'onError',
  'maxReplyBytes',
  'replyTimeoutMs',
  'concurrency',
  'acceptFds',
  'maxPendingFds',
  'type',
  'passCredentials',
  'delivery',
  'requireAcked',
  'maxSessions',
] as const;
const WRITER_KEYS = [
  'maxMessageSize',
  'maxBufferedWrites',
  'maxBufferedBytes',
  'sendBufferSize',
  'writeTimeoutMs',
  'expectOwner',
  'reconnect',
  'onError',
  'maxBufferedFds',
  'type',
  'delivery',
  'handshakeTimeoutMs',
] as const;
const RECONNECT_KEYS = ['initialDelayMs', 'maxDelayMs', 'multiplier', 'maxAttempts'] as const;

/** Largest user or group id accepted (uid_t is 32-bit unsigned; 2^32−1 means "no id"). */
const MAX_ID = 2 ** 32 - 2;

function idOption(name: string, v: unknown): number | string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') {
    if (v.length === 0) throw invalidType(name, 'a non-negative integer or a non-empty name', v);
    return v;
  }
  if (typeof v !== 'number') throw invalidType(name, 'a number or a name', v);
  return intOption(name, v, 0, 0, MAX_ID);
}

function idListOption(name: string, v: unknown): number[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw invalidType(name, 'an array of integers', v);
  // The same range as the uid/gid options: uid_t is unsigned 32-bit, and
  // 2^32-1 is (uid_t)-1, "no id".
  return v.map((x, i) => intOption(`${name}[${i}]`, x, 0, 0, MAX_ID));
}

function typeOption(v: unknown): SocketType {
  if (v === undefined) return 'stream';
  if (typeof v !== 'string') throw invalidType('type', "'stream', 'seqpacket' or 'dgram'", v);
  if (v !== 'stream' && v !== 'seqpacket' && v !== 'dgram') {
    throw invalidValue(`The "type" option must be 'stream', 'seqpacket' or 'dgram'. Received ${JSON.stringify(v)}`);
  }
  return v;
}

// A datagram socket has no listener to ask: SO_PEERCRED of a connected
// datagram socket reads no credentials (pid 0, uid/gid -1), so expectOwner's
// check of who serves the socket cannot be made.
function writerType(v: unknown, expectOwner: unknown): SocketType {
  const type = typeOption(v);
  if (type === 'dgram' && expectOwner !== undefined) throw notWithType('expectOwner', type);
  return type;
}

/** @internal Validates `delivery` (acked: stream sockets only). */
export function deliveryOption(v: unknown, type: SocketType): Delivery {
  if (v === undefined) return 'at-most-once';
  if (typeof v !== 'string') throw invalidType('delivery', "'at-most-once' or 'acked'", v);
  if (v !== 'at-most-once' && v !== 'acked') {
    throw invalidValue(`The "delivery" option must be 'at-most-once' or 'acked'. Received ${JSON.stringify(v)}`);
  }
  if (v === 'acked' && type !== 'stream') throw notWithType("delivery: 'acked'", type);
  return v;
}

/** @internal The ERR_INVALID_ARG_VALUE for an option that the socket type does not support. */
export function notWithType(what: string, type: SocketType): TypeError {
  return invalidValue(`${what} is not supported with type '${type}' (see the socket types table in docs/options.md)`);
}

function notForAbstract(path: string, o: Record<string, unknown>, keys: readonly string[]): void {
  if (!isAbstract(path)) return;
  for (const k of keys) {
    if (o[k] !== undefined) throw invalidValue(`The "${k}" option does not apply to the abstract socket ${path}: it has no file`);
  }
}

/** @internal */
export function resolveReaderOptions(options: unknown, path = ''): ResolvedReaderOptions {
  const o = checkObject('options', options);
  checkKeys('Reader options', o, READER_KEYS);
  notForAbstract(path, o, ['mode', 'uid', 'gid', 'directoryMode']);
  let systemd: ResolvedReaderOptions['systemd'] = 'auto';
  if (o.systemd === false) systemd = false;
  else if (o.systemd !== undefined && o.systemd !== 'auto') {
    const sd = checkObject('systemd', o.systemd);
    checkKeys('systemd options', sd, ['name']);
    if (typeof sd.name !== 'string' || sd.name.length === 0) throw invalidType('systemd.name', 'a non-empty string', sd.name);
    systemd = { name: sd.name };
  }
  if (o.notifySystemd !== undefined && typeof o.notifySystemd !== 'boolean') {
    throw invalidType('notifySystemd', 'a boolean', o.notifySystemd);
  }
  const jtp = o.jsThreadPolling;
  if (jtp !== undefined && typeof jtp !== 'boolean' && typeof jtp !== 'string') {
    throw invalidType('jsThreadPolling', "a boolean, 'light' or 'always'", jtp);
  }
  if (typeof jtp === 'string' && jtp !== 'light' && jtp !== 'always') {
    throw invalidValue(`The "jsThreadPolling" option must be a boolean, 'light' or 'always'. Received ${JSON.stringify(jtp)}`);
  }
  if (o.concurrency !== undefined && typeof o.concurrency !== 'string') {
    throw invalidType('concurrency', "'serial' or 'connection'", o.concurrency);
  }
  if (o.concurrency !== undefined && o.concurrency !== 'serial' && o.concurrency !== 'connection') {
    throw invalidValue(`The "concurrency" option must be 'serial' or 'connection'. Received ${JSON.stringify(o.concurrency)}`);
  }
  if (o.acceptFds !== undefined && typeof o.acceptFds !== 'boolean') throw invalidType('acceptFds', 'a boolean', o.acceptFds);
  const type = typeOption(o.type);
  if (type === 'dgram' && o.acceptFds === true) throw notWithType('acceptFds', type);
  if (type !== 'stream') {
    if (o.systemd !== undefined && o.systemd !== false) throw notWithType('systemd', type);
    if (o.notifySystemd === true) throw notWithType('notifySystemd', type);
  }
  if (o.passCredentials !== undefined && typeof o.passCredentials !== 'boolean') {
    throw invalidType('passCredentials', 'a boolean', o.passCredentials);
  }
  if (o.passCredentials === true && type !== 'dgram') throw notWithType('passCredentials', type);
  if (type === 'dgram' && o.authorize !== undefined) throw notWithType('authorize (a datagram has no connection to hold)', type);
  const delivery = deliveryOption(o.delivery, type);
  if (o.requireAcked !== undefined && typeof o.requireAcked !== 'boolean') throw invalidType('requireAcked', 'a boolean', o.requireAcked);
  if (o.requireAcked === true && delivery !== 'acked') throw invalidValue("requireAcked needs delivery: 'acked'");
  return {
    delivery,
    requireAcked: o.requireAcked === true,
    maxSessions: intOption('maxSessions', o.maxSessions, DEFAULT_MAX_SESSIONS, 1, 2 ** 20),
    type,
    passCredentials: o.passCredentials === true,
    acceptFds: o.acceptFds === true,
    maxPendingFds: intOption('maxPendingFds', o.maxPendingFds, DEFAULT_MAX_PENDING_FDS, 1, 2 ** 20),
    maxReplyBytes: intOption('maxReplyBytes', o.maxReplyBytes, DEFAULT_MAX_REPLY_BYTES, 16, 2 ** 40),
    replyTimeoutMs: intOption('replyTimeoutMs', o.replyTimeoutMs, DEFAULT_REPLY_TIMEOUT_MS, 0, MAX_TIMEOUT_MS),
    concurrency: o.concurrency === 'connection' ? 'connection' : 'serial',
    uid: idOption('uid', o.uid),
    gid: idOption('gid', o.gid),
    directoryMode: intOption('directoryMode', o.directoryMode, DEFAULT_DIRECTORY_MODE, 0, 0o777),
    allowUids: idListOption('allowUids', o.allowUids),
    allowGids: idListOption('allowGids', o.allowGids),
    authorize: fnOption('authorize', o.authorize),
    systemd: type === 'stream' ? systemd : false,
    notifySystemd: o.notifySystemd === true,
    maxMessageSize: intOption('maxMessageSize', o.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE, 0, MAX_MESSAGE_SIZE_LIMIT),
    maxPendingBytes: intOption('maxPendingBytes', o.maxPendingBytes, DEFAULT_MAX_PENDING_BYTES, 1, 2 ** 40),
    backlog: intOption('backlog', o.backlog, DEFAULT_BACKLOG, 1, 65535),
    mode: intOption('mode', o.mode, DEFAULT_MODE, 0, 0o777),
    slabSize: intOption('slabSize', o.slabSize, DEFAULT_SLAB_SIZE, MIN_SLAB_SIZE, MAX_SLAB_SIZE),
    inactivityTimeoutMs: intOption('inactivityTimeoutMs', o.inactivityTimeoutMs, 0, 0, MAX_TIMEOUT_MS),
    frameTimeoutMs: intOption('frameTimeoutMs', o.frameTimeoutMs, DEFAULT_FRAME_TIMEOUT_MS, 0, MAX_TIMEOUT_MS),
    jsThreadPolling:
      jtp === false ? 'off' : typeof jtp === 'string' ? jtp : availableParallelism() <= 2 ? 'always' : 'light',
    onError: fnOption<ErrorHandler>('onError', o.onError),
  };
}

/** @internal */
export function resolveWriterOptions(options: unknown, path = ''): ResolvedWriterOptions {
  const o = checkObject('options', options);
  checkKeys('Writer options', o, WRITER_KEYS);
  notForAbstract(path, o, ['expectOwner']);
  let expectOwner: ResolvedWriterOptions['expectOwner'];
  if (o.expectOwner !== undefined) {
    const e = checkObject('expectOwner', o.expectOwner);
    checkKeys('expectOwner', e, ['uid', 'gid', 'mode']);
    expectOwner = {
      uid: intOption('expectOwner.uid', e.uid, -1, 0, MAX_ID),
      gid: intOption('expectOwner.gid', e.gid, -1, 0, MAX_ID),
      mode: intOption('expectOwner.mode', e.mode, -1, 0, 0o7777),
    };
  }
  const type = writerType(o.type, expectOwner);
  const maxMessageSize = intOption('maxMessageSize', o.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE, 0, MAX_MESSAGE_SIZE_LIMIT);
  const minBytes = maxMessageSize + 10;
  const maxBufferedBytes = intOption(
    'maxBufferedBytes',
    o.maxBufferedBytes,
    Math.max(DEFAULT_MAX_BUFFERED_BYTES, minBytes),
    1,
    2 ** 31,
  );
  if (maxBufferedBytes < minBytes) {
    throw outOfRange(
      'maxBufferedBytes',
      `at least maxMessageSize + 10 (${minBytes}) so that one message of the largest size fits the queue`,
      maxBufferedBytes,
    );
  }
  let reconnect: Required<ReconnectOptions> | false;
  if (o.reconnect === false) {
    reconnect = false;
  } else {
    const r = checkObject('reconnect', o.reconnect);
    checkKeys('reconnect options', r, RECONNECT_KEYS);
    const d = DEFAULT_RECONNECT;
    const initialDelayMs = intOption('reconnect.initialDelayMs', r.initialDelayMs, d.initialDelayMs, 1, 3_600_000);
    const maxDelayMs = intOption('reconnect.maxDelayMs', r.maxDelayMs, Math.max(d.maxDelayMs, initialDelayMs), 1, 3_600_000);
    if (maxDelayMs < initialDelayMs) {
      throw outOfRange('reconnect.maxDelayMs', `>= reconnect.initialDelayMs (${initialDelayMs})`, maxDelayMs);
    }
    reconnect = {
      initialDelayMs,
      maxDelayMs,
      multiplier: numberOption('reconnect.multiplier', r.multiplier, d.multiplier, 1, 100),
      maxAttempts: intOption('reconnect.maxAttempts', r.maxAttempts, d.maxAttempts, 0, 2 ** 31 - 1),
    };
  }
  return {
    maxMessageSize,
    maxBufferedWrites: intOption(
      'maxBufferedWrites',
      o.maxBufferedWrites,
      deliveryOption(o.delivery, type) === 'acked' ? DEFAULT_MAX_BUFFERED_WRITES_ACKED : DEFAULT_MAX_BUFFERED_WRITES,
      1,
      2 ** 30,
    ),
    maxBufferedBytes,
    sendBufferSize: intOption('sendBufferSize', o.sendBufferSize, DEFAULT_SEND_BUFFER_SIZE, 0, 2 ** 30),
    writeTimeoutMs: intOption('writeTimeoutMs', o.writeTimeoutMs, 0, 0, MAX_TIMEOUT_MS),
    expectOwner,
    reconnect,
    onError: fnOption<ErrorHandler>('onError', o.onError),
    maxBufferedFds: intOption('maxBufferedFds', o.maxBufferedFds, DEFAULT_MAX_BUFFERED_FDS, 1, 2 ** 20),
    type,
    delivery: deliveryOption(o.delivery, type),
    handshakeTimeoutMs: intOption('handshakeTimeoutMs', o.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS, 1, MAX_TIMEOUT_MS),
  };
}

/** Options of `stop()`. */
export interface StopOptions {
  /** How long to go on delivering (Reader) or sending (Writer) what is queued before closing anyway, in ms. Default 5000. */
  timeoutMs?: number;
  /**
   * Aborting it moves the deadline to now: the stop becomes a forced one, as
   * if `timeoutMs` had just elapsed. The promise still resolves (with what was
   * discarded); it does not reject.
   */
  signal?: AbortSignal;
}

/** Options of calls that take only an `AbortSignal`: `reader.start()`, `writer.flush()`, `writer.send()`. */
export interface SignalOptions {
  /** Aborts the call: it rejects with an `AbortError` (`code: 'ABORT_ERR'`, `cause`: the signal's reason). */
  signal?: AbortSignal;
}

/** @internal Validates an optional AbortSignal (duck-typed, as Node does). */
export function validateSignal(v: unknown, name = 'signal'): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (
    v === null ||
    typeof v !== 'object' ||
    typeof (v as AbortSignal).aborted !== 'boolean' ||
    typeof (v as AbortSignal).addEventListener !== 'function'
  ) {
    throw invalidType(name, 'an AbortSignal', v);
  }
  return v as AbortSignal;
}

/** @internal */
export function resolveStopOptions(options: unknown): { timeoutMs: number; signal: AbortSignal | undefined } {
  const o = checkObject('options', options);
  checkKeys('stop options', o, ['timeoutMs', 'signal']);
  return {
    timeoutMs: intOption('timeoutMs', o.timeoutMs, DEFAULT_STOP_TIMEOUT_MS, 0, MAX_TIMEOUT_MS),
    signal: validateSignal(o.signal),
  };
}

/** @internal Validates `{ signal? }` options of `what` (e.g. "flush options"). */
export function resolveSignalOptions(what: string, options: unknown): { signal: AbortSignal | undefined } {
  const o = checkObject('options', options);
  checkKeys(what, o, ['signal']);
  return { signal: validateSignal(o.signal) };
}
