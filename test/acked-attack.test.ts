// Acknowledged delivery (delivery: 'acked', issue #21) attacked by hostile
// local peers: raw node:net peers speaking the wire format of
// docs/wire-format.md ("Acknowledged delivery") by hand, against a real acked
// Writer (a hostile reader) and a real acked Reader (a hostile writer).
// Each test asserts the documented behaviour; 1h, 2a, 2c, 2d, 2j, 3d and 3g
// failed against the first acked release (main d975e3d) and were fixed.
import { describe, it, expect, afterAll, afterEach, beforeAll } from 'vitest';
import net from 'node:net';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { encodeFrame, Reader, Writer, type Batch, type IpcError } from '../src/index';
import { asUser, assertCanRunAs, FAST, killChildren, Proc, readableCopy, steady, tmpSocket, useTracking, waitFor, within, type ReadableCopy } from './helpers';
import { ackOf, frame, GREETING, hello, MAGIC, parseFrames, u64 } from './acked-wire';
import { fdsOnFile, itOnKernel } from './fd-helpers';

const track = useTracking(300);
afterEach(() => killChildren());
// Peers of another user run from a copy every user can read (the checkout may not be).
const NOBODY = 65534;
let copy: ReadableCopy | undefined;
beforeAll(() => {
  copy = readableCopy();
  assertCanRunAs(NOBODY, copy);
});
afterAll(() => copy?.remove());

type AnyMetrics = Record<string, number>;
const metricsOf = (x: { metrics(): object }) => x.metrics() as unknown as AnyMetrics;

// ---- wire (docs/wire-format.md#acknowledged-delivery) ----

const ack = (seq: number | bigint): Buffer => frame(Buffer.concat([Buffer.from('A'), u64(seq)]));


/** A node:net socket that keeps everything it receives (frames parsed lazily, incrementally). */
class Raw {
  readonly sock: net.Socket;
  private chunks: Buffer[] = [];
  private bytes = 0;
  private parsed: Buffer[] = [];
  private rest = Buffer.alloc(0);
  closed = false;

  constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
    });
    sock.on('close', () => (this.closed = true));
    sock.on('error', () => {});
  }

  static async connect(path: string): Promise<Raw> {
    const s = net.createConnection(path);
    const r = new Raw(s);
    await within(
      new Promise<void>((res, rej) => {
        s.once('connect', res);
        s.once('error', rej);
      }),
      'a raw connection',
    );
    return r;
  }

  get received(): number {
    return this.bytes;
  }

  frames(): Buffer[] {
    if (this.chunks.length > 0) {
      const buf = Buffer.concat([this.rest, ...this.chunks]);
      this.chunks = [];
      const fs = parseFrames(buf);
      let used = 0;
      for (const f of fs) {
        // Copy: `buf` may be large; keep only small frames' bytes alive.
        this.parsed.push(Buffer.from(f));
        const n = f.length;
        used += n + (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4);
      }
      this.rest = Buffer.from(buf.subarray(used));
    }
    return this.parsed;
  }

  acks(): number[] {
    return this.frames()
      .map(ackOf)
      .filter((a): a is number => a !== undefined);
  }

  write(b: Buffer): Promise<void> {
    return new Promise((res, rej) => this.sock.write(b, (e) => (e ? rej(e) : res())));
  }
}

/** A raw node:net listener; `onConn(raw, index)` runs for each accepted socket. */
async function rawServer(path: string, onConn: (r: Raw, i: number) => void): Promise<{ conns: Raw[]; close(): Promise<void> }> {
  const conns: Raw[] = [];
  const server = net.createServer((s) => {
    const r = new Raw(s);
    conns.push(r);
    onConn(r, conns.length - 1);
  });
  await new Promise<void>((res) => server.listen(path, res));
  return {
    conns,
    close: () =>
      new Promise<void>((res) => {
        for (const c of conns) c.sock.destroy();
        server.close(() => res());
      }),
  };
}

/** The hello of a writer's connection (frames()[0]) decoded. */
function helloOf(f: Buffer): { session: string; firstSeq: number; resentBelow: number } {
  expect(f.length).toBe(41);
  expect(f.subarray(0, 9).toString('hex')).toBe(Buffer.concat([MAGIC, Buffer.from('H')]).toString('hex'));
  return { session: f.subarray(9, 25).toString('hex'), firstSeq: Number(f.readBigUInt64LE(25)), resentBelow: Number(f.readBigUInt64LE(33)) };
}

/** An acked Writer with its errors and disconnect reasons recorded. */
function ackedWriter(path: string, opts: Record<string, unknown> = {}) {
  const errors: IpcError[] = [];
  const disconnects: (IpcError | undefined)[] = [];
  const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST, ...opts }));
  w.on('error', (e: IpcError) => errors.push(e));
  w.on('disconnect', (e: IpcError) => disconnects.push(e));
  w.start();
  return { w, errors, disconnects };
}

const everyCoded = (es: (Error | undefined)[]) => es.every((e) => e === undefined || /^ERR_[A-Z_]+$/.test((e as IpcError).code ?? ''));

interface Seen {
  seq: number;
  redelivered: boolean;
  conn: number;
  session: string | undefined;
  data: string;
}
function record(into: Seen[], b: Batch): void {
  for (let i = 0; i < b.length; i++) {
    into.push({ seq: b.sequence(i) ?? -1, redelivered: b.redelivered(i), conn: b.connection.id, session: b.connection.session, data: b.at(i)!.toString() });
  }
}

// =====================================================================
// 1. A hostile READER (raw listener speaking the greeting) against a real acked Writer
// =====================================================================

