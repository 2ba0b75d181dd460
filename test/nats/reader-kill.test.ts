// JetStream mode: the application's Reader (delivery 'acked') runs in its own
// process (test/fixtures/nats-app-reader.js, which logs with fsync what it
// handled) and is SIGKILLed twice mid-stream and started again on the same
// path while a stream of messages goes local Writer → bridge → JetStream →
// bridge → that Reader. Every message must arrive at least once across the
// Reader's three lives, first deliveries in order, and copies only as
// docs/nats.md and docs/acked.md describe them: after a restart, the messages
// the killed Reader had handled but whose acknowledgement had not reached the
// bridge's Writer, sent again in order and flagged `redelivered`.
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Writer } from '../../src';
import { Bridge } from '../../src/nats';
import { FIXTURES, Proc, killChildren, sleep, tmpSocket, waitFor, within } from '../helpers';
import { startNats, stopAllNats, type NatsServer } from './server';

let srv: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;

beforeAll(async () => {
  srv = await startNats();
  nc = await connect({ servers: srv.url });
  jsm = await jetstreamManager(nc);
  dir = mkdtempSync(join(tmpdir(), 'uds-ipc-nats-rkill-'));
});
afterEach(() => killChildren());
afterAll(async () => {
  await nc?.close();
  await stopAllNats();
  rmSync(dir, { recursive: true, force: true });
});

interface Entry {
  life: number;
  redelivered: boolean;
  index: number;
}

/** The complete lines of a life's log (a last line cut short by SIGKILL is ignored: its batch was never acknowledged). */
function readLog(file: string, life: number, n: number): Entry[] {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // '' after the last newline, or a line cut short
  return lines.map((l) => {
    const m = /^(\d+) ([01]) m(\d+)$/.exec(l);
    if (!m || Number(m[1]) !== life || Number(m[3]) >= n) throw new Error(`bad log line of life ${life}: ${JSON.stringify(l)}`);
    return { life, redelivered: m[2] === '1', index: Number(m[3]) };
  });
}

