/**
 * The public types of a {@link Reader}: its handler, metrics, events and the
 * results and options of its calls.
 */
import type { Batch, Connection } from '../batch';
import type { ErrorContext, IpcError } from '../errors';
import type { SignalOptions } from '../options';
import type { Reader } from '../reader';

/** The handler: return a promise to hold back the next batch until it settles. */
export type BatchHandler = (batch: Batch) => void | Promise<void>;

/** Counters of a {@link Reader}. */
export interface ReaderMetrics {
  /** Messages handed to the handler. */
  received: number;
  /** Payload bytes handed to the handler. */
  bytesReceived: number;
  /** Batches handed to the handler. */
  batches: number;
  /** Connections accepted since start. */
  connections: number;
  /** Connections open now. */
  activeConnections: number;
  /** Errors reported (bad frames, failed connections, handler failures). */
  errors: number;
  /** Handler calls that threw or rejected. */
  handlerErrors: number;
  /** Bytes read from sockets. */
  bytesRead: number;
  /** read(2) calls that returned data. */
  readCalls: number;
  /** Times a connection was paused because the handler fell behind. */
  pauses: number;
  /** Messages received but not delivered because stop() timed out. */
  discarded: number;
  /** Connections refused by allowUids/allowGids/authorize before any message was read. */
  rejected: number;
  /** `type: 'dgram'`: datagrams dropped because their sender is not in allowUids/allowGids. */
  rejectedDatagrams: number;
  /**
   * `type: 'dgram'`: `net.unix.max_dgram_qlen` as read at start(): the reader's socket queues that many
   * datagrams (plus one) before writers get `EAGAIN` and wait; 0 for the other types.
   */
  maxDgramQlen: number;
  /** read(2) calls made on the JavaScript thread (light traffic; see the `jsThreadPolling` option). */
  jsThreadReads: number;
  /** Times reading moved between the IO thread and the JavaScript thread, either way. */
  handoffs: number;
  /** Replies refused by `connection.write()` because that connection's reply queue was full (`maxReplyBytes`). */
  repliesDropped: number;
  /** Reply bytes (frames, length prefixes included) handed to the kernel. */
  replyBytesSent: number;
  /** send(2)/sendmsg(2) calls made for replies (many frames per call when they were written in one tick). */
  replySendCalls: number;
  /** Queued reply bytes discarded: `replyTimeoutMs` passed without progress, or the connection closed first. */
  replyBytesDropped: number;
  /** File descriptors sent with replies (`connection.write(data, { fds })`). */
  fdsSent: number;
  /** File descriptors received with messages and handed over with their batch (`acceptFds`). */
  fdsReceived: number;
  /** File descriptors closed on arrival: not accepted (`acceptFds: false`), sent against the wire rule, or cut short (`ERR_FDS_TRUNCATED`). */
  fdsRefused: number;
  /** Received file descriptors the handler did not take (`batch.takeFds()`), closed when their batch was released. */
  fdsClosedUnclaimed: number;
  /** `delivery: 'acked'`: messages acknowledged to their writers (their handler was done with them). */
  acked: number;
  /** `delivery: 'acked'`: copies of messages this Reader had delivered already, sent again by their writer after a reconnect, dropped. */
  duplicatesDropped: number;
  /** `delivery: 'acked'`: messages delivered with `batch.redelivered(i)` true (their writer had sent them before on an earlier connection). */
  redelivered: number;
  /** `delivery: 'acked'`: connections of writers that do not speak acknowledged delivery, served at most once. */
  plainPeers: number;
}

/** Result of `stop()`. */
export interface StopResult {
  /** Messages that were received but not delivered (stop timed out). */
  discarded: number;
}

/** Options of {@link Reader.start}: `signal` rejects a start() whose signal is already aborted, and stops the Reader when aborted later. */
export type StartOptions = SignalOptions;

/** The events of a {@link Reader} and their listener arguments. */
export interface ReaderEvents {
  /** start() succeeded: connections are accepted. */
  listening: [];
  /** A writer connected (and passed `authorize`, if set). */
  connection: [connection: Connection];
  /** A connection closed; `reason` is set when the Reader closed it itself or it failed. */
  disconnect: [connection: Connection, reason: IpcError | undefined];
  /** The Reader stopped; `forced` when the stop deadline passed (or was aborted) before everything was delivered. */
  close: [info: { forced: boolean }];
  /** An error that is not the caller's fault; emitted only while a listener is attached. */
  error: [error: Error, context: ErrorContext, connection: Connection | undefined];
}

/** A listener of Reader event `E`. */
export type ReaderListener<E extends keyof ReaderEvents> = (...args: ReaderEvents[E]) => void;
