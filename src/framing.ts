/**
 * A pure TypeScript codec of the uds-ipc wire format, for tests, tools and
 * users who frame messages themselves (no native addon involved).
 *
 * A connection carries frames back to back:
 *
 *     frame = uvarint(length) payload[length]
 *
 * where `uvarint` is unsigned LEB128, bit for bit Go's
 * `encoding/binary.PutUvarint` / `Uvarint` (and protobuf's varint): 7 bits per
 * byte, low group first, high bit set when more bytes follow, 1 to 10 bytes.
 *
 * Decoding rules, shared with the native reader:
 * - overlong encodings (`80 00` for 0) are accepted, as Go accepts them;
 * - a 10th byte greater than 1 (including one with the continuation bit set)
 *   overflows 64 bits: `ERR_INVALID_FRAME`, judged as soon as that byte is seen;
 * - a length above the limit is `ERR_MESSAGE_TOO_LARGE`, judged as soon as the
 *   bytes seen so far show the length must exceed it (later bytes can only add).
 *
 * Lengths are JavaScript numbers, exact up to `Number.MAX_SAFE_INTEGER`
 * (2^53 − 1); the arithmetic uses multiplication and division, never 32-bit
 * bitwise operators, for values of 2^31 and above.
 *
 * @packageDocumentation
 */

import { constants as bufferConstants } from 'node:buffer';
import { ErrorCodes, IpcError, invalidType, outOfRange } from './errors';
import { checkInteger as checkIntegerOf, DEFAULT_MAX_MESSAGE_SIZE } from './options';
import { uvarintSize, writeUvarint } from './varint';

/** The longest valid uvarint: 10 bytes (a 64-bit value; Go's `binary.MaxVarintLen64`). */
export const MAX_VARINT_LENGTH = 10;

// ─── argument validation ─────────────────────────────────────────────────────

/** A TypeError (ERR_INVALID_ARG_TYPE) worded for a function argument rather than an option. */
function argType(name: string, expected: string, actual: unknown): TypeError {
  return invalidType(name, expected, actual, 'argument');
}

/** Checks that `n` is an integer in [min, max]: TypeError if not a number, RangeError otherwise. */
function checkInteger(name: string, n: unknown, min: number, max: number, option = false): asserts n is number {
  checkIntegerOf(name, n, min, max, option ? 'option' : 'argument', 'of type number');
}

function checkBytes(name: string, buf: unknown): asserts buf is Uint8Array {
  if (!(buf instanceof Uint8Array)) throw argType(name, 'an instance of Buffer or Uint8Array', buf);
}

// ─── varints ─────────────────────────────────────────────────────────────────
// The encoder is src/varint.ts; the decoder below is the only TypeScript one.

/**
 * The number of bytes of the minimal uvarint encoding of `n` (what
 * {@link encodeVarint} writes): 1 below 2^7, 2 below 2^14, 3 below 2^21, …,
 * 8 for `Number.MAX_SAFE_INTEGER`.
 *
 * @param n - An integer from 0 to `Number.MAX_SAFE_INTEGER`.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) if `n` is not a number;
 *   RangeError (`ERR_OUT_OF_RANGE`) if it is not a safe non-negative integer.
 */
export function varintLength(n: number): number {
  checkInteger('n', n, 0, Number.MAX_SAFE_INTEGER);
  return uvarintSize(n);
}

/**
 * Encodes `n` as a minimal uvarint, exactly as Go's `binary.PutUvarint`.
 *
 * - `encodeVarint(n)` returns a new Buffer of {@link varintLength}(n) bytes.
 * - `encodeVarint(n, out, offset = 0)` writes into `out` at `offset` and
 *   returns the number of bytes written (as `PutUvarint` does). Nothing is
 *   written unless all of them fit.
 *
 * @param n - An integer from 0 to `Number.MAX_SAFE_INTEGER`.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) for an argument of the wrong type;
 *   RangeError (`ERR_OUT_OF_RANGE`) if `n` is not a safe non-negative integer,
 *   or `offset` is not an integer such that the encoding fits in `out`.
 *
 * @example
 * ```ts
 * encodeVarint(300);                  // <Buffer ac 02>
 * const buf = Buffer.alloc(16);
 * let off = 0;
 * off += encodeVarint(300, buf, off); // off === 2
 * ```
 */
