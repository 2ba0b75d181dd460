// writer.createWriteStream() / createWritable(writer): an object-mode
// Writable, one chunk per message, with backpressure from the Writer's queue.
import { describe, expect, it } from 'vitest';
import { Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createWritable, Reader, Writer, type Batch, type ReaderOptions } from '../src/index';
import { once } from 'node:events';
import { tmpSocket, waitFor, useTracking, FAST, sleep, steady, within as withinMs } from './helpers';

const track = useTracking();
const within = <T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> => withinMs(p, what, ms);



function msg(i: number): Buffer {
  const m = Buffer.alloc(12, 1);
  m.writeUInt32LE(i, 0);
  return m;
}

/** A generator of n messages that records how many were pulled from it. */
function source(n: number, make: (i: number) => Buffer | Uint8Array | string = msg): { readable: Readable; pulled: () => number } {
  let pulled = 0;
  function* gen() {
    for (let i = 0; i < n; i++) {
      pulled++;
      yield make(i);
    }
  }
  return { readable: Readable.from(gen()), pulled: () => pulled };
}

/** A reader collecting the u32 sequence numbers of the messages it gets. */
async function collector(path: string, handler?: (b: Batch) => void | Promise<void>, options?: ReaderOptions) {
  const got: number[] = [];
  const r = track(
    new Reader(
      path,
      (b: Batch) => {
        for (let i = 0; i < b.length; i++) got.push(b.at(i)!.readUInt32LE(0));
        return handler?.(b);
      },
      options,
    ),
  );
  return { r, got };
}

function expectSequence(got: number[], n: number): void {
  expect(got.length).toBe(n);
  for (let i = 0; i < n; i++) if (got[i] !== i) throw new Error(`message ${i} is ${got[i]}`);
}

