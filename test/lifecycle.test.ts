// Lifecycle: graceful stop on both sides, start/stop state machine, socket
// file handling, worker_threads, and process exit behaviour.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ChildProcess } from 'node:child_process';
import { Reader, Writer, IpcError, type Batch } from '../src/index';
import { tmpSocket, cleanupDirs, waitFor, runNode, watchConnections, within, FIXTURES, type ChildResult } from './helpers';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
const children: ChildProcess[] = [];
const workers: Worker[] = [];

function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
function child(p: Promise<ChildResult> & { child: ChildProcess }): Promise<ChildResult> & { child: ChildProcess } {
  children.push(p.child);
  return p;
}

afterEach(async () => {
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 500 }).catch(() => {});
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const w of workers.splice(0)) await w.terminate().catch(() => {});
});
afterAll(() => cleanupDirs());

const FAST = { initialDelayMs: 5, maxDelayMs: 20 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<unknown> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return e;
  }
  return undefined;
}

function expectIpcError(e: unknown, code: string): void {
  expect(e).toBeInstanceOf(IpcError);
  expect((e as IpcError).code).toBe(code);
}

/** Waits until the child's stdout contains `text`. */
async function stdoutHas(p: { child: ChildProcess }, text: string, timeoutMs = 10_000): Promise<void> {
  let out = '';
  p.child.stdout!.on('data', (d) => (out += d));
  await waitFor(() => out.includes(text) || p.child.exitCode !== null, timeoutMs, `"${text}" from child`);
  if (!out.includes(text)) throw new Error(`child exited (${p.child.exitCode}) before printing "${text}"`);
}

/** Sends one message through a fresh writer and waits for it on `got`. */
async function roundTrip(path: string, got: string[], text: string): Promise<void> {
  const w = track(new Writer(path, { reconnect: FAST }));
  w.start();
  w.write(text);
  await w.flush();
  await waitFor(() => got.includes(text), 10_000, `"${text}" delivered`);
  await w.stop();
}

const CRASH_NOISE = /Abort|Assertion|FATAL|Segmentation|core dumped|terminate called|Sanitizer|SIGSEGV|SIGABRT|double free|corrupted|napi_/i;

// ─── graceful stop ───────────────────────────────────────────────────────────

describe('graceful stop across two processes', () => {
  it('writer child writes 1,000,000 messages then stop()s; reader.stop() afterwards: all delivered in order', async () => {
    const path = tmpSocket();
    const N = 1_000_000;
    let received = 0;
    let outOfOrder = 0;
    const reader = track(
      new Reader(path, (b: Batch) => {
        b.visit((bytes, s) => {
          const seq = (bytes[s] | (bytes[s + 1] << 8) | (bytes[s + 2] << 16) | (bytes[s + 3] << 24)) >>> 0;
          if (seq !== received) outOfOrder++;
          received++;
        });
      }),
    );
    const errors: unknown[] = [];
    reader.on('error', (e) => errors.push(e));
    await reader.start();
    const res = await child(runNode(join(FIXTURES, 'lc-writer-stream.js'), [path, String(N), '16'], { timeoutMs: 60_000 }));
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout.trim());
    expect(out.stop.discarded).toBe(0);
    expect(out.metrics.sent).toBe(N);
    expect(out.metrics.failed).toBe(0);
    expect(out.metrics.written).toBe(N + out.falses); // each refused write was retried
    expect(out.metrics.dropped).toBe(out.falses);
    // The writer process is gone; whatever is still in kernel buffers must be
    // delivered by the reader's graceful stop.
    const rs = await reader.stop({ timeoutMs: 30_000 });
    expect(rs.discarded).toBe(0);
    expect(received).toBe(N);
    expect(outOfOrder).toBe(0);
    expect(reader.metrics().received).toBe(N);
    expect(reader.metrics().bytesReceived).toBe(N * 16);
    expect(errors).toEqual([]);
  }, 80_000);
});

