/**
 * Errors raised or reported by uds-ipc. Every error a user can meet carries a
 * stable `code`; docs/errors.md lists them all.
 */

/** Stable error codes of {@link IpcError}. */
export const ErrorCodes = {
  /** A message is larger than `maxMessageSize` (writer: refused by write(); reader: announced by a peer). */
  ERR_MESSAGE_TOO_LARGE: 'ERR_MESSAGE_TOO_LARGE',
  /** A peer sent a malformed length prefix (varint overflow or longer than 10 bytes). */
  ERR_INVALID_FRAME: 'ERR_INVALID_FRAME',
  /** A peer closed its connection in the middle of a frame. */
  ERR_TRUNCATED_FRAME: 'ERR_TRUNCATED_FRAME',
  /** The socket path is longer than 107 bytes of UTF-8. */
  ERR_PATH_TOO_LONG: 'ERR_PATH_TOO_LONG',
  /** Another process is listening on the socket path. */
  ERR_ADDRESS_IN_USE: 'ERR_ADDRESS_IN_USE',
  /** The socket path exists and is not a socket; it was left untouched. */
  ERR_NOT_A_SOCKET: 'ERR_NOT_A_SOCKET',
  /** The Reader/Writer is not running (stopped, or stopping). */
  ERR_NOT_RUNNING: 'ERR_NOT_RUNNING',
  /** A connect attempt failed with an error that retrying cannot fix, or retries ran out. */
  ERR_CONNECT_FAILED: 'ERR_CONNECT_FAILED',
  /** A writer's connection accepted no bytes for `writeTimeoutMs` while data was queued; it was replaced. */
  ERR_WRITE_TIMEOUT: 'ERR_WRITE_TIMEOUT',
  /** A reader closed a connection that sent nothing for `inactivityTimeoutMs` (the `'disconnect'` reason). */
  ERR_INACTIVITY_TIMEOUT: 'ERR_INACTIVITY_TIMEOUT',
  /** A reader closed a connection whose frame took longer than `frameTimeoutMs` to arrive, first byte to last (the `'disconnect'` reason); the partial frame is discarded. */
  ERR_FRAME_TIMEOUT: 'ERR_FRAME_TIMEOUT',
  /** A peer was refused by `allowUids`/`allowGids`/`authorize` before any of its messages was delivered. */
  ERR_PEER_REJECTED: 'ERR_PEER_REJECTED',
  /** A Writer's `expectOwner` check failed: the socket file's owner, group or mode is not as required, or the process listening on it runs as another uid. */
  ERR_UNTRUSTED_SOCKET: 'ERR_UNTRUSTED_SOCKET',
  /** systemd socket activation or notification could not be used as configured. */
  ERR_SYSTEMD: 'ERR_SYSTEMD',
  /** Another socket system call failed; see `errno` and `syscall`. */
  ERR_SOCKET: 'ERR_SOCKET',
  /** The Reader's handler threw or its promise rejected. */
  ERR_HANDLER: 'ERR_HANDLER',
  /** The native addon could not be loaded. */
  ERR_ADDON_LOAD: 'ERR_ADDON_LOAD',
  /** The call does not fit the object's configuration or state (e.g. iterating a Reader that has a handler). */
  ERR_INVALID_STATE: 'ERR_INVALID_STATE',
  /** A reply was written to a connection that is closed (or closed while `send()` waited). */
  ERR_NOT_CONNECTED: 'ERR_NOT_CONNECTED',
  /** An RPC handler failed on the server; `remoteCode` holds its code when it gave one. */
  ERR_REMOTE: 'ERR_REMOTE',
  /** The RPC server has no method of that name. */
  ERR_UNKNOWN_METHOD: 'ERR_UNKNOWN_METHOD',
  /** The connection broke after an RPC request was sent and before its reply came; the call may have run. */
  ERR_CONNECTION_LOST: 'ERR_CONNECTION_LOST',
  /** An RPC call's deadline (`timeoutMs`) passed. */
  ERR_TIMEOUT: 'ERR_TIMEOUT',
  /** An optional peer dependency (e.g. `@bufbuild/protobuf`) is needed for this and is not installed. */
  ERR_MISSING_DEPENDENCY: 'ERR_MISSING_DEPENDENCY',
  /** The peer sent file descriptors this end does not accept (`acceptFds`), or sent them where the wire rule forbids; the connection was closed. */
  ERR_UNEXPECTED_FDS: 'ERR_UNEXPECTED_FDS',
  /** File descriptors sent with a message did not all arrive (RLIMIT_NOFILE reached, or more than fit); the connection was closed. */
  ERR_FDS_TRUNCATED: 'ERR_FDS_TRUNCATED',
  /** The reader does not accept file descriptors (its `acceptFds` is off; Linux 6.16+ refuses them in the kernel): a message written with `fds` was dropped. */
  ERR_FDS_REFUSED: 'ERR_FDS_REFUSED',
  /** A Writer's connection ended with replies left unread: onMessage already held maxPendingBytes plus the end allowance (see docs/writer.md). */
  ERR_REPLIES_DROPPED: 'ERR_REPLIES_DROPPED',
  /** A send() with descriptors that would have to wait while waiting send()s already hold maxBufferedFds (maxPendingFds on a reader connection) duplicates. */
  ERR_FDS_LIMIT: 'ERR_FDS_LIMIT',
  /** Acknowledged delivery could not be agreed: an acked Writer got no greeting within `handshakeTimeoutMs` (or something else first), or a Reader with `requireAcked` met a writer that does not speak it. */
  ERR_PROTOCOL_MISMATCH: 'ERR_PROTOCOL_MISMATCH',
  /** The NATS bridge (`uds-ipc/nats`) could not use the NATS server: unreachable, credentials refused, JetStream not enabled, or a NATS operation failed; `cause` holds the client's error. */
  ERR_NATS: 'ERR_NATS',
  /** The NATS bridge found an existing JetStream stream that does not cover a route's subject, or an existing durable consumer configured for another subject. */
  ERR_STREAM_MISMATCH: 'ERR_STREAM_MISMATCH',
} as const;

