// The Writer's bounded queue: counting limits, drops, drain, flush and stop()
// with nobody listening.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { Reader, Writer, IpcError, type Batch } from '../src/index';
import { join } from 'node:path';
import { tmpSocket, cleanupDirs, waitFor, runNode, steady, within, writeUntilSentInline, FIXTURES } from './helpers';

const live: Array<{ stop: (o?: { timeoutMs?: number }) => Promise<unknown> }> = [];
function track<T extends { stop: (o?: { timeoutMs?: number }) => Promise<unknown> }>(x: T): T {
  live.push(x);
  return x;
}

afterEach(async () => {
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 200 }).catch(() => {});
});
afterAll(() => cleanupDirs());

/** Fast reconnects so the writer notices a reader appearing quickly. */
const FAST = { initialDelayMs: 5, maxDelayMs: 20 };

function sumsUp(m: ReturnType<Writer['metrics']>): void {
  expect(m.written).toBe(m.sent + m.dropped + m.failed + m.queueDepth);
}

function collectingReader(path: string): { reader: Reader; got: string[] } {
  const got: string[] = [];
  const reader = track(
    new Reader(path, (b: Batch) => {
      for (const m of b) got.push(m.toString());
    }),
  );
  return { reader, got };
}

describe('Writer queue limits', () => {
  it('maxBufferedWrites: exactly N writes accepted with no reader, the rest refused and counted as dropped', async () => {
    const path = tmpSocket();
    const N = 100;
    const w = track(new Writer(path, { maxBufferedWrites: N, reconnect: FAST }));
    w.start();
    const results: boolean[] = [];
    for (let i = 0; i < N + 57; i++) results.push(w.write(`msg-${i}`));
    expect(results.slice(0, N).every((r) => r === true)).toBe(true);
    expect(results.slice(N).every((r) => r === false)).toBe(true);
    const m = w.metrics();
    expect(m.written).toBe(N + 57);
    expect(m.dropped).toBe(57);
    expect(m.sent).toBe(0);
    expect(m.failed).toBe(0);
    expect(m.queueDepth).toBe(N);
    expect(m.connected).toBe(false);
    sumsUp(m);
    // Still full a little later (no reader appeared): more writes keep failing.
    // (A window in which nothing may change: that is the assertion.)
    await new Promise((r) => setTimeout(r, 50));
    expect(w.write('late')).toBe(false);
    expect(w.metrics().dropped).toBe(58);
    sumsUp(w.metrics());
  });

  it('maxBufferedBytes: accepts exactly as many frames as fit the byte budget', async () => {
    const path = tmpSocket();
    // 99-byte payload + 1-byte length prefix = 100-byte frames; 1000 bytes = 10 frames.
    const w = track(new Writer(path, { maxMessageSize: 100, maxBufferedBytes: 1000, reconnect: FAST }));
    w.start();
    const payload = Buffer.alloc(99, 0x61);
    const results: boolean[] = [];
    for (let i = 0; i < 25; i++) results.push(w.write(payload));
    expect(results.filter((r) => r).length).toBe(10);
    expect(results.slice(0, 10).every((r) => r)).toBe(true);
    expect(results.slice(10).every((r) => !r)).toBe(true);
    let m = w.metrics();
    expect(m.dropped).toBe(15);
    expect(m.queueDepth).toBe(10);
    expect(m.queuedBytes).toBe(1000);
    sumsUp(m);
    // A smaller frame does not fit either (the budget is exhausted), but the
    // refusal is still by bytes, not by count (maxBufferedWrites default 10,000).
    expect(w.write('')).toBe(false);
    m = w.metrics();
    expect(m.dropped).toBe(16);
    sumsUp(m);
  });

  it('maxBufferedBytes: a partially used budget still takes frames that fit', () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { maxMessageSize: 100, maxBufferedBytes: 250, reconnect: FAST }));
    w.start();
    expect(w.write(Buffer.alloc(99))).toBe(true); // 100
    expect(w.write(Buffer.alloc(99))).toBe(true); // 200
    expect(w.write(Buffer.alloc(99))).toBe(false); // would be 300
    expect(w.write(Buffer.alloc(49))).toBe(true); // exactly 250
    expect(w.write('')).toBe(false); // 1 byte more does not fit
    const m = w.metrics();
    expect(m.queuedBytes).toBe(250);
    expect(m.queueDepth).toBe(3);
    expect(m.dropped).toBe(2);
    sumsUp(m);
  });

  it('queued messages are delivered in order once a reader appears, drain is emitted and metrics add up', async () => {
    const path = tmpSocket();
    const N = 100;
    const w = track(new Writer(path, { maxBufferedWrites: N, reconnect: FAST }));
    w.start();
    let drains = 0;
    w.on('drain', () => drains++);
    let accepted = 0;
    for (let i = 0; i < 2 * N; i++) if (w.write(`m${i}`)) accepted++;
    expect(accepted).toBe(N);
    expect(drains).toBe(0);

    const { reader, got } = collectingReader(path);
    await reader.start();
    await waitFor(() => drains > 0, 10_000, "'drain'");
    await waitFor(() => got.length >= N, 10_000, 'queued messages delivered');
    expect(got).toEqual(Array.from({ length: N }, (_, i) => `m${i}`));
    const m = w.metrics();
    expect(m.sent).toBe(N);
    expect(m.dropped).toBe(N);
    expect(m.queueDepth).toBe(0);
    expect(m.queuedBytes).toBe(0);
    expect(m.connected).toBe(true);
    sumsUp(m);

    // After drain the writer accepts again, and those arrive too.
    for (let i = 0; i < 10; i++) expect(w.write(`after${i}`)).toBe(true);
    await w.flush();
    await waitFor(() => got.length >= N + 10, 10_000, 'post-drain messages');
    expect(got.slice(N)).toEqual(Array.from({ length: 10 }, (_, i) => `after${i}`));
    expect(drains).toBe(1);
    sumsUp(w.metrics());
    expect(w.metrics().sent).toBe(N + 10);
  });

  it("byte-limited queue: 'drain' after a reader appears, then writes succeed again", async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { maxMessageSize: 100, maxBufferedBytes: 1000, reconnect: FAST }));
    w.start();
    const drained = new Promise<void>((r) => w.once('drain', r));
    let ok = 0;
    for (let i = 0; i < 30; i++) if (w.write(Buffer.alloc(99, i))) ok++;
    expect(ok).toBe(10);
    const { reader, got } = collectingReader(path);
    await reader.start();
    await drained;
    await waitFor(() => got.length === 10, 10_000, '10 messages');
    expect(got.map((s) => s.charCodeAt(0))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (let i = 0; i < 10; i++) expect(w.write(Buffer.alloc(99))).toBe(true);
    await w.flush();
    const m = w.metrics();
    expect(m.sent).toBe(20);
    expect(m.dropped).toBe(20);
    sumsUp(m);
  });

  it('a count-limited queue that fills before a publish chunk sends what waits instead of refusing', async () => {
    // 100 small frames reach maxBufferedWrites long before the 1 MiB publish
    // chunk: the write that finds the queue full publishes, the connected and
    // idle writer sends straight from this thread, and the write goes through.
    const path = tmpSocket();
    const N = 100;
    const { reader, got } = collectingReader(path);
    await reader.start();
    const w = track(new Writer(path, { maxBufferedWrites: N, reconnect: FAST }));
    w.start();
    await waitFor(() => w.connected, 10_000, 'connected');
    // Until the IO thread sleeps: a 'first' message sent inside write() shows it.
    const firsts = await writeUntilSentInline(w, 'first');
    await waitFor(() => got.length === firsts, 10_000, 'first message');
    const results: boolean[] = [];
    for (let i = 0; i < 10 * N; i++) results.push(w.write(`m${i}`));
    expect(results.filter((r) => !r).length).toBe(0);
    await w.flush();
    await waitFor(() => got.length === firsts + 10 * N, 10_000, 'every message');
    expect(got.slice(0, firsts)).toEqual(Array(firsts).fill('first'));
    expect(got.slice(firsts)).toEqual(Array.from({ length: 10 * N }, (_, i) => `m${i}`));
    const m = w.metrics();
    expect(m.dropped).toBe(0);
    expect(m.sent).toBe(firsts + 10 * N);
    sumsUp(m);
  });

  it('a writer that keeps up reuses the start of its queue: sending 2 laps of a 256 MiB queue grows RSS far less than the queue', async () => {
    // Each flush() leaves the queue empty; the next direct send rewinds it to
    // its start, so the writer never touches (faults in) most of its ring.
    // Without that, 512 MiB through a 256 MiB ring touches all of it.
    const MiB = 1024 * 1024;
    const path = tmpSocket();
    let got = 0;
    let bad = 0;
    const reader = track(
      new Reader(path, (b: Batch) => {
        for (const m of b) {
          if (m.length !== 64 * 1024 || m[0] !== (got & 0xff)) bad++;
          got++;
        }
      }),
    );
    await reader.start();
    const w = track(new Writer(path, { maxBufferedBytes: 256 * MiB, reconnect: FAST }));
    w.start();
    await waitFor(() => w.connected, 10_000, 'connected');
    const msg = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    const burst = async (): Promise<void> => {
      for (let i = 0; i < 64; i++) {
        msg[0] = sent++ & 0xff;
        expect(w.write(msg)).toBe(true);
      }
      await w.flush();
    };
    await burst(); // warm-up: slabs, socket buffers, code
    const rss0 = process.memoryUsage().rss;
    for (let round = 0; round < 128; round++) await burst(); // 128 × 4 MiB = 512 MiB
    const grown = process.memoryUsage().rss - rss0;
    await waitFor(() => got === sent, 10_000, 'every message');
    expect(bad).toBe(0);
    expect(w.metrics().sent).toBe(sent);
    expect(grown).toBeLessThan(64 * MiB);
  });

  it('a flush() pending while the ring is rewound several times (1 GiB queue) still resolves', async () => {
    // Each rewind moves the ring positions on by up to the capacity (here
    // 2^30): three of them put a stale target 2^31 or more behind, where a
    // 32-bit comparison would read it as not reached yet, forever.
    const path = tmpSocket();
    let got = 0;
    const reader = track(new Reader(path, (b: Batch) => void (got += b.length), { jsThreadPolling: false }));
    await reader.start();
    const w = track(new Writer(path, { maxBufferedBytes: 2 ** 30, reconnect: FAST }));
    expect(w.write('first')).toBe(true);
    let resolved = false;
    const p = w.flush().then(() => {
      resolved = true;
    }); // pending: not even started
    w.start();
    // Synchronously from here (no event is handled meanwhile): the IO thread
    // connects and sends 'first', then idles. Then 30 writes of 128 KiB, each
    // sent directly (small enough for a default-sized socket buffer) once
    // the one before is out: the ring passes its first MiB three times, and
    // each time the direct send that empties it rewinds it.
    //
    // Whether the IO thread sleeps again after a send of its own no API says,
    // and this stretch cannot wait for an event: settle() gives it 5 ms (busy,
    // so that no event is handled). That only decides how many of the writes
    // are sent inline (logged); the assertions hold either way.
    const settle = (): void => {
      const until = Date.now() + 10_000;
      while (w.metrics().queueDepth !== 0 && Date.now() < until);
      expect(w.metrics().queueDepth).toBe(0);
      const idle = Date.now() + 5;
      while (Date.now() < idle); // the IO thread (if it sent) goes back to sleep
    };
    settle();
    const chunk = Buffer.alloc(128 * 1024);
    let inline = 0;
    for (let i = 0; i < 30; i++) {
      const calls = w.metrics().sendCalls;
      expect(w.write(chunk)).toBe(true); // the first write of a task publishes at once
      if (w.metrics().sendCalls === calls + 1 && w.metrics().queueDepth === 0) inline++;
      await Promise.resolve(); // a microtask (the writer's end-of-task publish), no event
      settle();
    }
    console.log(`[rewind] ${inline} of 30 writes sent inline`);
    await within(p, 'the pending flush()');
    expect(resolved).toBe(true);
    await waitFor(() => got === 31, 10_000, 'every message');
    expect(w.metrics().sent).toBe(31);
  });
});

