/**
 * Prometheus text exposition (format 0.0.4) of Reader and Writer metrics,
 * without a dependency.
 * @internal
 */
import { invalidArg, invalidValue } from './errors';

/** The `Content-Type` to serve {@link Reader.metricsText} / {@link Writer.metricsText} output with. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Labels added to every sample, e.g. `{ socket: 'ipc' }`. */
export type MetricLabels = Readonly<Record<string, string>>;

/** @internal One exported metric: its field in metrics(), its name after the prefix, type and help. */
export type MetricSpec = readonly [field: string, name: string, type: 'counter' | 'gauge', help: string];

/** @internal */
export const READER_METRICS: readonly MetricSpec[] = [
  ['received', 'messages_received_total', 'counter', 'Messages handed to the handler (or the iterator).'],
  ['bytesReceived', 'received_bytes_total', 'counter', 'Payload bytes handed to the handler.'],
  ['batches', 'batches_total', 'counter', 'Batches handed to the handler.'],
  ['connections', 'connections_total', 'counter', 'Connections accepted since start.'],
  ['activeConnections', 'active_connections', 'gauge', 'Connections open now.'],
  ['errors', 'errors_total', 'counter', 'Errors reported (bad frames, failed connections, handler failures).'],
  ['handlerErrors', 'handler_errors_total', 'counter', 'Handler calls that threw or rejected.'],
  ['bytesRead', 'read_bytes_total', 'counter', 'Bytes read from sockets.'],
  ['readCalls', 'read_calls_total', 'counter', 'read(2) calls that returned data.'],
  ['pauses', 'pauses_total', 'counter', 'Times a connection was paused because the handler fell behind.'],
  ['discarded', 'discarded_messages_total', 'counter', 'Messages received but not delivered because stop() was forced.'],
  ['rejected', 'rejected_connections_total', 'counter', 'Connections refused by allowUids/allowGids/authorize.'],
  ['rejectedDatagrams', 'rejected_datagrams_total', 'counter', 'Datagrams dropped because their sender is not in allowUids/allowGids (type dgram).'],
  ['maxDgramQlen', 'max_dgram_qlen', 'gauge', 'net.unix.max_dgram_qlen at start (type dgram): datagrams queued before writers wait.'],
  ['jsThreadReads', 'js_thread_read_calls_total', 'counter', 'read(2) calls made on the JavaScript thread (jsThreadPolling).'],
  ['handoffs', 'handoffs_total', 'counter', 'Times reading moved between the IO thread and the JavaScript thread.'],
  ['repliesDropped', 'replies_dropped_total', 'counter', 'Replies refused by connection.write() because the connection\'s reply queue was full (maxReplyBytes).'],
  ['replyBytesSent', 'reply_bytes_sent_total', 'counter', 'Reply bytes (frames) handed to the kernel.'],
  ['replySendCalls', 'reply_send_calls_total', 'counter', 'send(2)/sendmsg(2) calls made for replies.'],
  ['replyBytesDropped', 'reply_bytes_dropped_total', 'counter', 'Reply bytes discarded: queued ones when replyTimeoutMs passed without progress or the connection closed first, and replies with descriptors the writer refused.'],
  ['fdsSent', 'fds_sent_total', 'counter', 'File descriptors sent with replies.'],
  ['fdsReceived', 'fds_received_total', 'counter', 'File descriptors received with messages and handed over (acceptFds).'],
  ['fdsRefused', 'fds_refused_total', 'counter', 'File descriptors closed on arrival: not accepted, misplaced, or cut short.'],
  ['fdsClosedUnclaimed', 'fds_closed_unclaimed_total', 'counter', 'Received file descriptors the handler did not take, closed at batch release.'],
  ['acked', 'messages_acked_total', 'counter', "Messages acknowledged to their writers (delivery: 'acked')."],
  ['duplicatesDropped', 'duplicates_dropped_total', 'counter', "Copies of messages already delivered, re-sent by their writer after a reconnect, dropped (delivery: 'acked')."],
  ['redelivered', 'redelivered_messages_total', 'counter', "Messages delivered that their writer had sent before on an earlier connection (delivery: 'acked')."],
  ['plainPeers', 'plain_peers_total', 'counter', "Connections of writers that do not speak acknowledged delivery, served at most once (delivery: 'acked')."],
];

