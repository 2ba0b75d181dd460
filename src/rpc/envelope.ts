/**
 * The RPC envelope: a small header at the start of a frame's payload that
 * carries the call id, the kind of frame and, for a request, the method, its
 * deadline and its stream credit. docs/rpc.md specifies it for other
 * implementations:
 *
 *     payload = kind:u8 | id:uvarint | rest
 *     REQUEST (1)  rest = flags:u8 | deadline_ms:uvarint | [credit:uvarint if STREAM] | method_len:uvarint | method | body
 *     REPLY   (2)  rest = body
 *     ERROR   (3)  rest = code_len:uvarint | code | message (UTF-8)
 *     PART    (4)  rest = body
 *     END     (5)  rest = (empty)
 *     CANCEL  (6)  rest = (empty)
 *     CREDIT  (7)  rest = n:uvarint
 *
 * Encoding writes into a scratch buffer that is reused (the transports copy
 * what they are given); decoding fills a reusable {@link EnvelopeView} whose
 * `body` is a view of the payload, never a copy.
 */
import { Buffer } from 'node:buffer';
import { invalidType, invalidValue, IpcError, outOfRange } from '../errors';
import { uvarintSize, writeUvarint } from '../varint';

/** The kinds of RPC frames (the first byte of an envelope). */
export const RpcKind = {
  /** Client → server: a call. */
  REQUEST: 0x01,
  /** Server → client: the result of a unary call; ends it. */
  REPLY: 0x02,
  /** Server → client: the call failed (unary or stream); ends it. */
  ERROR: 0x03,
  /** Server → client: one part of a stream; consumes one credit. */
  PART: 0x04,
  /** Server → client: the stream is complete; ends it. */
  END: 0x05,
  /** Client → server: the client abandoned the call. */
  CANCEL: 0x06,
  /** Client → server: the server may send `n` more parts of the stream. */
  CREDIT: 0x07,
} as const;

/** One of the values of {@link RpcKind}. */
export type RpcKindValue = (typeof RpcKind)[keyof typeof RpcKind];

/** REQUEST flag bit 0: the client reads a stream of PART frames ended by END (or ERROR). */
export const FLAG_STREAM = 0x01;
/** Longest method name, in bytes of UTF-8. */
export const MAX_METHOD_BYTES = 256;
/** Longest error code, in bytes (printable ASCII, 0x21 to 0x7E). */
export const MAX_CODE_BYTES = 256;
/** Largest call id, deadline or credit an envelope may carry: 2^53 − 1 (exact in a JavaScript number and in every uint64). */
export const MAX_ENVELOPE_INTEGER = Number.MAX_SAFE_INTEGER;

/** A decoded envelope, one shape per kind. */
export type RpcEnvelope =
  | {
      kind: 'request';
      id: number;
      /** True when the client asked for a stream (flag bit 0). */
      stream: boolean;
      /** Time left when the request was sent, in ms; 0 = no deadline. */
      deadlineMs: number;
      /** Parts the server may send before waiting for CREDIT (stream requests; 0 for unary ones). */
      credit: number;
      method: string;
      body: Uint8Array;
    }
  | { kind: 'reply'; id: number; body: Uint8Array }
  | { kind: 'error'; id: number; code: string; message: string }
  | { kind: 'part'; id: number; body: Uint8Array }
  | { kind: 'end'; id: number }
  | { kind: 'cancel'; id: number }
  | { kind: 'credit'; id: number; credit: number };

const KIND_NAMES = ['', 'request', 'reply', 'error', 'part', 'end', 'cancel', 'credit'] as const;

// ─── Decoding ────────────────────────────────────────────────────────────────

/**
 * @internal The result of {@link decodeInto}, reused from one frame to the
 * next (no allocation per frame but the body view and strings).
 */