describe('ring positions past 2^31', () => {
  it('write() stays optimized when the positions pass 2^31 (they are kept as int32, not as u32 heap numbers)', async () => {
    // A u32 position past 2^31 is a heap number in V8: the Writer's shape
    // changed there and write() was deoptimized (and recompiled) after the
    // first 2 GiB, within a second at 10 KiB. The child rewinds a 1 GiB ring
    // twice to put its positions at 2^31 and asks V8 whether write() is
    // still optimized.
    const r = await runNode(join(FIXTURES, 'opt-positions.js'), [tmpSocket()], {
      timeoutMs: 60_000,
      execArgv: ['--allow-natives-syntax'],
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.optimizedBefore).toBe(true);
    expect(out.optimizedAfter).toBe(true);
    expect(out.dropped).toBe(0);
    expect(out.sent).toBe(out.expected);
    expect(out.got).toBe(out.expected);
  });
});

describe('queue filled before start()', () => {
  it("writes before start() queue up to the limit; after start() they are delivered and 'drain' fires", async () => {
    const path = tmpSocket();
    const { reader, got } = collectingReader(path);
    await reader.start();
    const w = track(new Writer(path, { maxBufferedWrites: 10, reconnect: FAST }));
    let drains = 0;
    w.on('drain', () => drains++);
    const results = Array.from({ length: 15 }, (_, i) => w.write(`pre${i}`));
    expect(results.filter((r) => r)).toHaveLength(10);
    expect(w.metrics().dropped).toBe(5);
    w.start();
    await waitFor(() => got.length === 10, 10_000, 'pre-start messages');
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `pre${i}`));
    await waitFor(() => drains === 1, 10_000, "'drain'");
    sumsUp(w.metrics());
  });
});