/** @internal */
export const WRITER_METRICS: readonly MetricSpec[] = [
  ['written', 'messages_written_total', 'counter', 'Calls to write() that did not throw.'],
  ['sent', 'messages_sent_total', 'counter', 'Messages fully accepted by the kernel.'],
  ['dropped', 'messages_dropped_total', 'counter', 'Messages refused by write() because the queue was full.'],
  ['failed', 'messages_failed_total', 'counter', 'Messages queued but discarded unsent by stop().'],
  ['queueDepth', 'queue_messages', 'gauge', 'Messages waiting to be sent.'],
  ['queuedBytes', 'queue_bytes', 'gauge', 'Bytes waiting to be sent (frames, length prefixes included).'],
  ['bytesSent', 'sent_bytes_total', 'counter', 'Payload bytes of the sent messages.'],
  ['sendCalls', 'send_calls_total', 'counter', 'sendmsg(2) calls.'],
  ['connects', 'connects_total', 'counter', 'Successful connects.'],
  ['disconnects', 'disconnects_total', 'counter', 'Connections lost.'],
  ['connectAttempts', 'connect_attempts_total', 'counter', 'connect(2) attempts.'],
  ['untrustedPeers', 'untrusted_peers_total', 'counter', 'Connections closed unused because the process listening did not run as expectOwner.uid.'],
  ['connected', 'connected', 'gauge', 'Whether a connection is up now (1) or not (0).'],
  ['sendBufferSize', 'send_buffer_bytes', 'gauge', 'Effective SO_SNDBUF of the current connection.'],
  ['fdsSent', 'fds_sent_total', 'counter', 'File descriptors handed to the kernel with their message.'],
  ['fdsBuffered', 'fds_buffered', 'gauge', 'File descriptors held for messages not yet fully sent.'],
  ['acked', 'messages_acked_total', 'counter', "Messages the reader acknowledged (delivery: 'acked')."],
  ['unacked', 'unacked_messages', 'gauge', "Messages queued and not yet acknowledged (delivery: 'acked')."],
  ['resent', 'messages_resent_total', 'counter', "Messages sent again on a new connection because no acknowledgement had come (delivery: 'acked')."],
];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** @internal Renders `values` as Prometheus text; validates `prefix` and `labels`. */
export function formatMetrics(
  prefix: unknown,
  labels: unknown,
  specs: readonly MetricSpec[],
  values: object,
): string {
  if (typeof prefix !== 'string') throw invalidArg('ERR_INVALID_ARG_TYPE', `The "prefix" argument must be a string. Received ${typeof prefix}`);
  if (!NAME.test(prefix)) {
    throw invalidValue(`The "prefix" argument must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*). Received ${JSON.stringify(prefix)}`);
  }
  let lbl = '';
  if (labels !== undefined) {
    if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) {
      throw invalidArg('ERR_INVALID_ARG_TYPE', `The "labels" argument must be an object of strings. Received ${labels === null ? 'null' : typeof labels}`);
    }
    const parts: string[] = [];
    for (const [k, v] of Object.entries(labels)) {
      if (!LABEL.test(k) || k.startsWith('__')) {
        throw invalidValue(`Invalid Prometheus label name ${JSON.stringify(k)}: it must match [a-zA-Z_][a-zA-Z0-9_]* and not start with "__"`);
      }
      if (typeof v !== 'string') throw invalidArg('ERR_INVALID_ARG_TYPE', `The value of label "${k}" must be a string. Received ${typeof v}`);
      parts.push(`${k}="${escapeLabel(v)}"`);
    }
    if (parts.length) lbl = `{${parts.join(',')}}`;
  }
  const m = values as Record<string, number | boolean>;
  let out = '';
  for (const [field, name, type, help] of specs) {
    const full = `${prefix}_${name}`;
    const v = m[field];
    out += `# HELP ${full} ${help}\n# TYPE ${full} ${type}\n${full}${lbl} ${typeof v === 'boolean' ? (v ? 1 : 0) : Number(v)}\n`;
  }
  return out;
}
