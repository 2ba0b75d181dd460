// A peer sending a bad frame loses its own connection, with a typed error
// reported to onError, while every other connection keeps flowing.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { IpcError, Reader, Writer, type Batch, type Connection } from '../src';
import { cleanupDirs, tmpSocket, waitFor, withTimeout } from './helpers';

// ─── helpers ────────────────────────────────────────────────────────────────

const readers: Reader[] = [];
const writers: Writer[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  // Each stop bounded, so one stuck engine cannot hang the file; a stuck one fails the test.
  const results = await Promise.allSettled([
    ...writers.splice(0).map((w) => withTimeout(w.stop({ timeoutMs: 1000 }), 5000, 'Writer.stop()')),
    ...readers.splice(0).map((r) => withTimeout(r.stop({ timeoutMs: 1000 }), 5000, 'Reader.stop()')),
  ]);
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length) throw new Error(`cleanup: ${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')}`);
});

afterAll(() => cleanupDirs());

const MAX = 1024; // the reader's maxMessageSize in these tests

/** Frame with a prefix built by hand (unsigned LEB128), not by the library. */
function handFrame(payload: Uint8Array | string): Buffer {
  const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
  const pre: number[] = [];
  let n = p.length;
  while (n >= 128) {
    pre.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  pre.push(n);
  return Buffer.concat([Buffer.from(pre), p]);
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 29 + i * 11) & 0xff;
  return b;
}

interface Reported {
  err: Error;
  context: string;
  conn: Connection | undefined;
}

interface Setup {
  reader: Reader;
  got: { conn: number; msg: Buffer }[];
  reported: Reported[];
  /** Ids of the connections whose 'disconnect' the reader emitted: everything of theirs was handled before. */
  closed: number[];
  writer: Writer;
  writerConn: () => number;
  goodSent: string[];
  sendGood: (tag: string, n: number) => Promise<void>;
}

/** A Reader (maxMessageSize 1024, onError, no 'error' listener) and a Writer delivering normally. */
async function setup(): Promise<Setup> {
  const path = tmpSocket();
  const got: { conn: number; msg: Buffer }[] = [];
  const reported: Reported[] = [];
  const closed: number[] = [];
  const reader = new Reader(
    path,
    (batch: Batch) => {
      for (const m of batch) got.push({ conn: batch.connection.id, msg: Buffer.from(m) });
    },
    { maxMessageSize: MAX, onError: (err, context, conn) => reported.push({ err, context, conn: conn as Connection | undefined }) },
  );
  reader.on('disconnect', (c: Connection) => closed.push(c.id));
  readers.push(reader);
  await reader.start();
  const writer = new Writer(path);
  writers.push(writer);
  writer.start();
  const goodSent: string[] = [];
  const sendGood = async (tag: string, n: number): Promise<void> => {
    for (let i = 0; i < n; ) {
      const m = `good-${tag}-${i}`;
      if (writer.write(m)) {
        goodSent.push(m);
        i++;
      } else {
        await new Promise((r) => writer.once('drain', r));
      }
    }
  };
  const s: Setup = {
    reader,
    got,
    reported,
    closed,
    writer,
    goodSent,
    sendGood,
    writerConn: () => got.find((g) => g.msg.toString().startsWith('good-'))?.conn ?? -1,
  };
  // The good connection delivers before the bad one shows up.
  await sendGood('before', 200);
  await waitFor(() => got.length >= 200, 10_000, 'good messages before');
  return s;
}

async function rawConnect(path: string): Promise<{ sock: net.Socket; closed: Promise<void>; sockErrors: Error[] }> {
  const sock = net.createConnection(path);
  sockets.push(sock);
  const sockErrors: Error[] = [];
  sock.on('error', (e) => sockErrors.push(e)); // EPIPE / ECONNRESET once the reader closes: expected
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return { sock, closed, sockErrors };
}

const PRE = ['pre-0', '', pattern(MAX, 1), 'pre-3']; // includes a message of exactly maxMessageSize

interface BadCase {
  /** The offending bytes. */
  bad: Buffer;
  /** Send the bad bytes one by one with pauses (else in the same write as the good frames before them). */
  dribble?: boolean;
  /** End the raw connection after the bad bytes. */
  end?: boolean;
  code: string;
}