export class EnvelopeView {
  /** RpcKind value; 0 when not even the kind could be read. */
  kind = 0;
  /** The call id; -1 when it could not be read. */
  id = -1;
  flags = 0;
  deadlineMs = 0;
  credit = 0;
  method = '';
  code = '';
  message = '';
  /** Start and end of the body in the payload (REQUEST, REPLY, PART). */
  bodyStart = 0;
  bodyEnd = 0;
  /** Why the envelope is invalid (set when decodeInto returned false). */
  error = '';
  /** The last method name decoded and its bytes: a request for the same method reuses the string. */
  lastMethod = '';
  lastMethodBytes: Uint8Array = new Uint8Array(MAX_METHOD_BYTES);
  lastMethodLen = 0;
}

// uvarint reader: returns the value, or -1 (truncated), -2 (overflows 64
// bits or longer than 10 bytes), -3 (above 2^53 − 1). `pos[0]` advances.
const pos = new Int32Array(1);
const TWO_POW_28 = 0x10000000;

function readUvarint(b: Uint8Array, end: number): number {
  let p = pos[0];
  if (p >= end) return -1;
  let byte = b[p++];
  if (byte < 0x80) {
    pos[0] = p;
    return byte;
  }
  // Up to 4 bytes with integer arithmetic (28 bits), then floats.
  let v = byte & 0x7f;
  let shift = 7;
  for (; shift < 28; shift += 7) {
    if (p >= end) return -1;
    byte = b[p++];
    v |= (byte & 0x7f) << shift;
    if (byte < 0x80) {
      pos[0] = p;
      return v;
    }
  }
  let mul = TWO_POW_28;
  for (let i = 4; ; i++) {
    if (p >= end) return -1;
    byte = b[p++];
    if (i === 9) {
      if (byte > 1) return -2; // bit 64 and up, or an 11th byte announced
      v += byte * mul;
      break;
    }
    v += (byte & 0x7f) * mul;
    mul *= 128;
    if (byte < 0x80) break;
  }
  if (v > MAX_ENVELOPE_INTEGER) return -3;
  pos[0] = p;
  return v;
}

const VARINT_ERRORS = ['', 'truncated', 'longer than 64 bits', 'above 2^53 - 1'];

function varintError(what: string, r: number): string {
  return `${what} is ${VARINT_ERRORS[-r]}`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Lenient = new TextDecoder('utf-8');

/** Method names are identifiers: ASCII decoded directly, anything else must be valid UTF-8. */
function decodeMethod(b: Uint8Array, start: number, end: number): string | undefined {
  let s = '';
  for (let i = start; i < end; i++) {
    const c = b[i];
    if (c >= 0x80) {
      try {
        return utf8.decode(b.subarray(start, end));
      } catch {
        return undefined;
      }
    }
    s += String.fromCharCode(c);
  }
  return s;
}

function sameBytes(a: Uint8Array, at: number, b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[at + i] !== b[i]) return false;
  return true;
}

/**
 * @internal Decodes `payload` into `out`. Returns true for a valid envelope;
 * false otherwise, with `out.error` saying why and `out.id` the call id if it
 * could be read (else -1), and `out.kind` the kind byte if there was one.
 */
export function decodeInto(payload: Uint8Array, out: EnvelopeView): boolean {
  return decodeAt(payload, 0, payload.length, out);
}

/**
 * @internal {@link decodeInto} for the payload `payload[start, end)`:
 * `bodyStart`/`bodyEnd` are offsets in `payload`.
 */