describe('reader.stop() while a writer is still streaming', () => {
  async function streamThenStop() {
    const path = tmpSocket();
    let received = 0;
    const errors: string[] = [];
    const reader = track(
      new Reader(path, (b: Batch) => {
        received += b.length;
      }),
    );
    reader.on('error', (e: Error & { code?: string }, ctx: string) => errors.push(`${ctx}: ${e.code} ${e.message}`));
    let forced: boolean | undefined;
    reader.on('close', (info: { forced: boolean }) => (forced = info.forced));
    await reader.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.on('error', () => {});
    const conns = watchConnections(w);
    w.start();
    const msg = Buffer.alloc(3000, 1); // big enough that a frame is often cut by the shutdown
    let streaming = true;
    const pump = () => {
      if (!streaming) return;
      for (let i = 0; i < 500; i++) if (!w.write(msg)) break;
      setImmediate(pump);
    };
    pump();
    await waitFor(() => received > 20_000, 15_000, 'streaming');
    const t0 = Date.now();
    const res = await reader.stop({ timeoutMs: 10_000 });
    const took = Date.now() - t0;
    // The writer's IO thread counts a frame as sent only once its sendmsg()
    // has returned, so right after the reader's stop() (which may already
    // have read and delivered what that call put into the socket) the count
    // can still trail. It is final once the writer has handled the end of
    // every connection it made: 'disconnect' comes from that thread after its
    // last send on the connection. (The reader's socket is gone by now, so no
    // new connection can start.)
    await waitFor(conns.allEnded, 10_000, "the writer's 'disconnect'");
    const sent = w.metrics().sent;
    streaming = false;
    await w.stop({ timeoutMs: 50 });
    return { res, took, forced, received, sent, errors, metrics: reader.metrics() };
  }

  it('stop() completes promptly and delivers every message the writer got into the socket', async () => {
    const r = await streamThenStop();
    // Everything was delivered: the stop finished on its own, far before its 10 s deadline.
    expect(r.forced).toBe(false);
    expect(r.took).toBeLessThan(5000);
    expect(r.res.discarded).toBe(0);
    expect(r.received).toBe(r.sent);
    expect(r.metrics.received).toBe(r.sent);
  }, 40_000);

  it('a graceful stop() reports no error for the frame its own shutdown cut short', async () => {
    // The reader shuts the read side of every connection; a writer that was
    // mid-frame has that frame refused (it counts it as not sent). That is
    // not a peer fault and should not surface as ERR_TRUNCATED_FRAME.
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await streamThenStop());
    for (const r of results) expect(r.received).toBe(r.sent);
    expect(results.flatMap((r) => r.errors)).toEqual([]);
    expect(results.map((r) => r.metrics.errors)).toEqual([0, 0, 0]);
  }, 40_000);
});