export function encodeVarint(n: number): Buffer;
export function encodeVarint(n: number, out: Uint8Array, offset?: number): number;
export function encodeVarint(n: number, out?: Uint8Array, offset = 0): Buffer | number {
  checkInteger('n', n, 0, Number.MAX_SAFE_INTEGER);
  const size = uvarintSize(n);
  if (out === undefined) {
    const buf = Buffer.allocUnsafe(size);
    writeUvarint(n, buf, 0);
    return buf;
  }
  checkBytes('out', out);
  if (typeof offset !== 'number') throw argType('offset', 'of type number', offset);
  if (!Number.isInteger(offset) || offset < 0 || offset > out.length - size) {
    throw outOfRange('offset', `an integer >= 0 and <= ${out.length - size} (room for ${size} bytes)`, offset);
  }
  return writeUvarint(n, out, offset);
}

/** A uvarint decoded by {@link decodeVarint}. */
export interface DecodedVarint {
  /** The decoded value (exact: at most `Number.MAX_SAFE_INTEGER`). */
  value: number;
  /** How many bytes the encoding took, from 1 to {@link MAX_VARINT_LENGTH} (more than the minimum for an overlong encoding). */
  bytes: number;
}

/**
 * Decodes the uvarint that starts at `buf[offset]`, with the semantics of Go's
 * `binary.ReadUvarint` plus an optional upper bound.
 *
 * Returns `null` when `buf` ends before the varint does (feed more bytes and
 * try again). Overlong encodings (`80 00`) are accepted.
 *
 * Values above `Number.MAX_SAFE_INTEGER` cannot be represented exactly by a
 * number and are never returned: with `limit` they are refused as too large
 * (see below); without it, a well-formed varint above 2^53 − 1 (such as
 * `ff ff ff ff ff ff ff ff ff 01`, which is 2^64 − 1 for Go) throws
 * `ERR_MESSAGE_TOO_LARGE` once its last byte is seen — after the encoding was
 * checked, so `ff ×9 02` still reports `ERR_INVALID_FRAME`.
 *
 * @param buf - The bytes to read.
 * @param offset - Where the varint starts (default 0; `buf.length` is allowed and returns `null`).
 * @param limit - Largest acceptable value, an integer from 0 to
 *   `Number.MAX_SAFE_INTEGER`. As soon as the bytes seen show that the value
 *   must exceed it (later bytes can only add), `ERR_MESSAGE_TOO_LARGE` is
 *   thrown, even if the varint is not complete yet.
 * @returns The value and the number of bytes it took, or `null` if incomplete.
 * @throws IpcError `ERR_INVALID_FRAME` if the 10th byte is greater than 1
 *   (a 64-bit overflow; judged on that byte, without waiting for an 11th);
 *   IpcError `ERR_MESSAGE_TOO_LARGE` as described above; TypeError
 *   (`ERR_INVALID_ARG_TYPE`) / RangeError (`ERR_OUT_OF_RANGE`) for bad arguments.
 */
export function decodeVarint(buf: Uint8Array, offset = 0, limit?: number): DecodedVarint | null {
  checkBytes('buf', buf);
  checkInteger('offset', offset, 0, buf.length);
  if (limit !== undefined) checkInteger('limit', limit, 0, Number.MAX_SAFE_INTEGER);
  const max = limit ?? Infinity;
  const end = Math.min(buf.length, offset + MAX_VARINT_LENGTH);
  let value = 0;
  let mul = 1; // 2^(7 * i)
  for (let i = offset; i < end; i++) {
    const b = buf[i]!;
    if (i - offset === MAX_VARINT_LENGTH - 1 && b > 1) throw overflowError(b);
    // Exact while below 2^53; above, rounding is monotonic, so the comparisons stay right.
    value += (b & 0x7f) * mul;
    if (value > max) throw tooLargeError(value, max, b >= 0x80);
    if (b < 0x80) {
      if (value > Number.MAX_SAFE_INTEGER) {
        throw new IpcError(
          ErrorCodes.ERR_MESSAGE_TOO_LARGE,
          `Varint value ${varintBigInt(buf, offset, i + 1 - offset)} exceeds Number.MAX_SAFE_INTEGER (${Number.MAX_SAFE_INTEGER})`,
        );
      }
      return { value, bytes: i + 1 - offset };
    }
    mul *= 0x80;
  }
  return null;
}