describe('stop() with a stalled reader', () => {
  it('returns near its deadline when the reader does not read, and accounts for every message', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // The handler never finishes until released: the connection pauses, the
    // kernel buffers fill, the writer's queue fills.
    const reader = track(new Reader(path, () => gate, { maxPendingBytes: 64 * 1024 }));
    await reader.start();
    const w = track(new Writer(path, { maxBufferedWrites: 1000, reconnect: FAST }));
    w.start();
    const msg = Buffer.alloc(1000, 1);
    // Stalled: the reader paused, the writer's queue full, and its IO thread
    // blocked on the full socket. That last state no API reports (the
    // kernel's buffers): blocked, the thread makes no send calls, so wait
    // until its count stays put while the queue stays full.
    const topUp = (): boolean => {
      for (let i = 0; i < 1000; i++) if (!w.write(msg)) break;
      return reader.metrics().pauses > 0 && w.metrics().queueDepth === 1000;
    };
    await waitFor(topUp, 15_000, 'the reader to pause and the queue to fill');
    // (Kept topped up: a queue that still drains is not stalled; a refused write sends nothing.)
    await steady(() => (topUp() ? w.metrics().sendCalls : -1), 200, 15_000, 'the writer to stop sending');
    expect(topUp()).toBe(true);
    const depth = w.metrics().queueDepth;
    expect(depth).toBeGreaterThan(0);
    const t0 = Date.now();
    const res = await w.stop({ timeoutMs: 200 });
    const took = Date.now() - t0;
    expect(took).toBeLessThan(3000); // at its deadline (a busy machine may add some)
    expect(took).toBeGreaterThanOrEqual(150); // not before it
    expect(res.discarded).toBe(depth);
    const m = w.metrics();
    expect(m.failed).toBe(depth);
    sumsUp(m);
    release();
  });
});

