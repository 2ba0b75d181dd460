// Replies end to end: a Reader answering Writers on the same connections
// (connection.write()/send() on one side, onMessage on the other).
import { describe, it, expect } from 'vitest';
import { once } from 'node:events';
import { Reader, Writer, type Batch, type Connection } from '../src/index';
import { FAST, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking();

describe('duplex: Reader replies, Writer onMessage', () => {
  it('a reader replies to every message of 10 writers at once, 100k each: every reply to the right writer, in order', async () => {
    const path = tmpSocket();
    const W = 10;
    const N = 100_000;
    const reader = track(
      new Reader(
        path,
        async (batch) => {
          const c = batch.connection;
          for (const m of batch) {
            // The reply: the message with its first byte flipped.
            const r = Buffer.from(m);
            r[0] ^= 0xff;
            if (!c.write(r)) await c.send(r);
          }
        },
        { concurrency: 'connection' },
      ),
    );
    await reader.start();
    const got = new Array<number>(W).fill(0);
    const bad: string[] = [];
    const writers = Array.from({ length: W }, (_, k) =>
      track(
        new Writer(path, {
          reconnect: FAST,
          onMessage(batch: Batch) {
            for (const m of batch) {
              const seq = m.readUInt32LE(1);
              if (m[0] !== (k ^ 0xff) || seq !== got[k]) bad.push(`writer ${k}: got ${m[0] ^ 0xff}/${seq}, expected ${got[k]}`);
              got[k]++;
            }
          },
        }).start(),
      ),
    );
    await Promise.all(
      writers.map(async (w, k) => {
        const msg = Buffer.alloc(8);
        msg[0] = k;
        for (let i = 0; i < N; i++) {
          msg.writeUInt32LE(i, 1);
          if (!w.write(msg)) {
            await once(w, 'drain');
            i--;
          }
        }
      }),
    );
    await within(
      waitFor(() => got.every((n) => n >= N) || bad.length > 0, 120_000, 'every reply'),
      'every reply',
      130_000,
    );
    expect(bad.slice(0, 5)).toEqual([]);
    expect(got).toEqual(new Array(W).fill(N));
    expect(reader.metrics().repliesDropped).toBe(0);
    const received = writers.reduce((s, w) => s + w.metrics().received, 0);
    expect(received).toBe(W * N);
  }, 180_000);

  it("a writer's batch.connection is live: it answers the reader on the same connection; it refuses once that connection is gone", async () => {
    const path = tmpSocket();
    const seen: string[] = [];
    let readerConn: Connection | undefined;
    const reader = track(
      new Reader(path, (batch) => {
        readerConn = batch.connection;
        for (const m of batch) seen.push(m.toString());
      }),
    );
    await reader.start();
    let writerConn: Connection | undefined;
    const writer = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage(batch) {
          writerConn = batch.connection;
          for (const m of batch) batch.connection.write(`pong ${m.toString()}`);
        },
      }).start(),
    );
    writer.write('hello');
    await waitFor(() => readerConn !== undefined, 10_000, 'the reader sees the writer');
    readerConn!.write('ping 1');
    await waitFor(() => seen.includes('pong ping 1'), 10_000, 'the pong');
    expect(writerConn!.connected).toBe(true);
    expect(writerConn!.pid).toBe(process.pid);
    expect(writerConn!.id).toBe(1);
    // The reader stops: the writer's connection is gone, and its old Connection refuses.
    await reader.stop();
    await waitFor(() => !writerConn!.connected, 10_000, 'the writer sees the connection end');
    expect(() => writerConn!.write('late')).toThrow(expect.objectContaining({ code: 'ERR_NOT_CONNECTED' }));
    await expect(writerConn!.send('late')).rejects.toMatchObject({ code: 'ERR_NOT_CONNECTED' });
  });

  it('a reader flooding replies at a writer whose onMessage is slow: the writer holds at most about maxPendingBytes, the reader at most maxReplyBytes, nothing is lost', async () => {
    const path = tmpSocket();
    const maxReplyBytes = 256 * 1024;
    let conn: Connection | undefined;
    const reader = track(new Reader(path, (b) => void (conn = b.connection), { maxReplyBytes }));
    await reader.start();
    let release!: () => void;
    let gate: Promise<void> | undefined = new Promise<void>((r) => (release = r));
    let got = 0;
    let order = true;
    const writer = track(
      new Writer(path, {
        maxPendingBytes: 256 * 1024,
        async onMessage(batch) {
          for (const m of batch) {
            if (m.readUInt32LE(0) !== got) order = false;
            got++;
          }
          if (gate) await gate;
        },
      }).start(),
    );
    writer.write('hi');
    await waitFor(() => conn !== undefined, 10_000, 'connection');
    const N = 2000; // 2000 × 16 KiB = 32 MiB of replies
    let maxBuffered = 0;
    const flood = (async () => {
      const msg = Buffer.alloc(16 * 1024);
      for (let i = 0; i < N; i++) {
        msg.writeUInt32LE(i, 0);
        await conn!.send(msg);
        maxBuffered = Math.max(maxBuffered, conn!.bufferedBytes);
      }
    })();
    await waitFor(() => writer.metrics().pauses > 0, 10_000, 'the writer pausing its reads');
    expect(got).toBeLessThan(N);
    expect(maxBuffered).toBeLessThanOrEqual(maxReplyBytes);
    gate = undefined;
    release();
    await within(flood, 'the flood sent');
    await waitFor(() => got === N, 30_000, 'every reply');
    expect(order).toBe(true);
    expect(reader.metrics().repliesDropped).toBe(0);
  });
});
