// AbortSignal support: reader.start/stop, writer.flush/send/stop. Node-core
// behaviour: an already-aborted signal rejects at once, an abort rejects with
// an AbortError (code ABORT_ERR, cause = the signal's reason), and listeners
// are removed once the call settles (a long-lived signal does not collect them).
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { getEventListeners, once } from 'node:events';
import { AbortError, IpcError, Reader, Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, useTracking, FAST, within } from './helpers';

const track = useTracking();

const listeners = (s: AbortSignal): number => getEventListeners(s, 'abort').length;

/** The rejection of p (fails if p resolves), or fails after ms instead of hanging. */
async function rejection(p: Promise<unknown>, ms = 20_000): Promise<Error & { code?: unknown }> {
  let t: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      p,
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
      }),
    ]);
  } catch (e) {
    if ((e as Error).message === `still pending after ${ms} ms`) throw e;
    return e as Error & { code?: unknown };
  } finally {
    clearTimeout(t);
  }
  throw new Error('expected a rejection, got a resolution');
}

/** Resolves with p's value, or fails after ms instead of hanging. */

/** True if p is still pending 20 ms later (a window in which it must not settle: callers assert that). */
async function pending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((r) => setTimeout(r, 20));
  return !settled;
}

function expectAbortError(e: Error & { code?: unknown }, reason: unknown): void {
  expect(e).toBeInstanceOf(Error);
  expect(e).toBeInstanceOf(AbortError);
  expect(e.name).toBe('AbortError');
  expect(e.code).toBe('ABORT_ERR');
  expect(e.cause).toBe(reason);
}

function expectInvalidSignal(e: Error & { code?: unknown }): void {
  expect(e).toBeInstanceOf(TypeError);
  expect(e.code).toBe('ERR_INVALID_ARG_TYPE');
  expect(e.message).toContain('"signal"');
  expect(e.message).toContain('AbortSignal');
}

/** The error thrown synchronously by fn, or its rejection. */
async function errorOf(fn: () => unknown): Promise<Error & { code?: unknown }> {
  let r: unknown;
  try {
    r = fn();
  } catch (e) {
    return e as Error & { code?: unknown };
  }
  return rejection(r as Promise<unknown>);
}

const BAD_SIGNALS: unknown[] = [null, 1, 'signal', {}, { aborted: false }, new AbortController()];

// ─── reader.start({ signal }) ───────────────────────────────────────────────