describe('attack 1: a hostile reader against an acked Writer', () => {
  it('1a acks going backwards, an ack of 0 and repeated acks are ignored: no error, nothing un-acknowledged, acked/unacked consistent', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      for (let i = 1; i <= 10; i++) w.write(`m${i}`);
      await waitFor(() => server.conns[0]?.frames().length >= 11, 10_000, 'hello and 10 messages');
      await server.conns[0].write(ack(6));
      await waitFor(() => metricsOf(w).acked === 6, 10_000, 'the ack of 6');
      await server.conns[0].write(Buffer.concat([ack(3), ack(0), ack(6), ack(1)]));
      // Nothing to wait for but "nothing changes": a later valid ack shows they were all taken in order.
      await server.conns[0].write(ack(7));
      await waitFor(() => metricsOf(w).acked === 7, 10_000, 'the ack of 7');
      expect(metricsOf(w)).toMatchObject({ acked: 7, unacked: 3 });
      expect(errors).toEqual([]);
      await server.conns[0].write(ack(10));
      await within(w.acknowledged(), 'acknowledged()');
      expect(metricsOf(w)).toMatchObject({ acked: 10, unacked: 0, resent: 0 });
      expect(server.conns.length).toBe(1);
      expect(errors).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('1b an ack of 2^64-1 with the greeting (before the hello went), nothing sent yet: ERR_PROTOCOL_MISMATCH, nothing freed; the next connection starts from 1 and delivers', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r, i) => r.sock.write(i === 0 ? Buffer.concat([frame(GREETING), ack(2n ** 64n - 1n)]) : frame(GREETING)));
    try {
      const { w, errors, disconnects } = ackedWriter(path);
      for (let i = 1; i <= 5; i++) w.write(`m${i}`);
      await waitFor(() => errors.length > 0, 10_000, 'the error');
      expect(errors[0].code).toBe('ERR_PROTOCOL_MISMATCH');
      expect(metricsOf(w)).toMatchObject({ acked: 0, unacked: 5 });
      await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 6, 10_000, 'a second connection: hello and 5 messages');
      const h = helloOf(server.conns[1].frames()[0]);
      expect(h.firstSeq).toBe(1);
      expect(server.conns[1].frames().slice(1, 6).map(String)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
      await server.conns[1].write(ack(5));
      await within(w.acknowledged(), 'acknowledged()');
      expect(metricsOf(w)).toMatchObject({ acked: 5, unacked: 0 });
      expect(everyCoded(errors) && everyCoded(disconnects)).toBe(true);
      expect(server.conns.length).toBe(2); // no wedge: the bogus ack died with its connection
    } finally {
      await server.close();
    }
  });

  it('1c an ack as the first frame (before any greeting): ERR_PROTOCOL_MISMATCH, the writer sends that listener nothing', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r, i) => r.sock.write(i === 0 ? ack(1) : frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      w.write('x');
      await waitFor(() => errors.length > 0, 10_000, 'the error');
      expect(errors[0].code).toBe('ERR_PROTOCOL_MISMATCH');
      await waitFor(() => server.conns[0].closed, 10_000, 'the writer to close the first connection');
      expect(server.conns[0].received).toBe(0);
      await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 2, 10_000, 'hello and x on the next connection');
      await server.conns[1].write(ack(1));
      await within(w.acknowledged(), 'acknowledged()');
    } finally {
      await server.close();
    }
  });

  it('1d garbage after the greeting (empty frame, second greeting, unknown kind, short ack, oversized length, 10-byte varint): ERR_PROTOCOL_MISMATCH each time, nothing freed, re-sent in order', async () => {
    const garbage: [string, Buffer][] = [
      ['an empty frame', Buffer.from([0])],
      ['a second greeting', frame(GREETING)],
      ["kind 'B'", frame(Buffer.concat([Buffer.from('B'), u64(1)]))],
      ['an ack cut to 5 bytes (as a whole frame)', frame(Buffer.concat([Buffer.from('A'), Buffer.alloc(4)]))],
      ['a 200-byte frame', frame(Buffer.alloc(200, 0x41))],
      ['a 10-byte length prefix', Buffer.from('ffffffffffffffffff01', 'hex')],
      ['a length prefix of 2^31', Buffer.from('8080808008', 'hex')],
    ];
    for (const [what, bytes] of garbage) {
      const path = tmpSocket();
      const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
      try {
        const { w, errors, disconnects } = ackedWriter(path);
        for (let i = 1; i <= 4; i++) w.write(`g${i}`);
        await waitFor(() => server.conns[0]?.frames().length >= 5, 10_000, `${what}: hello and 4 messages`);
        await server.conns[0].write(Buffer.concat([ack(2), bytes]));
        await waitFor(() => errors.length > 0, 10_000, `${what}: the error`);
        expect(errors.map((e) => e.code), what).toEqual(['ERR_PROTOCOL_MISMATCH']);
        // The valid ack before the garbage may or may not have been applied (same read); nothing beyond it.
        expect(metricsOf(w).acked, what).toBeLessThanOrEqual(2);
        await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 1, 10_000, `${what}: reconnect`);
        const acked = metricsOf(w).acked;
        const n = 4 - acked;
        await waitFor(() => server.conns[1].frames().length >= 1 + n, 10_000, `${what}: re-sent`);
        const h = helloOf(server.conns[1].frames()[0]);
        expect(h.firstSeq, what).toBe(acked + 1);
        expect(h.resentBelow, what).toBe(5);
        expect(server.conns[1].frames().slice(1).map(String), what).toEqual(Array.from({ length: n }, (_, i) => `g${acked + i + 1}`));
        await server.conns[1].write(ack(4));
        await within(w.acknowledged(), `${what}: acknowledged()`);
        expect(everyCoded(errors) && everyCoded(disconnects), what).toBe(true);
        await w.stop();
      } finally {
        await server.close();
      }
    }
  });

  it('1e a greeting then a flood of 200,000 acks (in range, out of order, repeated): no error, no reconnect, acked exactly what was sent, the writer goes on', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      for (let i = 1; i <= 1000; i++) w.write(`f${i}`);
      await waitFor(() => server.conns[0]?.frames().length >= 1001, 10_000, 'hello and 1000 messages');
      const parts: Buffer[] = [];
      for (let i = 0; i < 200_000; i++) parts.push(ack(((i * 7919) % 1000) + 1));
      parts.push(ack(1000));
      await server.conns[0].write(Buffer.concat(parts));
      await within(w.acknowledged(), 'acknowledged() after the flood');
      expect(metricsOf(w)).toMatchObject({ acked: 1000, unacked: 0, resent: 0 });
      w.write('after');
      await waitFor(() => server.conns[0].frames().length >= 1002, 10_000, 'a message after the flood');
      expect(server.conns[0].frames()[1001].toString()).toBe('after');
      expect(errors).toEqual([]);
      expect(server.conns.length).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('1f a reader that reads everything and never acks: the window (maxBufferedWrites) stops the writer, write() false, no growth; stop() reports the unacknowledged as discarded', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path, { maxBufferedWrites: 50 });
      let accepted = 0;
      for (let i = 1; i <= 200; i++) if (w.write(`n${i}`)) accepted++;
      expect(accepted).toBe(50);
      await waitFor(() => server.conns[0]?.frames().length >= 51, 10_000, 'hello and 50 messages');
      expect(metricsOf(w).unacked).toBe(50);
      expect(w.write('one more')).toBe(false);
      expect(metricsOf(w).dropped).toBe(151);
      // Steady: nothing more goes out, nothing is acknowledged, no error.
      await steady(() => server.conns[0].received, 200);
      expect(server.conns[0].frames().length).toBe(51);
      expect(metricsOf(w)).toMatchObject({ acked: 0, unacked: 50 });
      expect(errors).toEqual([]);
      // An ack frees room: 'drain', and writing works again.
      const drained = new Promise<void>((r) => w.once('drain', () => r()));
      await server.conns[0].write(ack(50));
      await within(drained, "'drain' after the ack");
      expect(w.write('n-after')).toBe(true);
      await waitFor(() => server.conns[0].frames().length >= 52, 10_000, 'the message after drain');
      const r = await w.stop({ timeoutMs: 100 });
      expect(r.discarded).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('1f2 never acking with a byte window (maxBufferedBytes 64 KiB, 1000-byte messages): at most 64 KiB unacknowledged', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w } = ackedWriter(path, { maxBufferedBytes: 64 * 1024, maxMessageSize: 4096 });
      const msg = Buffer.alloc(1000, 0x61);
      let accepted = 0;
      for (let i = 0; i < 500; i++) if (w.write(msg)) accepted++;
      expect(accepted).toBeGreaterThan(10);
      expect(accepted * 1002).toBeLessThanOrEqual(64 * 1024);
      await waitFor(() => server.conns[0]?.frames().length >= 1 + accepted, 10_000, 'hello and the accepted messages');
      await steady(() => server.conns[0].received, 200);
      expect(server.conns[0].frames().length).toBe(1 + accepted);
      expect(metricsOf(w).unacked).toBe(accepted);
    } finally {
      await server.close();
    }
  });

  it('1g a reader that closes in the middle of an ack frame: the partial ack is not applied, the writer reconnects and re-sends the unacknowledged', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w, errors, disconnects } = ackedWriter(path);
      for (let i = 1; i <= 10; i++) w.write(`c${i}`);
      await waitFor(() => server.conns[0]?.frames().length >= 11, 10_000, 'hello and 10 messages');
      const partial = ack(10).subarray(0, 5);
      await server.conns[0].write(Buffer.concat([ack(4), partial]));
      await waitFor(() => metricsOf(w).acked === 4, 10_000, 'the ack of 4');
      server.conns[0].sock.destroy();
      await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 7, 10_000, 'a reconnect: hello and 6 messages');
      const h = helloOf(server.conns[1].frames()[0]);
      expect([h.firstSeq, h.resentBelow]).toEqual([5, 11]);
      expect(server.conns[1].frames().slice(1).map(String)).toEqual(['c5', 'c6', 'c7', 'c8', 'c9', 'c10']);
      expect(metricsOf(w)).toMatchObject({ acked: 4, unacked: 6, resent: 6 });
      expect(errors).toEqual([]);
      expect(disconnects.length).toBe(1);
      expect(everyCoded(disconnects)).toBe(true);
      await server.conns[1].write(ack(10));
      await within(w.acknowledged(), 'acknowledged()');
    } finally {
      await server.close();
    }
  });

  it('1h an ack beyond what was sent, arriving while the writer re-sends after a reconnect, is refused before it frees any re-sent message (docs/security.md: "replaces the connection without freeing anything")', async () => {
    const path = tmpSocket();
    const big = (i: number) => Buffer.concat([Buffer.from(`b${i}:`), Buffer.alloc(100 * 1024, 0x62)]);
    const server = await rawServer(path, (r, i) => {
      // Connection 2 (the hostile one): greeting and an ack of 2^64-1 at once, then it reads everything.
      r.sock.write(i === 1 ? Buffer.concat([frame(GREETING), ack(2n ** 64n - 1n)]) : frame(GREETING));
    });
    try {
      // A small send buffer: the re-sending takes several sendmsg() calls.
      const { w, errors } = ackedWriter(path, { sendBufferSize: 64 * 1024 });
      for (let i = 1; i <= 40; i++) w.write(big(i));
      await waitFor(() => server.conns[0]?.frames().length >= 41, 20_000, 'hello and 40 messages on connection 1');
      server.conns[0].sock.destroy(); // no ack: all 40 are re-sent on connection 2
      await waitFor(() => errors.length > 0, 20_000, 'the error on connection 2');
      expect(errors[0].code).toBe('ERR_PROTOCOL_MISMATCH');
      await waitFor(() => server.conns.length >= 3 && server.conns[2].frames().length >= 1, 20_000, 'connection 3');
      const h = helloOf(server.conns[2].frames()[0]);
      // Nothing was acknowledged by anyone honest: the bogus ack must not have freed anything.
      expect.soft(metricsOf(w).acked, 'messages freed by the bogus ack').toBe(0);
      expect(h.firstSeq, 'first_seq on the connection after the bogus ack').toBe(1);
    } finally {
      await server.close();
    }
  });

  it('1i a reader that sends a partial greeting then nothing: ERR_PROTOCOL_MISMATCH after handshakeTimeoutMs, nothing sent to it', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r, i) => r.sock.write(i === 0 ? frame(GREETING).subarray(0, 6) : frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path, { handshakeTimeoutMs: 200 });
      w.write('p');
      await waitFor(() => errors.length > 0, 10_000, 'the error');
      expect(errors[0].code).toBe('ERR_PROTOCOL_MISMATCH');
      await waitFor(() => server.conns[0].closed, 10_000, 'the first connection closed');
      expect(server.conns[0].received).toBe(0);
      await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 2, 10_000, 'the next connection');
      await server.conns[1].write(ack(1));
      await within(w.acknowledged(), 'acknowledged()');
    } finally {
      await server.close();
    }
  });
});

