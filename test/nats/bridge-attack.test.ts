// Attacks on the NATS bridge (issue #20): a hostile NATS publisher, a hostile
// local writer, hostile configuration files, stops and server deaths mid-stream.
// Each test asserts the documented behaviour; eight failed against the first
// bridge release and were fixed (or, for Nats-Msg-Id reuse, documented and
// tested with the NATS authorization that prevents it).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Reader, Writer } from '../../src';
import { Bridge, readBridgeConfig } from '../../src/nats';
import { ROOT, tmpSocket, waitFor, within } from '../helpers';
import { startNats, stopAllNats, type NatsServer } from './server';

let srv: NatsServer;
let nc: NatsConnection;
const children: ChildProcess[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  srv = await startNats();
  nc = await connect({ servers: srv.url });
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await nc?.close();
  await stopAllNats();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'uds-ipc-battack-'));
  dirs.push(d);
  return d;
}

const CLI = join(ROOT, 'dist', 'cli.js');

/** A bridge in its own process (a crash there does not take the test runner with it). */
interface ChildBridge {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  out: () => string;
  exit: Promise<{ code: number | null; signal: string | null }>;
  ask(): Promise<{ metrics: Record<string, number | boolean>; rss: number }>;
}
function childBridge(opts: Record<string, unknown>): ChildBridge {
  const script = `const { Bridge } = require(${JSON.stringify(join(ROOT, 'dist', 'nats', 'index.js'))});
    const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
    const b = new Bridge(JSON.parse(process.argv[1]));
    b.on('error', (e, c) => say({ error: c, code: e.code, message: e.message }));
    b.start().then(() => say({ ready: true }), (e) => { say({ failed: e.code, message: e.message }); process.exit(3); });
    let buf = '';
    process.stdin.on('data', (d) => { buf += d; while (buf.includes('\\n')) { buf = buf.slice(buf.indexOf('\\n') + 1); say({ metrics: b.metrics(), rss: process.memoryUsage().rss }); } });
    process.on('SIGTERM', () => b.stop().then(() => { say({ stopped: b.metrics() }); process.exit(0); }));`;
  const child = spawn(process.execPath, ['-e', script, JSON.stringify(opts)], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  let out = '';
  let pending = '';
  const waiters: ((m: { metrics: Record<string, number | boolean>; rss: number }) => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    pending += d.toString();
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, i);
      pending = pending.slice(i + 1);
      out += line + '\n';
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue; // not one of ours (something the library printed)
      }
      lines.push(o);
      if (o.metrics) waiters.shift()?.(o as never);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exit = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return {
    child,
    lines,
    out: () => out,
    exit,
    ask: () =>
      new Promise((r) => {
        waiters.push(r);
        child.stdin!.write('m\n');
      }),
  };
}

