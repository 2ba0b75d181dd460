// The wire format is the spec (DESIGN.md): frame = uvarint(length) payload.
// Each half of the library is checked against hand-built bytes and a plain
// node:net peer, never only against the other half.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { Reader, Writer, type Batch } from '../src';
import { FrameDecoder, decodeFrames } from '../src/framing';
import { cleanupDirs, tmpSocket, waitFor, withTimeout } from './helpers';

// ─── helpers ────────────────────────────────────────────────────────────────

const readers: Reader[] = [];
const writers: Writer[] = [];
const sockets: net.Socket[] = [];
const servers: net.Server[] = [];

afterEach(async () => {
  // Each step bounded, so one stuck peer cannot hang the file.
  const bounded = (p: Promise<unknown>, what: string) => withTimeout(p, 5000, what);
  const ws = writers.splice(0);
  const rs = readers.splice(0);
  const ss = servers.splice(0);
  const stuck = await Promise.allSettled([
    ...ws.map((w) => bounded(w.stop({ timeoutMs: 1000 }), 'Writer.stop()')),
    ...rs.map((r) => bounded(r.stop({ timeoutMs: 1000 }), 'Reader.stop()')),
  ]);
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.allSettled(ss.map((s) => bounded(new Promise((r) => s.close(r)), 'server.close()')));
  for (const s of sockets.splice(0)) s.destroy();
  const failed = stuck.filter((r) => r.status === 'rejected');
  if (failed.length) throw new Error(`cleanup: ${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')}`);
});

afterAll(() => cleanupDirs());

const tick = () => new Promise<void>((r) => setImmediate(r));

/** Waits until the reader has read `bytes` bytes in all (its bytesRead metric). */
function readUpTo(r: { reader: Reader }, bytes: number): Promise<void> {
  return waitFor(() => r.reader.metrics().bytesRead >= bytes, 10_000, `the reader to read ${bytes} bytes`, 1);
}

/**
 * Unsigned LEB128 written out by hand for the test (no library code):
 * 7 bits per byte, low group first, high bit set when more bytes follow.
 */
function handVarint(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function handFrame(payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(handVarint(payload.length)), payload]);
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 37 + i * 13 + (i >>> 7)) & 0xff;
  return b;
}

function hex(b: ArrayLike<number>): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

function expectSameBytes(got: Uint8Array | undefined, want: Uint8Array, what: string): void {
  expect(got, `${what}: missing`).toBeDefined();
  expect(got!.length, `${what}: length`).toBe(want.length);
  if (Buffer.compare(Buffer.from(got!), Buffer.from(want)) !== 0) {
    let i = 0;
    while (got![i] === want[i]) i++;
    expect.fail(`${what}: first difference at byte ${i} (got ${got![i]}, want ${want[i]})`);
  }
}

interface RawReader {
  reader: Reader;
  got: { conn: number; msg: Buffer }[];
  errors: { err: Error; context: string }[];
  closed: number[];
}

async function startReader(path: string): Promise<RawReader> {
  const got: { conn: number; msg: Buffer }[] = [];
  const errors: { err: Error; context: string }[] = [];
  const closed: number[] = [];
  const reader = new Reader(
    path,
    (batch: Batch) => {
      for (const m of batch) got.push({ conn: batch.connection.id, msg: Buffer.from(m) });
    },
    { onError: (err, context) => errors.push({ err, context }) },
  );
  reader.on('disconnect', (c: { id: number }) => closed.push(c.id));
  readers.push(reader);
  await reader.start();
  return { reader, got, errors, closed };
}

async function rawConnect(path: string): Promise<net.Socket> {
  const s = net.createConnection(path);
  sockets.push(s);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return s;
}

function endAndClose(s: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    s.once('close', () => resolve());
    s.end();
  });
}

// ─── the hand-built varints themselves ──────────────────────────────────────

