/**
 * The JavaScript view of `native/core/protocol.h`: the contract between the
 * addon and this layer (control block words and their states, item and event
 * tags and slot layouts, metric names, option defaults and limits). The values
 * come from the addon (`binding().protocol`); only their shape is declared
 * here. `PROTOCOL_VERSION` is the contract this TypeScript was written
 * against: binding.ts refuses an addon that reports another one.
 * @internal
 */

/** Must equal `protocol::kVersion` in native/core/protocol.h. */
export const PROTOCOL_VERSION = 5;

export interface Protocol {
  readonly version: number;
  /** Int32 word indices of the writer's control block; BYTES: its size (the ring follows). */
  readonly ctrl: {
    readonly TAIL: number;
    readonly HEAD: number;
    readonly SENT: number;
    readonly SLEEP: number;
    readonly NOTIFY_ARMED: number;
    readonly NOTIFY_HEAD: number;
    readonly NOTIFY_SENT: number;
    /** Acked delivery: the first frame not acknowledged, and frames acknowledged (the producer's room). */
    readonly ACK_HEAD: number;
    readonly ACKED: number;
    /** As NOTIFY_ARMED/NOTIFY_HEAD/NOTIFY_SENT, against ACK_HEAD and ACKED. */
    readonly ACK_NOTIFY_ARMED: number;
    readonly ACK_NOTIFY_HEAD: number;
    readonly ACK_NOTIFY_SENT: number;
    readonly WORDS: number;
    readonly BYTES: number;
  };
  /** Values of the SLEEP word: whose turn it is to send. */
  readonly sendTurn: { readonly IO_THREAD_SENDS: number; readonly IDLE: number; readonly PRODUCER_SENDS: number };
  /** Values of the NOTIFY_ARMED word. */
  readonly notify: { readonly DISARMED: number; readonly ARMED: number };
  /** Reader items: tags, and SLOTS values per item in ReaderHandle.take()'s flat array. */
  readonly item: {
    readonly BATCH: number;
    readonly OPEN: number;
    readonly CLOSE: number;
    readonly ERROR: number;
    /** The graceful stop finished: every connection closed, everything read handed over; nothing follows. */
    readonly STOPPED: number;
    readonly REJECTED: number;
    /** A connection's reply queue emptied; a = 0, or bytes discarded after replyTimeoutMs without progress. */
    readonly DRAINED: number;
    /** Just before the BATCH whose messages carried descriptors: a = Int32Array [index, count, fd x count, ...]. */
    readonly FDS: number;
    /** Just before a datagram reader's BATCH (credentials on): a = Int32Array [pid, uid, gid] per message. */
    readonly CREDS: number;
    /** Acked reader: a connection's delivery, before its first BATCH: a = session (32 hex digits) or undefined (plain writer); b = first sequence number; c = sequence numbers below it were sent on an earlier connection. */
    readonly SESSION: number;
    /** Acked reader: just before an acked connection's BATCH: a = sequence number of its first message, b = how many of its first messages are redelivered. */
    readonly SEQ: number;
    readonly SLOTS: number;
    readonly COPY_BATCH_UP_TO: number;
  };
  /** Writer events: tags, and SLOTS values per event in WriterHandle.take()'s flat array. */
  readonly event: {
    readonly CONNECT: number;
    readonly DISCONNECT: number;
    readonly RECONNECTING: number;
    readonly ERROR: number;
    readonly NOTIFY: number;
    readonly STOPPED: number;
    /** Messages the reader sent back (onMessage): a, b, c as a reader BATCH item's. */
    readonly BATCH: number;
    /** Just before the BATCH whose messages carried descriptors: a as a reader FDS item's. */
    readonly FDS: number;
    readonly SLOTS: number;
  };
  /** The keys of the handles' metrics() objects. */
  readonly metrics: { readonly reader: readonly string[]; readonly writer: readonly string[] };
  /** Defaults of options that reach the core (src/options.ts applies them; a test checks they agree). */
  readonly defaults: {
    readonly maxMessageSize: number;
    readonly slabSize: number;
    readonly maxPendingBytes: number;
    readonly frameTimeoutMs: number;
    readonly backlog: number;
    readonly reconnectInitialDelayMs: number;
    readonly reconnectMaxDelayMs: number;
    readonly reconnectMultiplier: number;
    readonly maxReplyBytes: number;
    readonly replyTimeoutMs: number;
    readonly maxPendingFds: number;
    readonly maxBufferedFds: number;
    /** The most descriptors one message may carry (the kernel's SCM_MAX_FD). */
    readonly maxFdsPerMessage: number;
    readonly handshakeTimeoutMs: number;
    readonly maxSessions: number;
  };
  readonly limits: {
    readonly maxMessageSize: number;
    readonly minSlabSize: number;
    readonly maxSlabSize: number;
    readonly maxPathBytes: number;
  };
}
