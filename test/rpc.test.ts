// RPC over the real transport (RpcServer on a Reader, RpcClient on a Writer).
// Integration tests: they need the duplex API of issue 18 (Reader
// connections that write, Writer onMessage, concurrency: 'connection').
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { TimestampSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import { RpcServer, RpcClient, IpcError, defineMethod, defineStreamMethod, json, protobuf, type CallContext } from '../src/index';
import { tmpSocket, cleanupDirs, waitFor, within, rng, Proc, killChildren, DIST, readableCopy, assertCanRunAs, asUser, FAST, type ReadableCopy } from './helpers';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
const scripts = mkdtempSync(join(tmpdir(), 'uds-ipc-rpc-'));
afterEach(async () => {
  killChildren();
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 300 }).catch(() => {});
});
afterAll(() => {
  cleanupDirs();
  rmSync(scripts, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<IpcError & { code: string }> {
  try {
    await p;
  } catch (e) {
    return e as IpcError & { code: string };
  }
  throw new Error('expected a rejection');
}

async function pair(methods: ConstructorParameters<typeof RpcServer>[1], serverOpts = {}, clientOpts = {}) {
  const path = tmpSocket();
  const server = track(new RpcServer(path, methods, serverOpts));
  await server.start();
  const client = track(new RpcClient(path, { reconnect: FAST, ...clientOpts }));
  await client.start();
  return { path, server, client };
}

describe('unary calls', () => {
  it('a reply that cannot fit maxReplyBytes fails the call with ERR_MESSAGE_TOO_LARGE instead of hanging', async () => {
    const { client } = await pair({ big: () => Buffer.alloc(2 * 1024 * 1024) }, { maxReplyBytes: 1024 * 1024 });
    const e = await client.call('big', '', { timeoutMs: 10_000 }).then(
      () => undefined,
      (err: IpcError) => err,
    );
    expect(e).toMatchObject({ code: 'ERR_REMOTE', remoteCode: 'ERR_MESSAGE_TOO_LARGE' });
  });

  it('a graceful stop lets calls in flight finish and their replies (larger than the socket buffers) reach the client', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let running = 0;
    const big = Buffer.alloc(768 * 1024, 0x5a); // under maxReplyBytes (1 MiB), above the socket buffers
    const { client, server } = await pair({
      async big() {
        running++;
        await gate;
        return big;
      },
    });
    const calls = [client.call('big'), client.call('big')];
    await waitFor(() => running === 2, 10_000, 'both calls running');
    const stopped = server.stop({ timeoutMs: 10_000 });
    release();
    const got = await within(Promise.all(calls), 'the replies');
    for (const g of got) expect(g.equals(big)).toBe(true);
    await within(stopped, 'the stop');
  });


  it('every reply batch is released, also when the release waits for the reply callbacks (a small receive budget never stalls)', async () => {
    // RpcClient releases a reply batch after the replies' callbacks have
    // run (kDeferRelease). With maxPendingBytes this small a batch that was
    // never released would pause reading after a few replies and the calls
    // would hang.
    const reply = Buffer.alloc(1024, 7);
    const { client } = await pair({ get: () => reply }, {}, { maxPendingBytes: 4096 });
    for (let i = 0; i < 300; i++) expect((await client.call('get', '', { timeoutMs: 10_000 })).length).toBe(1024);
    const many = await within(Promise.all(Array.from({ length: 64 }, () => client.call('get', '', { timeoutMs: 10_000 }))), '64 at once');
    expect(many.every((b) => b.equals(reply))).toBe(true);
    // A stop made inside a reply callback, while that reply's batch waits to be released.
    const stopped = await within(
      client.call('get').then(() => client.stop()),
      'stop from a reply callback',
    );
    expect(stopped).toBeUndefined();
    expect(client.metrics().transport.received).toBe(300 + 64 + 1);
  });

  it('64 calls in flight with random delays return to the right callers', async () => {
    const r = rng(18);
    const { client, server } = await pair({
      async echo(body) {
        await new Promise((res) => setTimeout(res, Math.floor(r() * 30)));
        return Buffer.concat([Buffer.from('re:'), body]);
      },
    });
    for (let round = 0; round < 3; round++) {
      const calls = Array.from({ length: 64 }, (_, i) => client.call('echo', `${round}-${i}`));
      const got = await within(Promise.all(calls), '64 replies');
      got.forEach((b, i) => expect(b.toString()).toBe(`re:${round}-${i}`));
    }
    expect(server.metrics().calls).toBe(192);
    expect(client.inFlight).toBe(0);
  });

  it('a burst of calls made in one tick reaches the transport in groups while it is being made, and every reply finds its caller', async () => {
    const { client } = await pair({ echo: (b: Buffer) => b });
    await client.call('echo', 'warm'); // connected, nothing in flight
    const written0 = client.metrics().transport.written;
    const calls = [client.call('echo', 'lone')]; // nothing in flight: written at once
    for (let i = 0; i < 40; i++) calls.push(client.call('echo', `c${i}`));
    // Still inside the tick: the lone request and two groups of 16 are in the Writer's queue.
    expect(client.metrics().transport.written - written0).toBe(33);
    await new Promise<void>((r) => process.nextTick(r));
    expect(client.metrics().transport.written - written0).toBe(41);
    expect((await Promise.all(calls)).map(String)).toEqual(['lone', ...Array.from({ length: 40 }, (_, i) => `c${i}`)]);
  });

  it('deadlines and aborts: the caller gets ERR_TIMEOUT / AbortError, the handler sees ctx.signal aborted', async () => {
    const signals: AbortSignal[] = [];
    const { client, server } = await pair(
      {
        wait(_b, ctx) {
          signals.push(ctx.signal);
          return new Promise(() => {});
        },
        ok: () => 'ok',
      },
      {},
      { timeoutMs: 10_000 },
    );
    const e1 = await rejection(client.call('wait', '', { timeoutMs: 50 }));
    expect(e1.code).toBe('ERR_TIMEOUT');
    await waitFor(() => signals[0]?.aborted === true, 10_000, 'handler signal aborted (deadline)');
    // The server's own deadline or the client's CANCEL (sent when its deadline passed), whichever came first.
    expect(['ERR_TIMEOUT', 'ABORT_ERR']).toContain((signals[0].reason as IpcError).code);

    const ac = new AbortController();
    const p = client.call('wait', '', { signal: ac.signal });
    await waitFor(() => signals.length === 2, 10_000, 'second call running');
    ac.abort();
    const e2 = await rejection(p);
    expect(e2.name).toBe('AbortError');
    expect(e2.code).toBe('ABORT_ERR');
    await waitFor(() => signals[1].aborted, 10_000, 'handler signal aborted (cancel)');
    await waitFor(() => server.metrics().running === 0, 10_000, 'no call left running');
    expect((await client.call('ok')).toString()).toBe('ok');
  });

  it('remote errors carry their code; other throws are generic; unknown methods are ERR_UNKNOWN_METHOD', async () => {
    const reported: Error[] = [];
    const { client } = await pair(
      {
        coded() {
          throw new IpcError('ERR_TIMEOUT', 'upstream timed out'); // any code: it crosses as remoteCode
        },
        custom: async () => {
          throw Object.assign(new Error('quota exceeded'), { code: 'E_QUOTA' });
        },
        broken() {
          throw new Error('at /srv/secret.js:12');
        },
      },
      { onError: (e: Error) => reported.push(e) },
    );
    const e1 = await rejection(client.call('custom'));
    expect(e1).toBeInstanceOf(IpcError);
    expect([e1.code, e1.remoteCode, e1.message]).toEqual(['ERR_REMOTE', 'E_QUOTA', 'quota exceeded']);
    const e2 = await rejection(client.call('broken'));
    expect([e2.code, e2.remoteCode, e2.message]).toEqual(['ERR_REMOTE', 'ERR_INTERNAL', 'internal error']);
    expect(reported.map((e) => e.message)).toEqual(['at /srv/secret.js:12']);
    const e3 = await rejection(client.call('nope'));
    expect(e3.code).toBe('ERR_UNKNOWN_METHOD');
    expect(e3.message).toContain('"nope"');
    const e4 = await rejection(client.call('coded'));
    expect([e4.code, e4.remoteCode]).toEqual(['ERR_TIMEOUT', 'ERR_TIMEOUT']);
  });

  it('ctx carries the peer credentials and the method', async () => {
    let ctx: CallContext | undefined;
    const { client } = await pair({
      who(_b, c) {
        ctx = c;
        return `${c.peer.uid}`;
      },
    });
    expect((await client.call('who', '', { timeoutMs: 5000 })).toString()).toBe(String(process.getuid!()));
    expect(ctx!.method).toBe('who');
    expect(ctx!.peer).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(ctx!.deadline).toBeGreaterThan(Date.now() - 1000);
  });
});

describe('streams', () => {
  it('streams waiting for credit at maxConcurrentCalls do not deadlock against queued requests', async () => {
    const { client } = await pair(
      {
        async *count(body) {
          const n = Number(body.toString());
          for (let i = 0; i < n; i++) yield String(i);
        },
        ping: () => 'pong',
      },
      { maxConcurrentCalls: 2 },
      { streamWindow: 2 },
    );
    // Two streams fill the slots and soon wait for credit; a third call waits in line behind them.
    const a = client.stream('count', '50')[Symbol.asyncIterator]();
    const b = client.stream('count', '50')[Symbol.asyncIterator]();
    expect((await a.next()).value.toString()).toBe('0');
    expect((await b.next()).value.toString()).toBe('0');
    const ping = client.call('ping', '', { timeoutMs: 20_000 });
    // Reading the streams sends CREDIT: the server must still read it.
    const rest = async (it: AsyncIterator<Buffer>) => {
      const out: string[] = [];
      for (let r = await it.next(); !r.done; r = await it.next()) out.push(r.value.toString());
      return out;
    };
    const [ra, rb] = await within(Promise.all([rest(a), rest(b)]), 'both streams');
    expect(ra).toEqual(Array.from({ length: 49 }, (_, i) => String(i + 1)));
    expect(rb).toEqual(Array.from({ length: 49 }, (_, i) => String(i + 1)));
    expect((await within(ping, 'the queued call')).toString()).toBe('pong');
  });


  it('a consumer that stops early closes the server generator; flow control bounds what runs ahead', async () => {
    let produced = 0;
    let closed = false;
    const { client, server } = await pair({
      async *numbers() {
        try {
          for (let i = 0; ; i++) {
            produced++;
            yield String(i);
          }
        } finally {
          closed = true;
        }
      },
    });
    const got: string[] = [];
    for await (const part of client.stream('numbers', '', { window: 4 })) {
      got.push(part.toString());
      if (got.length === 10) {
        // the generator may be at most `window` parts ahead of what was read
        await new Promise((r) => setTimeout(r, 50));
        expect(produced - got.length).toBeLessThanOrEqual(4);
        break;
      }
    }
    expect(got).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    await waitFor(() => closed, 10_000, 'the generator closed');
    await waitFor(() => server.metrics().running === 0, 10_000, 'no call running');
  });
});

describe('codecs', () => {
  it('JSON and protobuf round trips', async () => {
    const add = defineMethod('add', json<{ a: number; b: number }>(), json<number>());
    const shift = defineMethod('shift', protobuf(TimestampSchema), protobuf(TimestampSchema));
    const range = defineStreamMethod('range', json<number>(), protobuf(TimestampSchema));
    const { client } = await pair({
      ...add.serve(({ a, b }) => a + b),
      ...shift.serve(async (t) => ({ seconds: t.seconds + 60n, nanos: t.nanos })),
      ...range.serve(async function* (n) {
        for (let i = 0; i < n; i++) yield { seconds: BigInt(i) };
      }),
    });
    expect(await add.call(client, { a: 20, b: 22 })).toBe(42);
    const t: Timestamp = await shift.call(client, { seconds: 100n, nanos: 7 });
    expect([t.seconds, t.nanos]).toEqual([160n, 7]);
    const seen: bigint[] = [];
    for await (const p of range.stream(client, 5)) seen.push(p.seconds);
    expect(seen).toEqual([0n, 1n, 2n, 3n, 4n]);
  });
});

// A server in a child process, to be killed with calls in flight.
const SERVER_CHILD = `
'use strict';
const { RpcServer } = require(${JSON.stringify(DIST)});
const [path] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const server = new RpcServer(path, {
  hang: (body) => { out({ event: 'running', body: body.toString() }); return new Promise(() => {}); },
  echo: (body) => body,
});
server.start().then(() => out({ event: 'listening', pid: process.pid }), (e) => { out({ event: 'error', code: e.code, message: e.message }); process.exit(1); });
`;

describe('connection loss', () => {
  it('server killed with calls in flight: ERR_CONNECTION_LOST, then new calls succeed once it is back', async () => {
    const script = join(scripts, 'rpc-server.js');
    writeFileSync(script, SERVER_CHILD);
    const path = tmpSocket();
    const s1 = new Proc(process.execPath, [script, path]);
    await s1.line((l) => l.event === 'listening', 'the server listening');
    const client = track(new RpcClient(path, { reconnect: FAST }));
    await client.start();
    const calls = [0, 1, 2].map((i) => client.call('hang', `c${i}`));
    await waitFor(() => s1.all((l) => l.event === 'running').length === 3, 10_000, 'three calls running in the child');
    s1.kill('SIGKILL');
    for (const p of calls) {
      const e = await within(rejection(p), 'ERR_CONNECTION_LOST');
      expect(e.code).toBe('ERR_CONNECTION_LOST');
    }
    expect(client.metrics().lost).toBe(3);
    await s1.exited;
    const s2 = new Proc(process.execPath, [script, path]);
    await s2.line((l) => l.event === 'listening', 'the second server listening');
    expect((await within(client.call('echo', 'again'), 'a call on the new connection')).toString()).toBe('again');
  });
});

// An RpcClient run as another user (from the readable copy): prints the outcome of one call.
const CLIENT_CHILD = `
'use strict';
const { RpcClient } = require('../../dist/index.js');
const [path] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const client = new RpcClient(path, { reconnect: false, timeoutMs: 3000 });
out({ event: 'start', uid: process.getuid() });
client.start().then(() => client.call('hello', 'x')).then(
  (b) => out({ event: 'reply', body: b.toString() }),
  (e) => out({ event: 'failed', code: e.code }),
).finally(() => client.stop({ timeoutMs: 200 }).then(() => process.exit(0)));
`;

describe('credentials', () => {
  const NOBODY = 65534;
  let copy: ReadableCopy | undefined;
  beforeAll(() => {
    // Needs root and setpriv, as test/security.test.ts: fails loudly otherwise, never skips.
    copy = readableCopy();
    assertCanRunAs(NOBODY, copy);
    const f = join(copy.fixtures, 'rpc-client-child.js');
    writeFileSync(f, CLIENT_CHILD);
    chmodSync(f, 0o644);
  });
  afterAll(() => copy?.remove());

  it('allowUids refuses another user before any call runs; an allowed user is served', async () => {
    const path = tmpSocket();
    chmodSync(dirname(path), 0o755);
    let ran = 0;
    const server = track(new RpcServer(path, { hello: () => (ran++, 'hi') }, { mode: 0o666, allowUids: [process.getuid!()] }));
    await server.start();
    const child = asUser(NOBODY, copy!, 'rpc-client-child.js', [path]);
    expect((await child.line((l) => l.event === 'start', 'child start')).uid).toBe(NOBODY);
    const res = await child.line((l) => l.event === 'failed' || l.event === 'reply', 'the child call outcome', 20_000);
    expect(res.event).toBe('failed');
    expect(['ERR_CONNECTION_LOST', 'ERR_TIMEOUT']).toContain(res.code);
    await waitFor(() => server.metrics().transport.rejected === 1, 10_000, 'one peer rejected');
    expect(ran).toBe(0);
    const client = track(new RpcClient(path, { reconnect: FAST }));
    await client.start();
    expect((await client.call('hello')).toString()).toBe('hi');
    expect(ran).toBe(1);
  });
});