describe('reader.stop() with a slow async handler', () => {
  // Sends `waves` waves of `perWave` messages, each wave read by the reader
  // (bytesRead grows) before the next is written, so that they arrive as
  // separate batches that queue up behind the slow handler.
  async function setup(perMessageMs: number) {
    const path = tmpSocket();
    const waves = 8;
    const perWave = 20;
    const total = waves * perWave;
    let handled = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const reader = track(
      new Reader(path, async (b: Batch) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        for (let i = 0; i < b.length; i++) {
          await sleep(perMessageMs); // the handler's work (the scenario), not a wait
          handled++;
        }
        inFlight--;
      }),
    );
    await reader.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const msg = Buffer.alloc(10, 3);
    for (let k = 0; k < waves; k++) {
      for (let i = 0; i < perWave; i++) w.write(msg);
      await w.flush();
      const want = (k + 1) * perWave * 11;
      await waitFor(() => reader.metrics().bytesRead >= want, 10_000, `wave ${k} read`);
    }
    await w.stop();
    expect(reader.metrics().bytesRead).toBe(total * 11);
    const closed: Array<{ forced: boolean }> = [];
    reader.on('close', (info: { forced: boolean }) => closed.push(info));
    return {
      reader,
      closed,
      total,
      handled: () => handled,
      inFlight: () => inFlight,
      maxInFlight: () => maxInFlight,
    };
  }

  it('stop() waits until the handler has finished every received message', async () => {
    const s = await setup(3);
    // Several batches are waiting: the handler is far from done.
    expect(s.handled()).toBeLessThan(s.total);
    const res = await s.reader.stop({ timeoutMs: 20_000 });
    expect(res.discarded).toBe(0);
    expect(s.handled()).toBe(s.total);
    expect(s.inFlight()).toBe(0);
    expect(s.maxInFlight()).toBe(1); // one batch at a time
    expect(s.reader.metrics().received).toBe(s.total);
    expect(s.reader.metrics().discarded).toBe(0);
    // It ended because the handler was done, not at its deadline.
    expect(s.closed).toEqual([{ forced: false }]);
  }, 40_000);

  it('a short timeoutMs resolves near the deadline and reports the rest as discarded', async () => {
    // 160 messages * 50 ms = 8 s of handler work, far beyond the deadline: a
    // stop() that waited for the handler instead would take seconds.
    const s = await setup(50);
    const handledBefore = s.handled();
    const t0 = Date.now();
    const res = await s.reader.stop({ timeoutMs: 200 });
    const took = Date.now() - t0;
    expect(s.closed).toEqual([{ forced: true }]);
    expect(took).toBeGreaterThanOrEqual(150); // not before its deadline
    expect(took).toBeLessThan(4000); // at the deadline, not after the handler
    expect(res.discarded).toBeGreaterThan(0);
    const m = s.reader.metrics();
    expect(m.discarded).toBe(res.discarded);
    // Everything the reader read is either handed to the handler or discarded.
    expect(m.received + res.discarded).toBe(s.total);
    expect(m.received).toBeGreaterThanOrEqual(handledBefore);
    // No further batch is handed over after stop() resolved. (A window in
    // which nothing may happen: that is the assertion.)
    const receivedAtStop = m.received;
    await sleep(300);
    expect(s.reader.metrics().received).toBe(receivedAtStop);
    expect(s.handled()).toBeLessThanOrEqual(receivedAtStop);
  }, 40_000);

  it('timeoutMs: 0 closes at once and discards whatever is queued', async () => {
    const s = await setup(50); // 8 s of handler work: waiting for it would take seconds
    const t0 = Date.now();
    const res = await s.reader.stop({ timeoutMs: 0 });
    expect(s.closed).toEqual([{ forced: true }]);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(res.discarded).toBeGreaterThan(0);
    expect(s.reader.metrics().received + res.discarded).toBe(s.total);
  }, 40_000);
});

describe('reader.stop() accounting when the connection is paused', () => {
  it('forced stop: every message the writer got into the socket is either received or counted as discarded', async () => {
    // The handler is far behind (200 ms per batch), the connection is paused
    // at maxPendingBytes, and the socket's kernel buffers hold more. A forced
    // stop must account for what the writer was told was sent.
    const path = tmpSocket();
    const reader = track(
      new Reader(path, async () => {
        await sleep(200); // a slow handler (the scenario), not a wait
      }, { maxPendingBytes: 64 * 1024 }),
    );
    await reader.start();
    const w = track(new Writer(path, { reconnect: false }));
    w.on('error', () => {});
    const conns = watchConnections(w);
    w.start();
    const msg = Buffer.alloc(100, 9);
    let streaming = true;
    let falses = 0;
    const pump = () => {
      if (!streaming) return;
      for (let i = 0; i < 2000; i++) {
        if (!w.write(msg)) {
          falses++;
          w.once('drain', pump);
          return;
        }
      }
      setImmediate(pump);
    };
    pump();
    // The writer fills the socket's buffers within moments of the pause; the
    // assertion below holds whatever they hold.
    await waitFor(() => falses > 0 && reader.metrics().pauses > 0, 15_000, 'backpressure');
    streaming = false;
    const res = await reader.stop({ timeoutMs: 100 });
    expect(res.discarded).toBeGreaterThan(0);
    // Final once the writer has handled the end of its connection (see watchConnections).
    await waitFor(conns.allEnded, 10_000, "the writer's 'disconnect'");
    const sent = w.metrics().sent; // frames the kernel accepted for this reader
    const m = reader.metrics();
    expect(m.received + res.discarded).toBe(sent);
  }, 40_000);
});

