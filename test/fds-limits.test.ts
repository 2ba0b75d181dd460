// File descriptors with messages (issue #19): the bounds. 100k messages with a
// descriptor each and both processes' descriptor tables back where they
// started; maxPendingFds on a reader whose handler is blocked (and below one
// message's descriptors); a reader at its RLIMIT_NOFILE (ERR_FDS_TRUNCATED); a
// frame with a descriptor cut by a broken connection and re-sent whole; the
// writer's maxBufferedFds; stop() of a writer or reader holding descriptors;
// descriptors staying with their frames through ring wrap-around and partial
// sends.
//
// Descriptor counts are the entries of /proc/<pid>/fd of child processes
// (test/fixtures/fd-reader.js, fd-writer.js), read from here.
import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Reader, Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, within, steady, FIXTURES, FAST, Proc, PYTHON, killChildren, useTracking, type Line } from './helpers';
import { expectFdsBackTo, fdCount, fileNear, metricsOf, metricsUntil, restingFdCount } from './fd-helpers';

const track = useTracking(500);
afterEach(() => killChildren());



function readerChild(path: string, cfg: object, prefix: string[] = []): Proc {
  const cmd = prefix.length ? prefix[0] : process.execPath;
  const args = prefix.length ? [...prefix.slice(1), process.execPath] : [];
  return new Proc(cmd, [...args, join(FIXTURES, 'fd-reader.js'), path, JSON.stringify(cfg)]);
}

function writerChild(path: string, cfg: object): Proc {
  return new Proc(process.execPath, [join(FIXTURES, 'fd-writer.js'), path, JSON.stringify(cfg)]);
}


function seqMessage(seq: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32LE(seq, 0);
  b.writeUInt32LE(0x66647321, 4);
  return b;
}

describe('100k messages with a descriptor each', () => {
  it('the reader takes every 3rd and ignores the others: both processes end with the descriptors they started with; the counts add up', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'flood.txt', 'flood');
    const WARM = 30;
    const N = 100_000;
    const TOTAL = WARM + N;
    const r = readerChild(path, { mode: 'count', take: 'every3', options: { acceptFds: true }, report: [WARM, TOTAL] });
    await r.line((l) => l.event === 'listening', 'reader listening');
    const w = writerChild(path, { mode: 'flood', file, warm: WARM, n: N, writer: { reconnect: false } });
    await w.line((l) => l.event === 'warm', 'the warm-up messages flushed', 20_000);
    await r.line((l) => l.event === 'count' && l.received === WARM, 'the warm-up messages received');
    // At rest: every warm-up descriptor taken (and closed) or closed by the library.
    const warm = await metricsUntil(r, (l) => l.metrics.fdsReceived === WARM && l.taken + l.metrics.fdsClosedUnclaimed === WARM);
    expect(warm.metrics.fdsReceived).toBe(WARM);
    const readerBase = await restingFdCount(r.pid);
    const writerBase = await restingFdCount(w.pid);

    w.child.kill('SIGUSR1');
    const flushed = await w.line((l) => l.event === 'flushed', 'the writer flushed 100k messages', 50_000);
    const done = await r.line((l) => l.event === 'count' && l.received === TOTAL, 'the reader received them all', 20_000);
    expect(done.mismatches).toBe(0);
    expect(done.bad).toEqual([]);

    const wm = flushed.metrics;
    expect(wm.sent).toBe(TOTAL);
    expect(wm.fdsSent).toBe(TOTAL);
    expect(wm.fdsBuffered).toBe(0);
    expect(wm.disconnects).toBe(0);

    const taken = Math.ceil(TOTAL / 3); // seqs 0, 3, 6, ... < TOTAL
    const rm = await metricsUntil(r, (l) => l.metrics.fdsReceived === TOTAL && l.taken + l.metrics.fdsClosedUnclaimed === TOTAL);
    expect(rm.taken).toBe(taken);
    expect(rm.metrics.received).toBe(TOTAL);
    expect(rm.metrics.fdsReceived).toBe(TOTAL);
    expect(rm.metrics.fdsClosedUnclaimed).toBe(TOTAL - taken);
    expect(rm.metrics.fdsRefused).toBe(0);

    await expectFdsBackTo(r.pid, readerBase, 'the reader');
    await expectFdsBackTo(w.pid, writerBase, 'the writer');
  });
});