async function runBadCase(c: BadCase): Promise<void> {
  const s = await setup();
  const goodConn = s.writerConn();
  expect(goodConn).toBeGreaterThan(0);
  const raw = await rawConnect(s.reader.path);
  const pre = Buffer.concat(PRE.map(handFrame));
  if (c.dribble) {
    // Each piece read by the reader on its own before the next is written
    // (until the reader gives up on the connection).
    const read0 = s.reader.metrics().bytesRead;
    raw.sock.write(pre);
    const gaveUp = () => raw.sock.destroyed || s.reported.length > 0;
    await waitFor(() => s.reader.metrics().bytesRead >= read0 + pre.length, 10_000, 'the good frames to be read');
    for (let i = 0; i < c.bad.length && !raw.sock.destroyed; i++) {
      raw.sock.write(c.bad.subarray(i, i + 1));
      const want = read0 + pre.length + i + 1;
      await waitFor(() => s.reader.metrics().bytesRead >= want || gaveUp(), 10_000, `bad byte ${i} to be read`, 1);
    }
  } else {
    raw.sock.write(Buffer.concat([pre, c.bad]));
  }
  if (c.end) raw.sock.end();
  // The good connection keeps writing while the bad one fails.
  await s.sendGood('during', 300);
  await withTimeout(raw.closed, 10_000, "the raw socket's 'close'");
  await waitFor(() => s.reported.length >= 1, 10_000, 'onError');
  await s.sendGood('after', 200);
  await withTimeout(s.writer.flush(), 10_000, 'flush()');
  const total = 200 + 300 + 200 + PRE.length;
  await waitFor(() => s.got.length >= total, 10_000, `all messages (at ${s.got.length} of ${total})`);
  // The reader is done with the bad connection: its 'disconnect' comes after
  // everything else about it (messages, the error).
  await waitFor(() => s.closed.length >= 1, 10_000, "the bad connection's 'disconnect'");

  // Exactly one error, typed, for the bad connection.
  expect(s.reported.length).toBe(1);
  const { err, context, conn } = s.reported[0]!;
  expect(err).toBeInstanceOf(IpcError);
  expect((err as IpcError).code).toBe(c.code);
  expect(context).toBe('connection');
  expect(conn).toBeDefined();
  const badConn = conn!.id;
  expect(badConn).not.toBe(goodConn);
  expect(s.closed).toEqual([badConn]);

  // Everything the bad connection completed before the bad frame was delivered, and nothing else.
  const fromBad = s.got.filter((g) => g.conn === badConn).map((g) => g.msg);
  expect(fromBad.length).toBe(PRE.length);
  for (let i = 0; i < PRE.length; i++) {
    const want = typeof PRE[i] === 'string' ? Buffer.from(PRE[i] as string) : (PRE[i] as Buffer);
    expect(fromBad[i]!.equals(want), `pre-message #${i}`).toBe(true);
  }

  // The good connection: all its messages, in order, before, during and after.
  const fromGood = s.got.filter((g) => g.conn === goodConn).map((g) => g.msg.toString());
  expect(fromGood).toEqual(s.goodSent);
  expect(s.got.length).toBe(s.goodSent.length + PRE.length);
  expect(s.writer.metrics().disconnects).toBe(0);
  expect(s.writer.connected).toBe(true);

  // Counted, no crash, still serving.
  const m = s.reader.metrics();
  expect(m.errors).toBe(1);
  expect(m.connections).toBe(2);
  expect(m.activeConnections).toBe(1);
  expect(s.reader.listenerCount('error')).toBe(0);
  expect(s.reader.listening).toBe(true);
  expect(raw.sock.destroyed).toBe(true);
}

// ─── tests ──────────────────────────────────────────────────────────────────

