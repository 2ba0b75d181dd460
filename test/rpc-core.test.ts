// The RPC cores (src/rpc/server-core.ts, src/rpc/client-core.ts) over an
// in-memory link: no sockets, so every protocol rule is checked exactly.
import { describe, it, expect } from 'vitest';
import { ClientCore } from '../src/rpc/client-core';
import { ServerCore, type ServerConnection, type ServerCoreOptions } from '../src/rpc/server-core';
import { encodeRpcEnvelope, decodeRpcEnvelope } from '../src/rpc/envelope';
import type { FrameSink, RpcMethods, CallContext } from '../src/rpc/types';
import { decodeFrames } from '../src/framing';
import { IpcError } from '../src/errors';
import { rng, waitFor } from './helpers';

const CONN = Object.freeze({ id: 1, pid: 4242, uid: 1000, gid: 1000 });

/**
 * A client core and a server core joined by two one-way links. Frames are
 * copied when written and delivered on a later macrotask, in order. The
 * client→server link counts the frames it delivered ("fully sent") and can
 * be held (frames wait, unsent) and broken.
 */
function link(methods: RpcMethods, server: Partial<ServerCoreOptions> = {}, client: { timeoutMs?: number; streamWindow?: number } = {}) {
  const errors: { err: Error; method: string | undefined }[] = [];
  const core = new ServerCore(methods, {
    maxConcurrentCalls: 64,
    maxFrameSize: 1 << 20,
    onError: (err, method) => errors.push({ err, method }),
    ...server,
  });
  const toServer: Buffer[] = [];
  let delivered = 0;
  let held = false;
  const holder = { retained: 0, retain() { this.retained++; } };
  let conn: ServerConnection;
  let scheduled = false;
  const pump = () => {
    scheduled = false;
    while (!held && toServer.length) {
      const f = toServer.shift()!;
      delivered++;
      conn.onFrame(f, holder);
    }
  };
  const schedule = () => {
    if (!scheduled) {
      scheduled = true;
      setImmediate(pump);
    }
  };
  const clientSink: FrameSink = {
    write(f) {
      toServer.push(Buffer.from(f));
      schedule();
      return true;
    },
    send(f) {
      this.write(f);
      return Promise.resolve();
    },
  };
  const cc = new ClientCore(clientSink, { timeoutMs: client.timeoutMs ?? 0, streamWindow: client.streamWindow ?? 16 });
  const fromServer: Buffer[] = [];
  let serverSink: FrameSink;
  const makeServerConn = () => {
    serverSink = {
      write(f) {
        fromServer.push(Buffer.from(f));
        setImmediate(() => {
          const x = fromServer.shift();
          if (x) cc.onFrame(x);
        });
        return true;
      },
      send(f) {
        this.write(f);
        return Promise.resolve();
      },
    };
    conn = core.connection(serverSink, CONN);
  };
  makeServerConn();
  return {
    core,
    client: cc,
    errors,
    holder,
    get conn() {
      return conn;
    },
    hold() {
      held = true;
    },
    /** Breaks the connection: undelivered frames stay queued for the next one (like the Writer's ring). */
    breakConnection() {
      held = true;
      fromServer.length = 0;
      conn.close();
      cc.connectionLost(delivered, new IpcError('ERR_SOCKET', 'gone'));
    },
    reconnect() {
      makeServerConn();
      held = false;
      schedule();
    },
    toServer,
  };
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; remoteCode?: string }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