describe('hand-built varints (test oracle)', () => {
  it('match known LEB128 encodings', () => {
    expect(handVarint(0)).toEqual([0x00]);
    expect(handVarint(1)).toEqual([0x01]);
    expect(handVarint(127)).toEqual([0x7f]);
    expect(handVarint(128)).toEqual([0x80, 0x01]);
    expect(handVarint(300)).toEqual([0xac, 0x02]);
    expect(handVarint(16383)).toEqual([0xff, 0x7f]);
    expect(handVarint(16384)).toEqual([0x80, 0x80, 0x01]);
    expect(handVarint(20000)).toEqual([0xa0, 0x9c, 0x01]);
    expect(handVarint(2097151)).toEqual([0xff, 0xff, 0x7f]);
    expect(handVarint(2097152)).toEqual([0x80, 0x80, 0x80, 0x01]);
  });
});

// ─── raw client → Reader ────────────────────────────────────────────────────

describe('Reader reads frames written by a raw node:net client', () => {
  // Literal prefixes, not computed: 0 → 00, 1 → 01, 127 → 7f, 128 → 80 01, 300 → ac 02, 20000 → a0 9c 01.
  const payloads = [
    Buffer.alloc(0),
    pattern(1, 1),
    pattern(127, 2),
    pattern(128, 3),
    Buffer.alloc(0),
    pattern(300, 4),
    pattern(20000, 5),
    Buffer.from('tail', 'latin1'),
  ];
  const stream = Buffer.concat([
    Buffer.from([0x00]),
    Buffer.from([0x01]), payloads[1]!,
    Buffer.from([0x7f]), payloads[2]!,
    Buffer.from([0x80, 0x01]), payloads[3]!,
    Buffer.from([0x00]),
    Buffer.from([0xac, 0x02]), payloads[5]!,
    Buffer.from([0xa0, 0x9c, 0x01]), payloads[6]!,
    Buffer.from([0x04]), payloads[7]!,
  ]);

  function expectExactly(r: RawReader, want: Buffer[]): void {
    expect(r.got.length).toBe(want.length);
    const conns = new Set(r.got.map((g) => g.conn));
    expect(conns.size).toBe(1);
    for (let i = 0; i < want.length; i++) expectSameBytes(r.got[i]!.msg, want[i]!, `message #${i} (${want[i]!.length} bytes)`);
  }

  it('delivers exactly the messages of one write holding all frames (zero-length, 128 B, 20,000 B)', async () => {
    expect(stream.length).toBe(1 + 2 + 128 + 130 + 1 + 302 + 20003 + 5);
    const path = tmpSocket();
    const r = await startReader(path);
    const s = await rawConnect(path);
    s.write(stream);
    await waitFor(() => r.got.length >= payloads.length, 10_000, 'messages');
    await endAndClose(s);
    await waitFor(() => r.closed.length === 1, 10_000, 'disconnect');
    expectExactly(r, payloads);
    expect(r.errors).toEqual([]);
    expect(r.reader.metrics().errors).toBe(0);
    expect(r.reader.metrics().bytesRead).toBe(stream.length);
  }, 20_000);

  it('delivers exactly the same messages when the stream arrives byte by byte', async () => {
    const path = tmpSocket();
    const r = await startReader(path);
    const s = await rawConnect(path);
    // Every byte its own write; the reader reads it alone (we wait until it
    // did) at every byte of the prefixes and small frames, and every 256
    // bytes inside the large payloads.
    const read0 = r.reader.metrics().bytesRead;
    for (let i = 0; i < stream.length; i++) {
      s.write(stream.subarray(i, i + 1));
      if (i < 600 || i >= stream.length - 10 || i % 256 === 0) await readUpTo(r, read0 + i + 1);
      else await tick();
    }
    await waitFor(() => r.got.length >= payloads.length, 10_000, 'messages');
    await endAndClose(s);
    await waitFor(() => r.closed.length === 1, 10_000, 'disconnect');
    expectExactly(r, payloads);
    expect(r.errors).toEqual([]);
    expect(r.reader.metrics().readCalls).toBeGreaterThan(100); // it really came in pieces
  }, 45_000);

  it('delivers the messages whatever the chunking (prefix split between chunks at every position)', async () => {
    const path = tmpSocket();
    const r = await startReader(path);
    // For each cut point inside the first 600 bytes: one connection, two writes.
    const cuts = [1, 2, 3, 4, 131, 132, 133, 262, 263, 264, 265, 267, 568, 569, 570, 571];
    for (const cut of cuts) {
      const s = await rawConnect(path);
      const read0 = r.reader.metrics().bytesRead;
      s.write(stream.subarray(0, cut));
      await readUpTo(r, read0 + cut); // the reader has the first part alone
      s.write(stream.subarray(cut));
      await endAndClose(s);
    }
    await waitFor(() => r.closed.length === cuts.length, 10_000, 'all connections closed');
    expect(r.errors).toEqual([]);
    expect(r.got.length).toBe(cuts.length * payloads.length);
    const byConn = new Map<number, Buffer[]>();
    for (const g of r.got) byConn.set(g.conn, [...(byConn.get(g.conn) ?? []), g.msg]);
    expect(byConn.size).toBe(cuts.length);
    for (const msgs of byConn.values()) {
      expect(msgs.length).toBe(payloads.length);
      for (let i = 0; i < payloads.length; i++) expectSameBytes(msgs[i], payloads[i]!, `message #${i}`);
    }
  }, 30_000);

  it('delivers large frames (128 KiB and more) mixed with small ones, in chunks of random size', async () => {
    const path = tmpSocket();
    const r = await startReader(path);
    const sizes = [200_000, 0, 5, 131_072, 131_071, 70_000, 3, 1 << 20, 0, 65_536, 65_535, 9];
    const msgs = sizes.map((n, i) => pattern(n, 50 + i));
    const big = Buffer.concat(msgs.map(handFrame));
    const s = await rawConnect(path);
    let seed = 12345;
    const read0 = r.reader.metrics().bytesRead;
    for (let pos = 0; pos < big.length; ) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const n = 1 + (seed % 90_000);
      s.write(big.subarray(pos, pos + n));
      pos += n;
      await readUpTo(r, read0 + Math.min(pos, big.length)); // read before the next chunk comes
    }
    await waitFor(() => r.got.length >= msgs.length || r.errors.length > 0, 15_000, 'messages');
    await endAndClose(s);
    await waitFor(() => r.closed.length === 1, 10_000, 'disconnect');
    expect(r.errors).toEqual([]);
    expectExactly(r, msgs);
  }, 30_000);

  it('accepts overlong (non-minimal) prefixes, as Go encoding/binary.Uvarint does', async () => {
    const path = tmpSocket();
    const r = await startReader(path);
    const s = await rawConnect(path);
    // 0 as 80 00; 3 as 83 80 00; 2 as 82 80 80 80 80 80 80 80 80 00 (10 bytes, 10th byte 0).
    s.write(
      Buffer.concat([
        Buffer.from([0x80, 0x00]),
        Buffer.from([0x83, 0x80, 0x00]), Buffer.from('abc'),
        Buffer.from([0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), Buffer.from('xy'),
      ]),
    );
    await waitFor(() => r.got.length >= 3 || r.errors.length > 0, 10_000, 'messages');
    expect(r.errors.map((e) => (e.err as { code?: string }).code)).toEqual([]);
    expect(r.got.map((g) => g.msg.toString('latin1'))).toEqual(['', 'abc', 'xy']);
  }, 15_000);
});