/** The exact value of a complete varint, for error messages only. */
function varintBigInt(buf: Uint8Array, offset: number, bytes: number): bigint {
  let v = 0n;
  for (let i = bytes - 1; i >= 0; i--) v = (v << 7n) | BigInt(buf[offset + i]! & 0x7f);
  return v;
}

function overflowError(tenth: number): IpcError {
  return new IpcError(
    ErrorCodes.ERR_INVALID_FRAME,
    `Invalid frame: the length prefix overflows 64 bits (10th byte 0x${tenth.toString(16).padStart(2, '0')}, must be 0 or 1)`,
  );
}

function tooLargeError(length: number, max: number, atLeast: boolean): IpcError {
  const len = length > Number.MAX_SAFE_INTEGER ? `more than ${Number.MAX_SAFE_INTEGER}` : `${atLeast ? 'at least ' : ''}${length}`;
  return new IpcError(
    ErrorCodes.ERR_MESSAGE_TOO_LARGE,
    `Message length ${len} bytes exceeds maxMessageSize (${max} bytes)`,
  );
}

// ─── frames ──────────────────────────────────────────────────────────────────

/**
 * Frames one message: `uvarint(length) payload`. A string is encoded as UTF-8.
 *
 * @param payload - The message (may be empty: zero-length messages are valid).
 * @returns A new Buffer of `varintLength(length) + length` bytes (overhead:
 *   1 byte up to 127 bytes, 2 up to 16383, 3 up to 2^21 − 1).
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) if `payload` is neither a string nor a Uint8Array.
 */
export function encodeFrame(payload: Uint8Array | string): Buffer {
  if (typeof payload === 'string') {
    const len = Buffer.byteLength(payload, 'utf8');
    const h = uvarintSize(len);
    const buf = Buffer.allocUnsafe(h + len);
    writeUvarint(len, buf, 0);
    buf.write(payload, h, len, 'utf8');
    return buf;
  }
  checkBytes('payload', payload);
  const len = payload.length;
  const h = uvarintSize(len);
  const buf = Buffer.allocUnsafe(h + len);
  writeUvarint(len, buf, 0);
  buf.set(payload, h);
  return buf;
}

/**
 * Frames several messages into one Buffer: the concatenation of
 * {@link encodeFrame} of each, in order (what a writer sends back to back).
 *
 * @param payloads - Messages (strings are encoded as UTF-8); any iterable.
 * @throws TypeError (`ERR_INVALID_ARG_TYPE`) if `payloads` is not an iterable
 *   of strings and Uint8Arrays (the bad element is named, e.g. `payloads[3]`).
 */
