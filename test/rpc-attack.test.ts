// Attacks on the RPC layer (RpcServer / RpcClient, issue #18) from a hostile
// local peer: raw node:net sockets speaking the envelope of docs/rpc.md
// against a real RpcServer, and a raw node:net server against a real
// RpcClient. Every test asserts the documented behaviour; five failed
// against the first RPC release and were fixed (unbounded replies to a client
// that does not read, a deadline past setTimeout's range, an oversized error
// frame, a stack overflow with thousands of queued synchronous calls).
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import {
  RpcServer,
  RpcClient,
  IpcError,
  encodeRpcEnvelope,
  decodeRpcEnvelope,
  encodeFrame,
  FrameDecoder,
  type CallContext,
  type RpcEnvelope,
} from '../src/index';
import { tmpSocket, cleanupDirs, waitFor, within, steady, FAST } from './helpers';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
const sockets: Socket[] = [];
const servers: Server[] = [];
function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 300 }).catch(() => {});
});
afterAll(() => cleanupDirs());

type Env = RpcEnvelope;
type EnvIn = Parameters<typeof encodeRpcEnvelope>[0];

/** One raw peer socket: frames in, decoded envelopes out (or the raw payloads when they do not decode). */
class RawPeer {
  readonly got: Env[] = [];
  readonly bad: Buffer[] = [];
  readonly #dec = new FrameDecoder({ maxMessageSize: 512 * 1024 * 1024 });
  closed = false;
  constructor(readonly sock: Socket) {
    sockets.push(sock);
    sock.on('data', (chunk) => {
      for (const p of this.#dec.push(chunk)) {
        try {
          this.got.push(decodeRpcEnvelope(p));
        } catch {
          this.bad.push(Buffer.from(p));
        }
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => (this.closed = true));
  }
  send(env: EnvIn): void {
    this.sock.write(encodeFrame(encodeRpcEnvelope(env)));
  }
  sendRaw(payload: Uint8Array): void {
    this.sock.write(encodeFrame(payload));
  }
  async next(pred: (e: Env) => boolean, what = 'an envelope', ms = 10_000): Promise<Env> {
    let found: Env | undefined;
    await waitFor(() => (found = this.got.find(pred)) !== undefined, ms, what);
    return found!;
  }
  of(id: number): Env[] {
    return this.got.filter((e) => e.id === id);
  }
}

async function rawClient(path: string): Promise<RawPeer> {
  const sock = createConnection(path);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return new RawPeer(sock);
}

/** A raw server: resolves each accepted connection as a RawPeer. */
async function rawServer(): Promise<{ path: string; peers: RawPeer[]; peer: () => Promise<RawPeer> }> {
  const path = tmpSocket();
  const peers: RawPeer[] = [];
  const srv = createServer((s) => peers.push(new RawPeer(s)));
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(path, resolve));
  return {
    path,
    peers,
    peer: async () => {
      await waitFor(() => peers.length > 0, 10_000, 'a connection');
      return peers[0];
    },
  };
}

async function server(methods: ConstructorParameters<typeof RpcServer>[1], opts = {}): Promise<{ path: string; server: RpcServer }> {
  const path = tmpSocket();
  const s = track(new RpcServer(path, methods, opts));
  await s.start();
  return { path, server: s };
}

async function rejection(p: Promise<unknown>): Promise<IpcError & { code: string; remoteCode?: unknown }> {
  try {
    await p;
  } catch (e) {
    return e as IpcError & { code: string };
  }
  throw new Error('expected a rejection');
}

const u = (...b: number[]) => Uint8Array.from(b);
const isErr = (id: number, code?: string) => (e: Env) => e.id === id && e.kind === 'error' && (code === undefined || e.code === code);
const isReply = (id: number) => (e: Env) => e.id === id && e.kind === 'reply';
const text = (e: Env) => Buffer.from((e as { body: Uint8Array }).body).toString();

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

// ─── 1. A hostile client against a real RpcServer ────────────────────────────

describe('hostile client vs RpcServer: malformed envelopes', () => {
  it('a truncated request whose id could be read gets ERR_BAD_REQUEST; the connection goes on', async () => {
    const { path, server: s } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    p.sendRaw(u(0x01, 0x05)); // REQUEST id 5, flags missing
    p.sendRaw(u(0x01, 0x06, 0x00, 0x00, 0x09, 0x61)); // method length 9, one byte present
    p.sendRaw(u(0x01, 0x07, 0x00)); // deadline missing
    p.send({ kind: 'request', id: 8, method: 'ping' });
    await p.next(isReply(8), 'the ping reply');
    for (const id of [5, 6, 7]) expect(p.of(id)).toMatchObject([{ kind: 'error', code: 'ERR_BAD_REQUEST' }]);
    expect(text(p.of(8)[0])).toBe('pong');
    expect(s.metrics().invalidFrames).toBe(3);
  });

  it('an empty payload and a lone kind byte are ignored (no id to answer), counted in invalidFrames', async () => {
    const { path, server: s } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    p.sendRaw(u());
    p.sendRaw(u(0x01));
    p.sendRaw(u(0x02, 0x80)); // id truncated
    p.send({ kind: 'request', id: 1, method: 'ping' });
    await p.next(isReply(1));
    expect(p.got).toHaveLength(1);
    expect(s.metrics().invalidFrames).toBe(3);
  });

  it('an unknown kind, and kinds only a server may send, get ERR_BAD_REQUEST for their id', async () => {
    const { path } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    p.sendRaw(u(0x09, 0x01));
    p.sendRaw(u(0x00, 0x02));
    p.sendRaw(u(0xff, 0x03, 0xaa));
    p.send({ kind: 'reply', id: 4, body: 'x' });
    p.send({ kind: 'part', id: 5, body: 'x' });
    p.send({ kind: 'end', id: 6 });
    p.send({ kind: 'error', id: 7, code: 'X', message: 'y' });
    p.send({ kind: 'request', id: 8, method: 'ping' });
    await p.next(isReply(8));
    for (const id of [1, 2, 3, 4, 5, 6, 7]) expect(p.of(id)).toMatchObject([{ kind: 'error', code: 'ERR_BAD_REQUEST' }]);
  });

  it('a huge method-name length (2^40, 2^53-1, 257) and a zero length are refused with ERR_BAD_REQUEST, nothing allocated', async () => {
    const { path } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    p.sendRaw(u(0x01, 0x01, 0x00, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x61)); // 2^40
    p.sendRaw(u(0x01, 0x02, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x61)); // 2^53-1
    p.sendRaw(Buffer.concat([u(0x01, 0x03, 0x00, 0x00, 0x81, 0x02), Buffer.alloc(257, 0x61)])); // 257
    p.sendRaw(u(0x01, 0x04, 0x00, 0x00, 0x00)); // 0
    p.sendRaw(u(0x01, 0x05, 0x00, 0x00, 0x02, 0xc3, 0x28)); // invalid UTF-8
    p.send({ kind: 'request', id: 6, method: 'ping' });
    await p.next(isReply(6));
    for (const id of [1, 2, 3, 4, 5]) expect(p.of(id)).toMatchObject([{ kind: 'error', code: 'ERR_BAD_REQUEST' }]);
  });

  it('a call id that overflows (11 varint bytes, a 10th byte above 1, above 2^53-1) is ignored and counted; nothing is answered', async () => {
    const { path, server: s } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    const ff = (n: number) => Array.from({ length: n }, () => 0xff);
    p.sendRaw(u(0x01, ...ff(10), 0x01, 0x00, 0x00, 0x01, 0x61)); // 11 bytes
    p.sendRaw(u(0x01, ...ff(9), 0x02, 0x00, 0x00, 0x01, 0x61)); // 10th byte 2
    p.sendRaw(u(0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x00, 0x01, 0x61)); // 2^53
    p.sendRaw(u(0x06, ...ff(9), 0x01)); // CANCEL id 2^64-1
    p.send({ kind: 'request', id: 1, method: 'ping' });
    await p.next(isReply(1));
    expect(p.got).toHaveLength(1);
    expect(s.metrics().invalidFrames).toBe(4);
  });

  it('the largest id (2^53-1) works and is echoed exactly', async () => {
    const { path } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    const id = Number.MAX_SAFE_INTEGER;
    p.send({ kind: 'request', id, method: 'ping' });
    expect(text(await p.next(isReply(id)))).toBe('pong');
  });

  it('a call id reused while the first call is in flight: the second gets ERR_BAD_REQUEST and does not run; the first completes', async () => {
    const g = gate();
    let runs = 0;
    const { path, server: s } = await server({
      slow: async () => {
        runs++;
        await g.wait;
        return 'first';
      },
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 7, method: 'slow' });
    await waitFor(() => s.metrics().running === 1);
    p.send({ kind: 'request', id: 7, method: 'slow', body: 'again' });
    await p.next(isErr(7, 'ERR_BAD_REQUEST'));
    expect(runs).toBe(1);
    g.open();
    expect(text(await p.next(isReply(7)))).toBe('first');
    expect(runs).toBe(1);
  });

  it('a reused id of a QUEUED call (beyond maxConcurrentCalls) is refused too, and the queued call still runs once', async () => {
    const g = gate();
    let runs = 0;
    const { path, server: s } = await server(
      {
        slow: async (b: Buffer) => {
          runs++;
          await g.wait;
          return b.toString();
        },
      },
      { maxConcurrentCalls: 1 },
    );
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'slow', body: 'a' });
    p.send({ kind: 'request', id: 2, method: 'slow', body: 'b' });
    p.send({ kind: 'request', id: 2, method: 'slow', body: 'c' });
    await p.next(isErr(2, 'ERR_BAD_REQUEST'));
    expect(s.metrics()).toMatchObject({ running: 1, queued: 1 });
    g.open();
    await p.next(isReply(2));
    expect(p.of(2).filter((e) => e.kind === 'reply').map(text)).toEqual(['b']);
    expect(runs).toBe(2);
  });
});