// ─── start/stop state machine ────────────────────────────────────────────────

describe('start()/stop() state machine', () => {
  it('start() twice and stop() twice are harmless; stop() resolves the same result', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    let listening = 0;
    r.on('listening', () => listening++);
    await Promise.all([r.start(), r.start()]);
    await r.start();
    expect(r.listening).toBe(true);
    expect(listening).toBe(1);
    await roundTrip(path, got, 'hello');
    const p1 = r.stop();
    const p2 = r.stop();
    const [a, b] = await Promise.all([p1, p2]);
    expect(a).toEqual({ discarded: 0 });
    expect(b).toEqual(a);
    expect(await r.stop()).toEqual(a);
    expect(r.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
  });

  it('Writer: start() twice is harmless, stop() is idempotent', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    expect(w.start()).toBe(w);
    expect(w.start()).toBe(w);
    w.write('once');
    await w.flush();
    await waitFor(() => got.length === 1, 10_000, 'message');
    const [a, b] = await Promise.all([w.stop(), w.stop()]);
    expect(a).toEqual({ discarded: 0 });
    expect(b).toEqual(a);
    expect(w.metrics().connects).toBe(1); // the second start() did not connect again
  });

  it('Reader: stop() before start() resolves; start() afterwards rejects with ERR_NOT_RUNNING and creates no socket', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    expect(await r.stop()).toEqual({ discarded: 0 });
    expectIpcError(await rejection(() => r.start()), 'ERR_NOT_RUNNING');
    expect(existsSync(path)).toBe(false);
    expect(r.listening).toBe(false);
  });

  it('Reader: start() after a stop() of a running reader rejects with ERR_NOT_RUNNING', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    await r.start();
    await r.stop();
    expectIpcError(await rejection(() => r.start()), 'ERR_NOT_RUNNING');
    expect(existsSync(path)).toBe(false);
  });

  it('Writer: stop() before start() resolves; start() afterwards throws ERR_NOT_RUNNING', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    expect(await w.stop()).toEqual({ discarded: 0 });
    expectIpcError(await rejection(() => w.start()), 'ERR_NOT_RUNNING');
    expectIpcError(await rejection(() => w.write('x')), 'ERR_NOT_RUNNING');
  });

  it('Symbol.asyncDispose stops both', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('x');
    await w[Symbol.asyncDispose]();
    await r[Symbol.asyncDispose]();
    expect(r.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    expectIpcError(await rejection(() => w.write('y')), 'ERR_NOT_RUNNING');
  });
});

// ─── the socket file ─────────────────────────────────────────────────────────