describe('maxPendingFds', () => {
  it('a blocked handler: the reader holds at most maxPendingFds + 1 received descriptors (the read that crosses the bound brings one frame’s), then delivers all 100 once released', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'p.txt', 'pending');
    const MAX = 8;
    const N = 100;
    const r = readerChild(path, { mode: 'count', take: 'all', hold: true, options: { acceptFds: true, maxPendingFds: MAX }, report: [N] });
    await r.line((l) => l.event === 'listening', 'reader listening');
    const w = track(new Writer(path, { reconnect: FAST })).start();
    await r.line((l) => l.event === 'connection', 'the connection');
    const base = await restingFdCount(r.pid);

    const fd = fs.openSync(file, 'r');
    try {
      for (let i = 0; i < N; i++) expect(w.write(seqMessage(i), { fds: [fd] })).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
    await r.line((l) => l.event === 'blocked', 'the handler blocked on its first batch');
    // It reads on up to the bound (the messages are there)...
    await metricsUntil(r, (l) => l.metrics.fdsReceived >= MAX);
    // ...and then stops reading: its descriptor count stops moving. (Nothing
    // reports "paused because of descriptors" as such; see steady().)
    const held = (await steady(() => fdCount(r.pid), 300, 20_000, 'a steady descriptor count')) - base;
    const m = await metricsOf(r);
    // The first batch's descriptors were taken and closed by the handler
    // before it blocked; the rest are pending in the library.
    expect(held, `descriptors held while blocked (metrics ${JSON.stringify(m.metrics)})`).toBeLessThanOrEqual(MAX + 1);
    expect(held).toBeGreaterThanOrEqual(MAX - m.taken);
    expect(m.metrics.fdsReceived).toBeLessThanOrEqual(m.taken + MAX + 1);
    expect(m.metrics.fdsReceived).toBeLessThan(N);
    expect(m.metrics.received).toBe(m.taken); // only the held batch reached the handler

    r.child.kill('SIGUSR1');
    const done = await r.line((l) => l.event === 'count' && l.received === N, 'all 100 delivered', 20_000);
    expect(done.mismatches).toBe(0);
    expect(done.bad).toEqual([]);
    expect(done.taken).toBe(N);
    const after = await metricsUntil(r, (l) => l.metrics.fdsReceived === N);
    expect(after.metrics.fdsReceived).toBe(N);
    expect(after.metrics.fdsClosedUnclaimed).toBe(0);
    await expectFdsBackTo(r.pid, base, 'the reader');
  });
});

describe('maxPendingFds below one message’s descriptors', () => {
  it('messages with more descriptors than maxPendingFds are still delivered, one after another (no wedged connection)', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'm.txt', 'many');
    const got: number[] = [];
    const reader = track(
      new Reader(
        path,
        async (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            const fds = b.takeFds(i);
            got.push(fds.length);
            for (const fd of fds) fs.closeSync(fd);
          }
          await new Promise((r) => setImmediate(r));
        },
        { acceptFds: true, maxPendingFds: 4 },
      ),
    );
    await reader.start();
    const w = track(new Writer(path, { reconnect: FAST })).start();
    const fd = fs.openSync(file, 'r');
    try {
      for (let i = 0; i < 5; i++) expect(w.write(`m${i}`, { fds: new Array(10 + i).fill(fd) })).toBe(true);
      expect(w.write('none')).toBe(true);
      await within(w.flush(), 'flush()');
    } finally {
      fs.closeSync(fd);
    }
    await waitFor(() => got.length >= 6, 10_000, 'all six messages');
    expect(got).toEqual([10, 11, 12, 13, 14, 0]);
    expect(reader.metrics().fdsReceived).toBe(60);
  });
});