async function appReader(path: string, opts: Record<string, unknown> = {}): Promise<{ reader: Reader; got: Buffer[] }> {
  const got: Buffer[] = [];
  const reader = new Reader(path, (b) => {
    for (const m of b) got.push(Buffer.from(m));
  }, opts);
  await reader.start();
  return { reader, got };
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [CLI, 'bridge', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  children.push(child);
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  return new Promise((r) => child.once('exit', (code) => r({ code, stderr, stdout })));
}

// ─── 1. The remote side: anyone who may publish on the subscribed subject ────

describe('remote publisher (core mode)', () => {
  it('a NATS message larger than the local Writer\'s maxMessageSize is dropped, counted and reported; the bridge goes on (it used to throw inside the NATS client\'s callback and stop its reader)', async () => {
    const appPath = tmpSocket('big-app.sock');
    const { reader, got } = await appReader(appPath);
    const b = childBridge({ servers: srv.url, routes: [{ subscribe: 'atk.big', connect: appPath, writerOptions: { maxMessageSize: 1024 } }] });
    await waitFor(() => b.lines.some((l) => l.ready) || b.child.exitCode !== null, 20_000, 'bridge ready');
    expect(b.lines.some((l) => l.ready)).toBe(true);
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'bridge connected to the app reader');
    nc.publish('atk.big', Buffer.alloc(4096, 7));
    nc.publish('atk.big', 'after');
    await nc.flush();
    // the bridge must survive, and the next message come through
    await waitFor(() => got.length >= 1 || b.child.exitCode !== null, 10_000, 'the message after the oversized one').catch(async (e: Error) => {
      const m = await within(b.ask(), 'metrics', 2000).catch(() => undefined);
      throw new Error(`${e.message}; bridge output:\n${b.out()}\nmetrics ${JSON.stringify(m?.metrics)}`);
    });
    expect(b.child.exitCode, `bridge process died:\n${b.out()}`).toBeNull();
    expect(got.map(String)).toEqual(['after']);
    const { metrics } = await b.ask();
    expect(metrics.dropped).toBe(1);
    expect(metrics.errors).toBeGreaterThanOrEqual(1);
    b.child.kill('SIGTERM');
    expect((await within(b.exit, 'bridge exit')).code).toBe(0);
    await reader.stop();
  });

  it('the same with the CLI\'s defaults: a server with max_payload 16 MiB, one 11 MiB message from anyone is dropped, the subscribe route goes on', async () => {
    const big = await startNats({ jetstream: false, config: 'max_payload: 16777216' });
    const appPath = tmpSocket('cli-big-app.sock');
    const { reader, got } = await appReader(appPath, { maxMessageSize: 16 * 1024 * 1024 });
    const child = spawn(process.execPath, [CLI, 'bridge', '--nats', big.url, '--subscribe', 'atk.cbig', '--connect', appPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'ready');
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const pub = await connect({ servers: big.url });
    pub.publish('atk.cbig', Buffer.alloc(11 * 1024 * 1024, 1));
    pub.publish('atk.cbig', 'after');
    await pub.flush();
    let ok = true;
    await waitFor(() => got.length >= 1, 10_000, 'after').catch(() => (ok = false));
    child.kill('SIGTERM');
    const code = await within(exit, 'exit');
    await pub.close();
    await reader.stop();
    await big.stop();
    expect({ delivered: got.map(String), code, warned: /warning: writer: ERR_MESSAGE_TOO_LARGE/.test(stderr), dropped1: /dropped 1/.test(stderr) }).toEqual({
      delivered: ['after'],
      code: 0,
      warned: true,
      dropped1: true,
    });
    void ok;
  });

  it('a message larger than the application Reader\'s maxMessageSize: refused there, the bridge reconnects, later messages still arrive', async () => {
    const appPath = tmpSocket('small-app.sock');
    const { reader, got } = await appReader(appPath, { maxMessageSize: 1024 });
    const bridge = await new Bridge({ servers: srv.url, routes: [{ subscribe: 'atk.rsmall', connect: appPath }] }).start();
    const errors: string[] = [];
    bridge.on('error', (e, c) => errors.push(`${c} ${(e as { code?: string }).code}`));
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    nc.publish('atk.rsmall', Buffer.alloc(4096, 1));
    await nc.flush();
    await waitFor(() => bridge.metrics().received === 1, 10_000, 'received');
    // keep publishing small ones until they come through (the writer may be reconnecting)
    for (let i = 0; got.length === 0 && i < 400; i++) {
      nc.publish('atk.rsmall', `small ${i}`);
      await nc.flush();
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((m) => m.length < 1024)).toBe(true);
    await bridge.stop();
    await reader.stop();
  });

  it('forged Uds-Ipc-* headers, a reply subject, an empty body: only the body reaches the local reader, nothing is replied', async () => {
    const appPath = tmpSocket('forge-app.sock');
    const { reader, got } = await appReader(appPath);
    const bridge = await new Bridge({ servers: srv.url, routes: [{ subscribe: 'atk.forge', connect: appPath }] }).start();
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const replies: string[] = [];
    nc.subscribe('atk.reply.inbox', { callback: (_e, m) => replies.push(m.string()) });
    const h = headers();
    h.set('Uds-Ipc-Host', 'trusted-host');
    h.set('Uds-Ipc-Pid', '1');
    h.set('Uds-Ipc-Uid', '0');
    h.set('Nats-Msg-Id', 'forged:1');
    nc.publish('atk.forge', 'forged', { headers: h, reply: 'atk.reply.inbox' });
    nc.publish('atk.forge', new Uint8Array(0), { reply: 'atk.reply.inbox' });
    nc.publish('atk.forge', 'last');
    await nc.flush();
    await waitFor(() => got.length >= 3, 10_000, 'three messages');
    expect(got.map(String)).toEqual(['forged', '', 'last']);
    await nc.flush();
    expect(replies).toEqual([]);
    expect(bridge.metrics()).toMatchObject({ received: 3, written: 3, dropped: 0 });
    await bridge.stop();
    await reader.stop();
  });

  it('a flood faster than the local reader: dropped and counted, the bridge\'s memory stays bounded', async () => {
    const appPath = tmpSocket('flood-app.sock');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reader = new Reader(appPath, async () => {
      await gate;
    }, { maxPendingBytes: 64 * 1024 });
    await reader.start();
    const b = childBridge({ servers: srv.url, routes: [{ subscribe: 'atk.flood', connect: appPath }] });
    await waitFor(() => b.lines.some((l) => l.ready), 20_000, 'bridge ready');
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const before = (await b.ask()).rss;
    const body = Buffer.alloc(16 * 1024, 3);
    const N = 20_000; // 320 MB offered
    for (let i = 0; i < N; i++) {
      nc.publish('atk.flood', body);
      if (i % 200 === 199) await nc.flush();
    }
    await nc.flush();
    let m = await b.ask();
    let peak = m.rss;
    while ((m.metrics.received as number) < N) {
      expect(b.child.exitCode).toBeNull();
      m = await b.ask();
      peak = Math.max(peak, m.rss, rssOf(b.child.pid!));
      if ((m.metrics.received as number) < N) await new Promise((r) => setImmediate(r));
    }
    expect(m.metrics.dropped).toBeGreaterThan(0);
    expect((m.metrics.written as number) + (m.metrics.dropped as number)).toBe(N);
    // the Writer's default queue is 16 MiB: allow that, twice, and the client's buffers
    expect(peak - before).toBeLessThan(128 * 1024 * 1024);
    release();
    b.child.kill('SIGTERM');
    expect((await within(b.exit, 'bridge exit')).code).toBe(0);
    await reader.stop();
  });
});

describe('remote publisher (JetStream mode)', () => {
  it('a stream message larger than the local Writer\'s maxMessageSize is reported, counted as dropped and terminated: JetStream does not deliver it again', async () => {
    const appPath = tmpSocket('jsbig-app.sock');
    const { reader, got } = await appReader(appPath, { delivery: 'acked' });
    const bridge = new Bridge({
      servers: srv.url,
      jetstream: { stream: 'ATKBIG', ackWaitMs: 1000 },
      routes: [{ subscribe: 'atkbig.in', connect: appPath, durable: 'atkbig', writerOptions: { maxMessageSize: 1024 } }],
    });
    const errors: string[] = [];
    bridge.on('error', (e, c) => errors.push(`${c} ${(e as { code?: string }).code}`));
    await bridge.start();
    const js = jetstream(nc);
    await js.publish('atkbig.in', Buffer.alloc(4096, 9));
    await js.publish('atkbig.in', 'after');
    await waitFor(() => got.length >= 1, 20_000, 'the message after the oversized one');
    expect(got.map(String)).toEqual(['after']);
    expect(errors[0]).toBe('writer ERR_MESSAGE_TOO_LARGE');
    // The poison message should be settled (term or ack), not left pending for redelivery.
    const jsm = await jetstreamManager(nc);
    let info = await jsm.consumers.info('ATKBIG', 'atkbig');
    const end = Date.now() + 4000; // four ack_waits
    while (Date.now() < end && info.num_redelivered === 0) {
      await new Promise((r) => setTimeout(r, 100));
      info = await jsm.consumers.info('ATKBIG', 'atkbig');
    }
    const m = bridge.metrics();
    await bridge.stop();
    await reader.stop();
    expect({ redelivered: m.redelivered, numRedelivered: info.num_redelivered, numAckPending: info.num_ack_pending, errors: errors.length }).toEqual({
      redelivered: 0,
      numRedelivered: 0,
      numAckPending: 0,
      errors: 1,
    });
  });

  it("a stream subject only the bridges may publish on (NATS authorization, as docs/nats.md asks): another user cannot pre-empt a local writer's next Nats-Msg-Id, every genuine message is stored", async () => {
    // Without it, anyone who may publish on the subject could reuse the next
    // "<session>:<seq>" (visible in the stream) and the stream would drop the
    // genuine message as a duplicate: docs/nats.md, "Who may publish".
    const authd = await startNats({
      config: [
        'authorization {',
        '  users = [',
        '    { user: "bridge", password: "bridgepw" }',
        '    { user: "other", password: "otherpw", permissions: { publish: { deny: ["atkdedup.>"] } } }',
        '  ]',
        '}',
      ].join('\n'),
    });
    const admin = await connect({ servers: authd.url, user: 'bridge', pass: 'bridgepw' });
    const other = await connect({ servers: authd.url, user: 'other', pass: 'otherpw' });
    const inPath = tmpSocket('dedup-in.sock');
    const bridge = await new Bridge({ servers: authd.url, user: 'bridge', password: 'bridgepw', jetstream: { stream: 'ATKDEDUP' }, routes: [{ listen: inPath, publish: 'atkdedup.x' }] }).start();
    const w = new Writer(inPath, { delivery: 'acked' }).start();
    try {
      w.write('genuine 0');
      await within(w.acknowledged(), 'the first message acknowledged');
      const jsm = await jetstreamManager(admin);
      const first = await jsm.streams.getMessage('ATKDEDUP', { seq: 1 });
      const [session, seq] = first!.header.get('Nats-Msg-Id').split(':');
      // The other user tries to publish the next sequence numbers first: refused by the server.
      const js = jetstream(other, { timeout: 1000 });
      let refused = 0;
      for (let i = 1; i <= 3; i++) {
        const h = headers();
        h.set('Nats-Msg-Id', `${session}:${Number(seq) + i}`);
        await js.publish('atkdedup.x', `forged ${i}`, { headers: h }).catch(() => refused++);
      }
      expect(refused).toBe(3);
      for (let i = 1; i <= 3; i++) w.write(`genuine ${i}`);
      await within(w.acknowledged(), 'the genuine messages acknowledged');
      const stored: string[] = [];
      const n = (await jsm.streams.info('ATKDEDUP')).state.messages;
      for (let k = 1; k <= n; k++) stored.push((await jsm.streams.getMessage('ATKDEDUP', { seq: k }))!.string());
      expect({ duplicates: bridge.metrics().duplicates, stored }).toEqual({ duplicates: 0, stored: ['genuine 0', 'genuine 1', 'genuine 2', 'genuine 3'] });
    } finally {
      await w.stop();
      await bridge.stop();
      await admin.close();
      await other.close();
      await authd.stop();
    }
  });

  it('a flood into the stream with a stalled local reader: pulling stops, in flight stays within maxInFlight', async () => {
    const appPath = tmpSocket('jsflood-app.sock');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let handled = 0;
    const reader = new Reader(appPath, async (b) => {
      handled += b.length;
      await gate;
    }, { delivery: 'acked' });
    await reader.start();
    const bridge = await new Bridge({
      servers: srv.url,
      jetstream: { stream: 'ATKFLOOD', maxInFlight: 64 },
      routes: [{ subscribe: 'atkflood.in', connect: appPath, durable: 'atkflood' }],
    }).start();
    const js = jetstream(nc);
    const N = 2000;
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) acks.push(js.publish('atkflood.in', `m${i}`));
    await Promise.all(acks);
    const jsm = await jetstreamManager(nc);
    await waitFor(() => bridge.metrics().received >= 64, 20_000, 'the window filled');
    // JetStream holds the rest: the consumer's max_ack_pending is the window
    let info = await jsm.consumers.info('ATKFLOOD', 'atkflood');
    await waitFor(() => info.num_ack_pending === 64, 10_000, 'ack pending at the window');
    info = await jsm.consumers.info('ATKFLOOD', 'atkflood');
    expect(info.num_pending).toBeGreaterThan(0);
    expect(bridge.metrics().received).toBeLessThanOrEqual(64);
    expect(bridge.metrics().inFlight).toBeLessThanOrEqual(64);
    release();
    await waitFor(() => bridge.metrics().acked === N, 60_000, 'everything acked once released');
    expect(handled).toBeGreaterThanOrEqual(N);
    await bridge.stop();
    await reader.stop();
  });
});