describe('socket path handling', () => {
  it('a second Reader on a live path rejects with ERR_ADDRESS_IN_USE and leaves the first one working', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r1 = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r1.start();
    const ino = statSync(path).ino;
    const r2 = track(new Reader(path, () => {}));
    const err = await rejection(() => r2.start());
    expectIpcError(err, 'ERR_ADDRESS_IN_USE');
    expect((err as Error).message).toContain(path);
    expect(r2.listening).toBe(false);
    // The first reader's socket file is intact and still accepts.
    expect(statSync(path).ino).toBe(ino);
    await roundTrip(path, got, 'still here');
    // The failed reader's stop() must not remove the first one's socket.
    await r2.stop();
    expect(existsSync(path)).toBe(true);
    await roundTrip(path, got, 'still here 2');
  });

  it('a Reader whose start() failed with ERR_ADDRESS_IN_USE can start() again once the path is free', async () => {
    const path = tmpSocket();
    const r1 = track(new Reader(path, () => {}));
    await r1.start();
    const got: string[] = [];
    const r2 = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    expectIpcError(await rejection(() => r2.start()), 'ERR_ADDRESS_IN_USE');
    await r1.stop();
    await r2.start();
    expect(r2.listening).toBe(true);
    await roundTrip(path, got, 'second try');
  });

  it('a Reader in another process holding the path → ERR_ADDRESS_IN_USE', async () => {
    const path = tmpSocket();
    const p = child(runNode(join(FIXTURES, 'lc-reader-hold.js'), [path], { timeoutMs: 30_000 }));
    await stdoutHas(p, 'ready');
    const r = track(new Reader(path, () => {}));
    expectIpcError(await rejection(() => r.start()), 'ERR_ADDRESS_IN_USE');
    p.child.kill('SIGTERM');
    await p;
  });

  it('a stale socket file left by a SIGKILLed reader is replaced', async () => {
    const path = tmpSocket();
    const p = child(runNode(join(FIXTURES, 'lc-reader-hold.js'), [path], { timeoutMs: 30_000 }));
    await stdoutHas(p, 'ready');
    p.child.kill('SIGKILL');
    const res = await p;
    expect(res.signal).toBe('SIGKILL');
    expect(lstatSync(path).isSocket()).toBe(true); // left behind
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    await roundTrip(path, got, 'after stale');
    await r.stop();
    expect(existsSync(path)).toBe(false);
  });

  it('a regular file at the path → ERR_NOT_A_SOCKET, and the file is untouched', async () => {
    const path = tmpSocket();
    writeFileSync(path, 'precious data\n', { mode: 0o640 });
    const before = statSync(path);
    const r = track(new Reader(path, () => {}));
    const err = await rejection(() => r.start());
    expectIpcError(err, 'ERR_NOT_A_SOCKET');
    expect((err as Error).message).toContain(path);
    const after = statSync(path);
    expect(after.isFile()).toBe(true);
    expect(after.ino).toBe(before.ino);
    expect(after.mode).toBe(before.mode);
    expect(readFileSync(path, 'utf8')).toBe('precious data\n');
    await r.stop();
    expect(readFileSync(path, 'utf8')).toBe('precious data\n');
  });

  it('a directory at the path → ERR_NOT_A_SOCKET, and it is untouched', async () => {
    const path = tmpSocket();
    mkdirSync(path);
    const r = track(new Reader(path, () => {}));
    expectIpcError(await rejection(() => r.start()), 'ERR_NOT_A_SOCKET');
    expect(statSync(path).isDirectory()).toBe(true);
  });

  it('a 108-byte path → ERR_PATH_TOO_LONG; a 107-byte path works end to end', async () => {
    const dir = dirname(tmpSocket('x'));
    const mk = (bytes: number) => {
      const p = join(dir, 'a'.repeat(bytes - dir.length - 1));
      expect(Buffer.byteLength(p)).toBe(bytes);
      return p;
    };
    const long = mk(108);
    expectIpcError(await rejection(() => new Reader(long, () => {})), 'ERR_PATH_TOO_LONG');
    expectIpcError(await rejection(() => new Writer(long)), 'ERR_PATH_TOO_LONG');

    const ok = mk(107);
    const got: string[] = [];
    const r = track(new Reader(ok, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    expect(lstatSync(ok).isSocket()).toBe(true);
    await roundTrip(ok, got, 'long path works');
    await r.stop();
    expect(existsSync(ok)).toBe(false);
  });

  it('the 107-byte limit counts UTF-8 bytes, not characters', async () => {
    const dir = dirname(tmpSocket('x'));
    // 'é' is 2 bytes: fill to exactly 108 bytes with fewer than 108 characters.
    const room = 108 - dir.length - 1;
    const name = 'é'.repeat(Math.floor(room / 2)) + 'a'.repeat(room % 2);
    const p = join(dir, name);
    expect(Buffer.byteLength(p)).toBe(108);
    expect(p.length).toBeLessThan(108);
    expectIpcError(await rejection(() => new Reader(p, () => {})), 'ERR_PATH_TOO_LONG');
    const p107 = join(dir, name.slice(0, -1) + (room % 2 ? '' : 'a'));
    expect(Buffer.byteLength(p107)).toBe(107);
    const r = track(new Reader(p107, () => {}));
    await r.start();
    expect(lstatSync(p107).isSocket()).toBe(true);
  });

  it('the socket file is mode 0600 by default, honours `mode`, and is removed on stop()', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    await r.start();
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await r.stop();
    expect(existsSync(path)).toBe(false);

    const path2 = tmpSocket();
    const r2 = track(new Reader(path2, () => {}, { mode: 0o660 }));
    await r2.start();
    expect(statSync(path2).mode & 0o777).toBe(0o660);
    await r2.stop();
    expect(existsSync(path2)).toBe(false);
  });

  it("stop() does not remove a socket file that is no longer this reader's", async () => {
    const path = tmpSocket();
    const r1 = track(new Reader(path, () => {}));
    await r1.start();
    unlinkSync(path);
    const got: string[] = [];
    const r2 = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r2.start();
    const ino = statSync(path).ino;
    await r1.stop();
    expect(existsSync(path)).toBe(true);
    expect(statSync(path).ino).toBe(ino);
    await roundTrip(path, got, 'r2 alive');
  });
});