describe('hostile client vs RpcServer: floods', () => {
  it('a flood of calls beyond maxConcurrentCalls waits unread: running stays at the limit, queued is bounded, the rest stays in the socket', async () => {
    const g = gate();
    const { path, server: s } = await server(
      {
        slow: async () => {
          await g.wait;
          return 'ok';
        },
      },
      { maxConcurrentCalls: 4 },
    );
    const p = await rawClient(path);
    const N = 100_000;
    const frames: Buffer[] = [];
    for (let id = 1; id <= N; id++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'request', id, method: 'slow', body: 'xxxxxxxx' })));
    p.sock.write(Buffer.concat(frames));
    await waitFor(() => s.metrics().running === 4);
    const queued = await steady(() => s.metrics().queued, 200);
    const m = s.metrics();
    expect(m.running).toBe(4);
    // One batch's worth at most waits in the server; the rest is unread in the socket.
    expect(m.running + queued).toBeLessThan(N / 4);
    expect(m.calls).toBeLessThan(N / 4);
    g.open();
    await within(
      waitFor(() => p.got.length === N, 60_000, 'all replies'),
      'all replies',
      70_000,
    );
    expect(p.got.every((e) => e.kind === 'reply')).toBe(true);
  }, 90_000);

  it('a flood of CANCEL and CREDIT frames for unknown ids is ignored: nothing answered, nothing kept, the connection keeps serving', async () => {
    const { path, server: s } = await server({ ping: () => 'pong' });
    const p = await rawClient(path);
    const frames: Buffer[] = [];
    for (let id = 1; id <= 50_000; id++) {
      frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'cancel', id })));
      frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'credit', id, credit: Number.MAX_SAFE_INTEGER })));
    }
    p.sock.write(Buffer.concat(frames));
    p.send({ kind: 'request', id: 1, method: 'ping' });
    await p.next(isReply(1));
    expect(p.got).toHaveLength(1);
    expect(s.metrics()).toMatchObject({ cancelled: 0, invalidFrames: 0, running: 0, queued: 0 });
  });

  it('CREDIT with a huge count on a stream the client does not read: the server produces only what its reply queue and the socket hold', async () => {
    let produced = 0;
    let closed = false;
    const part = Buffer.alloc(1024, 0x61);
    const { path, server: s } = await server(
      {
        async *tail() {
          try {
            for (;;) {
              produced++;
              yield part;
            }
          } finally {
            closed = true;
          }
        },
      },
      { maxReplyBytes: 64 * 1024 },
    );
    const p = await rawClient(path);
    p.sock.pause(); // never read
    p.send({ kind: 'request', id: 1, method: 'tail', stream: true, credit: 1 });
    p.send({ kind: 'credit', id: 1, credit: Number.MAX_SAFE_INTEGER });
    p.send({ kind: 'credit', id: 1, credit: Number.MAX_SAFE_INTEGER });
    await waitFor(() => produced > 10);
    const n = await steady(() => produced, 300);
    // maxReplyBytes (64 KiB) + the kernel's socket buffers (a few hundred KiB) of 1 KiB parts.
    expect(n * 1024).toBeLessThan(8 * 1024 * 1024);
    expect(s.metrics().running).toBe(1);
    p.sock.resume();
    p.send({ kind: 'cancel', id: 1 });
    await waitFor(() => closed, 10_000, 'the generator closed');
    await waitFor(() => s.metrics().running === 0);
  });

  it('a client that never reads replies while it floods unary calls: the server stops taking its requests (memory bounded by maxReplyBytes)', async () => {
    const reply = Buffer.alloc(4096, 0x62);
    const { path, server: s } = await server({ get: () => reply }, { maxReplyBytes: 64 * 1024 });
    const p = await rawClient(path);
    p.sock.pause(); // never read
    const N = 4000; // 16 MiB of replies
    const frames: Buffer[] = [];
    for (let id = 1; id <= N; id++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'request', id, method: 'get' })));
    p.sock.write(Buffer.concat(frames));
    // Another client is not affected.
    const other = track(new RpcClient(path, { reconnect: FAST }));
    await other.start();
    expect((await other.call('get', '', { timeoutMs: 10_000 })).length).toBe(4096);
    await waitFor(() => s.metrics().calls > 30);
    const calls = await steady(() => s.metrics().calls, 300);
    // Replies the server holds (its queue, maxReplyBytes, plus the kernel's
    // buffers) are a few hundred KiB: a bounded number of calls has run. With
    // no bound, every request is read and its 4 KiB reply kept in memory.
    expect(calls * 4096).toBeLessThan(4 * 1024 * 1024);
  });
});