describe('unary calls', () => {
  it('64 calls in flight with random delays each return to their own caller', async () => {
    const r = rng(7);
    const l = link({
      async echo(body) {
        await new Promise((res) => setTimeout(res, Math.floor(r() * 20)));
        return Buffer.concat([Buffer.from('re:'), body]);
      },
    });
    const calls = Array.from({ length: 64 }, (_, i) => l.client.call('echo', `m${i}`, undefined, undefined));
    expect(l.client.inFlight).toBe(64);
    const got = await Promise.all(calls);
    got.forEach((b, i) => expect(b.toString()).toBe(`re:m${i}`));
    expect(l.client.inFlight).toBe(0);
    expect(l.core.active).toBe(0);
  });

  it('sync handlers, strings, empty replies and ctx', async () => {
    let seen: CallContext | undefined;
    const l = link({
      upper: (b) => b.toString().toUpperCase(),
      nothing: () => {},
      ctx(_b, ctx) {
        seen = ctx;
        return 'ok';
      },
    });
    expect((await l.client.call('upper', 'abc', undefined, undefined)).toString()).toBe('ABC');
    expect((await l.client.call('nothing', '', undefined, undefined)).length).toBe(0);
    await l.client.call('ctx', '', 5000, undefined);
    expect(seen!.method).toBe('ctx');
    expect(seen!.peer).toEqual({ pid: 4242, uid: 1000, gid: 1000 });
    expect(seen!.connection).toBe(CONN);
    expect(seen!.deadline).toBeGreaterThan(Date.now());
    expect(seen!.signal.aborted).toBe(false);
  });

  it('remote errors carry their code and message; other throws give a generic error without a stack, reported locally', async () => {
    const l = link({
      coded() {
        throw Object.assign(new Error('no such user: bob'), { code: 'E_NO_USER' });
      },
      async plain() {
        throw new Error('secret path /etc/shadow');
      },
      bad: () => 42 as unknown as string,
    });
    const e1 = await rejection(l.client.call('coded', '', undefined, undefined));
    expect(e1).toBeInstanceOf(IpcError);
    expect(e1.code).toBe('ERR_REMOTE');
    expect(e1.remoteCode).toBe('E_NO_USER');
    expect(e1.message).toBe('no such user: bob');
    const e2 = await rejection(l.client.call('plain', '', undefined, undefined));
    expect(e2.code).toBe('ERR_REMOTE');
    expect(e2.remoteCode).toBe('ERR_INTERNAL');
    expect(e2.message).toBe('internal error');
    expect(e2.message + (e2.stack ?? '')).not.toContain('shadow');
    const e3 = await rejection(l.client.call('bad', '', undefined, undefined));
    expect(e3.remoteCode).toBe('ERR_INTERNAL');
    expect(l.errors.map((e) => e.method)).toEqual(['plain', 'bad']);
    expect(l.errors[0].err.message).toContain('shadow');
  });

  it('unknown method, and unary/stream mismatches', async () => {
    const l = link({
      unary: () => 'x',
      async *gen() {
        yield 'x';
      },
    });
    const e = await rejection(l.client.call('nope', '', undefined, undefined));
    expect(e.code).toBe('ERR_UNKNOWN_METHOD');
    expect(e.message).toContain('nope');
    expect((await rejection(l.client.call('gen', '', undefined, undefined))).remoteCode).toBe('ERR_STREAMING');
    const s = l.client.stream('unary', '', undefined, undefined, undefined);
    expect((await rejection(s.next())).remoteCode).toBe('ERR_NOT_STREAMING');
  });

  it('a deadline rejects ERR_TIMEOUT, aborts the handler (ctx.signal) and the late reply is discarded', async () => {
    let signal: AbortSignal | undefined;
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const l = link({
      async slow(_b, ctx) {
        signal = ctx.signal;
        await done;
        return 'late';
      },
    });
    const e = await rejection(l.client.call('slow', '', 30, undefined));
    expect(e.code).toBe('ERR_TIMEOUT');
    await waitFor(() => signal?.aborted === true, 5000, 'the handler signal aborted');
    // The server's own deadline or the client's CANCEL (sent when its deadline passed), whichever came first.
    expect(['ERR_TIMEOUT', 'ABORT_ERR']).toContain((signal!.reason as IpcError).code);
    release();
    await waitFor(() => l.core.active === 0, 5000, 'server idle');
    expect(l.client.inFlight).toBe(0);
  });

  it('the client-wide timeoutMs applies, a per-call one overrides it, 0 disables', async () => {
    const l = link({ never: () => new Promise(() => {}), fast: () => 'ok' }, {}, { timeoutMs: 20 });
    expect((await rejection(l.client.call('never', '', undefined, undefined))).code).toBe('ERR_TIMEOUT');
    expect((await l.client.call('fast', '', 0, undefined)).toString()).toBe('ok');
    const p = l.client.call('never', '', 0, undefined);
    await new Promise((r) => setTimeout(r, 60));
    expect(l.client.inFlight).toBe(1);
    l.client.close(new IpcError('ERR_NOT_RUNNING', 'closed'));
    expect((await rejection(p)).code).toBe('ERR_NOT_RUNNING');
  });

  it('an abort rejects with AbortError and cancels the handler (ctx.signal)', async () => {
    let signal: AbortSignal | undefined;
    const l = link({
      wait: (_b, ctx) => {
        signal = ctx.signal;
        return new Promise(() => {});
      },
    });
    const ac = new AbortController();
    const p = l.client.call('wait', '', undefined, ac.signal);
    await waitFor(() => signal !== undefined, 5000, 'handler running');
    ac.abort(new Error('user gave up'));
    const e = await rejection(p);
    expect(e.name).toBe('AbortError');
    expect(e.code).toBe('ABORT_ERR');
    expect((e.cause as Error).message).toBe('user gave up');
    await waitFor(() => signal!.aborted, 5000, 'handler aborted');
    expect(l.core.m.cancelled).toBe(1);
    // already aborted: rejected at once, nothing sent
    const sent = l.client.framesWritten;
    expect((await rejection(l.client.call('wait', '', undefined, ac.signal))).name).toBe('AbortError');
    expect(l.client.framesWritten).toBe(sent);
  });

  it('maxConcurrentCalls: extra requests wait in order and start as slots free', async () => {
    const releases: (() => void)[] = [];
    let running = 0;
    let peak = 0;
    const l = link(
      {
        async job(b) {
          running++;
          peak = Math.max(peak, running);
          await new Promise<void>((r) => releases.push(r));
          running--;
          return b;
        },
      },
      { maxConcurrentCalls: 3 },
    );
    const calls = Array.from({ length: 8 }, (_, i) => l.client.call('job', `${i}`, undefined, undefined));
    await waitFor(() => releases.length === 3 && l.conn.queued === 5, 5000, '3 running, 5 queued');
    const drained = l.conn.whenDrained();
    let started = 3;
    while (started < 8) {
      releases.splice(0).forEach((r) => r());
      const target = Math.min(8, started + 3);
      await waitFor(() => releases.length === target - started, 5000, `calls up to ${target} started`);
      started = target;
      expect(running).toBeLessThanOrEqual(3);
    }
    await drained;
    releases.splice(0).forEach((r) => r());
    expect((await Promise.all(calls)).map(String)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    expect(peak).toBe(3);
  });
});

describe('streams', () => {
  it('delivers every part in order then ends', async () => {
    const l = link({
      async *count(b) {
        for (let i = 0; i < Number(b.toString()); i++) yield `p${i}`;
      },
    });
    const got: string[] = [];
    for await (const p of l.client.stream('count', '50', undefined, undefined, 4)) got.push(p.toString());
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `p${i}`));
    expect(l.core.active).toBe(0);
  });

  it('a consumer that stops early cancels the call: the generator is closed (finally runs)', async () => {
    let finallyRan = false;
    let signal: AbortSignal | undefined;
    const l = link({
      async *forever(_b, ctx) {
        signal = ctx.signal;
        try {
          for (let i = 0; ; i++) yield String(i);
        } finally {
          finallyRan = true;
        }
      },
    });
    const got: string[] = [];
    for await (const p of l.client.stream('forever', '', undefined, undefined, 8)) {
      got.push(p.toString());
      if (got.length === 3) break;
    }
    expect(got).toEqual(['0', '1', '2']);
    await waitFor(() => finallyRan, 5000, 'the generator finally block');
    expect(signal!.aborted).toBe(true);
    await waitFor(() => l.core.active === 0, 5000, 'server idle');
  });

  it('flow control: a slow consumer keeps the generator at most `window` parts ahead', async () => {
    let produced = 0;
    const window = 5;
    const l = link({
      async *many() {
        for (let i = 0; i < 200; i++) {
          produced++;
          yield String(i);
        }
      },
    });
    const s = l.client.stream('many', '', undefined, undefined, window);
    let consumed = 0;
    let maxAhead = 0;
    for await (const p of s) {
      expect(p.toString()).toBe(String(consumed));
      consumed++;
      // let the server run as far as it may
      await new Promise((r) => setTimeout(r, consumed % 20 === 0 ? 5 : 0));
      await new Promise((r) => setImmediate(r));
      maxAhead = Math.max(maxAhead, produced - consumed);
      expect(s.buffered).toBeLessThanOrEqual(window);
    }
    expect(consumed).toBe(200);
    expect(maxAhead).toBeLessThanOrEqual(window);
    expect(maxAhead).toBeGreaterThan(0);
  });

  it('a generator error reaches the consumer after the parts sent before it', async () => {
    const l = link({
      async *fails() {
        yield 'a';
        throw Object.assign(new Error('disk full'), { code: 'E_FULL' });
      },
    });
    const got: string[] = [];
    const e = await rejection(
      (async () => {
        for await (const p of l.client.stream('fails', '', undefined, undefined, undefined)) got.push(p.toString());
      })(),
    );
    expect(got).toEqual(['a']);
    expect((e as IpcError).remoteCode).toBe('E_FULL');
  });

  it('a stream deadline fails the stream and closes the generator', async () => {
    let finallyRan = false;
    const l = link({
      async *slow() {
        try {
          yield 'first';
          await new Promise(() => {});
        } finally {
          finallyRan = true;
        }
      },
    });
    const s = l.client.stream('slow', '', 50, undefined, undefined);
    expect((await s.next()).value!.toString()).toBe('first');
    expect((await rejection(s.next())).code).toBe('ERR_TIMEOUT');
    // the generator is suspended in an await that never settles: it is closed once that part is done, i.e. never;
    // but its ctx.signal is aborted and it is no longer counted.
    await waitFor(() => l.core.active === 0, 5000, 'server idle');
    expect(finallyRan).toBe(false);
  });
});