// ─── worker_threads ──────────────────────────────────────────────────────────

describe('worker_threads', () => {
  function runWorker(path: string, count: number): Promise<Record<string, unknown>> {
    const w = new Worker(join(FIXTURES, 'lc-worker-exchange.js'), { workerData: { path, count } });
    workers.push(w);
    return new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`worker exited with ${code} before reporting`)));
    });
  }

  it('a Reader and a Writer inside a Worker exchange messages (while the main thread uses the addon too)', async () => {
    // The main thread has the addon loaded and a reader running.
    const mainPath = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(mainPath, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();

    const N = 50_000;
    const [a, b] = await Promise.all([runWorker(tmpSocket(), N), runWorker(tmpSocket(), N)]);
    for (const res of [a, b]) {
      expect(res.error).toBeUndefined();
      expect(res.received).toBe(N);
      expect(res.outOfOrder).toBe(0);
      expect(res.sent).toBe(N);
      expect(res.ws).toEqual({ discarded: 0 });
      expect(res.rs).toEqual({ discarded: 0 });
    }
    await roundTrip(mainPath, got, 'main thread still fine');
  }, 60_000);

  it('terminating a worker mid-stream (its Reader receiving, or its Writer sending) does not crash and leaks no thread or fd', async () => {
    const dir = dirname(tmpSocket('x'));
    const res = await child(runNode(join(FIXTURES, 'lc-worker-terminate.js'), [dir, '3'], { timeoutMs: 60_000, execArgv: ['--expose-gc'] }));
    expect(res.signal).toBeNull();
    expect(res.stderr).not.toMatch(CRASH_NOISE);
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout.trim());
    expect(out.perRound).toHaveLength(3);
    for (const round of out.perRound) {
      expect(round.received).toBeGreaterThanOrEqual(20_000); // it really was mid-stream
      expect(round.socketLeft).toBe(false); // the worker's reader cleaned up its socket file
    }
    // Writer inside the worker, Reader in the main thread.
    expect(out.reverse).toHaveLength(3);
    for (const round of out.reverse) {
      expect(round.received).toBeGreaterThanOrEqual(20_000);
      expect(round.rs).toEqual({ discarded: 0 });
    }
    // Allow a little slack for Node's own threads/fds; three leaked engines would be 3+ threads and 6+ fds.
    expect(out.after.threads - out.base.threads).toBeLessThanOrEqual(1);
    expect(out.after.fds - out.base.fds).toBeLessThanOrEqual(2);
    // Receive slabs of the terminated workers' readers were all freed (-1: counter unavailable).
    if (out.base.slabs !== -1) expect(out.after.slabs).toBe(out.base.slabs);
  }, 80_000);
});