export function encodeFrames(payloads: Iterable<Uint8Array | string>): Buffer {
  if (
    payloads === null ||
    typeof payloads !== 'object' ||
    typeof (payloads as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== 'function'
  ) {
    throw argType('payloads', 'an iterable of strings and Uint8Arrays', payloads);
  }
  const items = Array.isArray(payloads) ? (payloads as readonly (Uint8Array | string)[]) : Array.from(payloads);
  const lengths = new Array<number>(items.length);
  let total = 0;
  for (let i = 0; i < items.length; i++) {
    const p = items[i];
    let len: number;
    if (typeof p === 'string') len = Buffer.byteLength(p, 'utf8');
    else if (p instanceof Uint8Array) len = p.length;
    else throw argType(`payloads[${i}]`, 'a string or an instance of Buffer or Uint8Array', p);
    lengths[i] = len;
    total += uvarintSize(len) + len;
  }
  const buf = Buffer.allocUnsafe(total);
  let off = 0;
  for (let i = 0; i < items.length; i++) {
    const p = items[i]!;
    const len = lengths[i]!;
    off += writeUvarint(len, buf, off);
    if (typeof p === 'string') buf.write(p, off, len, 'utf8');
    else buf.set(p, off);
    off += len;
  }
  return buf;
}

/** Options of {@link FrameDecoder} and {@link decodeFrames}. */
export interface FrameDecoderOptions {
  /**
   * Largest accepted message, in bytes (default 10 MiB, as the Reader's).
   * An integer from 0 to `buffer.constants.MAX_LENGTH`. A longer frame is
   * refused with `ERR_MESSAGE_TOO_LARGE` as soon as its length prefix shows it.
   */
  maxMessageSize?: number;
}

function readMaxMessageSize(options: unknown): number {
  if (options === undefined) return DEFAULT_MAX_MESSAGE_SIZE;
  if (options === null || typeof options !== 'object') throw argType('options', 'of type object', options);
  const max = (options as FrameDecoderOptions).maxMessageSize;
  if (max === undefined) return DEFAULT_MAX_MESSAGE_SIZE;
  checkInteger('maxMessageSize', max, 0, bufferConstants.MAX_LENGTH, true);
  return max;
}

/**
 * A streaming decoder of frames: feed it the bytes of one connection in
 * chunks of any size, get whole messages back in order.
 *
 * - Partial frames are kept across {@link FrameDecoder.push} calls. A payload
 *   split across chunks is assembled in a buffer of its announced length,
 *   allocated when its length prefix is complete (so at most `maxMessageSize`).
 * - The returned Buffers never share memory with the chunks passed in, and the
 *   decoder never writes to them again: they stay valid whatever the caller
 *   later does with its chunks. Messages that arrived complete in one chunk are
 *   views into one copy of that chunk's frames, so a retained small message
 *   keeps that copy alive; `Buffer.from(msg)` it to keep it for long.
 * - A framing error (`ERR_INVALID_FRAME`, `ERR_MESSAGE_TOO_LARGE`) is thrown
 *   as soon as the bytes show it. It is final: the decoder drops its state and
 *   every later `push()` or `end()` throws the same error object.
 *
 * @example
 * ```ts
 * const decoder = new FrameDecoder({ maxMessageSize: 1 << 20 });
 * socket.on('data', (chunk) => {
 *   let messages: Buffer[];
 *   try { messages = decoder.push(chunk); } catch (err) { socket.destroy(err as Error); return; }
 *   for (const m of messages) handle(m);
 * });
 * socket.on('end', () => { try { decoder.end(); } catch (err) { report(err); } });
 * ```
 */
export class FrameDecoder {
  /** Largest accepted message, in bytes. */
  readonly maxMessageSize: number;

  #error: IpcError | null = null;
  // Length prefix being read (or, while #body is set, the length of its prefix in #prefixBytes).
  #value = 0;
  #mul = 1;
  #prefixBytes = 0;
  // Payload being assembled across chunks.
  #body: Buffer | null = null;
  #bodyFilled = 0;
  // (start, length) of the frames completed by the current chunk; reused.
  #spans: number[] = [];

  /**
   * @param options - See {@link FrameDecoderOptions}.
   * @throws TypeError (`ERR_INVALID_ARG_TYPE`) / RangeError (`ERR_OUT_OF_RANGE`) for bad options.
   */
  constructor(options: FrameDecoderOptions = {}) {
    this.maxMessageSize = readMaxMessageSize(options);
  }

  /**
   * Bytes of an incomplete frame held (its length prefix bytes plus the
   * payload bytes received so far); 0 at a frame boundary or after an error.
   */
  get pendingBytes(): number {
    return this.#prefixBytes + this.#bodyFilled;
  }

  /**
   * Feeds the next bytes of the stream.
   *
   * The chunk is not retained: the caller may reuse it as soon as this returns.
   * `push()` is all or nothing: if the chunk contains a framing error, it
   * throws and the messages that preceded the bad prefix in this same chunk
   * are not returned (the stream is corrupt from there on).
   *
   * @param chunk - Any number of bytes, including none.
   * @returns The whole messages completed by this chunk, in order; a
   *   zero-length message is an empty Buffer. Often an empty array.
   * @throws IpcError `ERR_INVALID_FRAME` (length prefix overflows 64 bits) or
   *   `ERR_MESSAGE_TOO_LARGE` (length above `maxMessageSize`), and the same
   *   error again on every later call; TypeError (`ERR_INVALID_ARG_TYPE`) if
   *   `chunk` is not a Uint8Array.
   */
  push(chunk: Uint8Array): Buffer[] {
    if (this.#error !== null) throw this.#error;
    checkBytes('chunk', chunk);
    const out: Buffer[] = [];
    const end = chunk.length;
    let pos = 0;

    // 1. Continue a payload that started in an earlier chunk.
    const body = this.#body;
    if (body !== null) {
      const filled = this.#bodyFilled;
      const n = Math.min(end, body.length - filled);
      body.set(n === end ? chunk : chunk.subarray(0, n), filled);
      if (filled + n < body.length) {
        this.#bodyFilled = filled + n;
        return out;
      }
      out.push(body);
      this.#body = null;
      this.#bodyFilled = 0;
      this.#prefixBytes = 0;
      pos = n;
    }

    // 2. Frames that start in this chunk.
    const max = this.maxMessageSize;
    const spans = this.#spans;
    let regionStart = -1; // first payload byte of the non-empty complete frames
    let regionEnd = 0;
    let value = this.#value;
    let mul = this.#mul;
    let count = this.#prefixBytes;
    while (pos < end) {
      const b = chunk[pos++]!;
      let len: number;
      if (count === 0 && b < 0x80) {
        // One-byte prefix: the common case.
        len = b;
        count = 1;
        if (len > max) this.#fail(tooLargeError(len, max, false));
      } else {
        if (count === MAX_VARINT_LENGTH - 1 && b > 1) this.#fail(overflowError(b));
        value += (b & 0x7f) * mul; // max <= 2^53 − 1: exact until it exceeds max
        count++;
        if (value > max) this.#fail(tooLargeError(value, max, b >= 0x80));
        if (b >= 0x80) {
          mul *= 0x80;
          continue;
        }
        len = value;
      }
      // A complete prefix announcing `len` bytes.
      if (len === 0) {
        spans.push(pos, 0);
      } else if (end - pos >= len) {
        if (regionStart < 0) regionStart = pos;
        spans.push(pos, len);
        pos += len;
        regionEnd = pos;
      } else {
        // The payload continues in later chunks.
        const partial = Buffer.allocUnsafe(len); // fully written before it is handed out
        partial.set(chunk.subarray(pos), 0);
        this.#body = partial;
        this.#bodyFilled = end - pos;
        value = 0; // `count` stays: the prefix is part of the pending frame
        mul = 1;
        break;
      }
      value = 0;
      mul = 1;
      count = 0;
    }
    // A prefix cut by the end of the chunk (or the prefix of the pending payload).
    this.#value = value;
    this.#mul = mul;
    this.#prefixBytes = count;

    // 3. Hand out the complete frames: one copy of their region, one view per message.
    if (spans.length > 0) {
      let copy: Buffer | null = null;
      if (regionStart >= 0) {
        copy = Buffer.allocUnsafe(regionEnd - regionStart);
        copy.set(chunk.subarray(regionStart, regionEnd), 0);
      }
      for (let i = 0; i < spans.length; i += 2) {
        const len = spans[i + 1]!;
        if (len === 0) {
          out.push(Buffer.alloc(0));
        } else {
          const start = spans[i]! - regionStart;
          out.push(copy!.subarray(start, start + len));
        }
      }
      spans.length = 0;
    }
    return out;
  }

  /**
   * Declares the end of the stream. Does nothing at a frame boundary (the
   * decoder may then be fed again, as for a new stream).
   *
   * @throws IpcError `ERR_TRUNCATED_FRAME` if part of a frame is pending (the
   *   decoder then fails: later calls throw the same error); the earlier
   *   framing error if `push()` threw one.
   */
  end(): void {
    if (this.#error !== null) throw this.#error;
    if (this.pendingBytes === 0) return;
    const what =
      this.#body !== null
        ? `${this.#bodyFilled} of ${this.#body.length} payload bytes received`
        : `${this.#prefixBytes} bytes of an incomplete length prefix`;
    this.#fail(new IpcError(ErrorCodes.ERR_TRUNCATED_FRAME, `Stream ended in the middle of a frame (${what})`));
  }

  #fail(err: IpcError): never {
    this.#error = err;
    this.#value = 0;
    this.#mul = 1;
    this.#prefixBytes = 0;
    this.#body = null;
    this.#bodyFilled = 0;
    this.#spans.length = 0;
    throw err;
  }
}

/**
 * Decodes a buffer holding whole frames back to back (for example the output
 * of {@link encodeFrames}, or a recorded stream).
 *
 * @param buf - The frames.
 * @param options - See {@link FrameDecoderOptions} (default `maxMessageSize` 10 MiB).
 * @returns The messages in order; they do not share memory with `buf`.
 * @throws IpcError `ERR_TRUNCATED_FRAME` if `buf` ends inside a frame,
 *   `ERR_INVALID_FRAME` / `ERR_MESSAGE_TOO_LARGE` for a bad length prefix;
 *   TypeError / RangeError for bad arguments.
 */
export function decodeFrames(buf: Uint8Array, options?: FrameDecoderOptions): Buffer[] {
  checkBytes('buf', buf);
  const decoder = new FrameDecoder(options);
  const messages = decoder.push(buf);
  decoder.end();
  return messages;
}
