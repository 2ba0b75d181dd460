// The NATS bridge in core mode (at most once) against a real nats-server:
// both directions, headers, max_payload, bad configuration, the CLI.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile, execSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers, type NatsConnection, type Msg } from '@nats-io/transport-node';
import { Reader, Writer, IpcError } from '../../src';
import { Bridge, HEADER_RESERVE } from '../../src/nats';
import { ROOT, tmpSocket, waitFor, within } from '../helpers';
import { startNats, stopAllNats, type NatsServer } from './server';

let srv: NatsServer;
let nc: NatsConnection;
const children: ChildProcess[] = [];

beforeAll(async () => {
  srv = await startNats();
  nc = await connect({ servers: srv.url });
});
afterAll(async () => {
  // a failed test may leave a bridge process behind
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await nc?.close();
  await stopAllNats();
});

function collect(subject: string): { msgs: Msg[]; done: Promise<void> } {
  const msgs: Msg[] = [];
  const sub = nc.subscribe(subject, { callback: (_e, m) => msgs.push(m) });
  return { msgs, done: nc.flush().then(() => void sub) };
}

describe('core mode (at most once)', () => {
  it('local Writer → bridge → NATS subscriber: bodies unchanged, in order, with the source headers', async () => {
    const path = tmpSocket('in.sock');
    const { msgs, done } = collect('core.out');
    await done;
    const bridge = await new Bridge({ servers: srv.url, routes: [{ listen: path, publish: 'core.out' }] }).start();
    const writer = new Writer(path).start();
    const N = 20_000;
    const bodies = Array.from({ length: N }, (_, i) => Buffer.from(`message ${i} ` + 'x'.repeat(i % 97)));
    bodies.push(Buffer.alloc(0), Buffer.from([0, 255, 13, 10]));
    for (const b of bodies) expect(await writer.send(b)).toBeUndefined();
    await writer.flush();
    await waitFor(() => msgs.length >= bodies.length, 30_000, 'every message on NATS');
    expect(msgs.map((m) => Buffer.from(m.data))).toEqual(bodies);
    const h = msgs[0].headers!;
    expect(h.get('Uds-Ipc-Host')).toBe(hostname());
    expect(h.get('Uds-Ipc-Pid')).toBe(String(process.pid));
    expect(h.get('Uds-Ipc-Uid')).toBe(String(process.getuid!()));
    const m = bridge.metrics();
    expect(m).toMatchObject({ received: bodies.length, published: bodies.length, dropped: 0, connected: true });
    expect(bridge.metricsText()).toContain(`uds_ipc_bridge_messages_published_total ${bodies.length}\n`);
    await writer.stop();
    await bridge.stop();
    expect(bridge.metrics().connected).toBe(false);
  });

  it('the headers are each local connection\'s own (encoded once per connection): a writer in another process gets its pid', async () => {
    const path = tmpSocket('hdr.sock');
    const { msgs, done } = collect('core.hdr');
    await done;
    const bridge = await new Bridge({ servers: srv.url, routes: [{ listen: path, publish: 'core.hdr' }] }).start();
    const mine = new Writer(path).start();
    for (let i = 0; i < 100; i++) mine.write(`mine ${i}`);
    await mine.flush();
    const script = `const { Writer } = require(${JSON.stringify(join(ROOT, 'dist', 'index.js'))});
      const w = new Writer(${JSON.stringify(path)}).start();
      for (let i = 0; i < 100; i++) w.write('other ' + i);
      w.flush().then(() => w.stop()).then(() => console.log(process.pid));`;
    const other = Number((await promisify(execFile)(process.execPath, ['-e', script])).stdout);
    for (let i = 0; i < 100; i++) mine.write(`mine ${100 + i}`);
    await mine.flush();
    await waitFor(() => msgs.length >= 300, 20_000, 'all 300 on NATS');
    const pids = new Map<string, Set<string>>();
    for (const m of msgs) {
      const who = m.string().split(' ')[0];
      if (!pids.has(who)) pids.set(who, new Set());
      pids.get(who)!.add(m.headers!.get('Uds-Ipc-Pid'));
      expect(m.headers!.get('Uds-Ipc-Host')).toBe(hostname());
    }
    expect([...pids.get('mine')!]).toEqual([String(process.pid)]);
    expect([...pids.get('other')!]).toEqual([String(other)]);
    expect(other).not.toBe(process.pid);
    await mine.stop();
    await bridge.stop();
  });

  it('NATS publisher → bridge → local Reader: whole and in order with no faults; a subject function per message', async () => {
    const appPath = tmpSocket('app.sock');
    const got: string[] = [];
    const reader = new Reader(appPath, (b) => {
      for (const m of b) got.push(m.toString());
    });
    await reader.start();
    const inPath = tmpSocket('fn.sock');
    const bridge = await new Bridge({
      servers: srv.url,
      routes: [
        { subscribe: 'core.in.*', connect: appPath },
        // a subject per message: the first byte chooses it
        { listen: inPath, publish: (batch, i) => `core.in.${String.fromCharCode(batch.at(i)![0])}` },
      ],
    }).start();
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'the bridge connected to the local reader');
    const N = 20_000;
    for (let i = 0; i < N; i++) {
      nc.publish(`core.in.${i % 3}`, `n${i}`);
      if (i % 1000 === 999) await nc.flush();
    }
    await nc.flush();
    await waitFor(() => got.length >= N, 30_000, 'every NATS message at the local reader');
    expect(got).toEqual(Array.from({ length: N }, (_, i) => `n${i}`));
    // the other route, through the subject function, comes back to the same reader
    const w = new Writer(inPath).start();
    w.write('a-first');
    w.write('b-second');
    await w.flush();
    await waitFor(() => got.length >= N + 2, 10_000, 'routed by the subject function');
    expect(got.slice(N)).toEqual(['a-first', 'b-second']);
    expect(bridge.metrics()).toMatchObject({ dropped: 0, written: N + 2 });
    await w.stop();
    await bridge.stop();
    await reader.stop();
  });

  it('start() resolves once the server has the subscriptions: a message published the moment it resolves is delivered', async () => {
    // Repeated: the race (the client's SUB still in its buffer while another
    // connection's PUB reaches the server) does not show every time.
    for (let round = 0; round < 20; round++) {
      const appPath = tmpSocket(`ready-${round}.sock`);
      const got: string[] = [];
      const reader = new Reader(appPath, (b) => {
        for (const m of b) got.push(m.toString());
      });
      await reader.start();
      const subject = `core.ready.${round}`;
      const bridge = await new Bridge({ servers: srv.url, routes: [{ subscribe: subject, connect: appPath }] }).start();
      nc.publish(subject, `first-${round}`);
      await nc.flush();
      await waitFor(() => got.length === 1, 10_000, `round ${round}: the message published as start() resolved`);
      expect(got).toEqual([`first-${round}`]);
      await bridge.stop();
      await reader.stop();
    }
  }, 60_000);

  it('a full local Writer drops and counts (at most once, never blocks NATS)', async () => {
    const appPath = tmpSocket('slow.sock');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let got = 0;
    const reader = new Reader(appPath, async (b) => {
      got += b.length;
      await gate;
    }, { maxPendingBytes: 64 * 1024 });
    await reader.start();
    const bridge = await new Bridge({
      servers: srv.url,
      routes: [{ subscribe: 'core.slow', connect: appPath, writerOptions: { maxBufferedWrites: 100, sendBufferSize: 4096 } }],
    }).start();
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'connected');
    const body = Buffer.alloc(1024, 1);
    for (let i = 0; i < 5000; i++) nc.publish('core.slow', body);
    await nc.flush();
    await waitFor(() => bridge.metrics().received === 5000, 20_000, 'all received by the bridge');
    const m = bridge.metrics();
    expect(m.dropped).toBeGreaterThan(0);
    expect(m.written + m.dropped).toBe(5000);
    release();
    await bridge.stop();
    await reader.stop();
    expect(got).toBeLessThanOrEqual(m.written);
  });

  it('NATS away: the bridge holds what local writers send (bounded: the Reader reads no more) and publishes it once the client reconnected', async () => {
    const own = await startNats({ jetstream: false });
    const path = tmpSocket('away.sock');
    const bridge = new Bridge({ servers: own.url, routes: [{ listen: path, publish: 'away' }] });
    await bridge.start();
    const w = new Writer(path).start();
    w.write('before');
    await w.flush();
    await waitFor(() => bridge.metrics().published === 1, 10_000, 'published before');
    const port = own.port;
    await own.kill();
    await waitFor(() => !bridge.metrics().connected, 10_000, 'the bridge sees the server gone');
    for (let i = 0; i < 100; i++) w.write(`during ${i}`);
    await w.flush();
    await waitFor(() => bridge.metrics().received === 101, 10_000, 'the bridge took them in');
    expect(bridge.metrics().published).toBe(1); // held, not buffered in the client
    const again = await startNats({ jetstream: false, port });
    await waitFor(() => bridge.metrics().connected && bridge.metrics().published === 101, 20_000, 'published after the reconnect');
    expect(bridge.metrics().dropped).toBe(0);
    await w.stop();
    await bridge.stop();
    await again.stop();
  });

  it('max_payload: a Reader maxMessageSize above it is refused at start; the default is max_payload less the header reserve', async () => {
    const small = await startNats({ config: 'max_payload: 4096' });
    const path = tmpSocket('mp.sock');
    const tooBig = new Bridge({ servers: small.url, routes: [{ listen: path, publish: 'mp', readerOptions: { maxMessageSize: 8192 } }] });
    const e = await tooBig.start().then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(IpcError);
    expect((e as IpcError).code).toBe('ERR_MESSAGE_TOO_LARGE');
    expect((e as IpcError).message).toMatch(/max_payload is 4096 bytes.*lower maxMessageSize to at most 3840/);

    const bridge = await new Bridge({ servers: small.url, routes: [{ listen: path, publish: 'mp' }] }).start();
    expect(bridge.maxPayload).toBe(4096);
    const nc2 = await connect({ servers: small.url });
    const got: number[] = [];
    nc2.subscribe('mp', { callback: (_e, m) => got.push(m.data.length) });
    await nc2.flush();
    const w = new Writer(path, { maxMessageSize: 8192 }).start();
    w.write(Buffer.alloc(4096 - HEADER_RESERVE));
    await w.flush();
    await waitFor(() => got.length === 1, 10_000, 'the largest message allowed');
    expect(got).toEqual([4096 - HEADER_RESERVE]);
    const errors: string[] = [];
    bridge.on('error', (x, context) => errors.push(`${context} ${(x as IpcError).code}`));
    w.write(Buffer.alloc(4096 - HEADER_RESERVE + 1));
    await waitFor(() => errors.length > 0, 10_000, 'the reader refuses the larger one');
    expect(errors[0]).toBe('reader ERR_MESSAGE_TOO_LARGE');
    await w.stop({ timeoutMs: 100 });
    await bridge.stop();
    await nc2.close();
    await small.stop();
  });

  it('bad configuration: unreachable server, wrong credentials (user/password, token) are ERR_NATS; right ones work', async () => {
    const path = tmpSocket('auth.sock');
    const route = [{ listen: path, publish: 'auth' }];
    const dead = await new Bridge({ servers: 'nats://127.0.0.1:1', routes: route, connectTimeoutMs: 2000 }).start().then(() => undefined, (x: unknown) => x);
    expect((dead as IpcError).code).toBe('ERR_NATS');
    expect((dead as IpcError).message).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);

    const authed = await startNats({ args: ['--user', 'bridge', '--pass', 's3cret'] });
    const wrong = await new Bridge({ servers: authed.url, routes: route, user: 'bridge', password: 'nope' }).start().then(() => undefined, (x: unknown) => x);
    expect((wrong as IpcError).code).toBe('ERR_NATS');
    expect((wrong as IpcError).message).toMatch(/Authorization Violation/i);
    const right = await new Bridge({ servers: authed.url, routes: route, user: 'bridge', password: 's3cret' }).start();
    await right.stop();

    const tokened = await startNats({ args: ['--auth', 'tok3n'] });
    const badToken = await new Bridge({ servers: tokened.url, routes: route, token: 'other' }).start().then(() => undefined, (x: unknown) => x);
    expect((badToken as IpcError).code).toBe('ERR_NATS');
    const good = await new Bridge({ servers: tokened.url, routes: route, token: 'tok3n' }).start();
    await good.stop();

    const noCreds = await new Bridge({ servers: srv.url, routes: route, credsFile: '/nonexistent/x.creds' }).start().then(() => undefined, (x: unknown) => x);
    expect((noCreds as IpcError).code).toBe('ERR_NATS');
    expect((noCreds as IpcError).message).toMatch(/cannot read the credentials file/);

    const noJs = await startNats({ jetstream: false });
    const js = await new Bridge({ servers: noJs.url, routes: route, jetstream: { stream: 'X' } }).start().then(() => undefined, (x: unknown) => x);
    expect((js as IpcError).code).toBe('ERR_NATS');
    expect((js as IpcError).message).toMatch(/JetStream/);
    await Promise.all([authed.stop(), tokened.stop(), noJs.stop()]);
  });

  it('a publish the credentials do not permit is reported (context nats), not silent', async () => {
    const perm = await startNats({
      jetstream: false,
      config: 'authorization { users = [ { user: b, password: p, permissions: { publish: "allowed.>", subscribe: "_INBOX.>" } } ] }',
    });
    const path = tmpSocket('perm.sock');
    const bridge = new Bridge({ servers: perm.url, user: 'b', password: 'p', routes: [{ listen: path, publish: 'denied.x' }] });
    const errors: string[] = [];
    bridge.on('error', (e, context) => errors.push(`${context} ${(e as IpcError).code} ${e.message}`));
    await bridge.start();
    const w = new Writer(path).start();
    w.write('not allowed');
    await w.flush();
    await waitFor(() => errors.length > 0, 10_000, 'the violation reported');
    expect(errors[0]).toMatch(/^nats ERR_NATS .*Permissions Violation.*denied\.x/i);
    expect(bridge.metrics().errors).toBeGreaterThan(0);
    await w.stop();
    await bridge.stop();
    await perm.stop();
  });

  it('TLS: the CA file is passed through (verified server certificate); without it the connection is refused (ERR_NATS)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-tls-'));
    const sh = (cmd: string): void => void execSync(cmd, { cwd: dir, stdio: 'ignore' });
    sh('openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem');
    sh('openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    sh('openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem');
    const tls = await startNats({ jetstream: false, args: ['--tls', '--tlscert', join(dir, 'server.pem'), '--tlskey', join(dir, 'server.key')] });
    const path = tmpSocket('tls.sock');
    const refused = await new Bridge({ servers: tls.url, routes: [{ listen: path, publish: 'tls' }], connectTimeoutMs: 3000 }).start().then(() => undefined, (x: unknown) => x);
    expect((refused as IpcError).code).toBe('ERR_NATS');
    const bridge = new Bridge({ servers: tls.url, routes: [{ listen: path, publish: 'tls' }], tlsCaFile: join(dir, 'ca.pem') });
    await bridge.start();
    const sub = await connect({ servers: tls.url, tls: { caFile: join(dir, 'ca.pem') } });
    const got: string[] = [];
    sub.subscribe('tls', { callback: (_e, m) => got.push(m.string()) });
    await sub.flush();
    const w = new Writer(path).start();
    w.write('over tls');
    await w.flush();
    await waitFor(() => got.length === 1, 10_000, 'the message over TLS');
    expect(got).toEqual(['over tls']);
    await w.stop();
    await bridge.stop();
    await sub.close();
    await tls.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the CLI takes the token from UDS_IPC_NATS_TOKEN (a secret kept off the command line); a wrong one is ERR_NATS, exit 1', async () => {
    const tokened = await startNats({ args: ['--auth', 'envtok3n'] });
    const run = (token: string): Promise<{ code: number | null; stderr: string }> => {
      const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'bridge', '--nats', tokened.url, '--listen', tmpSocket('env.sock'), '--publish', 'env.x'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, UDS_IPC_NATS_TOKEN: token },
      });
      children.push(child);
      let stderr = '';
      let killed = false;
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (!killed && stderr.includes('ready')) {
          killed = true;
          child.kill('SIGTERM');
        }
      });
      return new Promise((r) => child.once('exit', (code) => r({ code, stderr })));
    };
    const good = await within(run('envtok3n'), 'bridge with the right token');
    expect(good.stderr).toContain('ready');
    expect(good.code).toBe(0);
    const bad = await within(run('wrong'), 'bridge with a wrong token');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('ERR_NATS');
    expect(bad.stderr).not.toContain('wrong'); // the secret is not echoed
    await tokened.stop();
  });

  it('the CLI bridges both directions in one process and stops cleanly on SIGTERM (exit 0)', async () => {
    const inPath = tmpSocket('cli-in.sock');
    const appPath = tmpSocket('cli-app.sock');
    const got: string[] = [];
    const reader = new Reader(appPath, (b) => {
      for (const m of b) got.push(m.toString());
    });
    await reader.start();
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'bridge', '--nats', srv.url, '--listen', inPath, '--publish', 'cli.loop', '--subscribe', 'cli.loop', '--connect', appPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor(() => stderr.includes('ready'), 20_000, 'bridge ready');
    expect(stderr).toContain(`${inPath} -> cli.loop (core NATS, at most once)`);
    await waitFor(() => reader.metrics().activeConnections === 1, 10_000, 'bridge connected to the app');
    const w = new Writer(inPath).start();
    for (let i = 0; i < 1000; i++) w.write(`loop ${i}`);
    await w.flush();
    await waitFor(() => got.length >= 1000, 20_000, 'the loop through NATS');
    expect(got).toEqual(Array.from({ length: 1000 }, (_, i) => `loop ${i}`));
    child.kill('SIGTERM');
    expect(await within(exit, 'bridge exit')).toBe(0);
    expect(stderr).toMatch(/stopped: received 2000, published 1000, written 1000/);
    await w.stop({ timeoutMs: 100 });
    await reader.stop();
  });
});