// ─── does the process exit? ──────────────────────────────────────────────────

describe('process lifetime', () => {
  const exitScript = join(FIXTURES, 'lc-exit.js');

  it('a child whose Reader and Writer were started, used and stopped exits on its own with code 0', async () => {
    const path = tmpSocket();
    const res = await child(runNode(exitScript, ['used', path], { timeoutMs: 20_000 }));
    expect(res.signal).toBeNull(); // not killed by the timeout: it exited on its own
    expect(res.code).toBe(0);
    expect(res.stderr).toBe('');
    const out = JSON.parse(res.stdout.trim());
    expect(out).toEqual({ got: 1000, ws: { discarded: 0 }, rs: { discarded: 0 } });
    expect(existsSync(path)).toBe(false);
  });

  it('a child whose Reader and Writer run but are unref()ed exits on its own (and cleans up its socket file)', async () => {
    for (const mode of ['unref', 'unref-early']) {
      const path = tmpSocket();
      const res = await child(runNode(exitScript, [mode, path], { timeoutMs: 20_000 }));
      expect(res.signal, mode).toBeNull();
      expect(res.code, mode).toBe(0);
      expect(res.stderr, mode).toBe('');
      const out = JSON.parse(res.stdout.trim());
      expect(out, mode).toEqual({ got: 1000, listening: true, connected: true });
      expect(existsSync(path), mode).toBe(false);
    }
  });

  it('a child with an unref()ed Writer that is still reconnecting exits on its own', async () => {
    const path = tmpSocket();
    const res = await child(runNode(exitScript, ['writer-unref', path], { timeoutMs: 20_000 }));
    expect(res.signal).toBeNull();
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('ready\n');
  });

  it('a child with a running, ref’ed Reader does not exit by itself', async () => {
    const path = tmpSocket();
    const p = child(runNode(join(FIXTURES, 'lc-reader-hold.js'), [path], { timeoutMs: 30_000 }));
    await stdoutHas(p, 'ready');
    await sleep(1000); // a window in which it must not exit: that is the assertion
    expect(p.child.exitCode).toBeNull();
    expect(p.child.signalCode).toBeNull();
    p.child.kill('SIGTERM');
    const res = await p;
    expect(res.signal).toBe('SIGTERM'); // it was still alive when we killed it
  });

  it('a child with a running, ref’ed Writer (no reader yet) does not exit by itself', async () => {
    const path = tmpSocket();
    const p = child(runNode(exitScript, ['writer-ref', path], { timeoutMs: 30_000 }));
    await stdoutHas(p, 'ready');
    await sleep(1000); // a window in which it must not exit: that is the assertion
    expect(p.child.exitCode).toBeNull();
    expect(p.child.signalCode).toBeNull();
    p.child.kill('SIGTERM');
    const res = await p;
    expect(res.signal).toBe('SIGTERM');
  });

  it('process.exit() while a Reader and Writer are mid-stream exits cleanly', async () => {
    for (const variant of ['sync', 'async', 'stop', 'sync', 'async', 'stop']) {
      const path = tmpSocket();
      const res = await child(runNode(join(FIXTURES, 'lc-process-exit.js'), [path, variant], { timeoutMs: 20_000 }));
      expect(res.signal, `${variant}: ${res.stderr}`).toBeNull();
      expect(res.code, `${variant}: ${res.stderr}`).toBe(0);
      expect(res.stdout, variant).toMatch(/^exiting received=\d+/);
      expect(res.stderr, variant).not.toMatch(CRASH_NOISE);
      expect(res.stderr, variant).toBe('');
    }
  }, 80_000);
});