describe('a bad frame closes only its own connection', () => {
  it('(a) a length above maxMessageSize → ERR_MESSAGE_TOO_LARGE', async () => {
    // 1025 = 81 08, only the prefix: the reader must not wait for a payload it will refuse.
    await runBadCase({ bad: Buffer.from([0x81, 0x08]), code: 'ERR_MESSAGE_TOO_LARGE' });
  }, 30_000);

  it('(a) a length above maxMessageSize, prefix dribbled, followed by payload bytes', async () => {
    // 2^40 as a 6-byte prefix, then some bytes of "payload".
    await runBadCase({
      bad: Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 2, 3, 4, 5]),
      dribble: true,
      code: 'ERR_MESSAGE_TOO_LARGE',
    });
  }, 30_000);

  it('(a) an incomplete prefix that already exceeds maxMessageSize is refused without waiting', async () => {
    // ff ff: at least 16383 with more bytes announced; the connection stays open on the client side.
    await runBadCase({ bad: Buffer.from([0xff, 0xff]), code: 'ERR_MESSAGE_TOO_LARGE' });
  }, 30_000);

  it('(a) a maximal 10-byte prefix ff×9 01 (2^64 − 1) is too large, not an overflow', async () => {
    await runBadCase({ bad: Buffer.from([...new Array(9).fill(0xff), 0x01]), code: 'ERR_MESSAGE_TOO_LARGE' });
  }, 30_000);

  it('(b) an 11-byte prefix 80×10 00 → ERR_INVALID_FRAME', async () => {
    await runBadCase({ bad: Buffer.from([...new Array(10).fill(0x80), 0x00]), code: 'ERR_INVALID_FRAME' });
  }, 30_000);

  it('(b) the same 11-byte prefix, dribbled byte by byte', async () => {
    await runBadCase({ bad: Buffer.from([...new Array(10).fill(0x80), 0x00]), dribble: true, code: 'ERR_INVALID_FRAME' });
  }, 30_000);

  it('(c) a 10-byte prefix 80×9 02 → ERR_INVALID_FRAME', async () => {
    await runBadCase({ bad: Buffer.from([...new Array(9).fill(0x80), 0x02]), code: 'ERR_INVALID_FRAME' });
  }, 30_000);

  it('(c) the same 10-byte prefix, dribbled byte by byte', async () => {
    await runBadCase({ bad: Buffer.from([...new Array(9).fill(0x80), 0x02]), dribble: true, code: 'ERR_INVALID_FRAME' });
  }, 30_000);

  it('(d) a connection that ends mid-frame (prefix 100, 10 bytes) → ERR_TRUNCATED_FRAME', async () => {
    await runBadCase({ bad: Buffer.from([0x64, ...pattern(10, 9)]), end: true, code: 'ERR_TRUNCATED_FRAME' });
  }, 30_000);

  it('(d) a connection that ends inside a length prefix → ERR_TRUNCATED_FRAME', async () => {
    await runBadCase({ bad: Buffer.from([0x80, 0x80]), end: true, code: 'ERR_TRUNCATED_FRAME' });
  }, 30_000);

  it('several bad connections at once each get their own error and close', async () => {
    const s = await setup();
    const cases: { bad: Buffer; end: boolean; code: string }[] = [
      { bad: Buffer.from([0x81, 0x08]), end: false, code: 'ERR_MESSAGE_TOO_LARGE' },
      { bad: Buffer.from([...new Array(10).fill(0x80), 0x00]), end: false, code: 'ERR_INVALID_FRAME' },
      { bad: Buffer.from([...new Array(9).fill(0x80), 0x02]), end: false, code: 'ERR_INVALID_FRAME' },
      { bad: Buffer.from([0x64, ...pattern(10, 3)]), end: true, code: 'ERR_TRUNCATED_FRAME' },
    ];
    const raws = await Promise.all(cases.map(() => rawConnect(s.reader.path)));
    const badIds: number[] = [];
    for (let i = 0; i < cases.length; i++) {
      // A tag message first, so the test can tell which connection id is which case.
      raws[i]!.sock.write(Buffer.concat([handFrame(`case-${i}`), cases[i]!.bad]));
      if (cases[i]!.end) raws[i]!.sock.end();
    }
    await s.sendGood('during', 300);
    await withTimeout(Promise.all(raws.map((r) => r.closed)), 10_000, 'all raw sockets to close');
    await waitFor(() => s.reported.length >= cases.length, 10_000, 'one error per bad connection');
    await s.sendGood('after', 100);
    await waitFor(() => s.got.length >= 200 + 300 + 100 + cases.length, 10_000, 'all messages');
    await waitFor(() => s.closed.length >= cases.length, 10_000, "every bad connection's 'disconnect'");
    for (let i = 0; i < cases.length; i++) {
      const tag = s.got.find((g) => g.msg.toString() === `case-${i}`);
      expect(tag, `tag of case ${i}`).toBeDefined();
      badIds.push(tag!.conn);
    }
    expect(new Set(badIds).size).toBe(cases.length);
    expect(s.reported.length).toBe(cases.length);
    for (let i = 0; i < cases.length; i++) {
      const rep = s.reported.find((r) => r.conn?.id === badIds[i]);
      expect(rep, `error for case ${i}`).toBeDefined();
      expect(rep!.err).toBeInstanceOf(IpcError);
      expect((rep!.err as IpcError).code).toBe(cases[i]!.code);
      expect(rep!.context).toBe('connection');
    }
    const goodConn = s.writerConn();
    expect(s.got.filter((g) => g.conn === goodConn).map((g) => g.msg.toString())).toEqual(s.goodSent);
    const m = s.reader.metrics();
    expect(m.errors).toBe(cases.length);
    expect(m.activeConnections).toBe(1);
    expect(s.reader.listening).toBe(true);
  }, 30_000);

  it('a clean end at a frame boundary is not an error', async () => {
    const s = await setup();
    const raw = await rawConnect(s.reader.path);
    raw.sock.end(Buffer.concat(PRE.map(handFrame)));
    await withTimeout(raw.closed, 10_000, "the raw socket's 'close'");
    await waitFor(() => s.got.length >= 200 + PRE.length, 10_000, 'pre messages');
    // Its 'disconnect' comes after any error the reader would report for it.
    await waitFor(() => s.closed.length === 1, 10_000, "the raw connection's 'disconnect'");
    expect(s.reported).toEqual([]);
    expect(s.reader.metrics().errors).toBe(0);
    expect(s.got.length).toBe(200 + PRE.length);
  }, 30_000);
});