describe('attack 1: a slow or odd but valid reader', () => {
  it('1j the greeting and the acks trickled one byte per write: accepted, no error', async () => {
    const path = tmpSocket();
    const trickle = async (r: Raw, b: Buffer) => {
      for (const byte of b) {
        await r.write(Buffer.from([byte]));
        await new Promise((res) => setImmediate(res));
      }
    };
    const server = await rawServer(path, (r) => void trickle(r, frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      for (let i = 1; i <= 3; i++) w.write(`t${i}`);
      await waitFor(() => server.conns[0]?.frames().length >= 4, 10_000, 'hello and 3 messages');
      await trickle(server.conns[0], Buffer.concat([ack(1), ack(3)]));
      await within(w.acknowledged(), 'acknowledged()');
      expect(errors).toEqual([]);
      expect(server.conns.length).toBe(1);
    } finally {
      await server.close();
    }
  });

  itOnKernel(true)("1m an ack carrying a file descriptor (SCM_RIGHTS, Python peer): the acked Writer's socket refuses it (Linux 6.16+): the peer's send fails with EPERM, nothing of it arrives, the writer goes on", async () => {
    const path = tmpSocket();
    const marker = join(dirname(path), `marker-${randomBytes(6).toString('hex')}`);
    fs.writeFileSync(marker, 'x');
    const steps = [{ hex: frame(GREETING).toString('hex') }, { hex: ack(0).toString('hex'), files: [marker] }];
    const py = new Proc('python3', [join(__dirname, 'fixtures', 'fd_peer.py'), 'serve-send', path, JSON.stringify(steps)]);
    await py.line((l) => l.event === 'listening', 'the python listener');
    const { w, errors } = ackedWriter(path, { handshakeTimeoutMs: 60_000 });
    const failed = await py.line((l) => l.event === 'send-error', 'the send with a descriptor failing');
    expect(failed.i).toBe(1);
    expect(String(failed.error)).toMatch(/Errno 1\]|Operation not permitted/); // EPERM
    w.write('after');
    await waitFor(() => metricsOf(w).sent >= 1, 10_000, 'a message sent on the same connection');
    expect(errors.map((e) => e.code)).toEqual([]);
    expect(fdsOnFile(marker)).toBe(0);
    await w.stop({ timeoutMs: 0 });
  });

  itOnKernel(false)('1m an ack carrying a file descriptor (SCM_RIGHTS, Python peer): ERR_PROTOCOL_MISMATCH, and the descriptor is closed (no fd of the writer process refers to the file)', async () => {
    const path = tmpSocket();
    const marker = join(dirname(path), `marker-${randomBytes(6).toString('hex')}`);
    fs.writeFileSync(marker, 'x');
    const steps = [{ hex: frame(GREETING).toString('hex') }, { hex: ack(0).toString('hex'), files: [marker] }];
    const py = new Proc('python3', [join(__dirname, 'fixtures', 'fd_peer.py'), 'serve-send', path, JSON.stringify(steps)]);
    await py.line((l) => l.event === 'listening', 'the python listener');
    const { w, errors } = ackedWriter(path, { handshakeTimeoutMs: 60_000 });
    await waitFor(() => errors.length > 0, 10_000, 'the error');
    expect(errors[0].code).toBe('ERR_PROTOCOL_MISMATCH');
    expect(errors[0].message).toMatch(/descriptor/);
    await py.line((l) => l.event === 'closed', 'the writer closing the connection');
    const leaked = fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === marker;
      } catch {
        return false;
      }
    });
    expect(leaked).toEqual([]);
    await w.stop({ timeoutMs: 0 });
  });

  it('1k an ack whose length prefix is an overlong uvarint (89 00 = 9, as Go\'s binary.Uvarint reads it): taken as an ack like any frame', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r) => r.sock.write(frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      w.write('o1');
      await waitFor(() => server.conns[0]?.frames().length >= 2, 10_000, 'hello and o1');
      await server.conns[0].write(Buffer.concat([Buffer.from([0x89, 0x00]), ack(1).subarray(1)]));
      await within(w.acknowledged(), 'acknowledged()', 5_000).catch(() => {});
      expect(errors.map((e) => e.message)).toEqual([]);
      expect(metricsOf(w).acked).toBe(1);
    } finally {
      await server.close();
    }
  });

  it('1l a valid ack sent with the greeting, before the hello, while the writer has messages to re-send: they are re-sent in order, the covered ones freed once re-sent, no error', async () => {
    const path = tmpSocket();
    const server = await rawServer(path, (r, i) => r.sock.write(i === 1 ? Buffer.concat([frame(GREETING), ack(5)]) : frame(GREETING)));
    try {
      const { w, errors } = ackedWriter(path);
      for (let i = 1; i <= 10; i++) w.write(`r${i}`);
      await waitFor(() => server.conns[0]?.frames().length >= 11, 10_000, 'hello and 10 messages');
      server.conns[0].sock.destroy();
      await waitFor(() => server.conns.length >= 2 && server.conns[1].frames().length >= 11, 10_000, 'hello and 10 re-sent');
      const h = helloOf(server.conns[1].frames()[0]);
      expect([h.firstSeq, h.resentBelow]).toEqual([1, 11]);
      expect(server.conns[1].frames().slice(1).map(String)).toEqual(Array.from({ length: 10 }, (_, i) => `r${i + 1}`));
      await waitFor(() => metricsOf(w).acked === 5, 10_000, 'acked 5');
      expect(metricsOf(w)).toMatchObject({ acked: 5, unacked: 5, resent: 10 });
      await server.conns[1].write(ack(10));
      await within(w.acknowledged(), 'acknowledged()');
      expect(errors).toEqual([]);
      expect(server.conns.length).toBe(2);
    } finally {
      await server.close();
    }
  });
});