describe('writer.createWriteStream()', () => {
  it('pipeline() of 100,000 messages from a generator arrives whole and in order; it resolves once everything is flushed', async () => {
    const path = tmpSocket();
    const { r, got } = await collector(path);
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 1000 }));
    w.start();
    const N = 100_000;
    const s = w.createWriteStream();
    expect(s).toBeInstanceOf(Writable);
    expect(s.writableObjectMode).toBe(true);
    await within(pipeline(source(N).readable, s), 'pipeline', 60_000);
    // final() waited for flush(): every message is in the kernel.
    expect(w.metrics()).toMatchObject({ written: N, sent: N, dropped: 0, queueDepth: 0 });
    await waitFor(() => got.length >= N, 20_000, 'delivery');
    expectSequence(got, N);
    expect(w.write('still usable')).toBe(true); // the Writer is left running
  }, 90_000);

  it('strings, Buffers and Uint8Arrays are one message each; createWritable(writer) is the same adapter', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const r = track(new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String))));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const s = createWritable(w, { highWaterMark: 2 });
    expect(s.writableHighWaterMark).toBe(2);
    await pipeline(Readable.from(['text', Buffer.from('buffer'), new Uint8Array([0x75, 0x38]), '']), s);
    await waitFor(() => got.length === 4, 10_000, 'delivery');
    expect(got).toEqual(['text', 'buffer', 'u8', '']);
  });

  it('with no reader at all, the source is pulled only as far as the queue and the buffers allow', async () => {
    const path = tmpSocket();
    const maxBufferedWrites = 50;
    const hwm = 16;
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites }));
    w.start();
    const N = 10_000;
    const src = source(N);
    const s = w.createWriteStream({ highWaterMark: hwm });
    const done = pipeline(src.readable, s);
    done.catch(() => {}); // (awaited below)
    // Stalled: the queue is full (nothing can leave it: no reader), the
    // stream waits for room, and the source's own buffer is full.
    await waitFor(
      () => w.metrics().queueDepth === maxBufferedWrites && s.writableNeedDrain && src.readable.readableLength >= src.readable.readableHighWaterMark,
      10_000,
      'the pipeline to stall',
    );
    const pulled = src.pulled();
    await sleep(200); // a window in which nothing more may be pulled: that is the assertion
    expect(src.pulled()).toBe(pulled); // stalled, not buffering on
    // Writer queue + the chunk waiting in send() + the Writable's buffer + Readable.from's buffer (16) + slack.
    expect(pulled).toBeLessThanOrEqual(maxBufferedWrites + 1 + hwm + 16 + 4);
    expect(w.metrics().dropped).toBe(0);
    // A reader appears: everything flows, in order.
    const { r, got } = await collector(path);
    await r.start();
    await within(done, 'pipeline');
    await waitFor(() => got.length >= N, 20_000, 'delivery');
    expectSequence(got, N);
  });

  it('with a stalled reader, buffering stays bounded (stops growing) and nothing is lost once it resumes', async () => {
    const path = tmpSocket();
    let release!: () => void;
    let gate: Promise<void> | undefined = new Promise<void>((res) => (release = res));
    // Small budgets on the reader's side, so that the stall is reached early.
    const { r, got } = await collector(path, () => gate, { maxPendingBytes: 64 * 1024, slabSize: 64 * 1024 });
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 200, sendBufferSize: 0 }));
    w.start();
    const N = 200_000;
    const src = source(N);
    const s = w.createWriteStream();
    const done = pipeline(src.readable, s);
    done.catch(() => {}); // (awaited below; this only keeps a failed test from also reporting it unhandled)
    // Wait until everything in between is full: the reader paused (its
    // handler never returns), the writer's queue full, the stream waiting for
    // room and the source's buffer full. Whether the kernel's socket buffers
    // are full too no API tells: the writer's IO thread is then blocked and
    // makes no more send calls, so wait for its call count to stay put.
    await waitFor(
      () => r.metrics().pauses > 0 && w.metrics().queueDepth === 200 && s.writableNeedDrain && src.readable.readableLength >= src.readable.readableHighWaterMark,
      30_000,
      'the pipeline to stall',
    );
    await steady(() => w.metrics().sendCalls + ':' + src.pulled(), 200, 30_000, "the writer's send calls and the source to stop moving");
    const pulled = src.pulled();
    await sleep(300); // a window in which nothing more may be pulled: that is the assertion
    expect(src.pulled()).toBe(pulled); // no unbounded buffering while the reader is stuck
    expect(pulled).toBeLessThan(N / 2);
    gate = undefined;
    release();
    await within(done, 'pipeline', 60_000);
    await waitFor(() => got.length >= N, 30_000, 'delivery');
    expectSequence(got, N);
  }, 90_000);

  it('end() finishes only after flush(): the stream emits finish once the messages are in the kernel', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const s = w.createWriteStream();
    for (let i = 0; i < 10; i++) s.write(msg(i));
    s.end();
    let finishedYet = false;
    s.on('finish', () => (finishedYet = true));
    await waitFor(() => w.metrics().queueDepth === 10, 10_000, 'the messages to be queued');
    await sleep(100); // a window in which 'finish' must not come: that is the assertion
    expect(finishedYet).toBe(false); // no reader: nothing could be flushed
    const { r, got } = await collector(path);
    await r.start();
    await within(finished(s), 'finish');
    expect(w.metrics()).toMatchObject({ sent: 10, queueDepth: 0 });
    await waitFor(() => got.length === 10, 10_000, 'delivery');
    expectSequence(got, 10);
  });

  it('a chunk of the wrong type errors the stream (ERR_INVALID_ARG_TYPE); nothing after it is sent', async () => {
    const path = tmpSocket();
    const { r, got } = await collector(path);
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST }));
    w.start();
    const chunks: unknown[] = [msg(0), msg(1), 42, msg(3)];
    await expect(pipeline(Readable.from(chunks), w.createWriteStream())).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await w.flush();
    // Everything the writer sent (flush() counted it) has arrived.
    await waitFor(() => got.length >= w.metrics().sent, 10_000, 'delivery');
    expect(got).toEqual([0, 1]);
  });

  it('a stopped Writer errors the stream with ERR_NOT_RUNNING', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST }));
    w.start();
    await w.stop({ timeoutMs: 0 });
    await expect(pipeline(Readable.from([msg(0)]), w.createWriteStream())).rejects.toMatchObject({ code: 'ERR_NOT_RUNNING' });
  });

  it('destroying the stream gives up on chunks waiting for room: they are never sent', async () => {
    const path = tmpSocket();
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedWrites: 5 }));
    w.start();
    const s = w.createWriteStream({ highWaterMark: 4 });
    s.on('error', () => {});
    for (let i = 0; i < 20; i++) s.write(msg(i));
    await waitFor(() => w.metrics().queueDepth === 5, 10_000, 'the queue to fill');
    s.destroy();
    await once(s, 'close');
    const { r, got } = await collector(path);
    await r.start();
    await w.flush();
    // Everything the writer sent (flush() counted it) has arrived.
    await waitFor(() => got.length >= w.metrics().sent, 10_000, 'delivery');
    expectSequence(got, 5);
    expect(w.metrics()).toMatchObject({ written: 5, dropped: 0 });
  });

  it('options: signal destroys the stream with an AbortError; bad options throw typed errors', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: FAST, maxBufferedWrites: 1 }));
    w.start();
    const ac = new AbortController();
    const p = pipeline(source(1000).readable, w.createWriteStream({ signal: ac.signal }));
    await waitFor(() => w.metrics().queueDepth === 1, 10_000, 'the pipeline to be under way'); // no reader: the queue (1) stays full
    ac.abort();
    const e = await p.then(
      () => undefined,
      (x: Error) => x,
    );
    expect(e?.name).toBe('AbortError');

    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (x) {
        return (x as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => w.createWriteStream({ highWaterMark: -1 }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => w.createWriteStream({ highWaterMark: '8' as never }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => w.createWriteStream({ signal: {} as never }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => w.createWriteStream({ objectMode: false } as never))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => w.createWriteStream(3 as never))).toBe('ERR_INVALID_ARG_TYPE');
  });
});