describe('frames of a tick', () => {
  function sinkCore(maxFrameSize?: number) {
    const frames: Buffer[] = [];
    const client = new ClientCore(
      {
        write: (f) => (frames.push(Buffer.from(f)), true),
        send: (f) => (frames.push(Buffer.from(f)), Promise.resolve()),
      },
      { timeoutMs: 0, streamWindow: 16, maxFrameSize },
    );
    return { client, frames };
  }

  it('a lone call goes to the sink at once; calls made while others are in flight go together at the end of the tick, in order', async () => {
    const { client, frames } = sinkCore();
    void client.call('m', 'first', undefined, undefined);
    expect(frames.length).toBe(1);
    for (let i = 0; i < 5; i++) void client.call('m', `more${i}`, undefined, undefined);
    const s = client.stream('s', 'x', undefined, undefined, undefined);
    void s.return();
    expect(frames.length).toBe(1);
    expect(client.framesWritten).toBe(1);
    await new Promise<void>((r) => process.nextTick(r));
    // the stream's request is not sent: it was cancelled before the end of the tick; its CANCEL goes (and is ignored)
    const got = frames.map((f) => decodeRpcEnvelope(f));
    expect(got.map((e) => e.kind)).toEqual(['request', 'request', 'request', 'request', 'request', 'request', 'cancel']);
    expect(got.slice(0, 6).map((e) => (e.kind === 'request' ? Buffer.from(e.body).toString() : ''))).toEqual(['first', 'more0', 'more1', 'more2', 'more3', 'more4']);
    expect(client.framesWritten).toBe(7);
    expect(client.inFlight).toBe(6);
  });

  it('a burst of calls is handed over in corked groups of 16 as it is made (the server starts on them meanwhile), the rest at the end of the tick', async () => {
    const log: string[] = [];
    const client = new ClientCore(
      {
        write: (f) => (log.push(`w:${Buffer.from(decodeRpcEnvelope(f).kind === 'request' ? (decodeRpcEnvelope(f) as { body: Uint8Array }).body : []).toString()}`), true),
        send: () => Promise.resolve(),
        cork: () => log.push('cork'),
        uncork: () => log.push('uncork'),
      },
      { timeoutMs: 0, streamWindow: 16 },
    );
    void client.call('m', 'lone', undefined, undefined);
    expect(log).toEqual(['w:lone']); // nothing else in flight: at once, not corked
    log.length = 0;
    for (let i = 0; i < 40; i++) void client.call('m', `c${i}`, undefined, undefined);
    // Synchronously, two whole groups went, each between cork and uncork.
    const group = (from: number): string[] => ['cork', ...Array.from({ length: 16 }, (_, k) => `w:c${from + k}`), 'uncork'];
    expect(log).toEqual([...group(0), ...group(16)]);
    expect(client.framesWritten).toBe(33);
    await new Promise<void>((r) => process.nextTick(r));
    expect(log.slice(36)).toEqual(['cork', ...Array.from({ length: 8 }, (_, k) => `w:c${32 + k}`), 'uncork']);
    expect(client.framesWritten).toBe(41);
    expect(client.inFlight).toBe(41);
  });

  it('with a sink that lets frames be encoded in place, a burst goes into its queue as it is made, in corked groups of 16; no room: the tick queue, in order', async () => {
    const log: string[] = [];
    const ring = Buffer.alloc(64 * 1024);
    let tail = 0;
    let room = Infinity; // frames the sink still takes in place
    const bodyOf = (f: Uint8Array): string => {
      const e = decodeRpcEnvelope(f);
      return e.kind === 'request' ? Buffer.from(e.body).toString() : e.kind;
    };
    let reserved = -1;
    const client = new ClientCore(
      {
        write: (f) => (log.push(`w:${bodyOf(f)}`), true),
        send: () => Promise.resolve(),
        cork: () => log.push('cork'),
        uncork: () => log.push('uncork'),
        reserve: (len) => {
          if (room <= 0) return -1;
          room--;
          reserved = len;
          return tail;
        },
        bytes: () => ring,
        commit: (len) => {
          expect(len).toBe(reserved);
          log.push(`p:${bodyOf(ring.subarray(tail, tail + len))}`);
          tail += len;
        },
      },
      { timeoutMs: 0, streamWindow: 16 },
    );
    void client.call('m', 'lone', undefined, undefined);
    expect(log).toEqual(['w:lone']); // nothing else in flight: at once, not corked
    log.length = 0;
    for (let i = 0; i < 40; i++) void client.call('m', `c${i}`, undefined, undefined);
    const group = (from: number, n: number): string[] => Array.from({ length: n }, (_, k) => `p:c${from + k}`);
    // Synchronously: every frame is in the sink's queue; two whole groups were uncorked (sent).
    expect(log).toEqual(['cork', ...group(0, 16), 'uncork', 'cork', ...group(16, 16), 'uncork', 'cork', ...group(32, 8)]);
    expect(client.framesWritten).toBe(41);
    await new Promise<void>((r) => process.nextTick(r));
    expect(log.slice(-1)).toEqual(['uncork']); // the rest at the end of the tick
    // The sink runs out of room after two more: the others wait in the tick's
    // queue and follow them, in order, as a CANCEL made meanwhile does.
    log.length = 0;
    room = 2;
    for (let i = 0; i < 3; i++) void client.call('m', `d${i}`, undefined, undefined);
    const ac = new AbortController();
    const aborted = client.call('m', 'd3', undefined, ac.signal);
    aborted.catch(() => {});
    ac.abort();
    void client.call('m', 'd4', undefined, undefined);
    expect(log).toEqual(['cork', 'p:d0', 'p:d1']);
    await new Promise<void>((r) => process.nextTick(r));
    // d3 ended before its group went: its request is skipped, its CANCEL goes.
    expect(log).toEqual(['cork', 'p:d0', 'p:d1', 'uncork', 'cork', 'w:d2', 'w:cancel', 'w:d4', 'uncork']);
    expect(client.inFlight).toBe(41 + 4);
  });

  it('a group whose calls are all live goes to writeFramed() in one piece; one with an ended call, or one writeFramed() refuses, goes frame by frame', async () => {
    const got: string[] = [];
    let accept = true;
    let framedCalls = 0;
    const bodyOf = (f: Uint8Array): string => {
      const e = decodeRpcEnvelope(f);
      return e.kind === 'request' ? Buffer.from(e.body).toString() : e.kind;
    };
    const client = new ClientCore(
      {
        write: (f) => (got.push(`w:${bodyOf(f)}`), true),
        send: () => Promise.resolve(),
        writeFramed: (src, start, end, frames, payload) => {
          framedCalls++;
          if (!accept) return false;
          const parts = decodeFrames(Buffer.from(src.subarray(start, end)), { maxMessageSize: 1 << 20 });
          expect(parts).toHaveLength(frames);
          expect(parts.reduce((n, f) => n + f.length, 0)).toBe(payload);
          for (const f of parts) got.push(`f:${bodyOf(f)}`);
          return true;
        },
      },
      { timeoutMs: 0, streamWindow: 16 },
    );
    void client.call('m', 'lone', undefined, undefined);
    for (let i = 0; i < 16; i++) void client.call('m', `a${i}`, undefined, undefined);
    expect(got).toEqual(['w:lone', ...Array.from({ length: 16 }, (_, k) => `f:a${k}`)]);
    expect(client.framesWritten).toBe(17);
    // A call that ends before its group goes: the group goes frame by frame, without it.
    got.length = 0;
    const ac = new AbortController();
    const aborted = client.call('m', 'b0', undefined, ac.signal);
    aborted.catch(() => {});
    ac.abort();
    for (let i = 1; i < 16; i++) void client.call('m', `b${i}`, undefined, undefined);
    // b0's request is skipped; its CANCEL (queued when it was aborted) is the group's second frame; b15 waits for the end of the tick.
    expect(got).toEqual(['w:cancel', ...Array.from({ length: 14 }, (_, k) => `w:b${k + 1}`)]);
    await new Promise<void>((r) => process.nextTick(r));
    expect(got.slice(15)).toEqual(['f:b15']);
    // Refused by writeFramed(): frame by frame.
    got.length = 0;
    accept = false;
    const before = framedCalls;
    for (let i = 0; i < 16; i++) void client.call('m', `c${i}`, undefined, undefined);
    expect(framedCalls).toBe(before + 1);
    expect(got).toEqual(Array.from({ length: 16 }, (_, k) => `w:c${k}`));
    expect(client.inFlight).toBe(1 + 16 + 15 + 16);
  });

  it('requests still in the tick are not counted as sent when the connection is lost, and go out after it', async () => {
    const { client, frames } = sinkCore();
    const first = client.call('m', 'a', undefined, undefined);
    const second = client.call('m', 'b', undefined, undefined);
    client.connectionLost(client.framesWritten, new IpcError('ERR_SOCKET', 'gone'));
    expect((await rejection(first)).code).toBe('ERR_CONNECTION_LOST');
    await new Promise<void>((r) => process.nextTick(r));
    expect(frames.length).toBe(2);
    expect(client.inFlight).toBe(1);
    const id = (decodeRpcEnvelope(frames[1]) as { id: number }).id;
    client.onFrame(encodeRpcEnvelope({ kind: 'reply', id, body: 'ok' }));
    expect((await second).toString()).toBe('ok');
  });

  it('a request larger than maxFrameSize is handed over at once even while others are in flight (the sink refusal is thrown by stream())', () => {
    const frames: Buffer[] = [];
    const client = new ClientCore(
      {
        write: (f) => {
          if (f.length > 64) throw new IpcError('ERR_MESSAGE_TOO_LARGE', 'too large');
          frames.push(Buffer.from(f));
          return true;
        },
        send: () => Promise.resolve(),
      },
      { timeoutMs: 0, streamWindow: 16, maxFrameSize: 64 },
    );
    void client.call('m', 'a', undefined, undefined);
    expect(() => client.stream('s', 'x'.repeat(100), undefined, undefined, undefined)).toThrow(/too large/);
    expect(client.inFlight).toBe(1);
  });
});

