// End-to-end round trips through the native Reader and Writer: exact content,
// ordering, many writers, buffer lifetime and copy semantics.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { Reader, Writer, type Batch, type ReaderOptions, type WriterOptions } from '../src';
import { cleanupDirs, tmpSocket, waitFor, withTimeout, rng } from './helpers';

const MiB = 1024 * 1024;

// ─── helpers ────────────────────────────────────────────────────────────────

const readers: Reader[] = [];
const writers: Writer[] = [];

afterEach(async () => {
  // Each stop bounded, so one stuck engine cannot hang the file; a stuck one fails the test.
  const ws = writers.splice(0);
  const rs = readers.splice(0);
  const results = await Promise.allSettled([
    ...ws.map((w) => withTimeout(w.stop({ timeoutMs: 1000 }), 5000, 'Writer.stop()')),
    ...rs.map((r) => withTimeout(r.stop({ timeoutMs: 1000 }), 5000, 'Reader.stop()')),
  ]);
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) throw new Error(`cleanup: ${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')}`);
});

afterAll(() => cleanupDirs());

interface Collected {
  reader: Reader;
  errors: { err: Error; context: string }[];
}

async function startReader(path: string, handler: (b: Batch) => void | Promise<void>, opts: ReaderOptions = {}): Promise<Collected> {
  const errors: { err: Error; context: string }[] = [];
  const reader = new Reader(path, handler, { onError: (err, context) => errors.push({ err, context }), ...opts });
  readers.push(reader);
  await reader.start();
  return { reader, errors };
}

function startWriter(path: string, opts: WriterOptions = {}, start = true): Writer {
  const w = new Writer(path, opts);
  writers.push(w);
  if (start) w.start();
  return w;
}