describe('hostile client vs RpcServer: floods of answers the client does not read', () => {
  it('a non-reading client flooding requests for an unknown method: the ERROR frames are bounded the same way', async () => {
    const { path, server: s } = await server({ ping: () => 'pong' }, { maxReplyBytes: 16 * 1024 });
    const p = await rawClient(path);
    p.sock.pause(); // never read
    const name = 'm'.repeat(256); // each ERROR echoes it: ~280 bytes
    const N = 40_000; // ~11 MiB of ERROR frames
    const frames: Buffer[] = [];
    for (let id = 1; id <= N; id++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'request', id, method: name })));
    p.sock.write(Buffer.concat(frames));
    await waitFor(() => s.metrics().unknownMethods > 100);
    const n = await steady(() => s.metrics().unknownMethods, 300);
    expect(n * 280).toBeLessThan(4 * 1024 * 1024);
  });
});

describe('hostile client vs RpcServer: method names and stop', () => {
  it.each(['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'isPrototypeOf'])(
    'method %s is ERR_UNKNOWN_METHOD (no Object.prototype member is called)',
    async (name) => {
      const { path, server: s } = await server({ ping: () => 'pong' });
      const client = track(new RpcClient(path, { reconnect: FAST }));
      await client.start();
      const e = await rejection(client.call(name, 'x', { timeoutMs: 10_000 }));
      expect(e).toMatchObject({ code: 'ERR_UNKNOWN_METHOD', remoteCode: 'ERR_UNKNOWN_METHOD' });
      const se = await rejection(client.stream(name, 'x', { timeoutMs: 10_000 }).next());
      expect(se).toMatchObject({ code: 'ERR_UNKNOWN_METHOD' });
      expect(s.metrics()).toMatchObject({ unknownMethods: 2, calls: 0, failed: 0 });
    },
  );

  it('a methods object with a null prototype, or inherited members, exposes only its own names', async () => {
    const proto = { inherited: () => 'nope' };
    const methods = Object.create(proto) as Record<string, () => string>;
    methods.own = () => 'yes';
    const { path } = await server(methods);
    const client = track(new RpcClient(path, { reconnect: FAST }));
    await client.start();
    expect((await client.call('own', '', { timeoutMs: 10_000 })).toString()).toBe('yes');
    expect(await rejection(client.call('inherited', '', { timeoutMs: 10_000 }))).toMatchObject({ code: 'ERR_UNKNOWN_METHOD' });
  });

  it('a request while the server is stopping is answered ERR_UNAVAILABLE and does not run; the call in flight finishes', async () => {
    const g = gate();
    let runs = 0;
    const { path, server: s } = await server({
      slow: async () => {
        runs++;
        await g.wait;
        return 'done';
      },
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'slow' });
    await waitFor(() => s.metrics().running === 1);
    const stopped = s.stop({ timeoutMs: 10_000 });
    p.send({ kind: 'request', id: 2, method: 'slow' });
    p.send({ kind: 'request', id: 3, method: 'nope' });
    await p.next(isErr(2, 'ERR_UNAVAILABLE'));
    await p.next(isErr(3, 'ERR_UNAVAILABLE'));
    expect(runs).toBe(1);
    g.open();
    expect(text(await p.next(isReply(1)))).toBe('done');
    await stopped;
  });

  it('a call still running when stop() times out: the client gets ERR_CANCELLED and ctx.signal aborts with ERR_NOT_RUNNING', async () => {
    let sig: AbortSignal | undefined;
    const { path, server: s } = await server({
      hang: (_b: Buffer, ctx: CallContext) => {
        sig = ctx.signal;
        return new Promise<string>(() => {});
      },
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'hang' });
    await waitFor(() => s.metrics().running === 1);
    await s.stop({ timeoutMs: 50 });
    expect(sig?.aborted).toBe(true);
    expect(sig?.reason).toMatchObject({ code: 'ERR_NOT_RUNNING' });
    await p.next(isErr(1, 'ERR_CANCELLED'));
  });
});

describe('hostile client vs RpcServer: deadlines, errors, recursion', () => {
  it('a deadline_ms above 2^31-1 ms (setTimeout range) neither expires the call early nor spins the timer with TimeoutOverflowWarnings', async () => {
    const g = gate();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => {
      if (w.name === 'TimeoutOverflowWarning') warnings.push(w);
    };
    process.on('warning', onWarning);
    try {
      const { path, server: s } = await server({
        slow: async () => {
          await g.wait;
          return 'late';
        },
        ping: () => 'pong',
      });
      const p = await rawClient(path);
      p.send({ kind: 'request', id: 1, method: 'slow', deadlineMs: 2 ** 32 });
      await waitFor(() => s.metrics().running === 1);
      // 50 round trips of another call while the first one waits.
      for (let id = 2; id < 52; id++) {
        p.send({ kind: 'request', id, method: 'ping' });
        await p.next(isReply(id));
      }
      expect(p.of(1)).toEqual([]);
      expect(s.metrics().timedOut).toBe(0);
      g.open();
      await p.next(isReply(1));
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('the largest deadline (2^53-1 ms) is accepted: ctx.deadline is a finite time, the call runs', async () => {
    let deadline: number | undefined;
    const { path } = await server({
      d: (_b: Buffer, ctx: CallContext) => {
        deadline = ctx.deadline;
        return 'ok';
      },
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'd', deadlineMs: Number.MAX_SAFE_INTEGER });
    await p.next(isReply(1));
    expect(Number.isFinite(deadline)).toBe(true);
  });

  it('a handler error crosses as code + message only: no stack, no cause; a code-less error is "internal error"', async () => {
    const { path } = await server(
      {
        coded: () => {
          const e = new Error('visible') as Error & { code: string; cause: unknown };
          e.code = 'E_MINE';
          e.cause = new Error('secret cause');
          throw e;
        },
        plain: () => {
          throw new Error('secret /etc/shadow detail');
        },
        str: () => {
          throw 'secret string';
        },
      },
      { onError: () => {} },
    );
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'coded' });
    p.send({ kind: 'request', id: 2, method: 'plain' });
    p.send({ kind: 'request', id: 3, method: 'str' });
    const e1 = (await p.next(isErr(1))) as Extract<Env, { kind: 'error' }>;
    const e2 = (await p.next(isErr(2))) as Extract<Env, { kind: 'error' }>;
    const e3 = (await p.next(isErr(3))) as Extract<Env, { kind: 'error' }>;
    expect(e1).toMatchObject({ code: 'E_MINE', message: 'visible' });
    expect(e2).toMatchObject({ code: 'ERR_INTERNAL', message: 'internal error' });
    expect(e3).toMatchObject({ code: 'ERR_INTERNAL', message: 'internal error' });
  });

  it('a coded handler error whose message (8192 characters of 3-byte UTF-8) exceeds maxReplyBytes still reaches the caller, cut, and the connection goes on', async () => {
    const errors: Error[] = [];
    const { path } = await server(
      {
        boom: () => {
          throw Object.assign(new Error('€'.repeat(20_000)), { code: 'E_BIG' });
        },
        ping: () => 'pong',
      },
      { maxReplyBytes: 16 * 1024, onError: (e: Error) => errors.push(e) },
    );
    const client = track(new RpcClient(path, { reconnect: FAST }));
    await client.start();
    const e = await rejection(client.call('boom', '', { timeoutMs: 5_000 }));
    // Either the (cut) error or ERR_MESSAGE_TOO_LARGE: never a hang until the deadline.
    expect(e.code).toBe('ERR_REMOTE');
    expect(['E_BIG', 'ERR_MESSAGE_TOO_LARGE']).toContain(e.remoteCode);
    expect((await client.call('ping', '', { timeoutMs: 5_000 })).toString()).toBe('pong');
  });

  it('thousands of queued requests to a synchronous method start one after another without exhausting the stack', async () => {
    const g = gate();
    const errors: Error[] = [];
    const { path, server: s } = await server(
      {
        slow: async () => {
          await g.wait;
          return 'slow';
        },
        fast: () => 'f',
      },
      { maxConcurrentCalls: 1, onError: (e: Error) => errors.push(e) },
    );
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'slow' });
    await waitFor(() => s.metrics().running === 1);
    const N = 20_000;
    const frames: Buffer[] = [];
    for (let id = 2; id <= N + 1; id++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'request', id, method: 'fast' })));
    p.sock.write(Buffer.concat(frames));
    await waitFor(() => s.metrics().queued > 1000, 10_000, 'a long queue');
    const queued = await steady(() => s.metrics().queued, 200);
    g.open();
    await within(
      waitFor(() => p.got.length >= queued + 1 || p.closed, 10_000, 'the replies'),
      'the replies',
      15_000,
    );
    expect(errors.map((e) => e.message)).toEqual([]);
    expect(p.closed).toBe(false);
    await waitFor(() => p.got.length === N + 1, 30_000, 'every reply');
    expect(p.got.filter((e) => e.kind === 'reply')).toHaveLength(N + 1);
  }, 60_000);

  it('a stream request with credit 0: nothing is sent until CREDIT; the connection is still read meanwhile (no deadlock)', async () => {
    let produced = 0;
    const { path, server: s } = await server(
      {
        async *st() {
          for (;;) {
            produced++;
            yield String(produced);
          }
        },
        ping: () => 'pong',
      },
      { maxConcurrentCalls: 1 },
    );
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'st', stream: true, credit: 0 });
    await waitFor(() => s.metrics().running === 1);
    p.send({ kind: 'request', id: 2, method: 'ping' }); // waits for the slot
    await waitFor(() => s.metrics().queued === 1);
    expect(p.of(1)).toEqual([]);
    p.send({ kind: 'credit', id: 1, credit: 2 });
    await waitFor(() => p.of(1).length === 2);
    expect(p.of(1).map(text)).toEqual(['1', '2']);
    p.send({ kind: 'cancel', id: 1 });
    expect(text(await p.next(isReply(2)))).toBe('pong');
    expect(produced).toBeLessThanOrEqual(3);
  });

  it('END after the last PART needs credit too: the server asks the generator for more only with credit, so a client that granted exactly the parts it read grants one more to see END', async () => {
    const { path } = await server({
      async *two() {
        yield 'a';
        yield 'b';
      },
      ping: () => 'pong',
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'two', stream: true, credit: 2 });
    await waitFor(() => p.of(1).length === 2, 10_000, 'both parts');
    // The server read the ping after sending both parts: had it known the
    // stream was over, END would have been sent before the ping's REPLY.
    p.send({ kind: 'request', id: 2, method: 'ping' });
    expect(text(await p.next(isReply(2)))).toBe('pong');
    expect(p.of(1).map((e) => e.kind)).toEqual(['part', 'part']);
    p.send({ kind: 'credit', id: 1, credit: 1 });
    await p.next((e) => e.id === 1 && e.kind === 'end', 'END once credit allows one more PART');
    expect(p.of(1).map((e) => e.kind)).toEqual(['part', 'part', 'end']);
  });

  it('every slot held by a stream parked at credit 0, then a flood: maxConcurrentCalls wait, the rest are refused ERR_UNAVAILABLE (did not run)', async () => {
    let pings = 0;
    const { path, server: s } = await server(
      {
        async *st() {
          yield 'x';
        },
        ping: () => {
          pings++;
          return 'pong';
        },
      },
      { maxConcurrentCalls: 2 },
    );
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'st', stream: true, credit: 0 });
    p.send({ kind: 'request', id: 2, method: 'st', stream: true, credit: 0 });
    await waitFor(() => s.metrics().running === 2);
    const frames: Buffer[] = [];
    for (let id = 3; id < 1003; id++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'request', id, method: 'ping', body: 'b'.repeat(100) })));
    p.sock.write(Buffer.concat(frames));
    await waitFor(() => p.got.length === 998, 10_000, 'the refusals');
    expect(p.got.every((e) => e.kind === 'error' && e.code === 'ERR_UNAVAILABLE')).toBe(true);
    expect(s.metrics()).toMatchObject({ running: 2, queued: 2 });
    expect(pings).toBe(0);
    p.send({ kind: 'cancel', id: 1 });
    // 2: one for the part, one to pull the generator again and learn it ended (END needs a pull, so a credit).
    p.send({ kind: 'credit', id: 2, credit: 2 });
    await waitFor(() => p.got.filter((e) => e.kind === 'reply').length === 2, 10_000, 'the queued pings');
    await p.next((e) => e.id === 2 && e.kind === 'end');
    expect(pings).toBe(2);
    expect(s.metrics()).toMatchObject({ running: 0, queued: 0 });
  });

  it('a REQUEST with unknown flag bits is ERR_BAD_REQUEST; STREAM for a unary method ERR_NOT_STREAMING; unary for a stream ERR_STREAMING', async () => {
    let ran = 0;
    const { path } = await server({
      u: () => {
        ran++;
        return 'u';
      },
      async *st() {
        ran++;
        yield 'x';
      },
    });
    const p = await rawClient(path);
    p.sendRaw(u(0x01, 0x01, 0x02, 0x00, 0x01, 0x75));
    p.sendRaw(u(0x01, 0x02, 0x81, 0x00, 0x05, 0x01, 0x75));
    p.send({ kind: 'request', id: 3, method: 'u', stream: true, credit: 5 });
    p.send({ kind: 'request', id: 4, method: 'st' });
    await p.next(isErr(4));
    expect(p.of(1)).toMatchObject([{ code: 'ERR_BAD_REQUEST' }]);
    expect(p.of(2)).toMatchObject([{ code: 'ERR_BAD_REQUEST' }]);
    expect(p.of(3)).toMatchObject([{ code: 'ERR_NOT_STREAMING' }]);
    expect(p.of(4)).toMatchObject([{ code: 'ERR_STREAMING' }]);
    expect(ran).toBe(0);
  });

  it('a deadline that passes while an async handler ignores ctx.signal: one ERROR ERR_TIMEOUT, the late result is discarded', async () => {
    const g = gate();
    let sig: AbortSignal | undefined;
    const { path, server: s } = await server({
      slow: async (_b: Buffer, ctx: CallContext) => {
        sig = ctx.signal;
        await g.wait;
        return 'late';
      },
      ping: () => 'pong',
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'slow', deadlineMs: 30 });
    await p.next(isErr(1, 'ERR_TIMEOUT'));
    expect(sig?.aborted).toBe(true);
    expect(sig?.reason).toMatchObject({ code: 'ERR_TIMEOUT' });
    g.open();
    await Promise.resolve();
    p.send({ kind: 'request', id: 2, method: 'ping' });
    await p.next(isReply(2));
    expect(p.of(1)).toHaveLength(1);
    expect(s.metrics()).toMatchObject({ timedOut: 1, running: 0 });
  });

  it('(documented, a hazard) a handler that lets a Node system error escape sends its code and message, file path included', async () => {
    const { readFileSync } = await import('node:fs');
    const { path } = await server({ read: () => readFileSync('/nonexistent/secret-dir/key.pem') });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'read' });
    const e = (await p.next(isErr(1))) as Extract<Env, { kind: 'error' }>;
    expect(e.code).toBe('ENOENT');
    expect(e.message).toContain('/nonexistent/secret-dir/key.pem');
  });

  it('ctx.signal read after the call completed is not aborted, and stays so when the client disconnects', async () => {
    let ctxKept: CallContext | undefined;
    let streamCtx: CallContext | undefined;
    const { path, server: s } = await server({
      keep: (_b: Buffer, ctx: CallContext) => {
        ctxKept = ctx;
        return 'ok';
      },
      async keepAsync(_b: Buffer, ctx: CallContext) {
        ctx.signal; // created while running
        await Promise.resolve();
        return 'ok';
      },
      async *st(_b: Buffer, ctx: CallContext) {
        streamCtx = ctx;
        yield 'a';
      },
    });
    const p = await rawClient(path);
    p.send({ kind: 'request', id: 1, method: 'keep' });
    p.send({ kind: 'request', id: 2, method: 'st', stream: true, credit: 4 });
    await p.next(isReply(1));
    await p.next((e) => e.id === 2 && e.kind === 'end');
    // A CANCEL after completion must not abort anything either.
    p.send({ kind: 'cancel', id: 1 });
    p.send({ kind: 'cancel', id: 2 });
    p.send({ kind: 'request', id: 3, method: 'keep' });
    await p.next(isReply(3));
    expect(ctxKept!.signal.aborted).toBe(false);
    expect(streamCtx!.signal.aborted).toBe(false);
    const sig1 = ctxKept!.signal;
    const sig2 = streamCtx!.signal;
    p.sock.destroy();
    await waitFor(() => s.metrics().transport.activeConnections === 0, 10_000, 'the disconnect');
    expect(sig1.aborted).toBe(false);
    expect(sig2.aborted).toBe(false);
    expect(s.metrics().cancelled).toBe(0);
  });
});