export function decodeAt(payload: Uint8Array, start: number, end: number, out: EnvelopeView): boolean {
  out.kind = 0;
  out.id = -1;
  if (end === start) {
    out.error = 'empty payload';
    return false;
  }
  const kind = payload[start];
  out.kind = kind;
  pos[0] = start + 1;
  const id = readUvarint(payload, end);
  if (id < 0) {
    out.error = varintError('the call id', id);
    return false;
  }
  out.id = id;
  switch (kind) {
    case RpcKind.REQUEST: {
      let p = pos[0];
      if (p >= end) {
        out.error = 'the request flags are missing';
        return false;
      }
      const flags = payload[p++];
      out.flags = flags;
      if ((flags & ~FLAG_STREAM) !== 0) {
        out.error = `unknown request flags 0x${flags.toString(16).padStart(2, '0')}`;
        return false;
      }
      pos[0] = p;
      const deadline = readUvarint(payload, end);
      if (deadline < 0) {
        out.error = varintError('the deadline', deadline);
        return false;
      }
      out.deadlineMs = deadline;
      out.credit = 0;
      if (flags & FLAG_STREAM) {
        const credit = readUvarint(payload, end);
        if (credit < 0) {
          out.error = varintError('the stream credit', credit);
          return false;
        }
        out.credit = credit;
      }
      const mlen = readUvarint(payload, end);
      if (mlen < 0) {
        out.error = varintError('the method length', mlen);
        return false;
      }
      if (mlen === 0 || mlen > MAX_METHOD_BYTES) {
        out.error = `the method name is ${mlen} bytes; 1 to ${MAX_METHOD_BYTES} are allowed`;
        return false;
      }
      p = pos[0];
      if (p + mlen > end) {
        out.error = 'the method name is truncated';
        return false;
      }
      let method: string | undefined;
      if (mlen === out.lastMethodLen && sameBytes(payload, p, out.lastMethodBytes, mlen)) method = out.lastMethod;
      else {
        method = decodeMethod(payload, p, p + mlen);
        if (method === undefined) {
          out.error = 'the method name is not valid UTF-8';
          return false;
        }
        out.lastMethod = method;
        out.lastMethodLen = mlen;
        out.lastMethodBytes.set(payload.subarray(p, p + mlen));
      }
      out.method = method;
      out.bodyStart = p + mlen;
      out.bodyEnd = end;
      return true;
    }
    case RpcKind.REPLY:
    case RpcKind.PART:
      out.bodyStart = pos[0];
      out.bodyEnd = end;
      return true;
    case RpcKind.ERROR: {
      const clen = readUvarint(payload, end);
      if (clen < 0) {
        out.error = varintError('the error code length', clen);
        return false;
      }
      const p = pos[0];
      if (clen === 0 || clen > MAX_CODE_BYTES) {
        out.error = `the error code is ${clen} bytes; 1 to ${MAX_CODE_BYTES} are allowed`;
        return false;
      }
      if (p + clen > end) {
        out.error = 'the error code is truncated';
        return false;
      }
      let code = '';
      for (let i = p; i < p + clen; i++) {
        const c = payload[i];
        if (c < 0x21 || c > 0x7e) {
          out.error = 'the error code is not printable ASCII';
          return false;
        }
        code += String.fromCharCode(c);
      }
      out.code = code;
      // The message is text for people: invalid UTF-8 is replaced (U+FFFD), not refused.
      out.message = p + clen === end ? '' : utf8Lenient.decode(payload.subarray(p + clen, end));
      return true;
    }
    case RpcKind.END:
    case RpcKind.CANCEL:
      if (pos[0] !== end) {
        out.error = `${KIND_NAMES[kind]} carries ${end - pos[0]} unexpected bytes`;
        return false;
      }
      return true;
    case RpcKind.CREDIT: {
      const n = readUvarint(payload, end);
      if (n < 0) {
        out.error = varintError('the credit', n);
        return false;
      }
      if (pos[0] !== end) {
        out.error = `credit carries ${end - pos[0]} unexpected bytes`;
        return false;
      }
      out.credit = n;
      return true;
    }
    default:
      out.error = `unknown kind 0x${kind.toString(16).padStart(2, '0')}`;
      return false;
  }
}

/**
 * Decodes one envelope (for tools, tests and other transports; the client
 * and server use a faster path with the same rules). `body` is a view of
 * `payload`, not a copy.
 * @param payload - One frame's payload.
 * @returns The envelope.
 * @throws IpcError `ERR_INVALID_FRAME` when the payload is not a valid envelope (the message says why).
 */