/** Waits for 'drain', failing clearly instead of hanging if it never comes. */
async function drained(w: Writer, timeoutMs = 20_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      once(w, 'drain'),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no 'drain' within ${timeoutMs} ms: ${JSON.stringify(w.metrics())}`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Writes messages 0..n-1 made by `make`, retrying a refused one after 'drain'. Returns how many write() calls returned false. */
async function sendAll(w: Writer, n: number, make: (i: number) => Uint8Array | string): Promise<number> {
  let refused = 0;
  for (let i = 0; i < n; ) {
    if (w.write(make(i))) {
      i++;
    } else {
      refused++;
      await drained(w);
    }
  }
  return refused;
}

/** Deterministic PRNG (mulberry32). */
function pattern(len: number, seed: number): Buffer {
  const r = rng(seed);
  const p = Buffer.allocUnsafe(len);
  let i = 0;
  for (; i + 4 <= len; i += 4) p.writeUInt32LE(Math.floor(r() * 4294967296), i);
  for (; i < len; i++) p[i] = Math.floor(r() * 256);
  return p;
}

/** Byte-exact comparison with a useful failure message (no giant diffs). */
function expectSameBytes(got: Uint8Array | undefined, want: Uint8Array, what: string): void {
  expect(got, `${what}: missing`).toBeDefined();
  const g = got!;
  expect(g.length, `${what}: length`).toBe(want.length);
  const eq = Buffer.compare(Buffer.from(g.buffer, g.byteOffset, g.length), Buffer.from(want.buffer, want.byteOffset, want.length)) === 0;
  if (!eq) {
    let i = 0;
    while (i < g.length && g[i] === want[i]) i++;
    expect.fail(`${what}: first difference at byte ${i} of ${g.length} (got ${g[i]}, want ${want[i]})`);
  }
}

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}

// ─── tests ──────────────────────────────────────────────────────────────────

describe('round trip: exact content', () => {
  it('delivers payloads of boundary sizes byte for byte, up to exactly maxMessageSize', async () => {
    const max = 2 * MiB + 3;
    const sizes = [0, 1, 127, 128, 16383, 16384, 65536, MiB, max];
    const want = sizes.map((n, i) => pattern(n, 1000 + i * 7919 + n));
    const got: Buffer[] = [];
    const conns = new Set<number>();
    const path = tmpSocket();
    const { reader, errors } = await startReader(
      path,
      (batch) => {
        conns.add(batch.connection.id);
        for (const m of batch) got.push(Buffer.from(m)); // copy: this test is about content, not lifetime
      },
      { maxMessageSize: max },
    );
    const w = startWriter(path, { maxMessageSize: max });
    await sendAll(w, want.length, (i) => want[i]!);
    await withTimeout(w.flush(), 15_000, 'flush()');
    await waitFor(() => got.length >= want.length, 20_000, 'all boundary-size messages');
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expectSameBytes(got[i], want[i]!, `message of ${sizes[i]} bytes`);
    expect(conns.size).toBe(1);
    expect(errors).toEqual([]);
    const m = reader.metrics();
    expect(m.received).toBe(want.length);
    expect(m.bytesReceived).toBe(sizes.reduce((a, b) => a + b, 0));
    const wm = w.metrics();
    expect(wm.sent).toBe(want.length);
    expect(wm.bytesSent).toBe(sizes.reduce((a, b) => a + b, 0));
    expect(wm.queueDepth).toBe(0);
  }, 40_000);

  it('delivers strings as their UTF-8 bytes (multi-byte, astral, lone surrogate, empty)', async () => {
    const strings = [
      '',
      'a',
      'héllo wörld',
      '日本語のテキスト',
      '🎉🚀 emoji 👩‍👩‍👧‍👦',
      '€'.repeat(43), // 43 chars, 129 bytes: crosses the 1-byte prefix limit only in bytes
      '日'.repeat(5462), // 16386 bytes: 3-byte prefix while .length is 5462
      'x'.repeat(127),
      'lone \ud800 surrogate',
      '\u0000nul\u0000',
    ];
    const got: Buffer[] = [];
    const path = tmpSocket();
    const { errors } = await startReader(path, (batch) => {
      for (const m of batch) got.push(Buffer.from(m));
    });
    const w = startWriter(path);
    await sendAll(w, strings.length, (i) => strings[i]!);
    await waitFor(() => got.length >= strings.length, 10_000, 'string messages');
    expect(got.length).toBe(strings.length);
    for (let i = 0; i < strings.length; i++) {
      expectSameBytes(got[i], Buffer.from(strings[i]!, 'utf8'), `string #${i}`);
    }
    expect(errors).toEqual([]);
  }, 20_000);

  it('keeps strings and binary messages intact through a tiny writer queue that wraps many times', async () => {
    // maxBufferedBytes 256 → a 256-byte ring: frames regularly straddle its end.
    const n = 3000;
    const make = (i: number): Uint8Array | string => {
      const len = (i * 37) % 118; // 0..117 bytes, frame up to 118 + 1
      if (i % 3 === 0) return 'é'.repeat(len >>> 1) + (len & 1 ? 'z' : ''); // UTF-8, byte length = len
      return pattern(len, i);
    };
    const want = Array.from({ length: n }, (_, i) => {
      const m = make(i);
      return typeof m === 'string' ? Buffer.from(m, 'utf8') : Buffer.from(m);
    });
    const got: Buffer[] = [];
    const path = tmpSocket();
    const { errors } = await startReader(path, (batch) => {
      for (const m of batch) got.push(Buffer.from(m));
    });
    const w = startWriter(path, { maxMessageSize: 118, maxBufferedBytes: 256 });
    const refused = await sendAll(w, n, make);
    await waitFor(() => got.length >= n, 20_000, 'all messages through the tiny queue');
    expect(got.length).toBe(n);
    for (let i = 0; i < n; i++) expectSameBytes(got[i], want[i]!, `message #${i}`);
    expect(errors).toEqual([]);
    const wm = w.metrics();
    // write() returning false is a drop that is counted; every retry was accepted.
    expect(wm.dropped).toBe(refused);
    expect(wm.written).toBe(n + refused);
    expect(wm.sent).toBe(n);
  }, 40_000);
});