/** One of the stable codes of {@link ErrorCodes}. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Extra fields of an {@link IpcError}. */
export interface IpcErrorOptions {
  /** The system error number (positive `errno`), when a system call failed. */
  errno?: number;
  /** The name of the system call that failed. */
  syscall?: string;
  /** The underlying error, kept as the standard `cause`. */
  cause?: unknown;
  /** With `ERR_REMOTE`: the code the remote handler's error carried. */
  remoteCode?: string;
}

/** An error with a stable `code`, plus `errno`/`syscall` when a system call failed. */
export class IpcError extends Error {
  /** Stable error code; see {@link ErrorCodes}. */
  readonly code: ErrorCode;
  /** The system error number when a system call failed (e.g. 13 for EACCES). */
  readonly errno?: number;
  /** The system call that failed, when one did (e.g. `'connect'`). */
  readonly syscall?: string;
  /** With `ERR_REMOTE`: the code the remote handler's error carried, if any. */
  readonly remoteCode?: string;

  /**
   * @param code - A stable code from {@link ErrorCodes}.
   * @param message - Human-readable description.
   * @param options - `errno`, `syscall` and `cause`, when known.
   */
  constructor(code: ErrorCode, message: string, options: IpcErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IpcError';
    this.code = code;
    if (options.errno !== undefined && options.errno !== 0) this.errno = options.errno;
    if (options.syscall) this.syscall = options.syscall;
    if (options.remoteCode !== undefined) this.remoteCode = options.remoteCode;
  }
}

/**
 * The error an operation rejects with when its `AbortSignal` is aborted, as
 * Node's own APIs do: `name` is `'AbortError'`, `code` is `'ABORT_ERR'`, and
 * `cause` is the signal's `reason`.
 */
export class AbortError extends Error {
  /** Always `'ABORT_ERR'`, like Node's own AbortError. */
  readonly code = 'ABORT_ERR' as const;

  /**
   * @param message - Defaults to Node's wording, "The operation was aborted".
   * @param options - `cause`: the signal's `reason`.
   */
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/**
 * Where an error reported to `onError` / `'error'` happened: `'connection'` (a
 * reader connection), `'handler'`, `'accept'`, `'authorize'`, `'systemd'`
 * (Reader); `'connect'`, `'send'` (Writer).
 */
export type ErrorContext = 'connection' | 'handler' | 'connect' | 'send' | 'accept' | 'authorize' | 'systemd';

/** @internal Turns an error thrown by the addon (with code/errno/syscall) into an IpcError. */
export function fromNative(e: unknown): IpcError | unknown {
  if (e && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string') {
    const n = e as { code: string; message: string; errno?: number; syscall?: string };
    if ((Object.values(ErrorCodes) as string[]).includes(n.code)) {
      return new IpcError(n.code as ErrorCode, n.message, { errno: n.errno, syscall: n.syscall });
    }
  }
  return e;
}

/** The codes of the errors thrown for arguments and options a caller got wrong, as Node's own. */
type ArgErrorCode = 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE';

function withCode<E extends Error>(err: E, code: ArgErrorCode): E {
  (err as E & { code: string }).code = code;
  return err;
}

/**
 * @internal A TypeError with a Node-style `code` (`ERR_INVALID_ARG_TYPE` or
 * `ERR_INVALID_ARG_VALUE`) and `message` as given: for wordings the helpers
 * below do not produce.
 */
export function invalidArg(code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE', message: string): TypeError {
  return withCode(new TypeError(message), code);
}

/** @internal A TypeError with code ERR_INVALID_ARG_VALUE: an argument or option of the right type but not acceptable. */
export function invalidValue(message: string): TypeError {
  return invalidArg('ERR_INVALID_ARG_VALUE', message);
}

/** @internal A TypeError with code ERR_INVALID_ARG_TYPE, worded like Node's own. */
export function invalidType(name: string, expected: string, actual: unknown, kind: 'option' | 'argument' = 'option'): TypeError {
  return invalidArg('ERR_INVALID_ARG_TYPE', `The "${name}" ${kind} must be ${expected}. Received ${describe(actual)}`);
}

/** @internal A RangeError with code ERR_OUT_OF_RANGE, worded like Node's own. */
export function outOfRange(name: string, range: string, actual: unknown): RangeError {
  return withCode(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${describe(actual)}`), 'ERR_OUT_OF_RANGE');
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${String(v)}`;
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? `an instance of ${(v as object).constructor?.name ?? 'Object'}` : typeof v;
}