describe('flush()', () => {
  it('stays pending while nothing can be sent and resolves only once every queued message is sent', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    for (let i = 0; i < 50; i++) expect(w.write(`f${i}`)).toBe(true);
    let flushed = false;
    const p = w.flush().then(() => {
      flushed = true;
    });
    await new Promise((r) => setTimeout(r, 150)); // a window in which flush() must not resolve: that is the assertion
    expect(flushed).toBe(false);
    expect(w.metrics().sent).toBe(0);

    const { reader, got } = collectingReader(path);
    await reader.start();
    await p;
    // At the moment flush() resolves, every message written before it is sent.
    expect(w.metrics().sent).toBe(50);
    expect(w.metrics().queueDepth).toBe(0);
    await waitFor(() => got.length === 50, 10_000, 'delivery');
  });

  it('resolves at once on an empty queue', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    // At once: before any timer or I/O event could run.
    let resolved = false;
    const p = w.flush().then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(true);
    await p;
  });

  it('a pending flush() rejects with ERR_NOT_RUNNING when stop() discards its messages', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('never sent');
    const p = w.flush();
    const res = await w.stop({ timeoutMs: 100 });
    expect(res.discarded).toBe(1);
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(IpcError);
    expect((err as IpcError).code).toBe('ERR_NOT_RUNNING');
  });
});

