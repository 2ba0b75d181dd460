// RpcClient.call()'s callback form: call(method, body, [options,] callback).
// The same calls as the promise form, with the outcome handed to an
// error-first callback, exactly once and never before call() returns.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { RpcServer, RpcClient, IpcError, type CallCallback } from '../src/index';
import { tmpSocket, cleanupDirs, waitFor, within, rng, Proc, killChildren, DIST, FAST } from './helpers';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
const scripts = mkdtempSync(join(tmpdir(), 'uds-ipc-rpc-cb-'));
afterEach(async () => {
  killChildren();
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 300 }).catch(() => {});
});
afterAll(() => {
  cleanupDirs();
  rmSync(scripts, { recursive: true, force: true });
});

async function pair(methods: ConstructorParameters<typeof RpcServer>[1], clientOpts = {}) {
  const path = tmpSocket();
  const server = track(new RpcServer(path, methods));
  await server.start();
  const client = track(new RpcClient(path, { reconnect: FAST, ...clientOpts }));
  await client.start();
  return { path, server, client };
}

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

  it('server killed with calls in flight: the callbacks get ERR_CONNECTION_LOST, then new calls succeed once it is back', async () => {
    const script = join(scripts, 'rpc-server.js');
    writeFileSync(script, SERVER_CHILD);
    const path = tmpSocket();
    const s1 = new Proc(process.execPath, [script, path]);
    await s1.line((l) => l.event === 'listening', 'the server listening');
    const client = track(new RpcClient(path, { reconnect: FAST }));
    await client.start();
    const calls = [0, 1, 2].map((i) => callback(client, 'hang', `c${i}`));
    await waitFor(() => s1.all((l) => l.event === 'running').length === 3, 10_000, 'three calls running in the child');
    s1.kill('SIGKILL');
    for (const p of calls) expect((await within(p, 'ERR_CONNECTION_LOST')).err!.code).toBe('ERR_CONNECTION_LOST');
    expect(client.metrics().lost).toBe(3);
    await s1.exited;
    const s2 = new Proc(process.execPath, [script, path]);
    await s2.line((l) => l.event === 'listening', 'the second server listening');
    const again = await within(callback(client, 'echo', 'again'), 'a call on the new connection');
    expect([again.err, again.reply!.toString()]).toEqual([null, 'again']);
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
