/**
 * The public types of the RPC layer, and the small interfaces its
 * transport-independent cores talk through.
 */
import type { Connection } from '../batch';

/** What a unary handler may return: bytes, a string (sent as UTF-8), or nothing (an empty reply). */
export type ReplyValue = Uint8Array | string | void | undefined;

/** What a streaming handler may yield: one part, as bytes or a string (sent as UTF-8). */
export type PartValue = Uint8Array | string;

/** The peer's credentials, read with SO_PEERCRED when its connection was accepted. */
export interface RpcPeer {
  /** Process id as of its connect() (may have been reused since). */
  readonly pid: number;
  /** User id. */
  readonly uid: number;
  /** Group id. */
  readonly gid: number;
}

/** The second argument of every RPC handler. */
export interface CallContext {
  /** The method called. */
  readonly method: string;
  /**
   * Aborted when the call ends before the handler does: the client's deadline
   * passed (reason: IpcError `ERR_TIMEOUT`), the client cancelled the call or
   * stopped reading the stream (`ERR_CANCELLED`... see docs/rpc.md), the
   * connection closed (`ERR_NOT_CONNECTED`) or the server stopped. Whatever
   * the handler returns after that is discarded.
   */
  readonly signal: AbortSignal;
  /** The caller's credentials: authorize per call with them. */
  readonly peer: RpcPeer;
  /** The connection the call came on (its `id` is unique within the server). */
  readonly connection: Connection;
  /** When the caller's deadline passes (`Date.now()` time, ms), or undefined when it set none. */
  readonly deadline: number | undefined;
}

/**
 * A unary method: gets the request body (a view valid until the handler
 * returns, or until its promise settles) and returns the reply.
 */
export type UnaryHandler = (body: Buffer, ctx: CallContext) => ReplyValue | Promise<ReplyValue>;

/** A server-streaming method: an async generator function; each `yield` sends one part. */
export type StreamHandler = (body: Buffer, ctx: CallContext) => AsyncIterable<PartValue>;

/** One method of an {@link RpcServer}: a unary handler or an async generator function (streaming). */
export type MethodHandler = UnaryHandler | StreamHandler;

/** The methods an {@link RpcServer} serves, by name (1 to 256 bytes of UTF-8). */
export type RpcMethods = Record<string, MethodHandler>;

/** Options of {@link RpcClient.call}. */
export interface CallOptions {
  /** Deadline of this call in ms (0 = none); overrides the client's `timeoutMs`. It reaches the server, which aborts `ctx.signal` when it passes. */
  timeoutMs?: number;
  /** Aborting it cancels the call on both sides: it rejects with an `AbortError` (`ABORT_ERR`) and the server aborts `ctx.signal`. */
  signal?: AbortSignal;
}

/** Options of {@link RpcClient.stream}. */
export interface StreamOptions extends CallOptions {
  /** Parts the server may send ahead of the consumer (flow control window); overrides the client's `streamWindow`. */
  window?: number;
}

// ─── Between the cores and their transports ──────────────────────────────────

/** @internal Where a core sends frames: a Writer, or a Reader's live connection. */
export interface FrameSink {
  /** Queues one frame; the bytes are copied before it returns. False = not queued (the queue is full). */
  write(frame: Uint8Array): boolean;
  /** Queues one frame, waiting for room; the bytes are copied before it returns. Calls complete in order. */
  send(frame: Uint8Array): Promise<void>;
  /**
   * Optional: {@link FrameSink.write} of the frame `head[0, headLen) + body`,
   * copied straight into the transport's buffer (no assembled frame first).
   */
  writeParts?(head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number): boolean;
  /** Optional (with writeParts): {@link FrameSink.send} of the frame `head[0, headLen) + body`. */
  sendParts?(head: Uint8Array, headLen: number, body: Uint8Array | string, bodyLen: number): Promise<void>;
  /**
   * Optional: queues `frames` frames encoded back to back in `src[start,
   * end)`, each as uvarint(length) + frame (`payload`: the frames' bytes
   * without the prefixes), all or none; false = none queued (then the caller
   * writes them one by one).
   */
  writeFramed?(src: Uint8Array, start: number, end: number, frames: number, payload: number): boolean;
  /**
   * Optional: room for one frame of `len` bytes encoded in place in the
   * transport's queue, so that it is not copied there: the offset in
   * {@link FrameSink.bytes}() where the frame goes, or -1 (nothing reserved:
   * no room, frames wait, or no room without wrapping; write it instead).
   * The caller writes exactly `len` bytes there and calls
   * {@link FrameSink.commit} before anything else is written.
   */
  reserve?(len: number): number;
  /** Optional (with reserve): the memory reserve() offsets are in. */
  bytes?(): Buffer;
  /** Optional (with reserve): queues the frame of `len` bytes written in place. */
  commit?(len: number): void;
  /**
   * Optional: frames written from now on wait until {@link FrameSink.uncork},
   * which sends them together (at the latest, they go at the end of the task).
   */
  cork?(): void;
  /** Optional (with cork): sends what was written since cork(). */
  uncork?(): void;
}

/** @internal The owner of a frame's memory: `retain()` keeps it valid after the frame was handled (a Batch). */
export interface Holder {
  retain(): unknown;
}

/** @internal A Reader connection that can send back (the duplex API of issue 18). */
export interface DuplexConnection extends Connection, FrameSink {
  readonly connected: boolean;
  write(data: Uint8Array | string): boolean;
  send(data: Uint8Array | string, options?: { signal?: AbortSignal }): Promise<void>;
}