describe('stop() with no reader', () => {
  it('returns near its deadline, reports the queued messages as discarded, and failed matches', async () => {
    const path = tmpSocket();
    const N = 100;
    const w = track(new Writer(path, { maxBufferedWrites: N, reconnect: FAST }));
    w.start();
    for (let i = 0; i < N + 20; i++) w.write(`x${i}`);
    expect(w.metrics().queueDepth).toBe(N);
    let closed = 0;
    w.on('close', () => closed++);
    const t0 = Date.now();
    const res = await w.stop({ timeoutMs: 200 });
    const took = Date.now() - t0;
    expect(took).toBeLessThan(3000); // at its deadline (a busy machine may add some)
    expect(took).toBeGreaterThanOrEqual(150); // it did try to deliver until the deadline
    expect(res.discarded).toBe(N);
    const m = w.metrics();
    expect(m.failed).toBe(N);
    expect(m.dropped).toBe(20);
    expect(m.sent).toBe(0);
    expect(m.queueDepth).toBe(0);
    expect(m.written).toBe(N + 20);
    sumsUp(m);
    expect(closed).toBe(1);
    // Idempotent: the same result again.
    expect(await w.stop()).toEqual(res);
  });

  it('with reconnect disabled returns promptly (connecting failed) and discards the queue', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: false }));
    w.on('error', () => {});
    w.start();
    for (let i = 0; i < 7; i++) expect(w.write('q')).toBe(true);
    let gaveUp = false;
    w.on('error', (e: IpcError) => (gaveUp ||= e.code === 'ERR_CONNECT_FAILED'));
    const t0 = Date.now();
    const res = await w.stop({ timeoutMs: 30_000 });
    // It stopped because connecting had failed (and said so), not at its deadline.
    expect(gaveUp).toBe(true);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(res.discarded).toBe(7);
    expect(w.metrics().failed).toBe(7);
    sumsUp(w.metrics());
  });

  it('stop() of a never-started writer discards what was written before start()', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    for (let i = 0; i < 5; i++) expect(w.write('early')).toBe(true);
    expect(w.metrics().queueDepth).toBe(5);
    const res = await w.stop({ timeoutMs: 200 });
    expect(res.discarded).toBe(5);
    expect(w.metrics().failed).toBe(5);
    sumsUp(w.metrics());
  });

  it('write() after stop() throws IpcError ERR_NOT_RUNNING (also while stopping) and is not counted', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('a');
    const p = w.stop({ timeoutMs: 200 });
    // While stopping.
    let err: unknown;
    try {
      w.write('b');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IpcError);
    expect((err as IpcError).code).toBe('ERR_NOT_RUNNING');
    await p;
    // After stopped.
    err = undefined;
    try {
      w.write(Buffer.from('c'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IpcError);
    expect((err as IpcError).code).toBe('ERR_NOT_RUNNING');
    expect((err as Error).message.length).toBeGreaterThan(10);
    const m = w.metrics();
    expect(m.written).toBe(1);
    sumsUp(m);
  });

  it('messages queued before stop() are sent by stop() when a reader is there', async () => {
    const path = tmpSocket();
    const { reader, got } = collectingReader(path);
    await reader.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    for (let i = 0; i < 1000; i++) w.write(`s${i}`);
    const res = await w.stop({ timeoutMs: 5000 });
    expect(res.discarded).toBe(0);
    const m = w.metrics();
    expect(m.sent).toBe(1000);
    expect(m.failed).toBe(0);
    sumsUp(m);
    await waitFor(() => got.length === 1000, 10_000, 'all 1000');
    expect(got[0]).toBe('s0');
    expect(got[999]).toBe('s999');
  });
});