describe('JetStream mode: the local reader process SIGKILLed', () => {
  it('nothing lost, first deliveries in order, copies only of what a killed reader had handled (flagged redelivered) while the application Reader process is SIGKILLed twice mid-stream', async () => {
    const N = 100_000;
    const inPath = tmpSocket('rk-in.sock');
    const appPath = tmpSocket('rk-app.sock');
    const logs: string[] = [];
    const lives: Proc[] = [];
    const startReader = async (): Promise<Proc> => {
      const life = lives.length + 1;
      const log = join(dir, `life-${life}.log`);
      logs.push(log);
      const p = new Proc(process.execPath, [join(FIXTURES, 'nats-app-reader.js'), appPath, log, String(life)]);
      lives.push(p);
      await p.line((l) => l.event === 'listening', `reader life ${life} listening`);
      return p;
    };
    /** Messages logged by a life (its last report). */
    const logged = (p: Proc): number => {
      for (let i = p.lines.length - 1; i >= 0; i--) if (p.lines[i].event === 'logged') return p.lines[i].logged as number;
      return 0;
    };

    let reader = await startReader();
    const bridge = new Bridge({
      servers: srv.url,
      jetstream: { stream: 'RKILL' },
      routes: [
        { listen: inPath, publish: 'rkill.a' },
        { subscribe: 'rkill.a', connect: appPath, writerOptions: { reconnect: { initialDelayMs: 10, maxDelayMs: 100 } } },
      ],
    });
    const errors: string[] = [];
    bridge.on('error', (e, context) => errors.push(`${context}: ${(e as { code?: string }).code}: ${e.message}`));
    await bridge.start();
    const writer = new Writer(inPath, { delivery: 'acked' }).start();
    const sending = (async () => {
      for (let i = 0; i < N; i++) await writer.send(`m${i}`);
    })();

    // Two kills, each once the current life has logged a third of the stream.
    for (let k = 0; k < 2; k++) {
      const p = reader;
      await waitFor(() => logged(p) >= N / 3 || p.exit !== undefined, 120_000, `reader life ${k + 1} logged ${N / 3}`);
      expect(p.exit, p.stderr).toBeUndefined();
      p.kill('SIGKILL');
      await within(p.exited, `reader life ${k + 1} killed`);
      expect(p.exit!.signal).toBe('SIGKILL');
      reader = await startReader();
    }

    await within(sending, 'all sent', 120_000);
    await within(writer.acknowledged(), 'the bridge acknowledged all (all in the stream)', 120_000);
    // Done when the durable consumer has nothing left: every message was
    // acknowledged to JetStream, which the bridge does only after the local
    // reader acknowledged it, which it does only after logging it.
    const consumer = (await jsm.consumers.list('RKILL').next())[0].name;
    let settled = false;
    while (!settled) {
      const ci = await jsm.consumers.info('RKILL', consumer);
      settled = ci.num_pending === 0 && ci.num_ack_pending === 0 && ci.delivered.stream_seq >= N;
      if (!settled) await sleep(50);
    }
    reader.kill('SIGTERM');
    await within(reader.exited, 'last reader stopped');
    expect(reader.exit!.code, reader.stderr).toBe(0);

    const entries = logs.flatMap((f, i) => readLog(f, i + 1, N));
    const perLife = [1, 2, 3].map((life) => entries.filter((e) => e.life === life));
    // Each life was mid-stream: it delivered messages no earlier life had.
    const seen = new Set<number>();
    const firsts: number[] = [];
    let copies = 0;
    for (const [li, life] of perLife.entries()) {
      const before = seen.size;
      const maxBefore = before === 0 ? -1 : Math.max(...seen);
      const copyRun: number[] = [];
      let newSeen = false;
      let prev = -1;
      for (const e of life) {
        // in order within one life: copies first (from the first one not acknowledged), then new ones
        expect(e.index, `life ${li + 1}: ${e.index} after ${prev}`).toBeGreaterThan(prev);
        prev = e.index;
        if (seen.has(e.index)) {
          // a copy: only after a restart, flagged by the bridge's acked Writer, before anything new
          expect(e.redelivered, `life ${li + 1}: copy of m${e.index} not flagged redelivered`).toBe(true);
          expect(newSeen, `life ${li + 1}: copy of m${e.index} after a new message`).toBe(false);
          copyRun.push(e.index);
          copies++;
        } else {
          newSeen = true;
          seen.add(e.index);
          firsts.push(e.index);
        }
        if (li === 0) expect(e.redelivered).toBe(false);
      }
      // the copies are the tail of what the earlier lives had: a run ending at the last one they logged
      if (copyRun.length > 0) {
        expect(copyRun.at(-1)).toBe(maxBefore);
        expect(copyRun[copyRun.length - 1] - copyRun[0]).toBe(copyRun.length - 1);
      }
      expect(seen.size, `life ${li + 1} delivered nothing new`).toBeGreaterThan(before);
    }
    // every message at least once, first deliveries in the writer's order
    expect(seen.size).toBe(N);
    expect(firsts.every((x, i) => x === i)).toBe(true);
    // the stream stored each once; JetStream delivered nothing again (the bridge holds, +WPI) and no publish was retried
    expect((await jsm.streams.info('RKILL')).state.messages).toBe(N);
    const m = bridge.metrics();
    expect(m).toMatchObject({ redelivered: 0, retries: 0, duplicates: 0, dropped: 0, inFlight: 0, published: N, acked: 2 * N });
    console.log(
      `reader-kill test: ${N} messages, lives logged ${perLife.map((l) => l.length).join(' + ')}, ${copies} copies (flagged redelivered); bridge errors: ${errors.length}`,
    );
    await writer.stop();
    await bridge.stop();
  });
});