// ─── 2. The local side: a hostile local writer on the listen socket ─────────

describe('hostile local writers', () => {
  it('idle connections that never send, and many of them, do not stop an honest writer', async () => {
    const path = tmpSocket('idle.sock');
    const got: string[] = [];
    const sub = nc.subscribe('atk.idle', { callback: (_e, m) => got.push(m.string()) });
    await nc.flush();
    const bridge = await new Bridge({ servers: srv.url, routes: [{ listen: path, publish: 'atk.idle' }] }).start();
    const socks: net.Socket[] = [];
    for (let i = 0; i < 200; i++) {
      const s = net.connect(path);
      s.on('error', () => undefined);
      socks.push(s);
    }
    await Promise.all(socks.map((s) => new Promise<void>((r) => void s.once('connect', () => r()))));
    // one sends half a frame header and stalls
    socks[0].write(Buffer.from([0xff]));
    const w = new Writer(path).start();
    for (let i = 0; i < 100; i++) w.write(`honest ${i}`);
    await w.flush();
    await waitFor(() => got.length >= 100, 10_000, 'the honest writer\'s messages');
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => `honest ${i}`));
    for (const s of socks) s.destroy();
    await w.stop();
    await bridge.stop();
    sub.unsubscribe();
  });

  it('a writer whose message exceeds max_payload is refused (reported, counted); another writer goes on', async () => {
    const small = await startNats({ config: 'max_payload: 4096', jetstream: false });
    const path = tmpSocket('mp2.sock');
    const bridge = await new Bridge({ servers: small.url, routes: [{ listen: path, publish: 'atk.mp' }] }).start();
    const errors: string[] = [];
    bridge.on('error', (e, c) => errors.push(`${c} ${(e as { code?: string }).code}`));
    const nc2 = await connect({ servers: small.url });
    const got: string[] = [];
    nc2.subscribe('atk.mp', { callback: (_e, m) => got.push(m.string()) });
    await nc2.flush();
    const bad = new Writer(path, { maxMessageSize: 1 << 20 }).start();
    bad.write(Buffer.alloc(100_000));
    await waitFor(() => errors.length > 0, 10_000, 'refused');
    expect(errors[0]).toBe('reader ERR_MESSAGE_TOO_LARGE');
    expect(bridge.metrics().errors).toBeGreaterThanOrEqual(1);
    const good = new Writer(path).start();
    good.write('still fine');
    await good.flush();
    await waitFor(() => got.length === 1, 10_000, 'the good writer\'s message');
    expect(got).toEqual(['still fine']);
    await bad.stop({ timeoutMs: 100 });
    await good.stop();
    await bridge.stop();
    await nc2.close();
    await small.stop();
  });

  it('a local flood with nobody slow on NATS: everything published, the bridge\'s memory bounded', async () => {
    const path = tmpSocket('lflood.sock');
    const b = childBridge({ servers: srv.url, routes: [{ listen: path, publish: 'atk.lflood' }] });
    await waitFor(() => b.lines.some((l) => l.ready), 20_000, 'bridge ready');
    const before = (await b.ask()).rss;
    const w = new Writer(path).start();
    const body = Buffer.alloc(8 * 1024, 5);
    const N = 30_000; // 240 MB
    let peak = before;
    for (let i = 0; i < N; i++) {
      await w.send(body);
      if (i % 1000 === 0) peak = Math.max(peak, rssOf(b.child.pid!));
    }
    await w.flush();
    let m = await b.ask();
    while ((m.metrics.published as number) < N) {
      peak = Math.max(peak, m.rss);
      m = await b.ask();
    }
    expect(m.metrics).toMatchObject({ received: N, published: N, dropped: 0 });
    expect(peak - before).toBeLessThan(128 * 1024 * 1024);
    await w.stop();
    b.child.kill('SIGTERM');
    expect((await within(b.exit, 'bridge exit')).code).toBe(0);
  });
});

