// How messages are grouped on their way through: the Writer sends the first
// message of a burst at once and the rest of the burst together, and a
// Reader's batch memory (copied for small batches, a slab region for large
// ones) is released once the handler is done with it, or kept by retain().
import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { Reader, Writer, type Batch } from '../src';
import { FAST, tmpSocket, useTracking, waitFor, within, writeUntilSentInline } from './helpers';

const track = useTracking();

async function connectedPair(path: string, handler: (b: Batch) => void): Promise<{ r: Reader; w: Writer }> {
  const r = track(new Reader(path, handler));
  await r.start();
  const w = track(new Writer(path, { reconnect: FAST }));
  const connected = once(w, 'connect');
  w.start();
  await within(connected, "the writer's 'connect'");
  return { r, w };
}

describe('Writer: bursts', () => {
  it('sends the first message of a burst at once and the rest of the burst in one sendmsg when the task ends', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const { w } = await connectedPair(path, (batch) => {
      for (const m of batch) got.push(m.toString());
    });
    // Until the IO thread sleeps (nothing in flight): then the JS thread
    // sends. A warm-up message the JS thread sent itself shows that it does.
    const warmUps = await writeUntilSentInline(w, 'warm-up');
    await waitFor(() => got.length === warmUps, 10_000, 'the warm-up messages');

    const before = w.metrics().sendCalls;
    w.write('first');
    // Sent synchronously, inside write(): no thread hop, no added latency.
    expect(w.metrics().sendCalls).toBe(before + 1);
    for (let i = 0; i < 1000; i++) w.write(`m${i}`);
    // The rest of the burst waits for the end of the task...
    expect(w.metrics().sendCalls).toBe(before + 1);
    await Promise.resolve();
    await Promise.resolve();
    // ...and then goes out in one call (about 5 KB: any socket buffer takes it).
    expect(w.metrics().sendCalls).toBe(before + 2);
    await waitFor(() => got.length === warmUps + 1001, 10_000, 'every message of the burst');
    expect(got.slice(0, warmUps)).toEqual(Array(warmUps).fill('warm-up'));
    expect(got.slice(warmUps)).toEqual(['first', ...Array.from({ length: 1000 }, (_, i) => `m${i}`)]);
  });

  it('a queue smaller than the publish chunk still streams: maxBufferedBytes 4 KiB, 2,000 messages of 1 KiB', async () => {
    const path = tmpSocket();
    let n = 0;
    let sum = 0;
    const r = track(new Reader(path, (batch) => {
      for (const m of batch) {
        sum += m[0]!;
        n++;
      }
    }));
    await r.start();
    const w = track(new Writer(path, { reconnect: FAST, maxMessageSize: 1024, maxBufferedBytes: 4096 }));
    w.start();
    const msg = Buffer.alloc(1024);
    let expected = 0;
    for (let i = 0; i < 2000; i++) {
      msg[0] = i & 0xff;
      expected += i & 0xff;
      while (!w.write(msg)) await within(once(w, 'drain'), "'drain'");
    }
    await within(w.flush(), 'flush()');
    await waitFor(() => n === 2000, 10_000, 'all 2,000 messages');
    expect(sum).toBe(expected);
  });
});

describe('Reader: batch memory', () => {
  for (const [label, size] of [
    ['small batches (copied out of the slab)', 100],
    ['large batches (slab regions)', 40 * 1024],
  ] as const) {
    it(`${label}: views are emptied after the handler unless retain() was called`, async () => {
      const path = tmpSocket();
      const kept: { retained: boolean; view: Buffer; bytes: Uint8Array; want: number; batch: Batch }[] = [];
      let seen = 0;
      const { w } = await connectedPair(path, (batch) => {
        const retained = seen % 2 === 1;
        if (retained) batch.retain();
        // Half the batches' `bytes` are first read inside the handler, half only afterwards.
        for (const m of batch) kept.push({ retained, view: m, bytes: seen % 4 < 2 ? batch.bytes : undefined!, want: m[0]!, batch });
        seen++;
      });
      for (let i = 0; i < 6; i++) {
        w.write(Buffer.alloc(size, i + 1));
        await w.flush();
        await waitFor(() => seen > i, 10_000, `batch ${i}`);
      }
      // (A sync handler's batch is released as soon as it returns.)
      expect(kept.map((k) => k.want)).toEqual([1, 2, 3, 4, 5, 6]);
      for (const k of kept) {
        const bytes = k.bytes ?? k.batch.bytes;
        if (k.retained) {
          expect(k.view.length).toBe(size);
          expect(k.view.every((b) => b === k.want)).toBe(true);
          expect(bytes[k.batch.start(0)]).toBe(k.want);
        } else {
          expect({ view: k.view.length, bytes: bytes.length }).toEqual({ view: 0, bytes: 0 });
          // The offsets table went with it (a large batch's has its own buffer).
          expect(k.batch.start(0)).toBeUndefined();
        }
      }
    });
  }
});