describe('round trip: ordering and volume', () => {
  it('delivers 1,000,000 small messages from one writer complete and in order', async () => {
    const N = 1_000_000;
    const lenOf = (seq: number): number => 16 + ((seq * 7) % 49); // 16..64 bytes
    let next = 0;
    let bad: string | undefined;
    const conns = new Set<number>();
    const path = tmpSocket();
    const { reader, errors } = await startReader(path, (batch) => {
      conns.add(batch.connection.id);
      batch.visit((b, s, e) => {
        if (bad !== undefined) return;
        const seq = u32(b, s);
        const len = e - s;
        if (seq !== next) bad = `expected seq ${next}, got ${seq}`;
        else if (len !== lenOf(seq)) bad = `seq ${seq}: length ${len}, expected ${lenOf(seq)}`;
        else {
          for (let k = 4; k < len; k++) {
            if (b[s + k] !== ((seq + k * 31) & 0xff)) {
              bad = `seq ${seq}: byte ${k} is ${b[s + k]}, expected ${(seq + k * 31) & 0xff}`;
              break;
            }
          }
        }
        next++;
      });
    });
    const w = startWriter(path, { maxBufferedWrites: 100_000 });
    const scratch = new Uint8Array(64);
    await sendAll(w, N, (seq) => {
      const len = lenOf(seq);
      putU32(scratch, 0, seq);
      for (let k = 4; k < len; k++) scratch[k] = (seq + k * 31) & 0xff;
      return scratch.subarray(0, len); // same memory every time: write() must copy
    });
    await withTimeout(w.flush(), 15_000, 'flush()');
    await waitFor(() => next >= N || bad !== undefined, 45_000, `1e6 messages (at ${next})`);
    expect(bad).toBeUndefined();
    expect(next).toBe(N);
    expect(conns.size).toBe(1);
    expect(errors).toEqual([]);
    expect(reader.metrics().received).toBe(N);
    const wm = w.metrics();
    expect(wm.sent).toBe(N);
    expect(wm.written).toBe(wm.sent + wm.dropped + wm.failed + wm.queueDepth);
  }, 58_000);

  it('keeps each of five concurrent writers complete and in its own order', async () => {
    const WRITERS = 5;
    const PER = 50_000;
    const lenOf = (wid: number, seq: number): number => 6 + ((seq * 11 + wid * 3) % 35); // 6..40 bytes
    const expected = new Array<number>(WRITERS).fill(0);
    const connOfWriter = new Map<number, number>(); // writer id → connection id
    const writerOfConn = new Map<number, number>(); // connection id → writer id
    let bad: string | undefined;
    const path = tmpSocket();
    const { errors } = await startReader(path, (batch) => {
      const cid = batch.connection.id;
      batch.visit((b, s, e) => {
        if (bad !== undefined) return;
        const wid = b[s]!;
        const seq = u32(b, s + 1);
        if (wid >= WRITERS) {
          bad = `bad writer id ${wid}`;
          return;
        }
        const known = writerOfConn.get(cid);
        if (known === undefined) {
          if (connOfWriter.has(wid)) {
            bad = `writer ${wid} seen on two connections`;
            return;
          }
          writerOfConn.set(cid, wid);
          connOfWriter.set(wid, cid);
        } else if (known !== wid) {
          bad = `connection ${cid} carried writers ${known} and ${wid}`;
          return;
        }
        if (seq !== expected[wid]) bad = `writer ${wid}: expected seq ${expected[wid]}, got ${seq}`;
        else if (e - s !== lenOf(wid, seq)) bad = `writer ${wid} seq ${seq}: length ${e - s}`;
        else if (b[e - 1] !== (wid * 41 + seq) % 251) bad = `writer ${wid} seq ${seq}: last byte ${b[e - 1]}`;
        expected[wid]++;
      });
    });
    const ws = Array.from({ length: WRITERS }, () => startWriter(path, { maxBufferedWrites: 2000 }));
    await Promise.all(
      ws.map((w, wid) => {
        const scratch = new Uint8Array(40);
        return sendAll(w, PER, (seq) => {
          const len = lenOf(wid, seq);
          scratch.fill(0xee);
          scratch[0] = wid;
          putU32(scratch, 1, seq);
          scratch[len - 1] = (wid * 41 + seq) % 251;
          return scratch.subarray(0, len);
        });
      }),
    );
    await withTimeout(Promise.all(ws.map((w) => w.flush())), 20_000, 'flush() of every writer');
    await waitFor(() => bad !== undefined || expected.every((n) => n >= PER), 30_000, `all writers (at ${expected.join(',')})`);
    expect(bad).toBeUndefined();
    expect(expected).toEqual(new Array(WRITERS).fill(PER));
    expect(new Set(connOfWriter.values()).size).toBe(WRITERS);
    expect(errors).toEqual([]);
  }, 50_000);
});