describe('RLIMIT_NOFILE reached on the reader', () => {
  it('ERR_FDS_TRUNCATED on that connection only: what arrived is closed, the reader keeps serving its other connections and new ones', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'l.txt', 'limited');
    const r = readerChild(path, { options: { acceptFds: true } });
    await r.line((l) => l.event === 'listening', 'reader listening');
    const good = track(new Writer(path, { reconnect: FAST })).start();
    let goodDisconnects = 0;
    good.on('disconnect', () => goodDisconnects++);
    good.write('good-1');
    await r.line((l) => l.event === 'msg' && l.data === 'good-1', 'good-1');
    const bad = track(new Writer(path, { reconnect: false })).start();
    bad.on('error', () => {});
    bad.write('bad-hello');
    const hello = await r.line((l) => l.event === 'msg' && l.data === 'bad-hello', 'bad-hello');
    const badConn = hello.conn as number;

    // Room for 10 more descriptors in the reader process, then 50 in one message.
    const inUse = await restingFdCount(r.pid);
    const limit = inUse + 10;
    execFileSync('prlimit', ['--pid', String(r.pid), `--nofile=${limit}:${limit}`]);
    expect(fs.readFileSync(`/proc/${r.pid}/limits`, 'utf8')).toMatch(new RegExp(`Max open files\\s+${limit}\\s+${limit}`));
    const fd = fs.openSync(file, 'r');
    try {
      expect(bad.write('fifty', { fds: new Array(50).fill(fd) })).toBe(true);
      await within(bad.flush(), "the bad writer's flush()");
      const err = await r.line((l) => l.event === 'error' && l.conn === badConn, 'the reader error for the truncated connection');
      expect(err).toMatchObject({ code: 'ERR_FDS_TRUNCATED', context: 'connection' });
      const disc = await r.line((l) => l.event === 'disconnect' && l.id === badConn, 'the truncated connection closed');
      expect(disc.code).toBe('ERR_FDS_TRUNCATED');
      expect(r.find((l) => l.event === 'msg' && l.data === 'fifty')).toBeUndefined();
      // Everything that did arrive was closed, and the connection is gone.
      await expectFdsBackTo(r.pid, inUse - 1, 'the reader after the truncation');

      // The other connection never noticed; a new one (with a descriptor) works too.
      good.write('good-2', { fds: [fd] });
      const g2 = await r.line((l) => l.event === 'msg' && l.data === 'good-2', 'good-2');
      expect(g2.fds).toEqual([expect.objectContaining({ type: 'file', content: 'limited' })]);
      expect(goodDisconnects).toBe(0);
      const late = track(new Writer(path, { reconnect: FAST })).start();
      late.write('late', { fds: [fd] });
      const l3 = await r.line((l) => l.event === 'msg' && l.data === 'late', 'late');
      expect(l3.fds).toEqual([expect.objectContaining({ type: 'file', content: 'limited' })]);
    } finally {
      fs.closeSync(fd);
    }
    expect(r.exit).toBeUndefined();
    expect(r.all((l) => l.event === 'error').map((l) => l.code)).toEqual(['ERR_FDS_TRUNCATED']);
  });
});

describe('a frame with a descriptor cut by a broken connection', () => {
  it('is re-sent whole on the next connection: the restarted reader gets it once, with exactly its one descriptor, which works', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'big.txt', 'the file sent with the big frame');
    // A raw listener that reads 64 KiB of the connection and then nothing.
    const sink = new Proc(PYTHON, [join(FIXTURES, 'fd_peer.py'), 'sink', path]);
    await sink.line((l) => l.event === 'listening', 'the sink listening');
    const w = track(new Writer(path, { reconnect: FAST }));
    let disconnects = 0;
    w.on('disconnect', () => disconnects++);
    w.on('error', () => {});
    w.start();
    const big = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i * 2654435761 >>> 0, i);
    const sha1 = createHash('sha1').update(big).digest('hex');
    const fd = fs.openSync(file, 'r');
    expect(w.write(big, { fds: [fd] })).toBe(true);
    fs.closeSync(fd);
    expect(w.write('after the big one')).toBe(true);
    const partial = await sink.line((l) => l.event === 'partial', 'the sink read the start of the frame');
    // The descriptor travelled with the frame's first bytes.
    expect(partial.fds).toBe(1);
    expect(partial.frameLen).toBe(big.length);
    expect(partial.ctrunc).toBe(false);
    expect(w.metrics().fdsBuffered).toBe(1); // kept: the frame is not fully sent

    sink.kill('SIGKILL');
    await within(sink.exited, 'the sink to die');
    await waitFor(() => disconnects >= 1, 10_000, "the writer's disconnect");
    expect(w.metrics().fdsBuffered).toBe(1); // still kept for the re-send

    const r = readerChild(path, { options: { acceptFds: true } });
    await r.line((l) => l.event === 'listening', 'the new reader listening');
    await r.line((l) => l.event === 'msg' && l.data === 'after the big one', 'the message after the big one', 20_000);
    const msgs = r.all((l) => l.event === 'msg');
    expect(msgs.map((m) => m.data ?? m.len)).toEqual([big.length, 'after the big one']);
    expect(msgs[0].sha1).toBe(sha1);
    expect(msgs[0].fdCount).toBe(1);
    expect(msgs[0].fds).toEqual([expect.objectContaining({ type: 'file', content: 'the file sent with the big frame' })]);
    expect(msgs[1].fdCount).toBe(0);
    await within(w.flush(), 'flush()');
    expect(w.metrics().fdsBuffered).toBe(0);
    expect(r.all((l) => l.event === 'error')).toEqual([]);
    const rm = await metricsOf(r);
    expect(rm.metrics.fdsReceived).toBe(1);
    // Handed to the kernel at least twice: with the cut frame, and with its
    // re-send (a third time when the writer reconnected to the dying sink's
    // listening socket, which the kernel releases after its connection).
    expect(w.metrics().fdsSent).toBeGreaterThanOrEqual(2);
  });
});