describe('Writer refuses oversized messages', () => {
  it('write() above maxMessageSize throws ERR_MESSAGE_TOO_LARGE synchronously and counts nothing', async () => {
    const path = tmpSocket();
    const got: Buffer[] = [];
    const reader = new Reader(path, (batch) => {
      for (const m of batch) got.push(Buffer.from(m));
    });
    readers.push(reader);
    await reader.start();
    const w = new Writer(path, { maxMessageSize: 1000 });
    writers.push(w);
    w.start();

    const before = w.metrics();
    const tooBig: (Uint8Array | string)[] = [
      Buffer.alloc(1001, 1),
      new Uint8Array(5000),
      '€'.repeat(334), // 334 UTF-16 units, 1002 UTF-8 bytes
      'x'.repeat(1001),
    ];
    for (const m of tooBig) {
      let thrown: unknown;
      let returned: unknown = 'nothing';
      try {
        returned = w.write(m);
      } catch (e) {
        thrown = e;
      }
      expect(returned).toBe('nothing');
      expect(thrown).toBeInstanceOf(IpcError);
      expect((thrown as IpcError).code).toBe('ERR_MESSAGE_TOO_LARGE');
    }
    const after = w.metrics();
    expect(after.written).toBe(before.written);
    expect(after.dropped).toBe(before.dropped);
    expect(after.queueDepth).toBe(before.queueDepth);
    expect(after.queuedBytes).toBe(before.queuedBytes);

    // The limit itself is fine, in bytes of UTF-8.
    expect(w.write(Buffer.alloc(1000, 2))).toBe(true);
    expect(w.write('€'.repeat(333))).toBe(true); // 999 bytes
    await withTimeout(w.flush(), 10_000, 'flush()');
    // Everything the writer sent (flush() counted it) has arrived.
    await waitFor(() => got.length >= 2 && got.length >= w.metrics().sent, 10_000, 'the two valid messages');
    expect(got.length).toBe(2);
    expect(got[0]!.equals(Buffer.alloc(1000, 2))).toBe(true);
    expect(got[1]!.toString('utf8')).toBe('€'.repeat(333));
    const end = w.metrics();
    expect(end.written).toBe(2);
    expect(end.sent).toBe(2);
    expect(end.dropped).toBe(0);
  }, 20_000);

  it('the default limit is 10 MiB; maxMessageSize 0 allows only empty messages', async () => {
    const w = new Writer(tmpSocket()); // never started: validation happens in write()
    writers.push(w);
    expect(() => w.write(Buffer.alloc(10 * 1024 * 1024 + 1))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    expect(w.metrics().written).toBe(0);
    const z = new Writer(tmpSocket(), { maxMessageSize: 0 });
    writers.push(z);
    expect(z.write('')).toBe(true);
    expect(z.write(new Uint8Array(0))).toBe(true);
    expect(() => z.write('a')).toThrow(IpcError);
    expect(() => z.write(new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    expect(z.metrics().written).toBe(2);
    expect(z.metrics().queueDepth).toBe(2);
  }, 20_000);
});