// =====================================================================
// 2. A hostile WRITER (raw client speaking the hello) against a real acked Reader
// =====================================================================

async function ackedReader(path: string, opts: Record<string, unknown> = {}, handler?: (b: Batch) => void | Promise<void>) {
  const seen: Seen[] = [];
  const errors: IpcError[] = [];
  const reasons: (IpcError | undefined)[] = [];
  const reader = track(new Reader(path, handler ?? ((b: Batch) => record(seen, b)), { delivery: 'acked', ...opts }));
  reader.on('error', (e: Error) => errors.push(e as IpcError));
  reader.on('disconnect', (_c, r) => reasons.push(r));
  await reader.start();
  return { reader, seen, errors, reasons };
}

async function greeted(path: string): Promise<Raw> {
  const c = await Raw.connect(path);
  await waitFor(() => c.frames().length >= 1, 10_000, 'the greeting');
  expect(c.frames()[0].toString('hex')).toBe(GREETING.toString('hex'));
  return c;
}

describe('attack 2: a hostile writer against an acked Reader', () => {
  it('2a a hello with first_seq 2^53-2 followed by 4 messages: the connection is closed before a number reaches 2^53 (every batch.sequence(i) handed out is exact and unique)', async () => {
    const path = tmpSocket();
    const { seen, errors } = await ackedReader(path);
    const c = await greeted(path);
    const first = 2 ** 53 - 2;
    await c.write(Buffer.concat([frame(hello(randomBytes(16), first, first)), ...[0, 1, 2, 3].map((i) => frame(`s${i}`))]));
    // Either the reader refuses what it cannot number exactly, or every number it hands out is exact.
    await waitFor(() => seen.length >= 4 || c.closed, 10_000, 'the 4 messages, or the connection closed');
    const seqs = seen.map((s) => s.seq);
    expect(seqs.every((s) => Number.isSafeInteger(s)), `sequences ${seqs}`).toBe(true);
    expect(new Set(seqs).size, `sequences ${seqs}`).toBe(seqs.length);
    // The peer sees the close before the reader's JavaScript gets the error (it comes through the threadsafe function).
    if (c.closed) await waitFor(() => errors.some((e) => e.code === 'ERR_PROTOCOL_MISMATCH'), 10_000, 'ERR_PROTOCOL_MISMATCH reported');
    c.sock.destroy();
  });

  it('2b resent_below: 2^53 is refused (ERR_PROTOCOL_MISMATCH); 2^53-1, above first_seq, is accepted and flags exactly the messages below it; 0 flags none', async () => {
    {
      const path = tmpSocket();
      const { seen, errors } = await ackedReader(path);
      const c = await greeted(path);
      await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 2 ** 53)), frame('x')]));
      await waitFor(() => c.closed, 10_000, 'closed');
      await waitFor(() => errors.some((e) => e.code === 'ERR_PROTOCOL_MISMATCH'), 10_000, 'ERR_PROTOCOL_MISMATCH reported');
      expect(seen).toEqual([]);
    }
    for (const [first, below, expected] of [
      [1, 2 ** 53 - 1, [true, true, true]],
      [10, 12, [true, true, false]],
      [10, 0, [false, false, false]],
      [10, 10, [false, false, false]],
    ] as [number, number, boolean[]][]) {
      const path = tmpSocket();
      const { reader, seen } = await ackedReader(path);
      const c = await greeted(path);
      await c.write(Buffer.concat([frame(hello(randomBytes(16), first, below)), frame('a'), frame('b'), frame('c')]));
      await waitFor(() => seen.length === 3, 10_000, 'three messages');
      expect(seen.map((s) => [s.seq, s.redelivered])).toEqual(expected.map((r, i) => [first + i, r]));
      expect(metricsOf(reader).redelivered).toBe(expected.filter(Boolean).length);
      await waitFor(() => c.acks().includes(first + 2), 10_000, 'the ack');
      c.sock.destroy();
    }
  });

  it("2c (same uid, documented in security.md): a peer presenting a live writer's session gets its acknowledgements while it is the session's newest connection; once it leaves they go to the writer's own connection again", async () => {
    const path = tmpSocket();
    const { seen } = await ackedReader(path);
    const { w } = ackedWriter(path);
    for (let i = 1; i <= 5; i++) w.write(`w${i}`);
    await within(w.acknowledged(), 'the real writer acknowledged');
    // The peer: the same session, first_seq 1 (its message is a "copy", dropped).
    const evil = await greeted(path);
    await evil.write(Buffer.concat([frame(hello(Buffer.from(w.session!, 'hex'), 1, 1)), frame('evil')]));
    // As a writer reconnecting would: the newest connection of a session gets its acknowledgements.
    await waitFor(() => evil.acks().length > 0, 10_000, 'the peer to get an ack');
    for (let i = 6; i <= 8; i++) w.write(`w${i}`);
    await waitFor(() => seen.length >= 8, 10_000, 'w6..w8 delivered');
    expect(seen.map((s) => s.data)).toEqual(Array.from({ length: 8 }, (_, i) => `w${i + 1}`));
    evil.sock.destroy();
    await waitFor(() => evil.closed, 10_000, 'the peer gone');
    w.write('w9');
    await waitFor(() => seen.length >= 9, 10_000, 'w9 delivered');
    // The messages were handled: the real writer learns it (docs/acked.md: acknowledged() resolves once
    // the reader acknowledged every message queued before the call), without reconnecting.
    await within(w.acknowledged(), "the real writer's acknowledged() after the peer left");
    expect(metricsOf(w).acked).toBe(9);
    expect(metricsOf(w).connects).toBe(1);
  });

  it("2d a peer presenting a live writer's session with first_seq past what this reader handed over is refused (ERR_PROTOCOL_MISMATCH): the writer's next messages are delivered, none dropped as copies", async () => {
    const path = tmpSocket();
    const { reader, seen, errors } = await ackedReader(path);
    const { w } = ackedWriter(path);
    for (let i = 1; i <= 5; i++) w.write(`w${i}`);
    await within(w.acknowledged(), 'the real writer acknowledged');
    const evil = await greeted(path);
    await evil.write(Buffer.concat([frame(hello(Buffer.from(w.session!, 'hex'), 1000, 1000)), frame('evil')]));
    await waitFor(() => evil.closed, 10_000, 'the peer refused');
    await waitFor(() => errors.some((e) => e.code === 'ERR_PROTOCOL_MISMATCH'), 10_000, 'ERR_PROTOCOL_MISMATCH reported');
    for (let i = 6; i <= 8; i++) w.write(`w${i}`);
    await within(w.acknowledged(), 'w6..w8 acknowledged');
    expect(metricsOf(reader).duplicatesDropped, 'real messages dropped as copies').toBe(0);
    expect(seen.map((s) => s.data)).toEqual(['w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7', 'w8']);
    expect(seen.map((s) => s.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it.each(['this process', 'another user (uid 65534)'])('2e maxSessions flood by other peers (%s) while a writer\'s handled messages are unacknowledged to it: its re-sent copies are delivered again, flagged redelivered (docs: duplicates only once a session is forgotten)', async (who) => {
    const other = who !== 'this process';
    const path = tmpSocket();
    if (other) fs.chmodSync(dirname(path), 0o755);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let allowW!: () => void;
    const wGate = new Promise<boolean>((r) => (allowW = () => r(true)));
    let authorizations = 0;
    const seen: Seen[] = [];
    let calls = 0;
    const { reader } = await ackedReader(
      path,
      {
        maxSessions: 2,
        mode: 0o666,
        inactivityTimeoutMs: 300,
        concurrency: 'connection',
        // The writer's second connection (the 2nd authorization) waits; everything else is allowed.
        authorize: () => (++authorizations === 2 ? wGate : true),
      },
      async (b: Batch) => {
        record(seen, b);
        if (calls++ === 0) await gate;
      },
    );
    const { w } = ackedWriter(path);
    for (let i = 1; i <= 5; i++) w.write(`m${i}`);
    await waitFor(() => calls === 1, 10_000, 'the handler holding 1..5');
    // The idle connection is cut (inactivityTimeoutMs); the writer reconnects and is held by authorize.
    await waitFor(() => authorizations >= 2, 10_000, "the writer's second connection held");
    release();
    await waitFor(() => metricsOf(reader).acked === 5, 10_000, 'the reader done with 1..5 (no connection to ack to)');
    expect(metricsOf(w).acked).toBe(0);
    // Other peers, each with its own session: the writer's session is the least recently used, unheld.
    if (other) {
      const peers = asUser(NOBODY, copy!, 'acked-attack-peers.js', [path, '3']);
      await peers.line((l) => l.event === 'done' || l.event === 'error', 'the other user\'s peers');
      expect(peers.all((l) => l.event === 'acked').length).toBe(3);
    } else {
      for (let k = 0; k < 3; k++) {
        const c = await greeted(path);
        await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), frame(`p${k}`)]));
        await waitFor(() => c.acks().includes(1), 10_000, `peer ${k} acked`);
        c.sock.destroy();
      }
    }
    allowW();
    await within(w.acknowledged(), 'acknowledged() after the held connection is allowed');
    const mine = seen.filter((s) => s.session === w.session);
    // Documented: a forgotten session's copies are delivered again, and flagged.
    expect(mine.map((s) => [s.data, s.redelivered])).toEqual([
      ['m1', false], ['m2', false], ['m3', false], ['m4', false], ['m5', false],
      ['m1', true], ['m2', true], ['m3', true], ['m4', true], ['m5', true],
    ]);
    expect(metricsOf(reader).duplicatesDropped).toBe(0);
  });

  it.each([
    ['2j control: a peer of another user with a session of its own: the writer is delivered meanwhile', false],
    ["2j concurrency 'connection': a peer of ANOTHER user presenting a writer's session id gets a handler lane of its own, so its held batch does not hold back the writer's deliveries (docs/security.md: sessions kept apart per uid)", true],
  ])('%s', async (_title, sameSession) => {
    const path = tmpSocket();
    fs.chmodSync(dirname(path), 0o755);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: { uid: number; data: string }[] = [];
    await ackedReader(path, { concurrency: 'connection', mode: 0o666 }, async (b: Batch) => {
      for (let i = 0; i < b.length; i++) seen.push({ uid: b.connection.uid, data: b.at(i)!.toString() });
      if (b.connection.uid === 65534) await gate; // the other user's batch is slow to handle
    });
    const { w } = ackedWriter(path);
    w.write('w1');
    await within(w.acknowledged(), 'w1 acknowledged');
    // The other user's peer presents w's session id and sends one message, which its handler holds.
    const peer = asUser(NOBODY, copy!, 'acked-raw-peer.js', [path, sameSession ? w.session! : randomBytes(16).toString('hex'), '1']);
    await waitFor(() => seen.some((s) => s.uid === 65534), 10_000, "the other user's message in its handler");
    // The real writer goes on: its messages must be delivered while the other user's batch is held.
    w.write('w2');
    w.write('w3');
    const delivered = await waitFor(() => seen.filter((s) => s.uid !== 65534).length >= 3, 5_000, 'w2, w3 delivered').then(
      () => true,
      () => false,
    );
    release();
    await within(w.acknowledged(), 'w2, w3 acknowledged in the end');
    expect(peer.all((l) => l.event === 'sent').length).toBe(1);
    expect(delivered, `delivered while the other user's batch was held: ${JSON.stringify(seen)}`).toBe(true);
  });

  it('2k a hello carrying a file descriptor (acceptFds, Python peer): the descriptor is closed and counted (fdsRefused), the message after it is delivered without it', async () => {
    const path = tmpSocket();
    const marker = join(dirname(path), `marker-${randomBytes(6).toString('hex')}`);
    fs.writeFileSync(marker, 'x');
    const got: { data: string; fds: number }[] = [];
    const { reader } = await ackedReader(path, { acceptFds: true }, (b: Batch) => {
      for (let i = 0; i < b.length; i++) got.push({ data: b.at(i)!.toString(), fds: b.takeFds(i).length });
    });
    const steps = [{ hex: frame(hello(randomBytes(16), 1, 1)).toString('hex'), files: [marker] }, { hex: frame('after').toString('hex') }];
    const py = new Proc('python3', [join(__dirname, 'fixtures', 'fd_peer.py'), 'send', path, JSON.stringify(steps)]);
    await py.line((l) => l.event === 'sent', 'the python writer');
    await waitFor(() => got.length >= 1, 10_000, 'the message');
    expect(got).toEqual([{ data: 'after', fds: 0 }]);
    expect(metricsOf(reader).fdsRefused).toBe(1);
    const leaked = fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === marker;
      } catch {
        return false;
      }
    });
    expect(leaked).toEqual([]);
  });

  it('2f a partial hello then silence: closed by frameTimeoutMs (ERR_FRAME_TIMEOUT), nothing delivered; a real writer meanwhile is served', async () => {
    const path = tmpSocket();
    const { seen, reasons } = await ackedReader(path, { frameTimeoutMs: 300 });
    const c = await greeted(path);
    await c.write(frame(hello(randomBytes(16), 1, 1)).subarray(0, 20));
    const { w } = ackedWriter(path);
    w.write('real');
    await within(w.acknowledged(), 'the real writer served');
    await waitFor(() => c.closed, 10_000, 'the partial hello cut');
    // The peer sees the close before the reader's 'disconnect' event arrives (through the threadsafe function).
    await waitFor(() => reasons.some((r) => r?.code === 'ERR_FRAME_TIMEOUT'), 10_000, "the 'disconnect' with ERR_FRAME_TIMEOUT");
    expect(seen.map((s) => s.data)).toEqual(['real']);
  });

  it('2g a flood of 100,000 empty frames after the hello: each is a message with its own consecutive number, all acknowledged', async () => {
    const path = tmpSocket();
    let count = 0;
    let last = 0;
    let ok = true;
    const { reader } = await ackedReader(path, {}, (b: Batch) => {
      for (let i = 0; i < b.length; i++) {
        if (b.at(i)!.length !== 0 || b.sequence(i) !== last + 1) ok = false;
        last = b.sequence(i)!;
        count++;
      }
    });
    const c = await greeted(path);
    await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), Buffer.alloc(100_000)]));
    await waitFor(() => c.acks().includes(100_000), 20_000, 'the ack of 100,000');
    expect([count, last, ok]).toEqual([100_000, 100_000, true]);
    const acks = c.acks();
    expect([...acks].sort((a, b) => a - b)).toEqual(acks);
    expect(metricsOf(reader)).toMatchObject({ received: 100_000, acked: 100_000, duplicatesDropped: 0 });
    c.sock.destroy();
  });

  it('2h a second hello mid-stream is an ordinary message (numbered, delivered as is): it does not switch the session or the numbering', async () => {
    const path = tmpSocket();
    const { seen } = await ackedReader(path);
    const s1 = randomBytes(16);
    const s2 = randomBytes(16);
    const c = await greeted(path);
    const h2 = hello(s2, 1000, 1000);
    await c.write(Buffer.concat([frame(hello(s1, 1, 1)), frame('m1'), frame('m2'), frame(h2), frame('m3')]));
    await waitFor(() => seen.length >= 4, 10_000, 'four messages');
    expect(seen.map((s) => s.seq)).toEqual([1, 2, 3, 4]);
    expect(seen.every((s) => s.session === s1.toString('hex'))).toBe(true);
    expect(seen[2].data).toBe(h2.toString());
    expect(seen[3].data).toBe('m3');
    await waitFor(() => c.acks().includes(4), 10_000, 'the ack of 4');
    c.sock.destroy();
  });

  it('2i a hello replaying a session at a lower first_seq (copies of what was done with): the ack comes right after the hello, the copies are dropped, the new ones delivered', async () => {
    const path = tmpSocket();
    const { reader, seen } = await ackedReader(path);
    const s = randomBytes(16);
    const c1 = await greeted(path);
    await c1.write(Buffer.concat([frame(hello(s, 1, 1)), ...[1, 2, 3, 4, 5].map((i) => frame(`r${i}`))]));
    await waitFor(() => c1.acks().includes(5), 10_000, 'ack 5');
    c1.sock.destroy();
    const c2 = await greeted(path);
    await c2.write(frame(hello(s, 2, 6)));
    await waitFor(() => c2.acks().length > 0, 10_000, 'the ack after the hello');
    expect(c2.acks()).toEqual([5]);
    await c2.write(Buffer.concat([2, 3, 4, 5, 6].map((i) => frame(`r${i}`))));
    await waitFor(() => c2.acks().includes(6), 10_000, 'ack 6');
    expect(seen.map((x) => x.data)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5', 'r6']);
    expect(metricsOf(reader).duplicatesDropped).toBe(4);
    c2.sock.destroy();
  });
});

