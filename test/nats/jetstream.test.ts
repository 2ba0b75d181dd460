// The NATS bridge in JetStream mode (at least once) against a real
// nats-server: the stream created when missing, refused when it does not
// cover a subject, and no loss while the bridge process is killed and
// restarted and while the local reader restarts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Reader, Writer, IpcError, type Batch } from '../../src';
import { Bridge } from '../../src/nats';
import { ROOT, tmpSocket, waitFor, within } from '../helpers';
import { startNats, stopAllNats, type NatsServer } from './server';

let srv: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const children: ChildProcess[] = [];

beforeAll(async () => {
  srv = await startNats();
  nc = await connect({ servers: srv.url });
  jsm = await jetstreamManager(nc);
});
afterAll(async () => {
  // a failed test may leave a bridge process behind
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await nc?.close();
  await stopAllNats();
});

/** `uds-ipc bridge ...` as a child process; resolves once it says it is ready. */
async function startBridgeProcess(args: string[]): Promise<{ child: ChildProcess; stderr: () => string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'bridge', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await waitFor(() => stderr.includes('ready') || child.exitCode !== null, 20_000, 'bridge ready');
  if (!stderr.includes('ready')) throw new Error(`bridge did not start: ${stderr}`);
  return { child, stderr: () => stderr, exit };
}