// ─── 3. Configuration and the command line ───────────────────────────────────

describe('hostile configuration', () => {
  const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();

  it('__proto__ and constructor keys (top level, routes, jetstream) are refused; Object.prototype is unchanged', () => {
    const d = tmpDir();
    const cases = [
      '{"servers":"nats://127.0.0.1:1","routes":[{"listen":"/tmp/x.sock","publish":"a"}],"__proto__":{"polluted":1}}',
      '{"servers":"nats://127.0.0.1:1","routes":[{"listen":"/tmp/x.sock","publish":"a","__proto__":{"polluted":1}}]}',
      '{"servers":"nats://127.0.0.1:1","routes":[{"__proto__":{"listen":"/tmp/x.sock","publish":"a"}}]}',
      '{"servers":"nats://127.0.0.1:1","routes":[{"subscribe":"a","connect":"/tmp/x.sock","constructor":{"prototype":{"polluted":1}}}]}',
      '{"servers":"nats://127.0.0.1:1","jetstream":{"stream":"S","__proto__":{"polluted":1}},"routes":[{"listen":"/tmp/x.sock","publish":"a"}]}',
      '{"servers":"nats://127.0.0.1:1","constructor":{"prototype":{"polluted":1}},"routes":[{"listen":"/tmp/x.sock","publish":"a"}]}',
    ];
    cases.forEach((text, i) => {
      const f = join(d, `proto${i}.json`);
      writeFileSync(f, text);
      let e: unknown;
      try {
        readBridgeConfig(f);
      } catch (x) {
        e = x;
      }
      expect((e as { code?: string })?.code, text).toBe('ERR_INVALID_ARG_VALUE');
      // and the same objects handed to the API
      let e2: unknown;
      try {
        new Bridge(JSON.parse(text) as never);
      } catch (x) {
        e2 = x;
      }
      expect((e2 as { code?: string })?.code, `API: ${text}`).toBe('ERR_INVALID_ARG_VALUE');
    });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoBefore);
  });

  it('__proto__ in the API\'s readerOptions / writerOptions (from JSON.parse): refused at start, Object.prototype unchanged', async () => {
    const path = tmpSocket('proto-r.sock');
    const results: string[] = [];
    for (const route of [
      { listen: path, publish: 'atk.proto', readerOptions: JSON.parse('{"__proto__":{"maxMessageSize":1e9,"delivery":"acked"}}') as object },
      { subscribe: 'atk.proto', connect: path, writerOptions: JSON.parse('{"__proto__":{"maxMessageSize":1e9,"delivery":"acked"}}') as object },
    ]) {
      let code: string | undefined = 'constructed';
      let b: Bridge | undefined;
      try {
        b = new Bridge({ servers: srv.url, routes: [route as never] });
        await b.start();
        code = 'started';
      } catch (e) {
        code = (e as { code?: string }).code;
      }
      await b?.stop();
      results.push(code ?? 'no code');
    }
    expect(results).toEqual(['ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_VALUE']);
    expect(({} as Record<string, unknown>).maxMessageSize).toBeUndefined();
    expect(({} as Record<string, unknown>).delivery).toBeUndefined();
  });

  it('deeply nested JSON is refused cleanly (no stack overflow)', () => {
    const d = tmpDir();
    const f = join(d, 'deep.json');
    const depth = 500_000;
    writeFileSync(f, `{"routes":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    let e: unknown;
    try {
      readBridgeConfig(f);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(TypeError);
    expect((e as { code?: string }).code).toMatch(/^ERR_INVALID_ARG_(VALUE|TYPE)$/);
    writeFileSync(f, '['.repeat(depth));
    try {
      readBridgeConfig(f);
    } catch (x) {
      e = x;
    }
    expect((e as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
  });

  it('a config that is a symlink to a shadow-like file: refused, and the error quotes none of its content', async () => {
    const d = tmpDir();
    const shadow = join(d, 'shadow');
    writeFileSync(shadow, 'root:$6$SECRETSALT$SECRETHASHVALUE:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n', { mode: 0o600 });
    const link = join(d, 'bridge.json');
    symlinkSync(shadow, link);
    const r = await within(runCli(['--config', link, '--nats', 'nats://127.0.0.1:1']), 'cli');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('ERR_INVALID_ARG_VALUE');
    expect(r.stderr).not.toMatch(/SECRET|root:|daemon/);
  });

  it('a --config that never ends (/dev/zero) is refused (not a regular file), not read without limit', async () => {
    const child = spawn(process.execPath, [CLI, 'bridge', '--config', '/dev/zero', '--nats', 'nats://127.0.0.1:1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let peak = 0;
    let exited = false;
    void exit.then(() => (exited = true));
    const end = Date.now() + 15_000;
    while (!exited && Date.now() < end && peak < 512 * 1024 * 1024) {
      try {
        peak = Math.max(peak, rssOf(child.pid!));
      } catch {
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    if (!exited) child.kill('SIGKILL');
    const code = await exit;
    expect({ code, peakUnder64MiB: peak < 64 * 1024 * 1024, usage: /ERR_INVALID_ARG_VALUE/.test(stderr) }).toEqual({ code: 2, peakUnder64MiB: true, usage: true });
  });

  it('a numeric "password" or "token" in a config file is not echoed in the usage error', () => {
    const d = tmpDir();
    const f = join(d, 'num.json');
    writeFileSync(f, '{"servers":"nats://127.0.0.1:1","user":"u","password":918273645,"routes":[{"listen":"/tmp/x.sock","publish":"a"}]}');
    let e: unknown;
    try {
      readBridgeConfig(f);
    } catch (x) {
      e = x;
    }
    expect((e as { code?: string }).code).toBe('ERR_INVALID_ARG_TYPE');
    expect((e as Error).message).not.toContain('918273645');
    writeFileSync(f, '{"servers":"nats://127.0.0.1:1","token":555666777,"routes":[{"listen":"/tmp/x.sock","publish":"a"}]}');
    try {
      readBridgeConfig(f);
    } catch (x) {
      e = x;
    }
    expect((e as Error).message).not.toContain('555666777');
  });

  it('a config that is not JSON near a secret does not echo the secret', async () => {
    const d = tmpDir();
    const f = join(d, 'bad.json');
    for (const text of [
      '{"servers":"nats://127.0.0.1:1","token":"hunter2hunter2" "routes":[]}',
      '{"servers":"nats://127.0.0.1:1","password":"hunter2hunter2\u0001","user":"u","routes":[]}',
      '{"token":"hunter2hunter2",}',
      "{'token':'hunter2hunter2'}",
    ]) {
      writeFileSync(f, text);
      const r = await within(runCli(['--config', f]), 'cli');
      expect(r.code, text).toBe(2);
      expect(r.stderr, text).not.toContain('hunter2');
    }
  });

  it('credentials in a server URL (nats://user:password@host) are not echoed when the connection fails', async () => {
    const r = await within(runCli(['--nats', 'nats://bridge:hunter2secret@127.0.0.1:1', '--listen', tmpSocket('url.sock'), '--publish', 'a']), 'cli');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ERR_NATS');
    expect(r.stderr).not.toContain('hunter2secret');
  });

  it('wrong token / password from a --config file is not echoed (ERR_NATS, exit 1); the status lines hold no secret', async () => {
    const tokened = await startNats({ jetstream: false, args: ['--auth', 'rightTok3n'] });
    const d = tmpDir();
    const f = join(d, 'tok.json');
    writeFileSync(f, JSON.stringify({ servers: tokened.url, token: 'wrongTok3nXYZ', routes: [{ listen: tmpSocket('tok.sock'), publish: 'a' }] }));
    const bad = await within(runCli(['--config', f]), 'cli');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('ERR_NATS');
    expect(bad.stderr).not.toContain('wrongTok3nXYZ');
    expect(bad.stderr).not.toContain('rightTok3n');
    // a good one: status lines and the stop line hold no secret
    writeFileSync(f, JSON.stringify({ servers: tokened.url, token: 'rightTok3n', routes: [{ listen: tmpSocket('tok2.sock'), publish: 'a' }] }));
    const child = spawn(process.execPath, [CLI, 'bridge', '--config', f], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'ready');
    child.kill('SIGTERM');
    expect(await within(exit, 'exit')).toBe(0);
    expect(stderr).toContain('stopped');
    expect(stderr).not.toContain('rightTok3n');
    await tokened.stop();
  });
});

// ─── 4. Stop and restart ─────────────────────────────────────────────────────

describe('stop and restart under load', () => {
  it('SIGTERM to the CLI while a local writer floods: it drains within the deadline and exits 0', async () => {
    const inPath = tmpSocket('term-in.sock');
    const child = spawn(process.execPath, [CLI, 'bridge', '--nats', srv.url, '--listen', inPath, '--publish', 'atk.term'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'ready');
    const w = new Writer(inPath).start();
    let flooding = true;
    let sent = 0;
    const body = Buffer.alloc(4096, 1);
    const flood = (async () => {
      while (flooding) {
        try {
          await w.send(body);
          sent++;
        } catch {
          break;
        }
      }
    })();
    await waitFor(() => sent > 20_000, 30_000, 'the flood going');
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await within(exit, 'exit after SIGTERM', 15_000);
    const took = Date.now() - t0;
    flooding = false;
    await w.stop({ timeoutMs: 100 });
    await flood;
    expect(code).toBe(0);
    expect(took).toBeLessThan(5000 + 4000); // the 5 s stop deadline, and a loaded 2-core machine
    expect(stderr).toMatch(/stopped: received \d+, published \d+/);
  });

  it('SIGTERM while a remote flood waits for a stalled application reader: the CLI gives up at the 5 s deadline and exits 0', async () => {
    const appPath = tmpSocket('term-app.sock');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reader = new Reader(appPath, async () => {
      await gate;
    }, { maxPendingBytes: 64 * 1024 });
    await reader.start();
    const child = spawn(process.execPath, [CLI, 'bridge', '--nats', srv.url, '--subscribe', 'atk.term2', '--connect', appPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'ready');
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const body = Buffer.alloc(4096, 2);
    for (let i = 0; i < 5000; i++) {
      nc.publish('atk.term2', body);
      if (i % 500 === 499) await nc.flush();
    }
    await nc.flush();
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await within(exit, 'exit after SIGTERM', 15_000);
    const took = Date.now() - t0;
    release();
    await reader.stop();
    expect(code).toBe(0);
    expect(took).toBeLessThan(5000 + 4000); // the 5 s stop deadline, and a loaded 2-core machine
    expect(stderr).toMatch(/stopped: received \d+, published 0, written \d+, acked 0, dropped \d+/);
  });

  it('SIGTERM to a JetStream CLI bridge while an acked local writer floods: exits 0 within the deadline; every acknowledged message is in the stream', async () => {
    const inPath = tmpSocket('jsterm-in.sock');
    const child = spawn(process.execPath, [CLI, 'bridge', '--nats', srv.url, '--jetstream', 'ATKTERM', '--listen', inPath, '--publish', 'atkterm.x'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (x: Buffer) => (stderr += x.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'ready');
    const w = new Writer(inPath, { delivery: 'acked' }).start();
    let flooding = true;
    let sent = 0;
    const flood = (async () => {
      while (flooding) {
        try {
          await w.send(`m${sent}`);
          sent++;
        } catch {
          break;
        }
      }
    })();
    await waitFor(() => w.metrics().acked > 5000, 30_000, 'acknowledgements flowing');
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await within(exit, 'exit after SIGTERM', 15_000);
    const took = Date.now() - t0;
    flooding = false;
    const acked = w.metrics().acked;
    await w.stop({ timeoutMs: 100 }).catch(() => undefined);
    await flood;
    expect(code).toBe(0);
    expect(took).toBeLessThan(5000 + 4000); // the 5 s stop deadline, and a loaded 2-core machine
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info('ATKTERM');
    expect(info.state.messages).toBeGreaterThanOrEqual(acked);
  });

  it('the NATS server killed and restarted during a local flood (core mode): no crash, the bridge holds, reconnects and publishes again', async () => {
    const own = await startNats({ jetstream: false });
    const port = own.port;
    const path = tmpSocket('kflood.sock');
    const b = childBridge({ servers: own.url, routes: [{ listen: path, publish: 'atk.kflood' }] });
    await waitFor(() => b.lines.some((l) => l.ready), 20_000, 'bridge ready');
    const w = new Writer(path).start();
    let flooding = true;
    const flood = (async () => {
      const body = Buffer.alloc(1024, 4);
      while (flooding) {
        try {
          await w.send(body);
        } catch {
          break;
        }
      }
    })();
    await waitFor(() => rssOf(b.child.pid!) > 0, 1000, 'pid');
    let m = await b.ask();
    while ((m.metrics.published as number) < 10_000) m = await b.ask();
    await own.kill();
    m = await b.ask();
    while (m.metrics.connected) m = await b.ask();
    const heldAt = m.metrics.published as number;
    const again = await startNats({ jetstream: false, port });
    m = await b.ask();
    while (!m.metrics.connected || (m.metrics.published as number) < heldAt + 10_000) {
      expect(b.child.exitCode).toBeNull();
      m = await b.ask();
    }
    flooding = false;
    await w.stop({ timeoutMs: 100 }).catch(() => undefined);
    await flood;
    b.child.kill('SIGTERM');
    expect((await within(b.exit, 'bridge exit')).code).toBe(0);
    expect(m.metrics.dropped).toBe(0);
    await again.stop();
  });

  it('the NATS server killed mid-stream (core mode): the subscribing bridge does not crash, resubscribes and delivers again', async () => {
    const own = await startNats({ jetstream: false });
    const port = own.port;
    const appPath = tmpSocket('kill-app.sock');
    const { reader, got } = await appReader(appPath);
    const inPath = tmpSocket('kill-in.sock');
    const bridge = new Bridge({ servers: own.url, routes: [{ subscribe: 'atk.kill', connect: appPath }, { listen: inPath, publish: 'atk.kill' }] });
    const errors: string[] = [];
    bridge.on('error', (e, c) => errors.push(`${c} ${e.message}`));
    await bridge.start();
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const w = new Writer(inPath).start();
    for (let i = 0; i < 1000; i++) w.write(`before ${i}`);
    await w.flush();
    await waitFor(() => got.length >= 1000, 10_000, 'before');
    await own.kill();
    await waitFor(() => !bridge.metrics().connected, 10_000, 'disconnected');
    for (let i = 0; i < 10; i++) w.write(`during ${i}`);
    await w.flush();
    const again = await startNats({ jetstream: false, port });
    await waitFor(() => bridge.metrics().connected, 20_000, 'reconnected');
    for (let i = 0; i < 1000; i++) w.write(`after ${i}`);
    await w.flush();
    await waitFor(() => got.filter((m) => m.toString().startsWith('after')).length >= 1000, 20_000, 'after');
    const s = got.map(String);
    expect(s.slice(0, 1000)).toEqual(Array.from({ length: 1000 }, (_, i) => `before ${i}`));
    expect(s.filter((x) => x.startsWith('after'))).toEqual(Array.from({ length: 1000 }, (_, i) => `after ${i}`));
    await w.stop();
    await bridge.stop();
    await reader.stop();
    await again.stop();
  });
});