// =====================================================================
// 3. Other edges found reading the code
// =====================================================================

describe('attack 3: other edges', () => {
  it('3a the handler finishes after the writer\'s connection is gone: no ack is lost, the next hello of that session is answered with it, the copies are dropped', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: Seen[] = [];
    const { reader } = await ackedReader(path, {}, async (b: Batch) => {
      record(seen, b);
      await gate;
    });
    const s = randomBytes(16);
    const c1 = await greeted(path);
    await c1.write(Buffer.concat([frame(hello(s, 1, 1)), frame('a1'), frame('a2'), frame('a3')]));
    await waitFor(() => seen.length === 3, 10_000, 'the handler holding a1..a3');
    c1.sock.destroy();
    await waitFor(() => metricsOf(reader).activeConnections === 0, 10_000, 'the reader to see the close');
    release();
    await waitFor(() => metricsOf(reader).acked === 3, 10_000, 'done with a1..a3');
    const c2 = await greeted(path);
    await c2.write(Buffer.concat([frame(hello(s, 1, 4)), frame('a1'), frame('a2'), frame('a3'), frame('a4')]));
    await waitFor(() => c2.acks().includes(4), 10_000, 'the ack of 4');
    expect(c2.acks()[0]).toBe(3);
    expect(seen.map((x) => [x.data, x.redelivered])).toEqual([['a1', false], ['a2', false], ['a3', false], ['a4', false]]);
    expect(metricsOf(reader).duplicatesDropped).toBe(3);
    c2.sock.destroy();
  });

  it('3b stop() while a batch is in the handler: the connection stays open until it is done, the ack reaches the writer, then it closes; stop() reports nothing discarded', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const { reader } = await ackedReader(path, {}, async () => {
      calls++;
      await gate;
    });
    const c = await greeted(path);
    await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), frame('s1'), frame('s2'), frame('s3')]));
    await waitFor(() => calls === 1, 10_000, 'the handler holding the batch');
    const stopped = reader.stop({ timeoutMs: 10_000 });
    let stopDone = false;
    void stopped.then(() => (stopDone = true));
    // Not closed while the batch is held.
    await steady(() => c.closed, 200);
    expect(c.closed).toBe(false);
    expect(stopDone).toBe(false);
    release();
    const r = await within(stopped, 'stop()');
    await waitFor(() => c.closed, 10_000, 'the connection closed after the ack');
    expect(c.acks()).toEqual([3]);
    expect(r.discarded ?? 0).toBe(0);
  });

  it('3c stop({ timeoutMs }) while a batch never finishes and the writer keeps sending: stop() ends by its deadline, no ack is sent for the unfinished batch', async () => {
    const path = tmpSocket();
    let calls = 0;
    const { reader } = await ackedReader(path, {}, () => {
      calls++;
      return new Promise<void>(() => {});
    });
    const c = await greeted(path);
    await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), frame('t1')]));
    await waitFor(() => calls === 1, 10_000, 'the handler holding t1');
    const stopped = reader.stop({ timeoutMs: 300 });
    const more: Buffer[] = [];
    for (let i = 2; i <= 2000; i++) more.push(frame(`t${i}`));
    c.sock.write(Buffer.concat(more));
    await within(stopped, 'stop() by its deadline', 10_000);
    await waitFor(() => c.closed, 10_000, 'closed');
    expect(c.acks()).toEqual([]);
  });

  it('3d a writer that never reads its socket: the acks queued for it are coalesced (at most one waits), not one per handled round', async () => {
    const path = tmpSocket();
    const rounds = 4000;
    let c!: Raw;
    let handled = 0;
    const { reader } = await ackedReader(path, { maxReplyBytes: 1024 }, (b: Batch) => {
      handled += b.length;
      // One message per round: the next one goes once this one was handled.
      if (handled < rounds) c.sock.write(frame(`q${handled + 1}`));
    });
    c = await greeted(path);
    c.sock.pause(); // never read again: the kernel buffers fill, then the reader queues
    await c.write(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), frame('q1')]));
    await waitFor(() => handled >= rounds, 60_000, `${rounds} rounds`);
    await waitFor(() => metricsOf(reader).acked === rounds, 10_000, 'all acknowledged');
    const before = metricsOf(reader).replyBytesDropped;
    c.sock.destroy();
    await waitFor(() => metricsOf(reader).activeConnections === 0, 10_000, 'closed');
    // What was queued for the writer and never sent is counted as dropped at the close.
    const queued = metricsOf(reader).replyBytesDropped - before;
    // eslint-disable-next-line no-console
    console.log(`3d: acks queued for a writer that never reads: ${queued} bytes after ${rounds} rounds (maxReplyBytes 1024)`);
    expect(queued, 'ack bytes queued for one writer (maxReplyBytes 1024; acks are cumulative: one would do)').toBeLessThanOrEqual(1024);
  });
});

