import { describe, it, expect } from 'vitest';
import {
  MAX_VARINT_LENGTH,
  varintLength,
  encodeVarint,
  decodeVarint,
  encodeFrame,
  encodeFrames,
  FrameDecoder,
  decodeFrames,
} from '../src/framing';
import { rng } from './helpers';
import { IpcError, ErrorCodes } from '../src/errors';

// ─── helpers ────────────────────────────────────────────────────────────────

const MiB = 1024 * 1024;
const DEFAULT_MAX = 10 * MiB;

/** Deterministic PRNG (mulberry32): returns floats in [0, 1). */
function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function bytes(...b: number[]): Uint8Array {
  return Uint8Array.from(b);
}

function repeat(b: number, n: number, ...tail: number[]): Uint8Array {
  return Uint8Array.from([...new Array<number>(n).fill(b), ...tail]);
}

/** A payload of `len` pseudo-random bytes. */
function payload(len: number, r: () => number): Buffer {
  const p = Buffer.allocUnsafe(len);
  let i = 0;
  for (; i + 4 <= len; i += 4) p.writeUInt32LE(Math.floor(r() * 4294967296), i);
  for (; i < len; i++) p[i] = Math.floor(r() * 256);
  return p;
}

/** Runs `fn` and returns what it threw (fails the test if it did not throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  expect.fail('expected a throw');
}

function expectIpcError(fn: () => unknown, code: string): IpcError {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(IpcError);
  expect((e as IpcError).code).toBe(code);
  return e as IpcError;
}

function expectArgError(fn: () => unknown, ctor: typeof TypeError | typeof RangeError, code: string): void {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(ctor);
  expect((e as { code?: string }).code).toBe(code);
}

/** Reference uvarint encoder on bigints (Go's PutUvarint). */
function refEncode(v: bigint): number[] {
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

type RefResult =
  | { kind: 'ok'; value: bigint; bytes: number }
  | { kind: 'more' }
  | { kind: ErrorCodesValue };
type ErrorCodesValue = 'ERR_INVALID_FRAME' | 'ERR_MESSAGE_TOO_LARGE';

/** Reference decoder on bigints: Go's ReadUvarint + the limit rule + the MAX_SAFE_INTEGER rule. */
function refDecode(b: ArrayLike<number>, limit?: bigint): RefResult {
  let x = 0n;
  for (let i = 0; i < b.length && i < 10; i++) {
    const c = b[i]!;
    if (i === 9 && c > 1) return { kind: 'ERR_INVALID_FRAME' };
    x |= BigInt(c & 0x7f) << BigInt(7 * i);
    if (limit !== undefined && x > limit) return { kind: 'ERR_MESSAGE_TOO_LARGE' };
    if (c < 0x80) {
      if (x > BigInt(Number.MAX_SAFE_INTEGER)) return { kind: 'ERR_MESSAGE_TOO_LARGE' };
      return { kind: 'ok', value: x, bytes: i + 1 };
    }
  }
  return { kind: 'more' };
}

function actualDecode(b: Uint8Array, limit?: number): RefResult {
  try {
    const r = decodeVarint(b, 0, limit);
    return r === null ? { kind: 'more' } : { kind: 'ok', value: BigInt(r.value), bytes: r.bytes };
  } catch (e) {
    if (e instanceof IpcError) return { kind: e.code as ErrorCodesValue };
    throw e;
  }
}

/** Asserts that `got` holds exactly the messages `want`, in order. */
function expectMessages(got: Buffer[], want: Uint8Array[]): void {
  expect(got.length).toBe(want.length);
  let firstMismatch = -1;
  for (let i = 0; i < want.length; i++) {
    if (!(got[i] instanceof Buffer) || Buffer.compare(got[i]!, want[i]!) !== 0) {
      firstMismatch = i;
      break;
    }
  }
  expect(firstMismatch).toBe(-1);
}

/** Feeds `stream` to a new decoder in chunks ending at `cuts` (ascending), then end(). */
function decodeInChunks(stream: Buffer, cuts: number[], options?: { maxMessageSize?: number }): Buffer[] {
  const d = new FrameDecoder(options);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts, stream.length]) {
    for (const m of d.push(stream.subarray(prev, c))) out.push(m);
    prev = c;
  }
  d.end();
  expect(d.pendingBytes).toBe(0);
  return out;
}

// ─── varints ────────────────────────────────────────────────────────────────