export function decodeRpcEnvelope(payload: Uint8Array): RpcEnvelope {
  const v = new EnvelopeView();
  if (!decodeInto(payload, v)) {
    throw new IpcError('ERR_INVALID_FRAME', `Not a valid RPC envelope: ${v.error}`);
  }
  const id = v.id;
  switch (v.kind) {
    case RpcKind.REQUEST:
      return {
        kind: 'request',
        id,
        stream: (v.flags & FLAG_STREAM) !== 0,
        deadlineMs: v.deadlineMs,
        credit: v.credit,
        method: v.method,
        body: payload.subarray(v.bodyStart, v.bodyEnd),
      };
    case RpcKind.REPLY:
      return { kind: 'reply', id, body: payload.subarray(v.bodyStart, v.bodyEnd) };
    case RpcKind.PART:
      return { kind: 'part', id, body: payload.subarray(v.bodyStart, v.bodyEnd) };
    case RpcKind.ERROR:
      return { kind: 'error', id, code: v.code, message: v.message };
    case RpcKind.END:
      return { kind: 'end', id };
    case RpcKind.CANCEL:
      return { kind: 'cancel', id };
    default:
      return { kind: 'credit', id, credit: v.credit };
  }
}

// ─── Encoding ────────────────────────────────────────────────────────────────

/**
 * @internal A growable scratch buffer the encoders write into. The result is
 * a view of it, valid until the next encode: the transports copy it at once.
 * Bodies above `keepLimit` get a buffer of their own (not kept).
 */
