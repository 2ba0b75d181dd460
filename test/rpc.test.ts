// RPC over the real transport (RpcServer on a Reader, RpcClient on a Writer).
// Integration tests: they need the duplex API of issue 18 (Reader
// connections that write, Writer onMessage, concurrency: 'connection').
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { TimestampSchema, type Timestamp } from '@bufbuild/protobuf/wkt';
import { RpcServer, RpcClient, IpcError, defineMethod, defineStreamMethod, json, protobuf, type CallCallback, type CallContext } from '../src/index';
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

  it('a burst of calls made in one tick reaches the transport while it is being made, and every reply finds its caller', async () => {
    const { client } = await pair({ echo: (b: Buffer) => b });
    await client.call('echo', 'warm'); // connected, nothing in flight
    const written0 = client.metrics().transport.written;
    const calls = [client.call('echo', 'lone')]; // nothing in flight: written at once
    for (let i = 0; i < 40; i++) calls.push(client.call('echo', `c${i}`));
    // Still inside the tick: every request is in the Writer's queue, encoded
    // there in place (sent in groups of 16: see test/rpc-core.test.ts).
    expect(client.metrics().transport.written - written0).toBe(41);
    // A string body, and one too large to be written in place.
    calls.push(client.call('echo', 'é'.repeat(600)), client.call('echo', Buffer.alloc(100_000, 7)));
    const got = await Promise.all(calls);
    expect(got.slice(0, 42).map(String)).toEqual(['lone', ...Array.from({ length: 40 }, (_, i) => `c${i}`), 'é'.repeat(600)]);
    expect(got[42].equals(Buffer.alloc(100_000, 7))).toBe(true);
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
    const callbacks = [3, 4].map((i) => callback(client, 'hang', `c${i}`)); // the callback form fails alike
    await waitFor(() => s1.all((l) => l.event === 'running').length === 5, 10_000, 'five calls running in the child');
    s1.kill('SIGKILL');
    for (const p of calls) {
      const e = await within(rejection(p), 'ERR_CONNECTION_LOST');
      expect(e.code).toBe('ERR_CONNECTION_LOST');
    }
    for (const p of callbacks) expect((await within(p, 'ERR_CONNECTION_LOST (callback)')).err!.code).toBe('ERR_CONNECTION_LOST');
    expect(client.metrics().lost).toBe(5);
    await s1.exited;
    const s2 = new Proc(process.execPath, [script, path]);
    await s2.line((l) => l.event === 'listening', 'the second server listening');
    expect((await within(client.call('echo', 'again'), 'a call on the new connection')).toString()).toBe('again');
    const again = await within(callback(client, 'echo', 'again'), 'a callback call on the new connection');
    expect([again.err, again.reply!.toString()]).toEqual([null, 'again']);
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

// RpcClient.call()'s callback form: call(method, body, [options,] callback).
type Outcome = { err: (Error & { code?: string; remoteCode?: string }) | null; reply: Buffer | undefined; sync: boolean; times: number };

/**
 * Makes one call with the callback form (the arguments after `method` as
 * given) and resolves with its outcome once the callback ran; `sync` tells
 * whether it ran before call() returned, `times` how often it ran by then
 * (checked again a little later by the caller where it matters).
 */
function callback(client: RpcClient, method: string, ...args: unknown[]): Promise<Outcome> & { outcome: () => Outcome | undefined } {
  let returned = false;
  let out: Outcome | undefined;
  let done!: (o: Outcome) => void;
  const p = new Promise<Outcome>((r) => (done = r)) as Promise<Outcome> & { outcome: () => Outcome | undefined };
  const cb: CallCallback = (err, reply) => {
    if (out) {
      out.times++;
      return;
    }
    out = { err: err as Outcome['err'], reply, sync: !returned, times: 1 };
    done(out);
  };
  const ret = (client.call as (...a: unknown[]) => unknown)(method, ...args, cb);
  returned = true;
  expect(ret).toBeUndefined();
  p.outcome = () => out;
  return p;
}

describe('RpcClient.call(method, body, [options,] callback)', () => {
  it('64 calls in flight with random delays each get their own reply, never before call() returns', async () => {
    const r = rng(7);
    const { client, server } = await pair({
      async echo(body) {
        await new Promise((res) => setTimeout(res, Math.floor(r() * 20)));
        return Buffer.concat([Buffer.from('re:'), body]);
      },
      now: (body) => body, // answered at once: its reply can come back within the caller's batch
    });
    for (let round = 0; round < 3; round++) {
      const calls = Array.from({ length: 64 }, (_, i) =>
        i % 2 === 0 ? callback(client, 'echo', `${round}-${i}`) : callback(client, 'now', `${round}-${i}`, { timeoutMs: 10_000 }),
      );
      const got = await within(Promise.all(calls), '64 callbacks');
      got.forEach((o, i) => {
        expect(o.err).toBeNull();
        expect(o.sync).toBe(false);
        expect(o.reply!.toString()).toBe(i % 2 === 0 ? `re:${round}-${i}` : `${round}-${i}`);
      });
    }
    // A reply larger than 4 KiB is a view of the received memory, kept alive for it.
    const big = Buffer.alloc(64 * 1024, 0x41);
    const o = await within(callback(client, 'now', big), 'a large reply');
    expect(o.err).toBeNull();
    expect(o.reply!.equals(big)).toBe(true);
    // The body may be left out.
    const empty = await within(callback(client, 'now', undefined), 'an empty call');
    expect([empty.err, empty.reply!.length]).toEqual([null, 0]);
    expect(server.metrics().calls).toBe(194);
    expect(client.inFlight).toBe(0);
    expect(client.metrics().calls).toBe(194);
  });

  it('every error a promise would reject with comes to the callback, once and never synchronously', async () => {
    const signals: AbortSignal[] = [];
    const { client } = await pair({
      custom: async () => {
        throw Object.assign(new Error('quota exceeded'), { code: 'E_QUOTA' });
      },
      wait(_b, ctx) {
        signals.push(ctx.signal);
        return new Promise(() => {});
      },
    });
    const outcomes: Outcome[] = [];
    const check = async (p: ReturnType<typeof callback>, what: string) => {
      const o = await within(p, what);
      expect(o.sync, what).toBe(false);
      expect(o.err, what).toBeInstanceOf(Error);
      expect(o.reply, what).toBeUndefined();
      outcomes.push(o);
      return o.err!;
    };
    expect(await check(callback(client, 'custom', ''), 'remote error')).toMatchObject({ code: 'ERR_REMOTE', remoteCode: 'E_QUOTA', message: 'quota exceeded' });
    expect((await check(callback(client, 'nope', ''), 'unknown method')).code).toBe('ERR_UNKNOWN_METHOD');
    expect((await check(callback(client, 'wait', '', { timeoutMs: 50 }), 'deadline')).code).toBe('ERR_TIMEOUT');
    await waitFor(() => signals[0]?.aborted === true, 10_000, 'the handler signal aborted (deadline)');

    const ac = new AbortController();
    const aborted = callback(client, 'wait', '', { signal: ac.signal });
    await waitFor(() => signals.length === 2, 10_000, 'second call running');
    ac.abort();
    const e = await check(aborted, 'abort');
    expect([e.name, (e as IpcError).code]).toEqual(['AbortError', 'ABORT_ERR']);
    await waitFor(() => signals[1].aborted, 10_000, 'the handler signal aborted (cancel)');

    const pre = new AbortController();
    pre.abort();
    expect((await check(callback(client, 'wait', '', { signal: pre.signal }), 'already aborted')).name).toBe('AbortError');
    // Bad arguments: as a promise rejects with them.
    expect((await check(callback(client, 'wait', 42), 'a bad body')).code).toBe('ERR_INVALID_ARG_TYPE');
    expect((await check(callback(client, 'wait', '', { timeout: 5 }), 'an unknown option')).code).toBe('ERR_INVALID_ARG_VALUE');
    expect((await check(callback(client, 'wait', '', { timeoutMs: -1 }), 'a bad timeoutMs')).code).toBe('ERR_OUT_OF_RANGE');
    expect((await check(callback(client, '', ''), 'an empty method name')).code).toBe('ERR_INVALID_ARG_VALUE');

    await client.stop({ timeoutMs: 500 });
    expect((await check(callback(client, 'custom', ''), 'a stopped client')).code).toBe('ERR_NOT_RUNNING');
    await new Promise((r) => setTimeout(r, 50));
    expect(outcomes.map((o) => o.times)).toEqual(outcomes.map(() => 1));
  });

  it('a callback that is not a function is thrown at once (ERR_INVALID_ARG_TYPE), and nothing is sent', async () => {
    const { client } = await pair({ echo: (b) => b });
    const call = client.call as (...a: unknown[]) => unknown;
    const written = client.metrics().transport.written;
    for (const args of [
      ['echo', 'x', {}, 'not a function'],
      ['echo', 'x', undefined, 42],
      ['echo', 'x', () => {}, () => {}], // a callback where the options go, and another after it
    ]) {
      let thrown: unknown;
      try {
        call.apply(client, args);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBeInstanceOf(TypeError);
      expect((thrown as IpcError).code).toBe('ERR_INVALID_ARG_TYPE');
    }
    expect(client.metrics().transport.written).toBe(written);
    expect(client.metrics().calls).toBe(0);
  });

  it('a callback that throws does not cut its batch short: the other callbacks run, and the exception is uncaught on a later tick', async () => {
    const script = join(scripts, 'rpc-throwing-callback.js');
    writeFileSync(script, THROWING_CHILD);
    const child = new Proc(process.execPath, [script, tmpSocket()]);
    const done = await child.line((l) => l.event === 'done', 'the child finished');
    await child.exited;
    expect(child.exit).toEqual({ code: 0, signal: null });
    // The 20 calls were made in one tick and their replies came in one batch
    // or a few: had the exception of the 6th callback escaped into the loop
    // over its batch, the replies after it in that batch would be lost.
    expect(done.replies).toEqual(Array.from({ length: 20 }, (_, i) => `r${i}`));
    expect(done.uncaught).toEqual(['callback 5 failed']);
    expect(done.callbacksAtUncaught).toBeGreaterThanOrEqual(6); // thrown after callback 5 had returned
    expect(done.inFlight).toBe(0);
  });
});

// Server and client in one process; callback 5 throws. Vitest would treat
// an uncaught exception in its own process as a failure, so this runs apart.
const THROWING_CHILD = `
'use strict';
const { RpcServer, RpcClient } = require(${JSON.stringify(DIST)});
const [path] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const replies = [];
const uncaught = [];
let callbacksDone = 0;
let callbacksAtUncaught = -1;
process.on('uncaughtException', (e) => {
  uncaught.push(e.message);
  callbacksAtUncaught = callbacksDone;
});
(async () => {
  const server = new RpcServer(path, { echo: (b) => b });
  await server.start();
  const client = new RpcClient(path, {});
  await client.start();
  await client.call('echo', 'warm');
  await new Promise((resolve) => {
    for (let i = 0; i < 20; i++) {
      client.call('echo', 'r' + i, (err, reply) => {
        if (err) { out({ event: 'error', message: err.message }); process.exit(1); }
        replies[i] = reply.toString();
        if (++callbacksDone === 20) setTimeout(resolve, 20);
        if (i === 5) throw new Error('callback 5 failed');
      });
    }
  });
  const inFlight = client.inFlight;
  await client.stop({ timeoutMs: 1000 });
  await server.stop({ timeoutMs: 1000 });
  out({ event: 'done', replies, uncaught, callbacksAtUncaught, inFlight });
})().catch((e) => { out({ event: 'error', message: String(e && e.stack || e) }); process.exit(1); });
`;
