// `for await (const batch of reader)`: a Reader constructed without a handler
// is an async iterable of batches, with the same backpressure as an async
// handler; leaving the loop stops the Reader; the loop ends when it stops.
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { IpcError, Reader, Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, useTracking, FAST, sleep, within } from './helpers';

const track = useTracking();



/** True if p is still pending 30 ms later (a window in which it must not settle: callers assert that). */
async function isPending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await sleep(30);
  return !settled;
}

const seq = (b: Batch, i: number): number => b.at(i)!.readUInt32LE(0);
function msg(i: number, size = 16): Buffer {
  const m = Buffer.alloc(size, 7);
  m.writeUInt32LE(i, 0);
  return m;
}

/** Writes n messages (0..n-1), waiting for 'drain' when the queue is full. */
async function writeAll(w: Writer, n: number, size = 16): Promise<void> {
  for (let i = 0; i < n; ) {
    if (w.write(msg(i, size))) i++;
    else await within(once(w, 'drain'), "'drain'");
  }
}

describe('constructing a Reader without a handler', () => {
  it('accepts (path), (path, options) and (path, undefined, options), validating the options in each form', () => {
    const a = new Reader(tmpSocket());
    const b = new Reader(tmpSocket(), { maxMessageSize: 1024 });
    const c = new Reader(tmpSocket(), undefined, { maxMessageSize: 1024 });
    for (const r of [a, b, c]) expect(typeof r[Symbol.asyncIterator]).toBe('function');
    let e: (Error & { code?: string }) | undefined;
    try {
      new Reader(tmpSocket(), { backlog: -1 });
    } catch (x) {
      e = x as Error & { code?: string };
    }
    expect(e).toBeInstanceOf(RangeError);
    expect(e!.code).toBe('ERR_OUT_OF_RANGE');
    try {
      new Reader(tmpSocket(), { handler: () => {} } as never);
    } catch (x) {
      e = x as Error & { code?: string };
    }
    expect(e!.code).toBe('ERR_INVALID_ARG_VALUE');
  });

  it('iterating a Reader that has a handler throws ERR_INVALID_STATE; so does a second concurrent iterator', async () => {
    const withHandler = track(new Reader(tmpSocket(), () => {}));
    let e: unknown;
    try {
      withHandler[Symbol.asyncIterator]();
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(IpcError);
    expect((e as IpcError).code).toBe('ERR_INVALID_STATE');
    await expect(
      (async () => {
        for await (const _ of withHandler) break;
      })(),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_STATE' });

    const r = track(new Reader(tmpSocket()));
    const first = r[Symbol.asyncIterator]();
    expect(() => r[Symbol.asyncIterator]()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_STATE' }));
    await first.return!();
  });
});

describe('for await (const batch of reader)', () => {
  it('yields every message in order, across batches, until the reader stops; a graceful stop delivers the rest first', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, { maxPendingBytes: 16 * 1024, slabSize: 64 * 1024 }) /* reads of at most 64 KiB: several batches */);
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 500 }));
    w.start();
    const N = 20_000;
    const consumed = (async () => {
      const got: number[] = [];
      let batches = 0;
      for await (const b of r) {
        expect(b).toHaveProperty('connection');
        batches++;
        for (let i = 0; i < b.length; i++) got.push(seq(b, i));
        if (batches % 7 === 0) await sleep(1); // a slow-ish consumer now and then
      }
      return { got, batches };
    })();
    await writeAll(w, N);
    await w.flush();
    const stopped = r.stop({ timeoutMs: 20_000 }); // graceful: the loop gets everything, then ends
    const { got, batches } = await within(consumed, 'the loop to end');
    expect(await stopped).toEqual({ discarded: 0 });
    expect(got.length).toBe(N);
    for (let i = 0; i < N; i++) if (got[i] !== i) throw new Error(`message ${i} is ${got[i]}`);
    expect(batches).toBeGreaterThan(1);
    expect(r.metrics()).toMatchObject({ received: N, batches, discarded: 0 });
  });

  it('a batch is acknowledged only when the loop asks for the next one: a consumer holding one pauses the connection and fills the writer', async () => {
    const path = tmpSocket();
    const maxPendingBytes = 64 * 1024;
    const r = track(new Reader(path, { maxPendingBytes, slabSize: 64 * 1024 }));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 1000, sendBufferSize: 0 }));
    w.start();
    const it = r[Symbol.asyncIterator]();
    const size = 1000;
    let written = 0;
    let refused = false;
    const first = it.next();
    while (!refused && written < 1_000_000) {
      if (w.write(msg(written, size))) written++;
      else refused = true;
      if (written % 100 === 0) await new Promise((r) => setImmediate(r)); // let the reader's side run
    }
    const held = await within(first, 'first batch');
    expect(held.done).toBe(false);
    // Not asking for the next batch: the reader stops reading this connection.
    // Paused, it stays paused: nothing acknowledges the held batch.
    await waitFor(() => r.metrics().pauses > 0, 10_000, 'the connection to be paused');
    const readAt = r.metrics().bytesRead;
    await sleep(200); // a window in which nothing may be read: that is the assertion
    expect(r.metrics().bytesRead).toBe(readAt); // nothing more is read while the batch is held
    expect(refused).toBe(true); // and the writer's queue filled up
    expect(readAt).toBeLessThan(written * (size + 2));
    expect(r.metrics().batches).toBe(1);
    // Asking for more resumes the flow; everything arrives in order.
    const got: number[] = [];
    for (let i = 0; i < held.value!.length; i++) got.push(seq(held.value!, i));
    while (got.length < written) {
      const n = await within(it.next(), 'next batch');
      expect(n.done).toBe(false);
      for (let i = 0; i < n.value!.length; i++) got.push(seq(n.value!, i));
    }
    expect(got).toEqual(Array.from({ length: written }, (_, i) => i));
    await it.return!();
  });

  it('batches that arrive before anyone iterates wait (paused, not dropped) and are yielded once the loop starts', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path, { maxPendingBytes: 8 * 1024 }));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const N = 2000;
    for (let i = 0; i < N; i++) expect(w.write(msg(i, 64))).toBe(true);
    await waitFor(() => r.metrics().pauses > 0, 10_000, 'pause');
    const got: number[] = [];
    for await (const b of r) {
      for (let i = 0; i < b.length; i++) got.push(seq(b, i));
      if (got.length === N) break;
    }
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
  });

  it('break stops the reader at once and waits for it; what it had read but not yielded is counted as discarded', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path));
    await r.start();
    const w = track(new Writer(path, { reconnect: false }));
    w.on('error', () => {});
    w.start();
    const N = 3000;
    // Two waves, each read before the next is written: at least two batches,
    // all read by the reader and none yielded yet.
    for (let k = 0; k < 2; k++) {
      for (let i = (k * N) / 2; i < ((k + 1) * N) / 2; i++) expect(w.write(msg(i, 100))).toBe(true);
      await w.flush();
      await waitFor(() => r.metrics().bytesRead === ((k + 1) * N * 101) / 2, 10_000, `wave ${k} read`);
    }
    const closed = once(r, 'close');
    let yielded = 0;
    let loops = 0;
    for await (const b of r) {
      yielded += b.length;
      loops++;
      break;
    }
    expect(loops).toBe(1);
    // The loop's return() waited for the stop.
    expect(r.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    const [info] = await closed;
    expect(info).toEqual({ forced: true });
    const m = r.metrics();
    expect(m.received).toBe(yielded);
    expect(yielded).toBeLessThan(N);
    expect(m.discarded).toBe(N - yielded);
  });

  it('a throw inside the loop stops the reader and propagates', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('boom');
    const loop = (async () => {
      for await (const b of r) throw new Error(`consumer failed on ${b.at(0)}`);
    })();
    await expect(within(loop, 'loop')).rejects.toThrow('consumer failed on boom');
    expect(r.listening).toBe(false);
  });

  it('stop() from outside ends a loop that is waiting for a batch; a loop started after stop() ends at once', async () => {
    const r = track(new Reader(tmpSocket()));
    await r.start();
    let n = 0;
    const loop = (async () => {
      for await (const _ of r) n++;
      return 'ended';
    })();
    expect(await isPending(loop)).toBe(true);
    await r.stop();
    expect(await within(loop, 'loop')).toBe('ended');
    expect(n).toBe(0);
    const again = (async () => {
      for await (const _ of r) n++;
      return 'ended again';
    })();
    expect(await within(again, 'second loop')).toBe('ended again');

    const never = new Reader(tmpSocket()); // never started
    const loop2 = (async () => {
      for await (const _ of never) n++;
      return 'ended';
    })();
    expect(await isPending(loop2)).toBe(true);
    await never.stop();
    expect(await within(loop2, 'loop of a never-started reader')).toBe('ended');
  });

  it('a graceful stop() waits for the loop to finish its batch; a stop that times out ends the loop after it', async () => {
    const path = tmpSocket();
    const r = track(new Reader(path));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    w.write('one');
    await w.flush();
    const it = r[Symbol.asyncIterator]();
    const a = await within(it.next(), 'first');
    expect(String(a.value!.at(0))).toBe('one');
    const stopping = r.stop({ timeoutMs: 20_000 });
    expect(await isPending(stopping)).toBe(true); // the batch is still held
    expect(await within(it.next(), 'end')).toEqual({ done: true, value: undefined });
    expect(await stopping).toEqual({ discarded: 0 });

    const path2 = tmpSocket();
    const r2 = track(new Reader(path2));
    await r2.start();
    const w2 = track(new Writer(path2, { reconnect: FAST }));
    w2.start();
    w2.write('held');
    await w2.flush();
    const it2 = r2[Symbol.asyncIterator]();
    await within(it2.next(), 'first');
    await within(r2.stop({ timeoutMs: 20 }), 'forced stop');
    expect(await within(it2.next(), 'end')).toEqual({ done: true, value: undefined });
  });
});