// ─── Writer → raw server ────────────────────────────────────────────────────

interface RawServer {
  chunks: Buffer[];
  decoded: Buffer[];
  decodeError: unknown;
  ended: boolean;
  bytes(): Buffer;
}

async function rawServer(path: string): Promise<RawServer> {
  const st: RawServer = {
    chunks: [],
    decoded: [],
    decodeError: undefined,
    ended: false,
    bytes: () => Buffer.concat(st.chunks),
  };
  const server = net.createServer((sock) => {
    sockets.push(sock);
    const dec = new FrameDecoder();
    sock.on('data', (d: Buffer) => {
      st.chunks.push(Buffer.from(d));
      try {
        st.decoded.push(...dec.push(d));
      } catch (e) {
        st.decodeError ??= e;
      }
    });
    sock.on('end', () => {
      try {
        dec.end();
      } catch (e) {
        st.decodeError ??= e;
      }
      st.ended = true;
    });
    sock.on('error', () => {});
  });
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return st;
}

describe('Writer output read by a raw node:net server', () => {
  it('is exactly uvarint(length) + payload, minimal prefixes, back to back', async () => {
    const path = tmpSocket();
    const srv = await rawServer(path);
    const sizes = [0, 1, 127, 128, 300, 16383, 16384, 20000, 2097151, 2097152];
    const msgs = sizes.map((n, i) => pattern(n, 100 + i));
    const w = new Writer(path);
    writers.push(w);
    w.start();
    for (const m of msgs) expect(w.write(m)).toBe(true);
    await withTimeout(w.flush(), 10_000, 'flush()');
    const want = Buffer.concat(msgs.map(handFrame));
    await waitFor(() => srv.bytes().length >= want.length, 5_000, 'all bytes');
    await w.stop({ timeoutMs: 2000 });
    await waitFor(() => srv.ended, 10_000, 'end of stream');
    const got = srv.bytes();
    expect(got.length).toBe(want.length);
    expectSameBytes(got, want, 'the byte stream');
    // Overhead per DESIGN.md: 1 byte up to 127, 2 up to 16383, 3 up to 2 MiB − 1, then 4.
    const overhead = got.length - sizes.reduce((a, b) => a + b, 0);
    expect(overhead).toBe(1 + 1 + 1 + 2 + 2 + 2 + 3 + 3 + 3 + 4);
    // The pure-TS decoder (streaming, as the chunks came) and decodeFrames agree.
    expect(srv.decodeError).toBeUndefined();
    expect(srv.decoded.length).toBe(msgs.length);
    for (let i = 0; i < msgs.length; i++) expectSameBytes(srv.decoded[i], msgs[i]!, `streamed #${i}`);
    const all = decodeFrames(got);
    expect(all.length).toBe(msgs.length);
    for (let i = 0; i < msgs.length; i++) expectSameBytes(all[i], msgs[i]!, `decodeFrames #${i}`);
  }, 30_000);

  it('a 300-byte message is sent as ac 02 followed by its bytes', async () => {
    const path = tmpSocket();
    const srv = await rawServer(path);
    const w = new Writer(path);
    writers.push(w);
    w.start();
    const msg = pattern(300, 7);
    expect(w.write(msg)).toBe(true);
    await withTimeout(w.flush(), 10_000, 'flush()');
    await waitFor(() => srv.bytes().length >= 302, 5_000, '302 bytes');
    const got = srv.bytes();
    expect(hex(got.subarray(0, 2))).toBe('ac 02');
    expect(got.length).toBe(302);
    expectSameBytes(got.subarray(2), msg, 'payload');
  }, 20_000);

  it('strings are framed by their UTF-8 byte length, and many small messages decode in order', async () => {
    const path = tmpSocket();
    const srv = await rawServer(path);
    const w = new Writer(path);
    writers.push(w);
    w.start();
    // 43 × '€' is 43 UTF-16 units but 129 UTF-8 bytes: the prefix must say 129 (81 01).
    expect(w.write('€'.repeat(43))).toBe(true);
    expect(w.write('')).toBe(true);
    expect(w.write('é')).toBe(true);
    const N = 20_000;
    for (let i = 0; i < N; ) {
      if (w.write(`m${i}`)) i++;
      else await new Promise((r) => w.once('drain', r));
    }
    await withTimeout(w.flush(), 10_000, 'flush()');
    const strs = ['€'.repeat(43), '', 'é', ...Array.from({ length: N }, (_, i) => `m${i}`)];
    const want = Buffer.concat(strs.map((s) => handFrame(Buffer.from(s, 'utf8'))));
    await waitFor(() => srv.bytes().length >= want.length, 5_000, 'all bytes');
    const got = srv.bytes();
    expect(hex(got.subarray(0, 2))).toBe('81 01');
    expect(hex(got.subarray(131, 135))).toBe('00 02 c3 a9');
    expectSameBytes(got, want, 'the byte stream');
    expect(srv.decodeError).toBeUndefined();
    expect(srv.decoded.map((b) => b.toString('utf8'))).toEqual(strs);
  }, 30_000);
});