export class Scratch {
  buf: Buffer;
  readonly #keepLimit: number;
  constructor(initial = 4096, keepLimit = 1024 * 1024) {
    this.buf = Buffer.allocUnsafe(initial);
    this.#keepLimit = keepLimit;
  }
  /** A buffer of at least `n` bytes (the scratch buffer, grown if needed). */
  get(n: number): Buffer {
    if (n <= this.buf.length) return this.buf;
    if (n > this.#keepLimit) return Buffer.allocUnsafe(n);
    let size = this.buf.length * 2;
    while (size < n) size *= 2;
    this.buf = Buffer.allocUnsafe(size);
    return this.buf;
  }
}

// The first `n` bytes of a scratch buffer, as a plain Uint8Array: a Buffer's
// own subarray() makes a Buffer through its species constructor (JavaScript
// in node:buffer), a cost per call that shows while V8 has not optimized it.
function head(out: Buffer, n: number): Uint8Array {
  return new Uint8Array(out.buffer, out.byteOffset, n);
}

/** A body: bytes, or a string sent as UTF-8. */
export type BodyInput = Uint8Array | string;

/** @internal Bytes of `body` on the wire (a string's UTF-8 length). */
export function bodyLength(body: BodyInput): number {
  return typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.length;
}

// A uvarint at out[p]; returns the offset after it. One byte inline.
function putVarint(out: Uint8Array, p: number, n: number): number {
  if (n < 0x80) {
    out[p] = n;
    return p + 1;
  }
  return p + writeUvarint(n, out, p);
}

function putBody(out: Buffer, at: number, body: BodyInput, len: number): number {
  if (len === 0) return at;
  if (typeof body === 'string') out.write(body, at, len, 'utf8');
  else if (len <= 8) for (let i = 0; i < len; i++) out[at + i] = body[i];
  else out.set(body, at);
  return at + len;
}

/** @internal Bytes of a REQUEST envelope. */
export function requestSize(id: number, stream: boolean, deadlineMs: number, credit: number, mlen: number, bodyLen: number): number {
  return 2 + uvarintSize(id) + uvarintSize(deadlineMs) + (stream ? uvarintSize(credit) : 0) + uvarintSize(mlen) + mlen + bodyLen;
}

/** @internal Writes a REQUEST at `out[at]` (room checked by the caller, see {@link requestSize}); returns the offset after it. */
export function putRequest(
  out: Buffer,
  at: number,
  id: number,
  stream: boolean,
  deadlineMs: number,
  credit: number,
  methodBytes: Uint8Array,
  body: BodyInput,
  bodyLen: number,
): number {
  const mlen = methodBytes.length;
  out[at] = RpcKind.REQUEST;
  let p = putVarint(out, at + 1, id);
  out[p++] = stream ? FLAG_STREAM : 0;
  p = putVarint(out, p, deadlineMs);
  if (stream) p = putVarint(out, p, credit);
  p = putVarint(out, p, mlen);
  if (mlen <= 8) for (let i = 0; i < mlen; i++) out[p + i] = methodBytes[i];
  else out.set(methodBytes, p);
  return putBody(out, p + mlen, body, bodyLen);
}

/** @internal Encodes a REQUEST; `methodBytes` is the method's UTF-8. */
export function encodeRequest(
  s: Scratch,
  id: number,
  stream: boolean,
  deadlineMs: number,
  credit: number,
  methodBytes: Uint8Array,
  body: BodyInput,
  bodyLen: number,
): Uint8Array {
  const out = s.get(requestSize(id, stream, deadlineMs, credit, methodBytes.length, bodyLen));
  return head(out, putRequest(out, 0, id, stream, deadlineMs, credit, methodBytes, body, bodyLen));
}

/** @internal Writes END or CANCEL (`kind`), or CREDIT with `n`, at `out[at]` (at most 21 bytes); returns the offset after it. */
export function putControl(out: Uint8Array, at: number, kind: number, id: number, n = 0): number {
  out[at] = kind;
  let p = at + 1;
  p += writeUvarint(id, out, p);
  if (kind === RpcKind.CREDIT) p += writeUvarint(n, out, p);
  return p;
}

/** @internal Encodes REPLY or PART (`kind`) with `body`. */
export function encodeBodyFrame(s: Scratch, kind: number, id: number, body: BodyInput, bodyLen: number): Uint8Array {
  const out = s.get(1 + uvarintSize(id) + bodyLen);
  out[0] = kind;
  const p = putBody(out, 1 + writeUvarint(id, out, 1), body, bodyLen);
  return head(out, p);
}

/** @internal Encodes END or CANCEL (`kind`), or CREDIT with `n` when kind is CREDIT. */
export function encodeControl(s: Scratch, kind: number, id: number, n = 0): Uint8Array {
  const out = s.get(1 + 10 + 10);
  out[0] = kind;
  let p = 1 + writeUvarint(id, out, 1);
  if (kind === RpcKind.CREDIT) p += writeUvarint(n, out, p);
  return head(out, p);
}

/** @internal Encodes ERROR: `code` must be printable ASCII of 1 to 256 bytes (the caller checks). */
export function encodeError(s: Scratch, id: number, code: string, message: string): Uint8Array {
  const mlen = Buffer.byteLength(message, 'utf8');
  const clen = code.length;
  const out = s.get(1 + uvarintSize(id) + uvarintSize(clen) + clen + mlen);
  out[0] = RpcKind.ERROR;
  let p = 1 + writeUvarint(id, out, 1);
  p += writeUvarint(clen, out, p);
  p += out.write(code, p, clen, 'latin1');
  if (mlen !== 0) p += out.write(message, p, mlen, 'utf8');
  return head(out, p);
}

/** @internal True for a code that can go on the wire: 1 to 256 bytes of printable ASCII. */
export function isWireCode(code: unknown): code is string {
  if (typeof code !== 'string' || code.length === 0 || code.length > MAX_CODE_BYTES) return false;
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/**
 * Encodes one envelope (for tools, tests and other transports). The result
 * is a new Uint8Array of its own.
 * @param envelope - What to encode; `body` may be a string (sent as UTF-8) and defaults to empty.
 * @returns The frame payload.
 * @throws TypeError / RangeError for an id, deadline or credit that is not an integer from 0 to 2^53 − 1,
 * a method name that is empty or longer than 256 bytes, or an error code that is not 1 to 256 bytes of printable ASCII.
 */
export function encodeRpcEnvelope(envelope: RpcEnvelopeInput): Uint8Array {
  const e = envelope;
  checkInt('id', e.id);
  const s = new Scratch(64, Infinity);
  let out: Uint8Array;
  switch (e.kind) {
    case 'request': {
      const method = methodBytes(e.method);
      const deadline = e.deadlineMs ?? 0;
      const credit = e.credit ?? 0;
      checkInt('deadlineMs', deadline);
      checkInt('credit', credit);
      const body = e.body ?? '';
      out = encodeRequest(s, e.id, e.stream === true, deadline, credit, method, body, bodyLength(body));
      break;
    }
    case 'reply':
    case 'part': {
      const body = e.body ?? '';
      out = encodeBodyFrame(s, e.kind === 'reply' ? RpcKind.REPLY : RpcKind.PART, e.id, body, bodyLength(body));
      break;
    }
    case 'error':
      if (!isWireCode(e.code)) {
        throw invalidValue(`The error code must be 1 to ${MAX_CODE_BYTES} bytes of printable ASCII. Received ${JSON.stringify(e.code)}`);
      }
      out = encodeError(s, e.id, e.code, e.message ?? '');
      break;
    case 'end':
      out = encodeControl(s, RpcKind.END, e.id);
      break;
    case 'cancel':
      out = encodeControl(s, RpcKind.CANCEL, e.id);
      break;
    case 'credit':
      checkInt('credit', e.credit);
      out = encodeControl(s, RpcKind.CREDIT, e.id, e.credit);
      break;
    default:
      throw invalidValue(`Unknown envelope kind ${JSON.stringify((e as { kind: unknown }).kind)}; expected one of ${KIND_NAMES.slice(1).join(', ')}`);
  }
  return Buffer.from(out); // a copy of its own (a Buffer, as before)
}

/** The input of {@link encodeRpcEnvelope}: an {@link RpcEnvelope} whose optional parts may be left out. */
export type RpcEnvelopeInput =
  | { kind: 'request'; id: number; stream?: boolean; deadlineMs?: number; credit?: number; method: string; body?: BodyInput }
  | { kind: 'reply'; id: number; body?: BodyInput }
  | { kind: 'error'; id: number; code: string; message?: string }
  | { kind: 'part'; id: number; body?: BodyInput }
  | { kind: 'end'; id: number }
  | { kind: 'cancel'; id: number }
  | { kind: 'credit'; id: number; credit: number };

function checkInt(name: string, v: unknown): void {
  if (typeof v !== 'number') throw invalidType(name, 'a number', v, 'argument');
  if (!Number.isInteger(v) || v < 0 || v > MAX_ENVELOPE_INTEGER) throw outOfRange(name, 'an integer >= 0 and <= 2^53 - 1', v);
}

/**
 * @internal The UTF-8 of a method name, checked: a non-empty string of at
 * most 256 bytes (TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE`).
 */
export function methodBytes(method: unknown, name = 'method'): Buffer {
  if (typeof method !== 'string') throw invalidType(name, 'a string', method, 'argument');
  const b = Buffer.from(method, 'utf8');
  if (b.length === 0 || b.length > MAX_METHOD_BYTES) {
    throw invalidValue(`The method name must be 1 to ${MAX_METHOD_BYTES} bytes of UTF-8. Received ${b.length} bytes: ${JSON.stringify(method.slice(0, 40))}`);
  }
  if (b.toString('utf8') !== method) throw invalidValue(`The method name must be valid Unicode (no lone surrogates): ${JSON.stringify(method.slice(0, 40))}`);
  return b;
}