describe('attack 3: ring positions past 2^32 bytes', () => {
  it('3e an acked Writer streams 4.3 GB (4200 x 1 MiB) to an acked Reader: its ring positions wrap past 2^32 (acked mode never rewinds); every message once, in order, all acknowledged', { timeout: 240_000 }, async () => {
    const path = tmpSocket();
    const N = 4200;
    let next = 1;
    let bad = '';
    const { reader } = await ackedReader(path, { maxMessageSize: 2 * 1024 * 1024 }, (b: Batch) => {
      for (let i = 0; i < b.length; i++) {
        const m = b.at(i)!;
        const idx = m.readUInt32LE(0);
        if (!bad && (idx !== next || b.sequence(i) !== next || m.length !== 1024 * 1024 || m[m.length - 1] !== (idx & 0xff))) {
          bad = `message ${next}: index ${idx}, sequence ${b.sequence(i)}, length ${m.length}, last byte ${m[m.length - 1]}`;
        }
        next++;
      }
    });
    const { w, errors } = ackedWriter(path, { maxMessageSize: 2 * 1024 * 1024 });
    const buf = Buffer.alloc(1024 * 1024, 0x5a);
    for (let k = 1; k <= N; k++) {
      buf.writeUInt32LE(k, 0);
      buf[buf.length - 1] = k & 0xff;
      while (!w.write(buf)) await new Promise<void>((r) => w.once('drain', () => r()));
    }
    await within(w.acknowledged(), 'acknowledged() of 4200 x 1 MiB', 200_000);
    expect(bad).toBe('');
    expect(next - 1).toBe(N);
    expect(metricsOf(w)).toMatchObject({ acked: N, unacked: 0, resent: 0 });
    expect(metricsOf(reader)).toMatchObject({ received: N, acked: N, duplicatesDropped: 0 });
    expect(errors).toEqual([]);
  });
});

