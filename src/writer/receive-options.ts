/**
 * The Writer's receive options (`onMessage`, `maxPendingBytes`): what the
 * reader sends back on the connection. Validated here and taken out of the
 * options object before the rest goes to `resolveWriterOptions()`, which
 * knows only the one-way options.
 *
 * TODO(lead): once src/options.ts may change, `onMessage` and
 * `maxPendingBytes` belong in `WriterOptions`/`WRITER_KEYS`/
 * `resolveWriterOptions()`, and {@link WRITER_RECEIVE_METRICS} in
 * src/metrics.ts's `WRITER_METRICS`.
 * @internal
 */
import type { Batch } from '../batch';
import { invalidType, invalidValue, outOfRange } from '../errors';
import type { MetricSpec } from '../metrics';
import { DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_FDS } from '../options';

/**
 * Called with each {@link Batch} of messages the reader sent back on this
 * Writer's connection, in order. The messages are valid until it returns, or
 * until its promise settles: return a promise to hold back the next batch
 * (and, at `maxPendingBytes`, reading: the reader's replies then wait in the
 * kernel). `batch.retain()` keeps them longer.
 */
export type MessageHandler = (batch: Batch) => void | PromiseLike<void>;

/** The receive options of a {@link Writer} (in addition to {@link WriterOptions}). */
export interface WriterReceiveOptions {
  /**
   * Receive what the reader sends back on the same connection (its
   * `connection.write()`): called with each batch, as a Reader's handler is.
   * Without it the Writer never reads its socket (one-way, as the Go library).
   * A message above `maxMessageSize` replaces the connection and reports
   * `ERR_MESSAGE_TOO_LARGE` (`'error'`, context `'connection'`).
   */
  onMessage?: MessageHandler;
  /**
   * Memory the received batches not yet finished with may hold (counted as
   * a Reader's `maxPendingBytes`: bytes, 8 per message, 1 KiB per batch);
   * above it the Writer stops reading until the handler catches up. Only with
   * `onMessage`. Default 8 MiB.
   */
  maxPendingBytes?: number;
  /**
   * Accept file descriptors the reader sends with its messages
   * (`connection.write(data, { fds })`): `batch.takeFds(i)` in `onMessage`.
   * When false (default), on Linux 6.16+ the Writer's socket refuses them
   * (the reader's send fails; a uds-ipc Reader reports `ERR_FDS_REFUSED`),
   * and on older kernels a connection whose reader sends any is replaced,
   * reporting `ERR_UNEXPECTED_FDS`. Only with `onMessage`.
   */
  acceptFds?: boolean;
  /** With `acceptFds`: received descriptors not yet released above which reading pauses. Default 256. */
  maxPendingFds?: number;
}

/** @internal */
export interface ResolvedReceiveOptions {
  onMessage: MessageHandler;
  maxPendingBytes: number;
  acceptFds: boolean;
  maxPendingFds: number;
}

/**
 * @internal Splits the receive options off `options`: returns them resolved
 * (undefined without `onMessage`) and the rest, for resolveWriterOptions().
 * Anything but a plain object is passed on untouched (resolveWriterOptions()
 * reports it).
 */
export function splitReceiveOptions(options: unknown): { rest: unknown; receive: ResolvedReceiveOptions | undefined } {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) return { rest: options, receive: undefined };
  const o = options as Record<string, unknown>;
  if (!('onMessage' in o) && !('maxPendingBytes' in o) && !('acceptFds' in o) && !('maxPendingFds' in o)) {
    return { rest: options, receive: undefined };
  }
  const { onMessage, maxPendingBytes, acceptFds, maxPendingFds, ...rest } = o;
  if (onMessage !== undefined && typeof onMessage !== 'function') throw invalidType('onMessage', 'a function', onMessage);
  const max = receiveInt('maxPendingBytes', maxPendingBytes, DEFAULT_MAX_PENDING_BYTES, 2 ** 40, onMessage);
  const maxFds = receiveInt('maxPendingFds', maxPendingFds, DEFAULT_MAX_PENDING_FDS, 2 ** 20, onMessage);
  if (acceptFds !== undefined) {
    if (typeof acceptFds !== 'boolean') throw invalidType('acceptFds', 'a boolean', acceptFds);
    needsOnMessage('acceptFds', onMessage);
  }
  return {
    rest,
    receive:
      onMessage === undefined
        ? undefined
        : { onMessage: onMessage as MessageHandler, maxPendingBytes: max, acceptFds: acceptFds === true, maxPendingFds: maxFds },
  };
}

function needsOnMessage(name: string, onMessage: unknown): void {
  if (onMessage === undefined) {
    throw invalidValue(`The "${name}" option of a Writer applies to what it receives: it needs "onMessage"`);
  }
}

function receiveInt(name: string, v: unknown, dflt: number, max: number, onMessage: unknown): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number') throw invalidType(name, 'a number', v);
  if (!Number.isInteger(v) || v < 1 || v > max) throw outOfRange(name, `an integer >= 1 and <= ${max}`, v);
  needsOnMessage(name, onMessage);
  return v;
}

/** @internal The Writer's receive metrics, in Prometheus text (after WRITER_METRICS). */
export const WRITER_RECEIVE_METRICS: readonly MetricSpec[] = [
  ['received', 'messages_received_total', 'counter', 'Messages the reader sent back, handed to onMessage.'],
  ['bytesReceived', 'received_bytes_total', 'counter', 'Payload bytes handed to onMessage.'],
  ['batches', 'batches_total', 'counter', 'Batches handed to onMessage.'],
  ['readCalls', 'read_calls_total', 'counter', 'read(2) calls that returned data (onMessage).'],
  ['bytesRead', 'read_bytes_total', 'counter', 'Bytes read from the socket (onMessage).'],
  ['pauses', 'pauses_total', 'counter', 'Times reading was paused because onMessage fell behind (maxPendingBytes).'],
  ['jsThreadReads', 'js_thread_read_calls_total', 'counter', 'read(2) calls made on the JavaScript thread (onMessage).'],
  ['fdsReceived', 'fds_received_total', 'counter', 'File descriptors received with the reader\'s messages (acceptFds).'],
  ['fdsRefused', 'fds_refused_total', 'counter', 'File descriptors from the reader closed on arrival (not accepted, misplaced, cut short).'],
  ['fdsClosedUnclaimed', 'fds_closed_unclaimed_total', 'counter', 'Received file descriptors onMessage did not take, closed at batch release.'],
  ['replyBytesDropped', 'reply_bytes_dropped_total', 'counter', 'Bytes from the reader left unread when their connection ended (onMessage already held maxPendingBytes plus the end allowance).'],
];