describe("the writer's maxBufferedFds", () => {
  it('with no reader: write() returns false once the dups held would exceed it, the process holds no more, and all is delivered when a reader comes', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'q.txt', 'queued with a descriptor');
    const MAX = 16;
    const TRIES = 40;
    // Slow retries: fewer moments with a connect attempt's socket open.
    const w = writerChild(path, { mode: 'fill', file, n: TRIES, writer: { maxBufferedFds: MAX, reconnect: { initialDelayMs: 200, maxDelayMs: 200 } } });
    await w.line((l) => l.event === 'ready', 'the writer ready');
    const base = await restingFdCount(w.pid);
    w.child.kill('SIGUSR1');
    const filled = await w.line((l) => l.event === 'filled', 'the writes');
    expect(filled.results).toEqual([...new Array(MAX).fill(true), ...new Array(TRIES - MAX).fill(false)]);
    expect(filled.metrics.fdsBuffered).toBe(MAX);
    expect(filled.metrics.dropped).toBe(TRIES - MAX);
    expect(filled.metrics.queueDepth).toBe(MAX);
    // MAX dups for the queued frames, and the one of the send() made right
    // after the writes: it waits for room, and took its descriptor when
    // called (as write() does), outside maxBufferedFds.
    const held = (await restingFdCount(w.pid)) - base;
    expect(held).toBe(MAX + 1);
    expect(w.find((l) => l.event === 'sent')).toBeUndefined(); // send() waits for room

    // A reader comes: everything queued is delivered, then the send()'s message.
    const got: { data: string; fds: string[] }[] = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            const fds = b.takeFds(i).map((fd: number) => {
              const buf = Buffer.alloc(64);
              const n = fs.readSync(fd, buf, 0, 64, 0);
              fs.closeSync(fd);
              return buf.subarray(0, n).toString();
            });
            got.push({ data: b.at(i)!.toString(), fds });
          }
        },
        { acceptFds: true },
      ),
    );
    await reader.start();
    const flushed = await w.line((l) => l.event === 'flushed', 'the writer flushed', 20_000);
    await w.line((l) => l.event === 'drain', "'drain'");
    await waitFor(() => got.length >= MAX + 1, 10_000, 'the queued messages');
    const expected = [...Array.from({ length: MAX }, (_, i) => `m${i}`), 's'];
    expect(got.map((g) => g.data)).toEqual(expected);
    expect(got.every((g) => g.fds.length === 1 && g.fds[0] === 'queued with a descriptor')).toBe(true);
    expect(flushed.metrics.fdsSent).toBe(MAX + 1);
    expect(flushed.metrics.fdsBuffered).toBe(0);
    expect(reader.metrics().fdsReceived).toBe(MAX + 1);

    // The reader goes away: the writer holds no dups, only its own descriptor of the file.
    await reader.stop({ timeoutMs: 1000 });
    await w.line((l) => l.event === 'disconnect', "the writer's disconnect");
    await expectFdsBackTo(w.pid, base, 'the writer');
  });
});