describe('attack 3: re-sending across the 2^32 ring position wrap', () => {
  it('3f the reader dies holding the messages around byte 2^32 of the stream: the next reader gets them again (flagged), then the rest, in order', { timeout: 240_000 }, async () => {
    const path = tmpSocket();
    const N = 4200;
    const HOLD = 4090; // 4090 x (1 MiB + 4) bytes: just below 2^32; the held batch spans the wrap
    const first: number[] = [];
    let holding = false;
    const r1 = await ackedReader(path, { maxMessageSize: 2 * 1024 * 1024 }, (b: Batch) => {
      for (let i = 0; i < b.length; i++) first.push(b.at(i)!.readUInt32LE(0));
      if (first[first.length - 1] >= HOLD) {
        holding = true;
        return new Promise<void>(() => {}); // never done: nothing from here on is acknowledged
      }
    });
    const { w, errors } = ackedWriter(path, { maxMessageSize: 2 * 1024 * 1024 });
    const buf = Buffer.alloc(1024 * 1024, 0x5a);
    let k = 1;
    const pump = (async () => {
      for (; k <= N; k++) {
        buf.writeUInt32LE(k, 0);
        while (!w.write(buf)) await new Promise<void>((r) => w.once('drain', () => r()));
      }
    })();
    await waitFor(() => holding, 120_000, 'the first reader holding a batch at the wrap');
    await r1.reader.stop({ timeoutMs: 50 });
    const ackedBefore = metricsOf(w).acked;
    const second: { idx: number; seq: number; redelivered: boolean }[] = [];
    await ackedReader(path, { maxMessageSize: 2 * 1024 * 1024 }, (b: Batch) => {
      for (let i = 0; i < b.length; i++) second.push({ idx: b.at(i)!.readUInt32LE(0), seq: b.sequence(i)!, redelivered: b.redelivered(i) });
    });
    await within(pump, 'all written', 200_000);
    await within(w.acknowledged(), 'acknowledged() of everything', 200_000);
    expect(first.slice(0, ackedBefore)).toEqual(Array.from({ length: ackedBefore }, (_, i) => i + 1));
    expect(ackedBefore).toBeLessThan(HOLD);
    // The second reader starts at the first unacknowledged message and goes on in order to N.
    expect(second.length).toBe(N - ackedBefore);
    expect(second.every((m, i) => m.idx === ackedBefore + 1 + i && m.seq === m.idx)).toBe(true);
    // Flagged exactly: what an earlier connection carried.
    const carried = Math.max(...first);
    expect(second.filter((m) => m.idx <= carried).every((m) => m.redelivered)).toBe(true);
    expect(metricsOf(w)).toMatchObject({ acked: N, unacked: 0 });
    expect(errors.filter((e) => e.code !== 'ERR_PROTOCOL_MISMATCH')).toEqual([]);
  });
});

describe('attack 3: a writer that half-closes', () => {
  it('3g a raw writer that sends its messages then shuts down its sending side (FIN) and waits for the acks: the reader keeps the connection until the batch is done, and the ack reaches the writer', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const { reader } = await ackedReader(path, {}, async () => {
      calls++;
      await gate;
    });
    const c = await greeted(path);
    // Hello, three messages and the FIN together (half-close: nothing more to send, still reading;
    // node's allowHalfOpen false only ends our side once the reader's FIN comes).
    c.sock.end(Buffer.concat([frame(hello(randomBytes(16), 1, 1)), frame('h1'), frame('h2'), frame('h3')]));
    await waitFor(() => calls === 1, 10_000, 'the handler holding h1..h3');
    release();
    await waitFor(() => metricsOf(reader).acked === 3, 10_000, 'the reader done with h1..h3');
    await waitFor(() => c.closed, 10_000, 'closed');
    expect(c.acks(), 'acks the half-closed writer got').toEqual([3]);
  });
});