describe('round trip: buffer lifetime and copies', () => {
  it('retain(): kept buffers stay valid after the handler returns, across many slabs, stop() and GC', async () => {
    // Content is a pure function of the sequence number, so nothing needs to be copied to check it.
    const sizeOf = (seq: number): number => (seq % 97 === 0 ? 150_000 + (seq % 5000) : 64 + ((seq * 53) % 3000));
    const fill = (seq: number, out: Uint8Array): void => {
      putU32(out, 0, seq);
      for (let k = 4; k < out.length; k++) out[k] = (seq * 131 + k * 7 + (k >>> 8)) & 0xff;
    };
    const expectedOf = (seq: number): Buffer => {
      const b = Buffer.allocUnsafe(sizeOf(seq));
      fill(seq, b);
      return b;
    };
    const retained: { seq: number; view: Buffer }[] = [];
    const retainedRaw: { seq: number; bytes: Uint8Array; start: number; end: number }[] = [];
    let received = 0;
    let bad: string | undefined;
    const path = tmpSocket();
    const { errors } = await startReader(
      path,
      (batch) => {
        let i = 0;
        for (const m of batch) {
          const seq = u32(m, 0);
          if (seq !== received && bad === undefined) bad = `expected seq ${received}, got ${seq}`;
          if (seq % 7 === 0 || seq % 97 === 0) retained.push({ seq, view: batch.retain() && m }); // the view itself, not a copy
          if (i === 0 && batch.length % 2 === 0) {
            batch.retain();
            retainedRaw.push({ seq, bytes: batch.bytes, start: batch.start(0), end: batch.end(0) });
          }
          i++;
          received++;
        }
      },
      { slabSize: 64 * 1024 }, // smallest slabs: many of them go by
    );
    const w = startWriter(path);
    const checkAll = (when: string): void => {
      for (const { seq, view } of retained) expectSameBytes(view, expectedOf(seq), `${when}: retained view of seq ${seq}`);
      for (const { seq, bytes, start, end } of retainedRaw) {
        expectSameBytes(bytes.subarray(start, end), expectedOf(seq), `${when}: batch.bytes of seq ${seq}`);
      }
    };

    const ROUNDS = 12;
    const PER_ROUND = 300;
    let seq = 0;
    let sentBytes = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const target = seq + PER_ROUND;
      await sendAll(w, PER_ROUND, () => {
        const b = Buffer.allocUnsafe(sizeOf(seq));
        fill(seq, b);
        sentBytes += b.length;
        seq++;
        return b;
      });
      await waitFor(() => received >= target || bad !== undefined, 15_000, `round ${r}`);
      if (r === 3) checkAll('after round 3');
    }
    expect(bad).toBeUndefined();
    expect(received).toBe(ROUNDS * PER_ROUND);
    expect(sentBytes).toBeGreaterThan(8 * MiB); // several MiB went through after the first retained ones
    expect(retained.length).toBeGreaterThan(500);
    expect(retainedRaw.length).toBeGreaterThan(20);
    checkAll('after all rounds');

    // Stop everything, collect garbage (freeing every unretained slab), then
    // push more data through a fresh pair so freed memory gets reused.
    await w.stop();
    await readers[0]!.stop();
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    gc();
    const path2 = tmpSocket();
    let received2 = 0;
    await startReader(path2, (batch) => {
      received2 += batch.length;
    }, { slabSize: 64 * 1024 });
    const w2 = startWriter(path2);
    const junk = Buffer.alloc(3000, 0xa5);
    await sendAll(w2, 3000, () => junk);
    await waitFor(() => received2 >= 3000, 15_000, 'second pair');
    gc();
    checkAll('after stop, GC and more traffic');
    expect(errors).toEqual([]);
  }, 55_000);

  it('without retain(), every view is released (emptied) once the handler is done: sync, async and throwing handlers', async () => {
    type Kept = { mode: string; bytes: Uint8Array; first: Buffer; iterated: Buffer; all: Buffer[]; texts: string[] };
    const kept: Kept[] = [];
    const duringAwait: string[] = [];
    let n = 0;
    const path = tmpSocket();
    const { errors } = await startReader(path, (batch) => {
      const mode = ['sync', 'async', 'throw'][n++ % 3]!;
      const k: Kept = {
        mode,
        bytes: batch.bytes,
        first: batch.at(0)!,
        iterated: [...batch][0]!,
        all: batch.toArray(),
        texts: batch.toArray().map(String),
      };
      kept.push(k);
      if (mode === 'async') {
        return new Promise<void>((resolve) => setTimeout(() => {
          duringAwait.push(...k.all.map(String)); // still valid while the promise is pending
          resolve();
        }, 20));
      }
      if (mode === 'throw') throw new Error('handler failure on purpose');
    });
    const w = startWriter(path);
    for (let i = 0; i < 9; i++) {
      w.write(`message ${i}`);
      await w.flush();
      await waitFor(() => kept.length > i, 10_000, `batch ${i}`);
    }
    // The last async handler has resolved (its batch is released right after).
    await waitFor(() => duringAwait.length >= 3, 10_000, 'async handlers');
    expect(kept.map((k) => k.texts.join('|'))).toEqual([...Array(9).keys()].map((i) => `message ${i}`));
    expect(duringAwait).toEqual(['message 1', 'message 4', 'message 7']);
    for (const k of kept) {
      expect({ mode: k.mode, bytes: k.bytes.length, first: k.first.length, iterated: k.iterated.length, all: k.all.map((b) => b.length) })
        .toEqual({ mode: k.mode, bytes: 0, first: 0, iterated: 0, all: [0] });
    }
    expect(errors.map((e) => `${e.context} ${(e.err as { code?: string }).code}`)).toEqual(Array(3).fill('handler ERR_HANDLER'));
  });

  it('released memory is reused: many batches through one connection keep a bounded number of slabs without any GC', async () => {
    const { binding } = await import('../src/binding');
    // Earlier tests' retained slabs must not be freed by a GC during this one.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    gc();
    gc();
    await new Promise((r) => setImmediate(r)); // finalizers run
    await new Promise((r) => setImmediate(r));
    const before = binding().liveSlabs();
    let received = 0;
    let sum = 0;
    const path = tmpSocket();
    await startReader(path, (batch) => {
      batch.visit((b, s) => {
        sum += b[s]!;
      });
      received += batch.length;
    }, { slabSize: 64 * 1024, maxPendingBytes: 2 * MiB });
    const w = startWriter(path);
    const msg = Buffer.alloc(10_000, 1);
    const N = 20_000; // 200 MB: thousands of 64 KiB slabs if none were reused
    let peak = 0;
    const poll = setInterval(() => {
      peak = Math.max(peak, binding().liveSlabs() - before);
    }, 5);
    await sendAll(w, N, () => msg);
    await waitFor(() => received >= N, 30_000, 'all messages');
    clearInterval(poll);
    peak = Math.max(peak, binding().liveSlabs() - before);
    expect(sum).toBe(N);
    // Slabs of batches in flight (maxPendingBytes / slabSize = 32), up to 32
    // pooled, the one being filled, and releases not yet processed. Without
    // release-on-return this reached over 1,000.
    expect(peak).toBeLessThanOrEqual(120);
    expect(peak).toBeGreaterThan(0);
  });

  it('write() copies: mutating the caller buffer right after write() changes nothing that arrives', async () => {
    const got: Buffer[] = [];
    const path = tmpSocket();
    await startReader(path, (batch) => {
      for (const m of batch) got.push(Buffer.from(m));
    });
    // Not started yet: messages wait in the queue, so any aliasing would show.
    const w = startWriter(path, {}, false);
    const buf = Buffer.alloc(300, 0x11);
    expect(w.write(buf)).toBe(true);
    buf.fill(0x22);
    expect(w.write(buf)).toBe(true);
    buf.fill(0x33);
    // A view with a byte offset into a larger buffer: exactly its bytes are sent.
    const big = new Uint8Array(100);
    for (let i = 0; i < big.length; i++) big[i] = i;
    expect(w.write(big.subarray(10, 20))).toBe(true);
    big.fill(0xff);
    // A large message (3-byte prefix) too.
    const large = Buffer.alloc(200_000, 0x44);
    expect(w.write(large)).toBe(true);
    large.fill(0x55);
    w.start();
    await waitFor(() => got.length >= 4, 10_000, 'the four messages');
    expect(got.length).toBe(4);
    expectSameBytes(got[0], Buffer.alloc(300, 0x11), 'first write');
    expectSameBytes(got[1], Buffer.alloc(300, 0x22), 'second write');
    expectSameBytes(got[2], Uint8Array.from([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]), 'subarray write');
    expectSameBytes(got[3], Buffer.alloc(200_000, 0x44), 'large write');

    // While connected, through a small queue so frames also take the wrap-around path.
    const path2 = tmpSocket();
    const got2: Buffer[] = [];
    await startReader(path2, (batch) => {
      for (const m of batch) got2.push(Buffer.from(m));
    });
    const w2 = startWriter(path2, { maxMessageSize: 500, maxBufferedBytes: 1024 });
    const scratch = Buffer.alloc(500);
    const N = 2000;
    let i = 0;
    while (i < N) {
      scratch.fill(i & 0xff);
      const len = 1 + ((i * 97) % 500);
      if (w2.write(scratch.subarray(0, len))) {
        scratch.fill(0xee); // clobber immediately
        i++;
      } else {
        await drained(w2);
      }
    }
    await waitFor(() => got2.length >= N, 15_000, 'second writer');
    expect(got2.length).toBe(N);
    for (let k = 0; k < N; k++) expectSameBytes(got2[k], Buffer.alloc(1 + ((k * 97) % 500), k & 0xff), `message #${k}`);
  }, 40_000);
});