describe("send()s that exhaust the writer's own descriptor table", () => {
  it('a burst of send()s with a descriptor each (none awaited) under a tight RLIMIT_NOFILE: those that cannot take theirs reject (ERR_FDS_LIMIT or EMFILE), the writer still connects, every send() settles and those that resolved are delivered', async () => {
    // A send() that waits for room holds dups of its descriptors from the
    // call on (so the caller may close its own), outside maxBufferedFds. A
    // burst can fill the process's table with them: the writer must still
    // get a socket to connect with, or nothing ever drains.
    const path = tmpSocket();
    const file = fileNear(path, 'b.txt', 'burst');
    const N = 40;
    const w = writerChild(path, { mode: 'burst', file, n: N, writer: { maxBufferedFds: 4, reconnect: FAST } });
    await w.line((l) => l.event === 'ready', 'the writer ready');
    const limit = (await restingFdCount(w.pid)) + 15;
    execFileSync('prlimit', ['--pid', String(w.pid), `--nofile=${limit}:${limit}`]);
    w.child.kill('SIGUSR1');
    const burst = await w.line((l) => l.event === 'burst', 'the burst');
    const tally = burst.tally as Record<string, number>;
    // Those that could not take their descriptor said so by rejecting (not throwing): beyond
    // maxBufferedFds of dups held by waiting send()s (ERR_FDS_LIMIT), or the table full (EMFILE).
    expect(Object.keys(tally).filter((k) => k.startsWith('threw'))).toEqual([]);
    expect(
      Object.keys(tally)
        .filter((k) => k !== 'ok' && k !== 'pending')
        .every((k) => k.endsWith('/24') || k.startsWith('ERR_FDS_LIMIT/')),
    ).toBe(true);
    expect(tally.pending ?? 0).toBeGreaterThan(0);

    const got: { data: string; contents: string[] }[] = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            const contents = b.takeFds(i).map((fd: number) => {
              const buf = Buffer.alloc(16);
              const n = fs.readSync(fd, buf, 0, 16, 0);
              fs.closeSync(fd);
              return buf.subarray(0, n).toString();
            });
            got.push({ data: b.at(i)!.toString(), contents });
          }
        },
        { acceptFds: true },
      ),
    );
    await reader.start();
    const settled = await w.line((l) => l.event === 'settled', 'every send() settled (the writer connected and drained)', 15_000);
    const ok = settled.ok as number[];
    expect(ok.length).toBeGreaterThan(0);
    await waitFor(() => got.length >= ok.length, 10_000, 'the messages of the send()s that resolved');
    expect(got.map((g) => g.data)).toEqual(ok.map((i) => `b${i}`));
    expect(got.every((g) => g.contents.length === 1 && g.contents[0] === 'burst')).toBe(true);
    expect(w.exit).toBeUndefined();
  });
});

describe('stop() with descriptors still held', () => {
  it("a writer stopped with frames queued (no reader) closes the dups it held: only the process's own descriptor of the file is left", async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'w.txt', 'held by a stopped writer');
    const w = writerChild(path, { mode: 'fill', file, n: 20, writer: { maxBufferedFds: 16, reconnect: { initialDelayMs: 200, maxDelayMs: 200 } } });
    await w.line((l) => l.event === 'ready', 'the writer ready');
    w.child.kill('SIGUSR1');
    const filled = await w.line((l) => l.event === 'filled', 'the writes');
    expect(filled.metrics.fdsBuffered).toBe(16);
    w.child.kill('SIGTERM');
    const stopped = await w.line((l) => l.event === 'stopped', 'the writer stopped');
    expect(stopped.result.discarded).toBe(16);
    expect(stopped.fileFds).toBe(1);
    expect(stopped.metrics.fdsBuffered).toBe(0); // the gauge follows
    // The send() waiting for room was rejected (ERR_NOT_RUNNING), not left hanging.
    const sendError = await w.line((l) => l.event === 'send-error', "the waiting send()'s rejection");
    expect(sendError.code).toBe('ERR_NOT_RUNNING');
  });

  it('a reader whose stop() times out with batches undelivered closes their descriptors (and those of frames in the making)', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'r.txt', 'held by a stopped reader');
    const N = 60;
    const r = readerChild(path, {
      mode: 'count',
      take: 'all',
      hold: true,
      watchFile: file,
      stopTimeoutMs: 200,
      options: { acceptFds: true, maxPendingFds: 1000 },
    });
    await r.line((l) => l.event === 'listening', 'reader listening');
    const w = track(new Writer(path, { reconnect: false }));
    w.on('error', () => {});
    w.start();
    const fd = fs.openSync(file, 'r');
    try {
      for (let i = 0; i < N; i++) expect(w.write(seqMessage(i), { fds: [fd] })).toBe(true);
      // The start of a large frame with a descriptor, never finished: the reader holds it mid-frame.
      const big = Buffer.alloc(2 * 1024 * 1024, 1);
      expect(w.write(big, { fds: [fd] })).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
    await r.line((l) => l.event === 'blocked', 'the handler blocked on its first batch');
    await metricsUntil(r, (l) => l.metrics.fdsReceived >= N - 1);
    r.child.kill('SIGTERM'); // the handler never returns: stop() times out
    const stopped = await r.line((l) => l.event === 'stopped', 'the reader stopped', 20_000);
    expect(stopped.result.discarded).toBeGreaterThan(0);
    expect(stopped.fileFds).toBe(0);
  });
});