describe('decodeVarint: test vectors (Go encoding/binary)', () => {
  const vectors: Array<[string, number[], number]> = [
    ['00 → 0', [0x00], 0],
    ['7f → 127', [0x7f], 127],
    ['80 01 → 128', [0x80, 0x01], 128],
    ['ff 7f → 16383', [0xff, 0x7f], 16383],
    ['80 80 01 → 16384', [0x80, 0x80, 0x01], 16384],
    ['80 00 → 0 (overlong, accepted)', [0x80, 0x00], 0],
    ['ff 80 80 00 → 127 (overlong, accepted)', [0xff, 0x80, 0x80, 0x00], 127],
    ['80×9 00 → 0 (10-byte overlong, accepted)', [...new Array<number>(9).fill(0x80), 0x00], 0],
  ];
  for (const [name, enc, value] of vectors) {
    it(name, () => {
      expect(decodeVarint(Uint8Array.from(enc))).toEqual({ value, bytes: enc.length });
      // Trailing bytes are not consumed, and the offset is honoured.
      const padded = Uint8Array.from([0xaa, 0xbb, ...enc, 0xff, 0xff]);
      expect(decodeVarint(padded, 2)).toEqual({ value, bytes: enc.length });
      // With a limit equal to the value it is still accepted.
      expect(decodeVarint(Uint8Array.from(enc), 0, value)).toEqual({ value, bytes: enc.length });
    });
  }

  it('returns null while the varint is incomplete', () => {
    expect(decodeVarint(bytes())).toBeNull();
    expect(decodeVarint(bytes(0x80))).toBeNull();
    expect(decodeVarint(bytes(0x80, 0x80))).toBeNull();
    expect(decodeVarint(bytes(0x05), 1)).toBeNull(); // offset === length
    expect(decodeVarint(repeat(0x80, 9))).toBeNull();
    expect(decodeVarint(repeat(0xff, 9))).toBeNull(); // no limit: wait for the 10th byte
  });

  it('ff×9 01 (2^64−1): throws ERR_MESSAGE_TOO_LARGE (above Number.MAX_SAFE_INTEGER), never a wrong number', () => {
    const e = expectIpcError(() => decodeVarint(repeat(0xff, 9, 0x01)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expect(e.message).toContain('18446744073709551615');
    // With a limit it is refused as soon as the running value exceeds it.
    expect(decodeVarint(repeat(0xff, 4), 0, 2 ** 32)).toBeNull(); // 2^28−1 so far
    expectIpcError(() => decodeVarint(repeat(0xff, 5), 0, 2 ** 32), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
  });

  it('80×9 01 (2^63) and 2^53: too large; 2^53−1: exact', () => {
    expectIpcError(() => decodeVarint(repeat(0x80, 9, 0x01)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expectIpcError(() => decodeVarint(Uint8Array.from(refEncode(2n ** 53n))), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expect(decodeVarint(Uint8Array.from(refEncode(2n ** 53n - 1n)))).toEqual({
      value: Number.MAX_SAFE_INTEGER,
      bytes: 8,
    });
  });

  it('ff×9 02: overflow (ERR_INVALID_FRAME)', () => {
    expectIpcError(() => decodeVarint(repeat(0xff, 9, 0x02)), ErrorCodes.ERR_INVALID_FRAME);
  });

  it('80×10: overflow reported at the 10th byte, without waiting for an 11th', () => {
    const ten = repeat(0x80, 10);
    expect(ten.length).toBe(10);
    const e = expectIpcError(() => decodeVarint(ten), ErrorCodes.ERR_INVALID_FRAME);
    expect(e.message).toContain('0x80');
    expect(decodeVarint(ten.subarray(0, 9))).toBeNull();
  });

  it('80×9 02: ERR_INVALID_FRAME, with or without a limit', () => {
    expectIpcError(() => decodeVarint(repeat(0x80, 9, 0x02)), ErrorCodes.ERR_INVALID_FRAME);
    expectIpcError(() => decodeVarint(repeat(0x80, 9, 0x02), 0, DEFAULT_MAX), ErrorCodes.ERR_INVALID_FRAME);
    expectIpcError(() => decodeVarint(repeat(0x80, 9, 0x81)), ErrorCodes.ERR_INVALID_FRAME);
  });

  it('limit: exact value accepted, one more refused, and refused before the varint is complete', () => {
    expect(decodeVarint(encodeVarint(1000), 0, 1000)).toEqual({ value: 1000, bytes: 2 });
    expectIpcError(() => decodeVarint(encodeVarint(1001), 0, 1000), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // `ff` alone: at least 127, more than 100 whatever follows.
    expectIpcError(() => decodeVarint(bytes(0xff), 0, 100), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // `80` alone: could still be anything; with limit 0, `80 01` is refused at its 2nd byte.
    expect(decodeVarint(bytes(0x80), 0, 0)).toBeNull();
    expectIpcError(() => decodeVarint(bytes(0x80, 0x01), 0, 0), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expect(decodeVarint(bytes(0x80, 0x00), 0, 0)).toEqual({ value: 0, bytes: 2 });
  });

  it('agrees with a bigint reference decoder on 20000 random byte strings', () => {
    const r = rng(0xdec0de);
    const limits: Array<number | undefined> = [undefined, 0, 127, 16384, DEFAULT_MAX, 2 ** 32, Number.MAX_SAFE_INTEGER];
    let mismatches = 0;
    const kinds = new Set<string>();
    for (let n = 0; n < 20000; n++) {
      const len = randInt(r, 1, 11);
      const b = new Uint8Array(len);
      for (let i = 0; i < len; i++) {
        const p = r();
        // Mostly continuation bytes so that long varints are common.
        b[i] = p < 0.6 ? 0x80 | randInt(r, 0, 0x7f) : p < 0.7 ? randInt(r, 0, 2) : randInt(r, 0, 0xff);
      }
      const limit = limits[n % limits.length];
      const want = refDecode(b, limit === undefined ? undefined : BigInt(limit));
      const got = actualDecode(b, limit);
      kinds.add(want.kind);
      if (JSON.stringify(got, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) !==
        JSON.stringify(want, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))) {
        mismatches++;
      }
    }
    expect(mismatches).toBe(0);
    expect([...kinds].sort()).toEqual(['ERR_INVALID_FRAME', 'ERR_MESSAGE_TOO_LARGE', 'more', 'ok']);
  });

  it('validates its arguments', () => {
    expectArgError(() => decodeVarint('00' as unknown as Uint8Array), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => decodeVarint(bytes(0), '0' as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => decodeVarint(bytes(0), -1), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 2), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 0.5), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 0, -1), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 0, 2 ** 53), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 0, NaN), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => decodeVarint(bytes(0), 0, 10n as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE');
  });
});

describe('encodeVarint / varintLength', () => {
  const lengths = [
    0, 1, 127, 128, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
    2 ** 32, 2 ** 35 - 1, 2 ** 35, 2 ** 42, 2 ** 49, 2 ** 52 + 12345, Number.MAX_SAFE_INTEGER,
  ];

  for (const n of lengths) {
    it(`round trip ${n}`, () => {
      const enc = encodeVarint(n);
      expect(enc).toBeInstanceOf(Buffer);
      expect([...enc]).toEqual(refEncode(BigInt(n))); // bit for bit Go's PutUvarint
      expect(enc.length).toBe(varintLength(n));
      expect(decodeVarint(enc)).toEqual({ value: n, bytes: enc.length });
      // Into a caller's buffer at an offset: returns the bytes written, touches nothing else.
      const out = new Uint8Array(MAX_VARINT_LENGTH + 4).fill(0xee);
      expect(encodeVarint(n, out, 3)).toBe(enc.length);
      expect([...out.subarray(3, 3 + enc.length)]).toEqual([...enc]);
      expect(out[2]).toBe(0xee);
      expect(out[3 + enc.length]).toBe(0xee);
      expect(decodeVarint(out, 3)).toEqual({ value: n, bytes: enc.length });
    });
  }

  it('varintLength at every 7-bit boundary', () => {
    expect(MAX_VARINT_LENGTH).toBe(10);
    for (let k = 1; k <= 7; k++) {
      expect(varintLength(2 ** (7 * k) - 1)).toBe(k);
      expect(varintLength(2 ** (7 * k))).toBe(k + 1);
    }
    expect(varintLength(Number.MAX_SAFE_INTEGER)).toBe(8);
  });

  it('refuses to write past the end of the buffer, and writes nothing then', () => {
    const out = new Uint8Array(4);
    expectArgError(() => encodeVarint(2 ** 21, out, 1), RangeError, 'ERR_OUT_OF_RANGE'); // needs 4 bytes
    expect([...out]).toEqual([0, 0, 0, 0]);
    expect(encodeVarint(2 ** 21, out, 0)).toBe(4);
    expect([...out]).toEqual([0x80, 0x80, 0x80, 0x01]);
  });

  it('validates its arguments', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
      expectArgError(() => encodeVarint(bad), RangeError, 'ERR_OUT_OF_RANGE');
      expectArgError(() => varintLength(bad), RangeError, 'ERR_OUT_OF_RANGE');
    }
    expectArgError(() => encodeVarint('1' as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => varintLength(1n as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => encodeVarint(1, [0] as unknown as Uint8Array), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => encodeVarint(1, new Uint8Array(2), -1), RangeError, 'ERR_OUT_OF_RANGE');
    expectArgError(() => encodeVarint(1, new Uint8Array(2), '0' as unknown as number), TypeError, 'ERR_INVALID_ARG_TYPE');
  });
});

// ─── frames ─────────────────────────────────────────────────────────────────

describe('encodeFrame / encodeFrames / decodeFrames', () => {
  it('frame overhead: 1 byte up to 127, 2 up to 16383, 3 up to 2^21−1, 4 from 2^21', () => {
    const cases: Array<[number, number]> = [
      [0, 1], [1, 1], [127, 1], [128, 2], [16383, 2], [16384, 3], [2 ** 21 - 1, 3], [2 ** 21, 4],
    ];
    for (const [n, overhead] of cases) {
      const f = encodeFrame(new Uint8Array(n));
      expect(f.length - n, `length ${n}`).toBe(overhead);
    }
  });

  it('round trips frames of lengths 0, 1, 127, 128, 16383, 16384, 2^21−1, 2^21', () => {
    const r = rng(1);
    for (const n of [0, 1, 127, 128, 16383, 16384, 2 ** 21 - 1, 2 ** 21]) {
      const p = payload(n, r);
      const f = encodeFrame(p);
      expect([...f.subarray(0, f.length - n)]).toEqual(refEncode(BigInt(n)));
      expect(Buffer.compare(f.subarray(f.length - n), p)).toBe(0);
      const msgs = decodeFrames(f);
      expectMessages(msgs, [p]);
    }
  });

  it('encodes strings as UTF-8', () => {
    const f = encodeFrame('héllo €');
    expect(f[0]).toBe(Buffer.byteLength('héllo €'));
    expect(f.subarray(1).toString('utf8')).toBe('héllo €');
    expect([...encodeFrame('')]).toEqual([0]);
  });

  it('encodeFrames is the concatenation of encodeFrame, for arrays and other iterables', () => {
    const r = rng(2);
    const items: Array<Uint8Array | string> = [payload(3, r), '', 'abc', new Uint8Array(0), payload(200, r), 'ü'.repeat(100)];
    const expected = Buffer.concat(items.map((p) => encodeFrame(p)));
    expect(Buffer.compare(encodeFrames(items), expected)).toBe(0);
    function* gen(): Generator<Uint8Array | string> {
      yield* items;
    }
    expect(Buffer.compare(encodeFrames(gen()), expected)).toBe(0);
    expect(encodeFrames([]).length).toBe(0);
    const decoded = decodeFrames(expected);
    expectMessages(decoded, items.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
  });

  it('decodeFrames output does not share memory with its input', () => {
    const input = encodeFrames(['hello', 'world']);
    const msgs = decodeFrames(input);
    input.fill(0);
    expect(msgs.map((m) => m.toString())).toEqual(['hello', 'world']);
  });

  it('decodeFrames: a trailing partial frame is ERR_TRUNCATED_FRAME', () => {
    const full = encodeFrames(['abc', 'defgh']);
    expect(decodeFrames(full).length).toBe(2);
    for (let cut = 1; cut < full.length; cut++) {
      if (cut === 4) continue; // frame boundary
      expectIpcError(() => decodeFrames(full.subarray(0, cut)), ErrorCodes.ERR_TRUNCATED_FRAME);
    }
    expect(decodeFrames(full.subarray(0, 4)).map(String)).toEqual(['abc']);
    expectIpcError(() => decodeFrames(bytes(0x80)), ErrorCodes.ERR_TRUNCATED_FRAME); // partial prefix
    expect(decodeFrames(bytes())).toEqual([]);
  });

  it('decodeFrames honours maxMessageSize', () => {
    const f = encodeFrame(new Uint8Array(1000));
    expect(decodeFrames(f, { maxMessageSize: 1000 })[0]!.length).toBe(1000);
    expectIpcError(() => decodeFrames(f, { maxMessageSize: 999 }), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
  });

  it('validates its arguments', () => {
    expectArgError(() => encodeFrame(42 as unknown as string), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => encodeFrame(null as unknown as string), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => encodeFrames('abc' as unknown as string[]), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => encodeFrames(null as unknown as string[]), TypeError, 'ERR_INVALID_ARG_TYPE');
    const e = thrown(() => encodeFrames(['ok', 7 as unknown as string]));
    expect(e).toBeInstanceOf(TypeError);
    expect((e as TypeError).message).toContain('payloads[1]');
    expectArgError(() => decodeFrames([0] as unknown as Uint8Array), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => decodeFrames(bytes(0), { maxMessageSize: -1 }), RangeError, 'ERR_OUT_OF_RANGE');
  });
});

// ─── streaming decoder ──────────────────────────────────────────────────────

/** A seeded mix of frame sizes including zero-length ones, up to `maxSize`. */
function mixedSizes(r: () => number, count: number, maxSize: number): number[] {
  const sizes: number[] = [];
  for (let i = 0; i < count; i++) {
    const p = r();
    sizes.push(p < 0.2 ? 0 : p < 0.5 ? randInt(r, 1, 130) : p < 0.8 ? randInt(r, 1, 17000) : randInt(r, 0, maxSize));
  }
  return sizes;
}

describe('FrameDecoder', () => {
  it('a short stream split at every byte boundary (and fed byte by byte) decodes to exactly the input', () => {
    const r = rng(42);
    // 1-, 2- and 3-byte prefixes, zero-length frames at the start, the middle and the end.
    const sizes = [0, 1, 0, 127, 128, ...mixedSizes(r, 12, 400), 16384, 0, 5, 0];
    const msgs = sizes.map((n) => payload(n, r));
    const stream = encodeFrames(msgs);
    expect(stream.length).toBeGreaterThan(16384 + 128 + 127);

    // Two chunks, split at every position.
    let failures = 0;
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new FrameDecoder();
      const got = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
      d.end();
      if (got.length !== msgs.length || got.some((m, i) => Buffer.compare(m, msgs[i]!) !== 0)) failures++;
    }
    expect(failures).toBe(0);

    // One byte at a time: pendingBytes tracks the bytes since the last frame boundary.
    const boundaries = new Set<number>([0]);
    let off = 0;
    for (const m of msgs) boundaries.add((off += varintLength(m.length) + m.length));
    const d = new FrameDecoder();
    const got: Buffer[] = [];
    let lastBoundary = 0;
    let pendingMismatches = 0;
    for (let i = 0; i < stream.length; i++) {
      got.push(...d.push(stream.subarray(i, i + 1)));
      if (boundaries.has(i + 1)) lastBoundary = i + 1;
      if (d.pendingBytes !== i + 1 - lastBoundary) pendingMismatches++;
    }
    d.end();
    expect(pendingMismatches).toBe(0);
    expectMessages(got, msgs);
  });

  it('a long stream (sizes 0..70000) in random chunk sizes decodes to exactly the input', () => {
    const r = rng(7);
    const sizes = mixedSizes(r, 160, 70000);
    sizes.push(70000, 0, 0, 1);
    expect(sizes.filter((n) => n === 0).length).toBeGreaterThan(2);
    const msgs = sizes.map((n) => payload(n, r));
    const stream = encodeFrames(msgs);
    for (const [seed, maxChunk] of [[1, 16], [2, 300], [3, 5000], [4, 70000], [5, 300000]] as const) {
      const cr = rng(seed);
      const cuts: number[] = [];
      for (let c = randInt(cr, 0, maxChunk); c < stream.length; c += randInt(cr, 1, maxChunk)) cuts.push(c);
      expectMessages(decodeInChunks(stream, cuts), msgs);
    }
    // And in one piece.
    expectMessages(decodeInChunks(stream, []), msgs);
  });

  it('delivers zero-length messages as empty Buffers', () => {
    const d = new FrameDecoder();
    const got = d.push(bytes(0, 0, 1, 0x61, 0));
    expect(got.map((m) => m.length)).toEqual([0, 0, 1, 0]);
    expect(got.every((m) => m instanceof Buffer)).toBe(true);
    expect(d.push(bytes())).toEqual([]);
    expect(d.push(bytes(0))).toEqual([Buffer.alloc(0)]);
    expect(d.pendingBytes).toBe(0);
  });

  it('returned messages stay intact when the caller reuses its chunk buffer', () => {
    const chunk = Buffer.alloc(64);
    const d = new FrameDecoder();
    // Two whole frames then the start of a third.
    let n = encodeFrames(['first', 'second']).copy(chunk, 0);
    n += encodeFrame('third message').copy(chunk, n, 0, 6);
    const a = d.push(chunk.subarray(0, n));
    expect(a.map(String)).toEqual(['first', 'second']);
    // Reuse the same memory for the rest of the third frame and a fourth.
    chunk.fill(0x58);
    const rest = Buffer.concat([encodeFrame('third message').subarray(6), encodeFrame('fourth')]);
    rest.copy(chunk, 0);
    const b = d.push(chunk.subarray(0, rest.length));
    expect(b.map(String)).toEqual(['third message', 'fourth']);
    chunk.fill(0x59);
    // More pushes must not touch what was handed out.
    d.push(encodeFrames(['x'.repeat(50), 'y'.repeat(3)]).subarray(0, 30));
    d.push(Buffer.alloc(30, 0x7a));
    expect([...a, ...b].map(String)).toEqual(['first', 'second', 'third message', 'fourth']);
  });

  it('a large message assembled across chunks is not modified by later pushes', () => {
    const r = rng(3);
    const big = payload(100000, r);
    const frames = encodeFrames([big, payload(100000, r)]);
    const d = new FrameDecoder();
    const first = [...d.push(frames.subarray(0, 50000)), ...d.push(frames.subarray(50000, 100010))];
    expect(first.length).toBe(1);
    const snapshot = Buffer.from(first[0]!);
    const second = d.push(frames.subarray(100010));
    expect(second.length).toBe(1);
    expect(Buffer.compare(first[0]!, snapshot)).toBe(0);
    expect(Buffer.compare(first[0]!, big)).toBe(0);
  });

  it('refuses a too-large length as soon as the prefix shows it (only the prefix fed)', () => {
    // One-byte prefix.
    expectIpcError(() => new FrameDecoder({ maxMessageSize: 100 }).push(bytes(101)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // Before the prefix is complete: `ff` means at least 127.
    expectIpcError(() => new FrameDecoder({ maxMessageSize: 100 }).push(bytes(0xff)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // Default 10 MiB: the prefix of 10 MiB + 1 alone.
    const p = encodeVarint(DEFAULT_MAX + 1);
    expect(p.length).toBe(4);
    const d1 = new FrameDecoder();
    expect(d1.push(p.subarray(0, 3))).toEqual([]);
    const e = expectIpcError(() => d1.push(p.subarray(3)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expect(e.message).toContain(String(DEFAULT_MAX + 1));
    // ff ff ff ff: 2^28−1 so far, more than 10 MiB whatever follows.
    const d2 = new FrameDecoder();
    expect(d2.push(repeat(0xff, 3))).toEqual([]);
    expect(d2.pendingBytes).toBe(3);
    expectIpcError(() => d2.push(bytes(0xff)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // After good frames in earlier chunks too.
    const d3 = new FrameDecoder({ maxMessageSize: 5 });
    expect(d3.push(encodeFrame('12345')).map(String)).toEqual(['12345']);
    expectIpcError(() => d3.push(bytes(6)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
  });

  it('accepts a message of exactly maxMessageSize', () => {
    const small = new FrameDecoder({ maxMessageSize: 1000 });
    expect(small.maxMessageSize).toBe(1000);
    const f = encodeFrame(Buffer.alloc(1000, 1));
    expect(small.push(f.subarray(0, 500)).length).toBe(0);
    const got = small.push(f.subarray(500));
    expect(got.length).toBe(1);
    expect(got[0]!.length).toBe(1000);

    const dflt = new FrameDecoder();
    expect(dflt.maxMessageSize).toBe(DEFAULT_MAX);
    const big = encodeFrame(Buffer.alloc(DEFAULT_MAX, 2));
    const msgs = dflt.push(big);
    expect(msgs.length).toBe(1);
    expect(msgs[0]!.length).toBe(DEFAULT_MAX);
    expect(msgs[0]![DEFAULT_MAX - 1]).toBe(2);

    const zero = new FrameDecoder({ maxMessageSize: 0 });
    expect(zero.push(bytes(0, 0)).length).toBe(2);
    expectIpcError(() => zero.push(bytes(1)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
  });

  it('varint overflows are ERR_INVALID_FRAME at the 10th byte; ff×9 02 is too large first under a limit', () => {
    const d = new FrameDecoder({ maxMessageSize: 0 });
    expect(d.push(repeat(0x80, 9))).toEqual([]); // 80×9: value 0 so far, within even a 0 limit
    expect(d.pendingBytes).toBe(9);
    expectIpcError(() => d.push(bytes(0x80)), ErrorCodes.ERR_INVALID_FRAME); // 10th byte, no 11th needed

    expectIpcError(() => new FrameDecoder().push(repeat(0x80, 9, 0x02)), ErrorCodes.ERR_INVALID_FRAME);
    expectIpcError(() => new FrameDecoder().push(repeat(0x80, 9, 0x02, 0x00)), ErrorCodes.ERR_INVALID_FRAME);
    // Under a 10 MiB limit the 4th ff already shows the length is too large.
    const d2 = new FrameDecoder();
    expect(d2.push(repeat(0xff, 3))).toEqual([]);
    expectIpcError(() => d2.push(repeat(0xff, 6, 0x02)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    // A good overlong prefix is accepted.
    expect(new FrameDecoder().push(bytes(0x80, 0x00, 0x81, 0x00, 0x61)).map(String)).toEqual(['', 'a']);
  });

  it('after an error every push() and end() throws the same error', () => {
    const d = new FrameDecoder({ maxMessageSize: 10 });
    expect(d.push(bytes(1)).length).toBe(0); // a partial frame pending
    const e = expectIpcError(() => d.push(bytes(0x61, 11)), ErrorCodes.ERR_MESSAGE_TOO_LARGE);
    expect(d.pendingBytes).toBe(0);
    expect(thrown(() => d.push(bytes(0)))).toBe(e);
    expect(thrown(() => d.push(bytes()))).toBe(e);
    expect(thrown(() => d.end())).toBe(e);
  });

  it('end(): nothing at a frame boundary, ERR_TRUNCATED_FRAME inside a prefix or a payload', () => {
    const ok = new FrameDecoder();
    ok.end();
    expect(ok.push(encodeFrame('a')).map(String)).toEqual(['a']);
    ok.end();
    expect(ok.push(encodeFrame('b')).map(String)).toEqual(['b']); // still usable

    const inPrefix = new FrameDecoder();
    inPrefix.push(bytes(0x80, 0x80));
    expect(inPrefix.pendingBytes).toBe(2);
    const e1 = expectIpcError(() => inPrefix.end(), ErrorCodes.ERR_TRUNCATED_FRAME);
    expect(thrown(() => inPrefix.push(bytes(0)))).toBe(e1);

    const inPayload = new FrameDecoder();
    const f = encodeFrame(Buffer.alloc(300, 7));
    expect(inPayload.push(f.subarray(0, 100))).toEqual([]);
    expect(inPayload.pendingBytes).toBe(100);
    const e2 = expectIpcError(() => inPayload.end(), ErrorCodes.ERR_TRUNCATED_FRAME);
    expect(e2.message).toContain('98 of 300');
    expect(thrown(() => inPayload.end())).toBe(e2);

    const afterPrefix = new FrameDecoder();
    afterPrefix.push(f.subarray(0, 2)); // exactly the 2-byte prefix
    expect(afterPrefix.pendingBytes).toBe(2);
    expectIpcError(() => afterPrefix.end(), ErrorCodes.ERR_TRUNCATED_FRAME);
  });

  it('validates its arguments and options', () => {
    expectArgError(() => new FrameDecoder().push('abc' as unknown as Uint8Array), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => new FrameDecoder().push([1, 2] as unknown as Uint8Array), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => new FrameDecoder(null as unknown as object), TypeError, 'ERR_INVALID_ARG_TYPE');
    expectArgError(() => new FrameDecoder({ maxMessageSize: '1' as unknown as number }), TypeError, 'ERR_INVALID_ARG_TYPE');
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
      expectArgError(() => new FrameDecoder({ maxMessageSize: bad }), RangeError, 'ERR_OUT_OF_RANGE');
    }
    expect(new FrameDecoder({}).maxMessageSize).toBe(DEFAULT_MAX);
    expect(new FrameDecoder({ maxMessageSize: undefined }).maxMessageSize).toBe(DEFAULT_MAX);
  });
});
