// Acked delivery (issue #21): a reader process SIGKILLed and restarted 20
// times while one Writer in this process streams 200,000 messages (90 % of
// 64 B-1 KiB, 10 % of 10-200 KB, sizes from a seeded generator). The reader
// child (fixtures/acked-reader.js) appends (session, seq, redelivered, length,
// payload ok) per message to its life's log and fsyncs it before its handler
// returns. Kill points are random amounts of log growth, never times.
// At the end (writer.acknowledged() resolved, the last reader has the rest):
// every sequence is in the logs at least once; first deliveries come in
// sequence order; every later copy is of a sequence already delivered and is
// flagged redelivered; no reader life delivers a sequence twice; every payload
// is the one the writer wrote for batch.sequence(i).
import { describe, it, expect, afterEach } from 'vitest';
import { dirname, join } from 'node:path';
import { Writer, type IpcError } from '../src/index';
import { FAST, killChildren, rng, tmpSocket, useTracking, waitFor, within, type Proc } from './helpers';
import { BYTES_PER_ENTRY, megabytes, msg, pump, readLog, sizeOf, startReader, verify, type Entry } from './acked-log';

const track = useTracking(1000);
afterEach(() => killChildren());

describe('acked delivery: reader SIGKILLed and restarted while one writer streams', () => {
  it('200,000 messages, 20 kills at random moments: every message logged at least once, first deliveries in order, every copy flagged redelivered', async () => {
    const path = tmpSocket();
    const dir = dirname(path);
    const N = 200_000;
    const KILLS = 20;
    const SEED = 21;
    const sizes = msg.sizes(N, SEED);
    const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST }));
    const writerErrors: string[] = [];
    w.on('error', (e: IpcError, ctx: string) => writerErrors.push(`${ctx} ${e.code}`));
    w.start();
    expect(w.session).toMatch(/^[0-9a-f]{32}$/);

    const t0 = Date.now();
    let pumpError: unknown;
    const pumped = pump(w, sizes).catch((e) => void (pumpError = e));

    const logs: string[] = [];
    const killRng = rng(SEED + 1);
    const perLife = N / (KILLS + 1);
    let last: Proc | undefined;
    let torn = 0;
    const startMs: number[] = []; // per life: until the child listened
    const firstMs: number[] = []; // until its log had a first entry
    const lifeMs: number[] = []; // until the kill point
    for (let life = 0; life <= KILLS; life++) {
      const log = join(dir, `log.${life}`);
      logs.push(log);
      const lifeStart = Date.now();
      const r = await startReader(path, { log });
      startMs.push(Date.now() - lifeStart);
      if (life === KILLS) {
        last = r;
        break;
      }
      // A random moment: once this life's log has grown by 20-100 % of an even share.
      const grow = Math.floor((0.2 + 0.8 * killRng()) * perLife) * BYTES_PER_ENTRY;
      await waitFor(() => sizeOf(log) > 0 || r.exit !== undefined, 60_000, `reader life ${life}: a first delivery`);
      firstMs.push(Date.now() - lifeStart);
      await waitFor(() => sizeOf(log) >= grow || r.exit !== undefined || pumpError !== undefined, 60_000, `reader life ${life}: its log grown to ${grow} bytes`);
      lifeMs.push(Date.now() - lifeStart);
      expect(pumpError).toBeUndefined();
      expect(r.exit, `reader life ${life} exited by itself: ${r.stderr}`).toBeUndefined();
      r.kill('SIGKILL');
      await r.exited;
      expect(r.exit?.signal).toBe('SIGKILL');
      expect(r.all((l) => l.event === 'bad'), `reader life ${life}: payloads that failed the check`).toEqual([]);
    }
    await within(pumped, 'the writer to have written all 200,000 messages', 90_000);
    expect(pumpError).toBeUndefined();
    await within(w.acknowledged(), 'writer.acknowledged() with the last reader up', 90_000);
    const streamedMs = Date.now() - t0;

    const m = w.metrics();
    expect(m.acked).toBe(N);
    expect(m.unacked).toBe(0);
    // 20 readers died with messages in flight: the writer had to send some again.
    expect(m.resent).toBeGreaterThan(0);

    // The last reader stops gracefully; its metrics close the books.
    last!.kill('SIGTERM');
    const stopped = await last!.line((l) => l.event === 'stopped', 'the last reader stopped', 30_000);
    expect(stopped.result.discarded).toBe(0);
    expect(last!.all((l) => l.event === 'bad')).toEqual([]);
    expect(last!.all((l) => l.event === 'error')).toEqual([]);

    const lives: Entry[][] = logs.map((f, i) => {
      const { entries, torn: t } = readLog(f);
      if (t) torn++;
      if (i === KILLS) expect(t, 'the last (gracefully stopped) reader left a torn log line').toBe(false);
      return entries;
    });
    for (const [i, l] of lives.entries()) expect(l.length, `reader life ${i} delivered something`).toBeGreaterThan(0);
    const v = verify(lives, new Map([[w.session!, sizes]]));
    expect(v.problems).toEqual([]);
    // The last reader's own count: what it logged is what it delivered.
    expect(stopped.metrics.received).toBe(lives[KILLS].length);
    expect(stopped.metrics.redelivered).toBe(lives[KILLS].filter((e) => e.redelivered).length);
    expect(stopped.metrics.plainPeers).toBe(0);
    console.log(
      `[acked-crash] N=${N} (${megabytes(sizes)} MB) kills=${KILLS} streamed+acked in ${streamedMs} ms; log entries=${v.total} ` +
        `copies=${v.copies} firstRedelivered=${v.firstRedelivered} redeliveredFlags=${v.redeliveredFlags} tornLines=${torn} ` +
        `writer: resent=${m.resent} connects=${m.connects} errors=${JSON.stringify([...new Set(writerErrors)])}\n` +
        `  per life, ms: listening ${JSON.stringify(startMs)}\n  first entry ${JSON.stringify(firstMs)}\n  kill point ${JSON.stringify(lifeMs)}`,
    );
  }, 180_000);
});
