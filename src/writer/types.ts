/**
 * The public types of a {@link Writer}: metrics, events, results and options
 * of its calls.
 */
import type { WriteOptions } from './fds';
import type { IpcError, ErrorContext } from '../errors';
import type { SignalOptions } from '../options';
import type { Writer } from '../writer';

/**
 * Counters of a {@link Writer}. `written = sent + dropped + failed +
 * queueDepth` holds whenever no send is in progress (after stop(), or once a
 * flush() resolved with no write() since); while the IO thread is sending,
 * `sent` (see {@link WriterMetrics.sent}) and `queueDepth` are read a moment
 * apart and the sum may differ by the messages of one send call.
 */
export interface WriterMetrics {
  /** Calls to write() that did not throw. */
  written: number;
  /**
   * Messages fully accepted by the kernel on some connection.
   *
   * The count is the engine's: the IO thread adds a send call's messages
   * right after that call returns, so it may trail what the kernel (and so a
   * Reader) already has, by the messages of one send call; it never counts a
   * message the kernel has not accepted. It has caught up:
   * - once `flush()` resolved: every message queued before that flush() call
   *   is counted (with no write() since, `sent` is exact);
   * - when `'disconnect'` is emitted: every message the lost connection
   *   accepted is counted (the Writer may be sending on a new one already);
   * - after `'close'` (`stop()` resolved): it is final.
   *
   * Messages sent from the JavaScript thread (while the IO thread is idle,
   * write() may send directly) are counted before write() returns. To compare
   * it with what a Reader received, read it at one of the moments above.
   */
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
  /** Messages the reader sent back, handed to `onMessage` (0 without it). */
  received: number;
  /** Payload bytes of those messages. */
  bytesReceived: number;
  /** Batches handed to `onMessage`. */
  batches: number;
  /** read(2) calls that returned data (`onMessage` only: a one-way Writer never reads). */
  readCalls: number;
  /** Bytes read from the socket, length prefixes included. */
  bytesRead: number;
  /** Times reading was paused because the batches not yet finished with reached `maxPendingBytes`. */
  pauses: number;
  /** Of `readCalls`, those made on the JavaScript thread (replies are read there whenever Node.js gives access to its event loop; else on the Writer's IO thread). */
  jsThreadReads: number;
  /** File descriptors handed to the kernel with their message (`write(data, { fds })`; a message re-sent whole after a broken connection counts again). */
  fdsSent: number;
  /** File descriptors held (duplicates) for messages not yet fully sent. */
  fdsBuffered: number;
  /** File descriptors received with the reader's messages (`onMessage` with `acceptFds`). */
  fdsReceived: number;
  /** File descriptors from the reader closed on arrival: not accepted, sent against the wire rule, or cut short. */
  fdsRefused: number;
  /** Bytes the reader sent that were never read: their connection ended while `onMessage` already held `maxPendingBytes` plus the end allowance, max(`maxPendingBytes`, 4 × `net.core.wmem_max`) (`ERR_REPLIES_DROPPED`). */
  replyBytesDropped: number;
  /** Received file descriptors `onMessage` did not take (`batch.takeFds()`), closed when their batch was released. */
  fdsClosedUnclaimed: number;
  /** `delivery: 'acked'`: messages the reader acknowledged (0 otherwise). */
  acked: number;
  /** `delivery: 'acked'`: messages queued and not yet acknowledged, sent or not (0 otherwise). */
  unacked: number;
  /** `delivery: 'acked'`: messages sent again on a new connection because no acknowledgement had come for them. */
  resent: number;
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

/** Options of {@link Writer.send}: `signal`, and `fds` as in `write()` (duplicated when `send()` is called: the caller may close its own at once). */
export type SendOptions = SignalOptions & WriteOptions;

/** The events of a {@link Writer} and their listener arguments. */
export interface WriterEvents {
  /** A connection to the Reader is up. */
  connect: [];
  /** The connection was lost; `reason` says why. */
  /** `info.sent`: frames fully handed to the kernel since start, counted as this connection ended (every later frame goes to the next connection, or is re-sent on it whole). */
  disconnect: [reason: IpcError, info: { sent: number }];
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