// ─── 2. A hostile server against a real RpcClient ────────────────────────────

async function hostile(clientOpts = {}) {
  const rs = await rawServer();
  const errors: Error[] = [];
  const client = track(new RpcClient(rs.path, { reconnect: FAST, onError: (e: Error) => errors.push(e), ...clientOpts }));
  await client.start();
  return { ...rs, client, errors };
}

describe('hostile server vs RpcClient', () => {
  it('replies, parts, ends and errors for ids never sent are discarded and counted; the real call still completes', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', 'x', { timeoutMs: 10_000 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    for (const id of [999, 2 ** 32, Number.MAX_SAFE_INTEGER, req.id + 64, req.id + 128]) {
      p.send({ kind: 'reply', id, body: 'evil' });
      p.send({ kind: 'part', id, body: 'evil' });
      p.send({ kind: 'end', id });
      p.send({ kind: 'error', id, code: 'EVIL', message: 'evil' });
    }
    p.send({ kind: 'reply', id: req.id, body: 'good' });
    expect((await call).toString()).toBe('good');
    expect(client.metrics()).toMatchObject({ lateFrames: 20, inFlight: 0 });
  });

  it('a duplicate reply: the first resolves the call, the second is discarded (lateFrames)', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', 'x', { timeoutMs: 10_000 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    p.send({ kind: 'reply', id: req.id, body: 'one' });
    p.send({ kind: 'reply', id: req.id, body: 'two' });
    p.send({ kind: 'error', id: req.id, code: 'X', message: 'three' });
    expect((await call).toString()).toBe('one');
    await waitFor(() => client.metrics().lateFrames === 2);
    // The next call (a new id) is not confused by the stale frames.
    const call2 = client.call('b', '', { timeoutMs: 10_000 });
    const req2 = await p.next((e) => e.kind === 'request' && e.id !== req.id);
    p.send({ kind: 'reply', id: req2.id, body: 'b' });
    expect((await call2).toString()).toBe('b');
  });

  it('a server that never replies: ERR_TIMEOUT at the deadline, CANCEL sent, nothing left in flight; a reply after the deadline is discarded and counted', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', 'x', { timeoutMs: 100 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    expect(req).toMatchObject({ deadlineMs: 100 });
    const e = await rejection(call);
    expect(e).toMatchObject({ code: 'ERR_TIMEOUT' });
    await p.next((x) => x.kind === 'cancel' && x.id === req.id, 'the CANCEL');
    expect(client.metrics()).toMatchObject({ timedOut: 1, inFlight: 0 });
    p.send({ kind: 'reply', id: req.id, body: 'too late' });
    await waitFor(() => client.metrics().lateFrames === 1);
  });

  it('an error reply with a huge (4 MiB) message rejects ERR_REMOTE with that code; the client stays usable', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', 'x', { timeoutMs: 10_000 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    p.send({ kind: 'error', id: req.id, code: 'E_HUGE', message: 'm'.repeat(4 * 1024 * 1024) });
    const e = await rejection(call);
    expect(e).toMatchObject({ code: 'ERR_REMOTE', remoteCode: 'E_HUGE' });
    expect(typeof e.remoteCode).toBe('string');
  });

  it('an error reply whose code is not printable ASCII (or empty, or too long) is an invalid frame: ignored, counted; the call then times out', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', 'x', { timeoutMs: 300 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    const id = req.id;
    p.sendRaw(u(0x03, id, 0x02, 0x00, 0x41, 0x6d)); // code "\0A"
    p.sendRaw(u(0x03, id, 0x00, 0x6d)); // empty code
    p.sendRaw(Buffer.concat([u(0x03, id, 0x81, 0x02), Buffer.alloc(257, 0x41)])); // 257 bytes
    p.sendRaw(u(0x03, id, 0x01, 0xc3)); // code byte 0xc3
    await waitFor(() => client.metrics().invalidFrames === 4);
    expect(await rejection(call)).toMatchObject({ code: 'ERR_TIMEOUT' });
  });

  it('stream parts after END (and after ERROR) are discarded and counted; the stream yields only what came before', async () => {
    const { client, peer } = await hostile();
    const st = client.stream('s', '', { timeoutMs: 10_000 });
    const it = st[Symbol.asyncIterator]();
    const first = it.next();
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    expect(req).toMatchObject({ stream: true, credit: 16 });
    p.send({ kind: 'part', id: req.id, body: 'a' });
    p.send({ kind: 'end', id: req.id });
    p.send({ kind: 'part', id: req.id, body: 'b' });
    p.send({ kind: 'end', id: req.id });
    expect((await first).value?.toString()).toBe('a');
    expect(await it.next()).toMatchObject({ done: true });
    await waitFor(() => client.metrics().lateFrames === 2);
  });

  it('a server flooding stream parts beyond the credit window: the call fails ERR_INVALID_FRAME, CANCEL is sent, the client buffers at most the window', async () => {
    const { client, peer, errors } = await hostile();
    const st = client.stream('s', '', { timeoutMs: 10_000, window: 4 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    expect(req).toMatchObject({ credit: 4 });
    const part = Buffer.alloc(64 * 1024, 0x70);
    const frames: Buffer[] = [];
    for (let i = 0; i < 200; i++) frames.push(encodeFrame(encodeRpcEnvelope({ kind: 'part', id: req.id, body: part })));
    p.sock.write(Buffer.concat(frames));
    await p.next((e) => e.kind === 'cancel' && e.id === req.id, 'the CANCEL');
    const got: Buffer[] = [];
    const e = await rejection(
      (async () => {
        for await (const b of st) got.push(b);
      })(),
    );
    expect(e).toMatchObject({ code: 'ERR_INVALID_FRAME' });
    expect(got.length).toBeLessThanOrEqual(4);
    expect(errors.some((x) => (x as IpcError).code === 'ERR_INVALID_FRAME')).toBe(true);
    expect(client.metrics().inFlight).toBe(0);
  });

  it('a REPLY to a stream call, and a PART or END to a unary call, fail that call with ERR_INVALID_FRAME', async () => {
    const { client, peer } = await hostile();
    const c1 = client.call('u1', '', { timeoutMs: 10_000 });
    const c2 = client.call('u2', '', { timeoutMs: 10_000 });
    const st = client.stream('s', '', { timeoutMs: 10_000 });
    const n = st.next();
    const p = await peer();
    await waitFor(() => p.got.filter((e) => e.kind === 'request').length === 3);
    const [r1, r2, r3] = p.got.filter((e) => e.kind === 'request');
    p.send({ kind: 'part', id: r1.id, body: 'x' });
    p.send({ kind: 'end', id: r2.id });
    p.send({ kind: 'reply', id: r3.id, body: 'x' });
    expect(await rejection(c1)).toMatchObject({ code: 'ERR_INVALID_FRAME' });
    expect(await rejection(c2)).toMatchObject({ code: 'ERR_INVALID_FRAME' });
    expect(await rejection(n)).toMatchObject({ code: 'ERR_INVALID_FRAME' });
  });

  it('garbage frames from the server (not envelopes, REQUEST/CANCEL/CREDIT kinds) are ignored and counted', async () => {
    const { client, peer } = await hostile();
    const call = client.call('a', '', { timeoutMs: 10_000 });
    const p = await peer();
    const req = await p.next((e) => e.kind === 'request');
    p.sendRaw(u());
    p.sendRaw(u(0x09, req.id));
    p.sendRaw(u(0x02));
    p.send({ kind: 'cancel', id: req.id });
    p.send({ kind: 'credit', id: req.id, credit: 5 });
    p.send({ kind: 'request', id: req.id, method: 'x' });
    p.send({ kind: 'reply', id: req.id, body: 'ok' });
    expect((await call).toString()).toBe('ok');
    expect(client.metrics().invalidFrames).toBe(6);
  });

  it('a reply above the client maxMessageSize, or a length prefix of 2^40: the connection is replaced, the call fails ERR_CONNECTION_LOST (no hang, no allocation)', async () => {
    const { client, peers, errors } = await hostile({ maxMessageSize: 64 * 1024 });
    const c1 = client.call('a', '', { timeoutMs: 10_000 });
    await waitFor(() => peers.length === 1);
    const p1 = peers[0];
    const r1 = await p1.next((e) => e.kind === 'request');
    p1.send({ kind: 'reply', id: r1.id, body: Buffer.alloc(1024 * 1024) });
    expect(await rejection(c1)).toMatchObject({ code: 'ERR_CONNECTION_LOST' });
    const c2 = client.call('b', '', { timeoutMs: 10_000 });
    await waitFor(() => peers.length === 2, 10_000, 'the new connection');
    const p2 = peers[1];
    await p2.next((e) => e.kind === 'request');
    p2.sock.write(u(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80)); // an endless varint
    p2.sock.write(u(0x80, 0x80, 0x80, 0x80, 0x80, 0x20)); // and 2^40 after that, for a decoder that takes it
    expect(await rejection(c2)).toMatchObject({ code: 'ERR_CONNECTION_LOST' });
    expect(errors.some((e) => ['ERR_MESSAGE_TOO_LARGE', 'ERR_INVALID_FRAME'].includes((e as IpcError).code))).toBe(true);
    expect(client.metrics().inFlight).toBe(0);
  });

  it('a server that never replies to many calls: every one times out, nothing leaks (inFlight 0), stop() is quick', async () => {
    const { client, peer } = await hostile();
    const calls = Array.from({ length: 500 }, (_, i) => rejection(client.call('a', String(i), { timeoutMs: 100 + (i % 50) })));
    const p = await peer();
    await waitFor(() => p.got.filter((e) => e.kind === 'request').length === 500);
    const errs = await Promise.all(calls);
    expect(errs.every((e) => e.code === 'ERR_TIMEOUT')).toBe(true);
    expect(client.metrics()).toMatchObject({ inFlight: 0, timedOut: 500 });
    await waitFor(() => p.got.filter((e) => e.kind === 'cancel').length === 500, 10_000, 'the CANCELs');
    await within(client.stop({ timeoutMs: 5_000 }), 'the stop', 2_000);
  });
});