describe('JetStream mode (at least once)', () => {
  it('creates the stream (file storage, the routes\' subjects) and publishes with Nats-Msg-Id = session:sequence and the source headers', async () => {
    const path = tmpSocket('auto.sock');
    const app = tmpSocket('auto-app.sock');
    const got: string[] = [];
    const reader = new Reader(app, (b: Batch) => {
      for (const m of b) got.push(m.toString());
    }, { delivery: 'acked' });
    await reader.start();
    const bridge = new Bridge({ servers: srv.url, jetstream: { stream: 'AUTO' }, routes: [{ listen: path, publish: 'auto.a' }, { subscribe: 'auto.>', connect: app }] });
    await bridge.start();
    const info = await jsm.streams.info('AUTO');
    expect(info.config.subjects).toEqual(['auto.>']);
    expect(info.config.storage).toBe('file');
    expect(info.config.num_replicas).toBe(1);
    const w = new Writer(path, { delivery: 'acked' }).start();
    for (let i = 0; i < 500; i++) w.write(`a${i}`);
    await w.acknowledged(); // the stream has every one of them now
    expect((await jsm.streams.info('AUTO')).state.messages).toBe(500);
    const first = await jsm.streams.getMessage('AUTO', { seq: 1 });
    expect(first.string()).toBe('a0');
    expect(first.header.get('Nats-Msg-Id')).toBe(`${w.session}:1`);
    expect(first.header.get('Uds-Ipc-Pid')).toBe(String(process.pid));
    expect(first.header.get('Uds-Ipc-Uid')).toBe(String(process.getuid!()));
    await waitFor(() => got.length >= 500, 20_000, 'back at the local reader');
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => `a${i}`));
    await waitFor(() => bridge.metrics().inFlight === 0 && bridge.metrics().acked === 1000, 20_000, 'acked both ways');
    expect(bridge.metrics()).toMatchObject({ received: 1000, published: 500, written: 500, dropped: 0 });
    await w.stop();
    await bridge.stop();
    await reader.stop();
    // the durable consumer has nothing pending: every message was acked to NATS
    const consumers = await jsm.consumers.list('AUTO').next();
    expect(consumers).toHaveLength(1);
    expect(consumers[0].num_ack_pending).toBe(0);
    expect(consumers[0].num_pending).toBe(0);
  });

  it('an existing stream that does not cover the subject fails clearly (ERR_STREAM_MISMATCH) and is left as it was', async () => {
    await jsm.streams.add({ name: 'OTHER', subjects: ['other.*'] });
    for (const route of [{ listen: tmpSocket('o.sock'), publish: 'mine.x' }, { subscribe: 'other.>', connect: tmpSocket('o2.sock') }]) {
      const e = await new Bridge({ servers: srv.url, jetstream: { stream: 'OTHER' }, routes: [route] }).start().then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(IpcError);
      expect((e as IpcError).code).toBe('ERR_STREAM_MISMATCH');
      expect((e as IpcError).message).toMatch(/stream "OTHER" exists but does not cover the subject "(mine\.x|other\.>)" \(its subjects: other\.\*\)/);
    }
    expect((await jsm.streams.info('OTHER')).config.subjects).toEqual(['other.*']);
    // a durable consumer of that name for another subject: refused, left as it was
    await jsm.consumers.add('OTHER', { durable_name: 'taken', filter_subject: 'other.a', ack_policy: AckPolicy.Explicit });
    const taken = await new Bridge({ servers: srv.url, jetstream: { stream: 'OTHER' }, routes: [{ subscribe: 'other.b', connect: tmpSocket('o4.sock'), durable: 'taken' }] })
      .start()
      .then(() => undefined, (x: unknown) => x);
    expect((taken as IpcError).code).toBe('ERR_STREAM_MISMATCH');
    expect((taken as IpcError).message).toMatch(/durable consumer "taken" of stream "OTHER" exists for subject "other\.a", not "other\.b"/);
    expect((await jsm.consumers.info('OTHER', 'taken')).config.filter_subject).toBe('other.a');
    // a subject it covers is fine
    const ok = new Bridge({ servers: srv.url, jetstream: { stream: 'OTHER' }, routes: [{ listen: tmpSocket('o3.sock'), publish: 'other.y' }] });
    await ok.start();
    await ok.stop();
  });

  it('nothing lost while the bridge process is killed (SIGKILL) and restarted twice and the local reader restarts', async () => {
    const inPath = tmpSocket('loss-in.sock');
    const appPath = tmpSocket('loss-app.sock');
    const N = 100_000;
    const seen = new Map<string, number>();
    const onBatch = (b: Batch): void => {
      for (const m of b) {
        const k = m.toString();
        seen.set(k, (seen.get(k) ?? 0) + 1);
      }
    };
    let reader = new Reader(appPath, onBatch, { delivery: 'acked' });
    await reader.start();
    const args = ['--nats', srv.url, '--jetstream', 'LOSS', '--ack-wait', '2000', '--listen', inPath, '--publish', 'loss.a', '--subscribe', 'loss.a', '--connect', appPath];
    let bridge = await startBridgeProcess(args);
    const writer = new Writer(inPath, { delivery: 'acked', reconnect: { initialDelayMs: 20, maxDelayMs: 200 } }).start();
    const sending = (async () => {
      for (let i = 0; i < N; i++) await writer.send(`m${i}`);
    })();
    const killBridge = async (): Promise<void> => {
      bridge.child.kill('SIGKILL');
      await within(bridge.exit, 'bridge killed');
      bridge = await startBridgeProcess(args);
    };
    await waitFor(() => seen.size >= N / 4, 60_000, 'a quarter through');
    await killBridge();
    await waitFor(() => seen.size >= N / 2, 60_000, 'half through');
    // the local reader restarts: a forced stop with messages in flight, a new Reader on the path
    await reader.stop({ timeoutMs: 0 });
    reader = new Reader(appPath, onBatch, { delivery: 'acked' });
    await reader.start();
    await waitFor(() => seen.size >= (3 * N) / 4, 60_000, 'three quarters through');
    await killBridge();
    await within(sending, 'all sent', 60_000);
    await within(writer.acknowledged(), 'the bridge acknowledged all (all in the stream)', 60_000);
    await waitFor(() => seen.size >= N, 60_000, `every message at the local reader (have ${seen.size})`);
    const missing = Array.from({ length: N }, (_, i) => `m${i}`).filter((k) => !seen.has(k));
    expect(missing).toEqual([]);
    expect(seen.size).toBe(N);
    // the stream stored each message once: re-sends after the kills were de-duplicated by Nats-Msg-Id
    expect((await jsm.streams.info('LOSS')).state.messages).toBe(N);
    const dups = [...seen.values()].reduce((a, c) => a + c - 1, 0);
    console.log(`JetStream kill test: ${N} messages, ${dups} delivered more than once`);
    bridge.child.kill('SIGTERM');
    expect(await within(bridge.exit, 'bridge stopped by SIGTERM')).toBe(0);
    await writer.stop();
    await reader.stop();
  });
});