describe('reader.start({ signal })', () => {
  it('an already-aborted signal rejects with an AbortError and binds nothing; start() works afterwards', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    const reason = new Error('shutting down');
    const e = await rejection(r.start({ signal: AbortSignal.abort(reason) }));
    expectAbortError(e, reason);
    expect(r.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    await r.start();
    expect(r.listening).toBe(true);
  });

  it('the default reason (a DOMException named AbortError) becomes the cause', async () => {
    const r = track(new Reader(tmpSocket(), () => {}));
    const ac = new AbortController();
    ac.abort();
    const e = await rejection(r.start({ signal: ac.signal }));
    expectAbortError(e, ac.signal.reason);
    expect((e.cause as Error).name).toBe('AbortError');
  });

  it('aborting later stops the reader gracefully (like server.listen({ signal })): queued messages are delivered first', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    const ac = new AbortController();
    await r.start({ signal: ac.signal });
    expect(listeners(ac.signal)).toBe(1);
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    for (let i = 0; i < 100; i++) w.write(`m${i}`);
    await w.flush();
    const closed = once(r, 'close');
    ac.abort();
    const [info] = await within(closed, "'close'");
    expect(info).toEqual({ forced: false });
    expect(r.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`));
    expect(listeners(ac.signal)).toBe(0);
  });

  it("stopping the reader removes the start signal's listener (a long-lived signal collects none)", async () => {
    const ac = new AbortController();
    for (let i = 0; i < 20; i++) {
      const r = new Reader(tmpSocket(), () => {});
      await r.start({ signal: ac.signal });
      await r.start({ signal: ac.signal }); // no-op while running: attaches nothing
      await r.stop();
    }
    expect(listeners(ac.signal)).toBe(0);
  });

  it('a failed start() leaves no listener behind', async () => {
    const path = tmpSocket();
    const first = track(new Reader(path, () => {}));
    await first.start();
    const ac = new AbortController();
    const second = track(new Reader(path, () => {}));
    const e = await rejection(second.start({ signal: ac.signal }));
    expect((e as IpcError).code).toBe('ERR_ADDRESS_IN_USE');
    expect(listeners(ac.signal)).toBe(0);
  });

  it('validates signal (ERR_INVALID_ARG_TYPE) and option names (ERR_INVALID_ARG_VALUE)', async () => {
    const r = track(new Reader(tmpSocket(), () => {}));
    for (const s of BAD_SIGNALS) expectInvalidSignal(await errorOf(() => r.start({ signal: s as never })));
    const e = await errorOf(() => r.start({ signl: 1 } as never));
    expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(e.message).toContain('"signl"');
    expect((await errorOf(() => r.start(5 as never))).code).toBe('ERR_INVALID_ARG_TYPE');
    expect(r.listening).toBe(false);
  });
});

// ─── reader.stop({ signal }) ────────────────────────────────────────────────

describe('reader.stop({ signal })', () => {
  /** A reader whose handler holds the first batch until release(), with messages queued behind it. */
  async function stuckReader(): Promise<{ r: Reader; release: () => void; handled: () => number }> {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    let handled = 0;
    const r = track(
      new Reader(path, async (b: Batch) => {
        handled += b.length;
        await gate;
      }),
    );
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('first');
    await w.flush();
    await waitFor(() => handled > 0, 10_000, 'first batch');
    let bytes = 1 + 'first'.length;
    for (let i = 0; i < 50; i++) {
      w.write(`later ${i}`);
      bytes += 1 + `later ${i}`.length;
    }
    await w.flush();
    await waitFor(() => r.metrics().bytesRead === bytes, 10_000, 'every message read by the reader');
    return { r, release, handled: () => handled };
  }

  it('aborting turns a graceful stop into a forced one: it resolves with { discarded } instead of waiting for the handler', async () => {
    const { r, release, handled } = await stuckReader();
    const ac = new AbortController();
    const closed = once(r, 'close');
    const p = r.stop({ timeoutMs: 2 ** 31 - 1, signal: ac.signal });
    expect(await pending(p)).toBe(true);
    ac.abort(new Error('hurry'));
    const res = await within(p, 'stop() after abort');
    const [info] = await closed;
    expect(info).toEqual({ forced: true });
    expect(r.listening).toBe(false);
    // Nothing is lost silently: every message after the held batch was received or discarded.
    expect(res.discarded + r.metrics().received).toBe(51);
    expect(handled()).toBe(1);
    expect(res.discarded).toBe(50);
    expect(listeners(ac.signal)).toBe(0);
    release();
  });

  it('an already-aborted signal stops at once, like timeoutMs: 0 (it resolves, it does not reject)', async () => {
    const { r, release } = await stuckReader();
    const res = await within(r.stop({ timeoutMs: 2 ** 31 - 1, signal: AbortSignal.abort() }), 'stop()');
    expect(res.discarded).toBe(50);
    expect(r.listening).toBe(false);
    release();
  });

  it('a signal passed to a second stop() call forces the stop already under way', async () => {
    const { r, release } = await stuckReader();
    const first = r.stop({ timeoutMs: 2 ** 31 - 1 });
    const ac = new AbortController();
    const second = r.stop({ signal: ac.signal });
    expect(second).toBe(first);
    ac.abort();
    expect((await within(first, 'stop()')).discarded).toBe(50);
    release();
  });

  it('a graceful stop that finishes on its own removes its listeners; stop() of a stopped reader attaches none', async () => {
    const ac = new AbortController();
    const path = tmpSocket();
    const r = new Reader(path, () => {});
    await r.start();
    const p1 = r.stop({ signal: ac.signal });
    const p2 = r.stop({ signal: ac.signal });
    expect(listeners(ac.signal)).toBe(2);
    expect(await p1).toEqual({ discarded: 0 });
    await p2;
    await r.stop({ signal: ac.signal });
    expect(listeners(ac.signal)).toBe(0);
    ac.abort(); // harmless afterwards
    expect(r.listening).toBe(false);
  });

  it('validates signal synchronously, and a bad call does not stop the reader', async () => {
    const r = track(new Reader(tmpSocket(), () => {}));
    await r.start();
    for (const s of BAD_SIGNALS) expectInvalidSignal(await errorOf(() => r.stop({ signal: s as never })));
    expect(r.listening).toBe(true);
  });
});

// ─── writer.flush({ signal }) ───────────────────────────────────────────────

describe('writer.flush({ signal })', () => {
  it('an already-aborted signal rejects at once, even with nothing to flush', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    const reason = { why: 'because' };
    expectAbortError(await rejection(w.flush({ signal: AbortSignal.abort(reason) })), reason);
  });

  it('aborting a pending flush rejects it with an AbortError; the messages stay queued and are delivered later', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('queued while no reader listens');
    const ac = new AbortController();
    const p = w.flush({ signal: ac.signal });
    expect(await pending(p)).toBe(true);
    expect(listeners(ac.signal)).toBe(1);
    const reason = new Error('gave up');
    ac.abort(reason);
    expectAbortError(await rejection(p), reason);
    expect(listeners(ac.signal)).toBe(0);
    expect(w.metrics().queueDepth).toBe(1);
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    await within(w.flush(), 'flush() after the reader started');
    await waitFor(() => got.length === 1, 10_000, 'delivery');
    expect(got).toEqual(['queued while no reader listens']);
  });

  it('many flushes with one long-lived signal leave no listener behind', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const ac = new AbortController();
    for (let i = 0; i < 300; i++) {
      w.write(`m${i}`);
      await w.flush({ signal: ac.signal });
    }
    expect(listeners(ac.signal)).toBe(0);
  });

  it('a flush rejected by stop() (ERR_NOT_RUNNING) removes its listener too', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    w.write('never sent');
    const ac = new AbortController();
    const p = w.flush({ signal: ac.signal });
    await w.stop({ timeoutMs: 0 });
    expect(((await rejection(p)) as IpcError).code).toBe('ERR_NOT_RUNNING');
    expect(listeners(ac.signal)).toBe(0);
  });

  it('validates signal and option names (as a rejection)', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    for (const s of BAD_SIGNALS) expectInvalidSignal(await rejection(w.flush({ signal: s as never })));
    expect((await rejection(w.flush({ timeoutMs: 1 } as never))).code).toBe('ERR_INVALID_ARG_VALUE');
  });
});

// ─── writer.send(data, { signal }) ──────────────────────────────────────────

describe('writer.send()', () => {
  it('resolves at once while there is room, and the message is delivered', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    await w.send('hello');
    await w.send(Buffer.from('bytes'));
    await w.send(new Uint8Array([0x61, 0x62]));
    await w.flush();
    await waitFor(() => got.length === 3, 10_000, 'delivery');
    expect(got).toEqual(['hello', 'bytes', 'ab']);
  });

  it('waits for room instead of dropping: concurrent sends are queued in call order, none counted as dropped', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 4 }));
    w.start();
    const N = 200;
    const buf = Buffer.alloc(8);
    const sends: Promise<void>[] = [];
    let resolved = 0;
    for (let i = 0; i < N; i++) {
      buf.writeUInt32LE(i, 0);
      buf.writeUInt32LE(0xdeadbeef, 4);
      sends.push(w.send(buf).then(() => void resolved++)); // buf is reused at once: send copies it
    }
    await new Promise((res) => setTimeout(res, 50)); // a window in which no more may resolve: that is the assertion
    expect(resolved).toBe(4); // no reader: only what fits the queue is in
    expect(w.metrics()).toMatchObject({ written: 4, dropped: 0, queueDepth: 4 });
    const got: number[] = [];
    const r = track(
      new Reader(path, (b: Batch) => {
        for (const m of b) {
          expect(m.length).toBe(8);
          expect(m.readUInt32LE(4)).toBe(0xdeadbeef);
          got.push(m.readUInt32LE(0));
        }
      }),
    );
    await r.start();
    await within(Promise.all(sends), 'all sends');
    await w.flush();
    await waitFor(() => got.length === N, 10_000, 'all messages');
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
    const m = w.metrics();
    expect(m.dropped).toBe(0);
    expect(m.written).toBe(N);
    expect(m.written).toBe(m.sent + m.dropped + m.failed + m.queueDepth);
  });

  it('aborting a waiting send rejects it with an AbortError and its message is never sent; the ones behind it still are', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 1 }));
    w.start();
    await w.send('a');
    const ac = new AbortController();
    const pb = w.send('b', { signal: ac.signal });
    const pc = w.send('c');
    expect(await pending(pb)).toBe(true);
    expect(listeners(ac.signal)).toBe(1);
    const reason = new Error('no longer needed');
    ac.abort(reason);
    expectAbortError(await rejection(pb), reason);
    expect(listeners(ac.signal)).toBe(0);
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    await within(pc, "send('c')");
    await w.flush();
    await waitFor(() => got.length === 2, 10_000, 'delivery');
    expect(got).toEqual(['a', 'c']);
    const m = w.metrics();
    expect(m).toMatchObject({ written: 2, sent: 2, dropped: 0, queueDepth: 0 });
  });

  it('an already-aborted signal rejects without queueing anything', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    const reason = 'stop';
    expectAbortError(await rejection(w.send('x', { signal: AbortSignal.abort(reason) })), reason);
    expect(w.metrics().written).toBe(0);
  });

  it('stop() rejects the sends still waiting with ERR_NOT_RUNNING (and removes their listeners); send() after stop() rejects too', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST, maxBufferedWrites: 1 }));
    w.start();
    await w.send('in the queue');
    const ac = new AbortController();
    const waiting = [w.send('w1', { signal: ac.signal }), w.send('w2')].map((p) => rejection(p));
    const res = await w.stop({ timeoutMs: 0 });
    expect(res.discarded).toBe(1);
    for (const p of waiting) expect(((await p) as IpcError).code).toBe('ERR_NOT_RUNNING');
    expect(listeners(ac.signal)).toBe(0);
    expect(((await rejection(w.send('late'))) as IpcError).code).toBe('ERR_NOT_RUNNING');
    const m = w.metrics();
    expect(m.written).toBe(m.sent + m.dropped + m.failed + m.queueDepth);
  });

  it('invalid data and oversized messages reject (also when they would have to wait)', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST, maxBufferedWrites: 1, maxMessageSize: 8, maxBufferedBytes: 64 }));
    w.start();
    for (const v of [42, null, {}, new ArrayBuffer(2)]) {
      const e = await rejection(w.send(v as never));
      expect(e).toBeInstanceOf(TypeError);
      expect(e.code).toBe('ERR_INVALID_ARG_TYPE');
    }
    expect(((await rejection(w.send('123456789'))) as IpcError).code).toBe('ERR_MESSAGE_TOO_LARGE');
    await w.send('fills');
    const waiting = w.send('waits');
    expect(((await rejection(w.send(7 as never))) as Error & { code: string }).code).toBe('ERR_INVALID_ARG_TYPE');
    expect(((await rejection(w.send('123456789'))) as IpcError).code).toBe('ERR_MESSAGE_TOO_LARGE');
    for (const s of BAD_SIGNALS) expectInvalidSignal(await rejection(w.send('x', { signal: s as never })));
    expect(await pending(waiting)).toBe(true);
  });

  it('many waiting sends share one listener per signal, removed with the last of them; no MaxListeners warning', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const path = tmpSocket();
      const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 8 }));
      w.start();
      const ac = new AbortController();
      const all: Promise<void>[] = [];
      for (let i = 0; i < 2000; i++) all.push(w.send(`m${i}`, { signal: ac.signal }));
      const flushes = [w.flush({ signal: ac.signal }), w.flush({ signal: ac.signal })];
      expect(await pending(all[all.length - 1])).toBe(true);
      expect(listeners(ac.signal)).toBe(1);
      const r = track(new Reader(path, () => {}));
      await r.start();
      await within(Promise.all([...all, ...flushes]), 'all sends');
      expect(listeners(ac.signal)).toBe(0);
      expect(w.metrics()).toMatchObject({ written: 2000, dropped: 0 });
      await new Promise((res) => setImmediate(res));
      expect(warnings.filter((x) => x.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('aborting a signal shared by many waiting sends rejects them all and queues none of them', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 2 }));
    w.start();
    await w.send('q1');
    await w.send('q2');
    const ac = new AbortController();
    const waiting = Array.from({ length: 100 }, (_, i) => rejection(w.send(`never ${i}`, { signal: ac.signal })));
    const other = w.send('after'); // no signal: unaffected
    ac.abort('enough');
    for (const p of waiting) expectAbortError(await p, 'enough');
    expect(listeners(ac.signal)).toBe(0);
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    await within(other, "send('after')");
    await w.flush();
    await waitFor(() => got.length === 3, 10_000, 'delivery');
    expect(got).toEqual(['q1', 'q2', 'after']);
  });
});

// ─── writer.stop({ signal }) ────────────────────────────────────────────────

describe('writer.stop({ signal })', () => {
  it('aborting moves the deadline to now: it resolves with what it discarded', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    for (let i = 0; i < 10; i++) w.write(`unsendable ${i}`);
    const ac = new AbortController();
    const closed = once(w, 'close');
    const p = w.stop({ timeoutMs: 2 ** 31 - 1, signal: ac.signal });
    expect(await pending(p)).toBe(true);
    ac.abort();
    expect(await within(p, 'stop() after abort')).toEqual({ discarded: 10 });
    await closed;
    expect(listeners(ac.signal)).toBe(0);
    expect(w.metrics().failed).toBe(10);
  });

  it('an already-aborted signal stops at once (like timeoutMs: 0), and forces a stop already under way', async () => {
    const w1 = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w1.start();
    w1.write('x');
    expect(await within(w1.stop({ timeoutMs: 2 ** 31 - 1, signal: AbortSignal.abort() }), 'stop()')).toEqual({ discarded: 1 });

    const w2 = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w2.start();
    w2.write('y');
    const first = w2.stop({ timeoutMs: 2 ** 31 - 1 });
    expect(await pending(first)).toBe(true);
    expect(w2.stop({ signal: AbortSignal.abort() })).toBe(first);
    expect(await within(first, 'stop()')).toEqual({ discarded: 1 });
  });

  it('a stop that completes on its own removes its listener; a stop() without a reader still honours timeoutMs', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, () => {}));
    await r.start();
    const w = new Writer(path, { reconnect: FAST });
    w.start();
    w.write('delivered');
    const ac = new AbortController();
    expect(await w.stop({ signal: ac.signal })).toEqual({ discarded: 0 });
    expect(listeners(ac.signal)).toBe(0);
  });

  it('validates signal synchronously, and a bad call does not stop the writer', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    for (const s of BAD_SIGNALS) expectInvalidSignal(await errorOf(() => w.stop({ signal: s as never })));
    expect(w.write('still running')).toBe(true);
  });
});