describe('descriptors stay with their frames through ring wrap-around and partial sends', () => {
  for (const jsThreadPolling of [false, 'always'] as const) {
    it(`4000 messages of mixed sizes through a 64 KiB queue and a small socket buffer, every other one with descriptors: each arrives with exactly its own (reader jsThreadPolling: ${jsThreadPolling})`, async () => {
      const path = tmpSocket();
      const fileA = fileNear(path, 'A.txt', 'file A');
      const fileB = fileNear(path, 'B.txt', 'file B');
      const N = 4000;
      const expectFds = (seq: number): string[] => (seq % 4 === 0 ? ['file A'] : seq % 4 === 2 ? ['file B', 'file A'] : []);
      const make = (seq: number): Buffer => {
        const len = 8 + ((seq * 7919) % 6000);
        const b = Buffer.allocUnsafe(len);
        b.writeUInt32LE(seq, 0);
        b.writeUInt32LE(len, 4);
        for (let j = 8; j < len; j++) b[j] = (seq * 7 + j) & 0xff;
        return b;
      };
      const problems: string[] = [];
      let next = 0;
      const reader = track(
        new Reader(
          path,
          (b: Batch) => {
            for (let i = 0; i < b.length; i++) {
              const m = b.at(i)!;
              const seq = m.readUInt32LE(0);
              const contents = b.takeFds(i).map((fd: number) => {
                const buf = Buffer.alloc(16);
                const n = fs.readSync(fd, buf, 0, 16, 0);
                fs.closeSync(fd);
                return buf.subarray(0, n).toString();
              });
              if (problems.length < 10) {
                if (seq !== next) problems.push(`message ${next}: seq ${seq}`);
                if (!m.equals(make(seq))) problems.push(`seq ${seq}: bytes differ`);
                const want = expectFds(seq);
                if (JSON.stringify(contents) !== JSON.stringify(want)) problems.push(`seq ${seq}: fds ${JSON.stringify(contents)}, expected ${JSON.stringify(want)}`);
              }
              next = seq + 1;
            }
          },
          { acceptFds: true, maxPendingBytes: 256 * 1024, jsThreadPolling },
        ),
      );
      await reader.start();
      const w = track(new Writer(path, { reconnect: FAST, maxMessageSize: 8192, maxBufferedBytes: 64 * 1024, sendBufferSize: 8192, maxBufferedFds: 16 })).start();
      const fdA = fs.openSync(fileA, 'r');
      const fdB = fs.openSync(fileB, 'r');
      try {
        for (let seq = 0; seq < N; seq++) {
          const want = expectFds(seq);
          const fds = want.map((c) => (c === 'file A' ? fdA : fdB));
          await w.send(make(seq), fds.length ? { fds } : undefined);
        }
        await within(w.flush(), 'flush()', 30_000);
      } finally {
        fs.closeSync(fdA);
        fs.closeSync(fdB);
      }
      await waitFor(() => next >= N || problems.length > 0, 20_000, 'every message');
      expect(problems).toEqual([]);
      expect(next).toBe(N);
      const withFds = N / 4 + (N / 4) * 2;
      expect(w.metrics().fdsSent).toBe(withFds);
      expect(w.metrics().fdsBuffered).toBe(0);
      expect(reader.metrics().fdsReceived).toBe(withFds);
      expect(reader.metrics().fdsClosedUnclaimed).toBe(0);
    });
  }
});