describe('connection loss', () => {
  it('calls whose request was fully sent fail ERR_CONNECTION_LOST; unsent ones stay pending and complete on the next connection', async () => {
    const l = link({ hang: () => new Promise(() => {}), echo: (b) => b });
    const sent = [l.client.call('hang', 'a', undefined, undefined), l.client.call('hang', 'b', undefined, undefined)];
    await waitFor(() => l.core.m.running === 2, 5000, 'two calls running');
    l.hold();
    const unsent = [l.client.call('echo', 'c', undefined, undefined), l.client.call('echo', 'd', undefined, undefined)];
    l.breakConnection();
    for (const p of sent) {
      const e = await rejection(p);
      expect(e.code).toBe('ERR_CONNECTION_LOST');
    }
    expect(l.client.inFlight).toBe(2);
    l.reconnect();
    expect((await Promise.all(unsent)).map(String)).toEqual(['c', 'd']);
    expect(l.client.m.lost).toBe(2);
  });
});

describe('bad frames', () => {
  it('the server answers ERR_BAD_REQUEST when it can read an id, and ignores (counts) the rest', () => {
    const out: Buffer[] = [];
    const core = new ServerCore({ x: () => 'y' }, { maxConcurrentCalls: 4, maxFrameSize: 1 << 20 });
    const conn = core.connection({ write: (f) => (out.push(Buffer.from(f)), true), send: () => Promise.resolve() }, CONN);
    const h = { retain() {} };
    conn.onFrame(Buffer.from([0x01, 0x05, 0x02, 0x00, 0x01, 0x78]), h); // unknown flag 0x02
    conn.onFrame(Buffer.from([0x09, 0x07]), h); // unknown kind
    conn.onFrame(Buffer.from([0x01]), h); // no id
    conn.onFrame(Buffer.from([0x01, 0xff]), h); // truncated id
    conn.onFrame(Buffer.from([0x02, 0x03]), h); // a REPLY from a client
    conn.onFrame(encodeRpcEnvelope({ kind: 'cancel', id: 99 }), h); // unknown id: ignored
    conn.onFrame(encodeRpcEnvelope({ kind: 'credit', id: 99, credit: 3 }), h); // unknown id: ignored
    const decoded = out.map((b) => decodeRpcEnvelope(b));
    expect(decoded.map((d) => [d.kind, d.id, d.kind === 'error' ? d.code : ''])).toEqual([
      ['error', 5, 'ERR_BAD_REQUEST'],
      ['error', 7, 'ERR_BAD_REQUEST'],
      ['error', 3, 'ERR_BAD_REQUEST'],
    ]);
    expect(core.m.invalidFrames).toBe(5);
  });

  it('a duplicate id of a running call is refused; a stopping server answers ERR_UNAVAILABLE', async () => {
    const out: Buffer[] = [];
    const core = new ServerCore({ hang: () => new Promise(() => {}) }, { maxConcurrentCalls: 4, maxFrameSize: 1 << 20 });
    const conn = core.connection({ write: (f) => (out.push(Buffer.from(f)), true), send: () => Promise.resolve() }, CONN);
    const h = { retain() {} };
    const req = encodeRpcEnvelope({ kind: 'request', id: 1, method: 'hang' });
    conn.onFrame(req, h);
    conn.onFrame(req, h);
    core.stopping = true;
    conn.onFrame(encodeRpcEnvelope({ kind: 'request', id: 2, method: 'hang' }), h);
    expect(out.map((b) => decodeRpcEnvelope(b))).toMatchObject([
      { kind: 'error', id: 1, code: 'ERR_BAD_REQUEST' },
      { kind: 'error', id: 2, code: 'ERR_UNAVAILABLE' },
    ]);
    core.abortAll('ERR_CANCELLED', 'server stopped', new IpcError('ERR_NOT_RUNNING', 'stopped'));
    expect(decodeRpcEnvelope(out[2])).toMatchObject({ kind: 'error', id: 1, code: 'ERR_CANCELLED' });
    await core.whenIdle();
  });

  it('an async handler with a large body retains the frame memory; a small body is copied', async () => {
    let kept: Buffer | undefined;
    const l = link({
      async keep(b) {
        await null;
        kept = b;
        return b.subarray(0, 4);
      },
    });
    await l.client.call('keep', 'small', undefined, undefined);
    expect(l.holder.retained).toBe(0);
    const big = Buffer.alloc(10_000, 7);
    const r = await l.client.call('keep', big, undefined, undefined);
    expect(l.holder.retained).toBe(1);
    expect(kept!.equals(big)).toBe(true);
    expect([...r]).toEqual([7, 7, 7, 7]);
  });
});
