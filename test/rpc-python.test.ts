// The RPC envelope from another language (issue #18): test/fixtures/rpc_peer.py,
// a Python 3 program written from the specification (docs/rpc.md) with the
// standard library only, checks the test vectors, calls a uds-ipc RpcServer and
// serves a uds-ipc RpcClient.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IpcError, RpcClient, RpcServer } from '../src/index';
import { FIXTURES, killChildren, Proc, PYTHON, tmpSocket, useTracking, waitFor, within, type Line } from './helpers';

const PEER = join(FIXTURES, 'rpc_peer.py');
const VECTORS = join(FIXTURES, 'rpc-vectors.json');

const track = useTracking(1000);
afterEach(() => killChildren());

/** Runs the peer to completion; resolves with its JSON lines and exit status. */
function runPeer(args: string[], timeoutMs = 30_000): Promise<{ lines: Line[]; code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, [PEER, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const lines = stdout
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as Line);
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ lines, code, stderr });
    });
  });
}

/** The Python client: makes `calls` at once against `path`; resolves with one result per call, in order. */
async function pythonCalls(path: string, calls: object[]): Promise<Line[]> {
  // Through a file: one argument is limited to 128 KiB (E2BIG).
  const spec = join(dirname(path), `calls-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(spec, JSON.stringify(calls));
  const p = new Proc(PYTHON, [PEER, 'call', path, `@${spec}`]);
  await p.line((l) => l.event === 'done', 'the Python client to finish its calls', 30_000);
  await within(p.exited, 'the Python client to exit');
  expect(p.exit?.code, p.stderr).toBe(0);
  const results = p.all((l) => l.event === 'result');
  expect(results.map((r) => r.i)).toEqual(calls.map((_, i) => i));
  return results;
}

function needRpc(): void {
  // Until the RPC layer of issue #18 is merged these classes do not exist: say so plainly.
  if (typeof RpcServer !== 'function' || typeof RpcClient !== 'function') {
    throw new Error('RpcServer/RpcClient are not exported by src/index.ts (the RPC layer is not merged)');
  }
}

describe('Python peer: the envelope test vectors', () => {
  it('decodes and re-encodes every vector of test/fixtures/rpc-vectors.json', async () => {
    expect(existsSync(VECTORS), `${VECTORS} is missing`).toBe(true);
    const vectors = JSON.parse(readFileSync(VECTORS, 'utf8')) as { name: string; decoded?: { kind: unknown } }[];
    const { lines, code, stderr } = await runPeer(['vectors', VECTORS]);
    const failed = lines.filter((l) => l.event === 'vector' && !l.ok);
    expect(failed, stderr).toEqual([]);
    const summary = lines.find((l) => l.event === 'vectors');
    expect(summary).toEqual({ event: 'vectors', ok: vectors.length, failed: 0 });
    expect(code).toBe(0);
    // The specification's vectors cover every kind.
    const kinds = new Set(vectors.filter((v) => v.decoded).map((v) => String(v.decoded!.kind).toLowerCase()));
    for (const k of ['request', 'reply', 'error', 'part', 'end', 'cancel', 'credit']) {
      expect(kinds.has(k) || kinds.has(String(['', 'request', 'reply', 'error', 'part', 'end', 'cancel', 'credit'].indexOf(k))), k).toBe(true);
    }
  });

  it('the Python client and server agree with each other (selftest)', async () => {
    const { lines, code, stderr } = await runPeer(['selftest']);
    expect(lines.find((l) => l.event === 'selftest'), stderr).toEqual({ event: 'selftest', ok: true, problems: [] });
    expect(code).toBe(0);
  });
});

describe('Python client → uds-ipc RpcServer', () => {
  async function startServer(methods: Record<string, unknown>): Promise<string> {
    needRpc();
    const path = tmpSocket('rpc-py.sock');
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const server = track(new RpcServer(path, methods as any));
    await server.start();
    return path;
  }

  it('unary calls, errors with codes, unknown methods, streams, credentials', async () => {
    let generatorClosed = false;
    const peers: { pid: number; uid: number; gid: number; method: string }[] = [];
    const path = await startServer({
      echo: (body: Buffer) => Buffer.from(body),
      add: (body: Buffer) => {
        const { a, b } = JSON.parse(body.toString()) as { a: number; b: number };
        return JSON.stringify(a + b);
      },
      fail: (body: Buffer) => {
        throw Object.assign(new Error(body.toString() || 'failed on purpose'), { code: 'E_FAIL' });
      },
      boom: () => {
        throw new Error('secret internals at /home/someone');
      },
      whoami: (_body: Buffer, ctx: { peer: { pid: number; uid: number; gid: number }; method: string }) => {
        peers.push({ ...ctx.peer, method: ctx.method });
        return JSON.stringify(ctx.peer);
      },
      count: async function* (body: Buffer) {
        const n = Number(body.toString());
        try {
          for (let i = 0; i < n; i++) yield String(i);
        } finally {
          if (n >= 1000) generatorClosed = true;
        }
      },
    });
    const binary = randomBytes(70_000);
    const r = await pythonCalls(path, [
      { method: 'echo', body: 'hello' },
      { method: 'echo', bodyHex: binary.toString('hex') },
      { method: 'echo', body: '' },
      { method: 'add', body: JSON.stringify({ a: 2, b: 40 }) },
      { method: 'fail', body: 'nope' },
      { method: 'boom', body: '' },
      { method: 'nosuch', body: '' },
      { method: 'count', body: '20', stream: true, credit: 2 },
      { method: 'count', body: '100000', stream: true, credit: 4, take: 3 },
      { method: 'whoami', body: '' },
    ]);
    expect(r[0]).toMatchObject({ ok: true, body: 'hello' });
    expect(r[1]).toMatchObject({ ok: true, bodyHex: binary.toString('hex') });
    expect(r[2]).toMatchObject({ ok: true, bodyHex: '' });
    expect(r[3]).toMatchObject({ ok: true, body: '42' });
    expect(r[4]).toMatchObject({ ok: false, code: 'E_FAIL', message: 'nope' });
    expect(r[5]).toMatchObject({ ok: false, code: 'ERR_INTERNAL' });
    expect(r[5].message).not.toMatch(/secret|home|at /);
    expect(r[6]).toMatchObject({ ok: false, code: 'ERR_UNKNOWN_METHOD' });
    expect(r[7]).toMatchObject({ ok: true, end: true, parts: Array.from({ length: 20 }, (_, i) => String(i)) });
    expect(r[8]).toMatchObject({ ok: true, cancelled: true, parts: ['0', '1', '2'] });
    // The Python client sent CANCEL after 3 parts: the server closes the generator.
    await waitFor(() => generatorClosed, 10_000, 'the cancelled stream’s generator to be closed');
    const who = JSON.parse(r[9].body as string) as { pid: number; uid: number; gid: number };
    expect(who.uid).toBe(process.getuid!());
    expect(who.gid).toBe(process.getgid!());
    expect(peers).toHaveLength(1);
    expect(peers[0].method).toBe('whoami');
    expect(peers[0].pid).toBe(who.pid);
  });

  it('a deadline set by the Python client aborts the handler’s ctx.signal', async () => {
    let sawAbort = false;
    const path = await startServer({
      wait: (_body: Buffer, ctx: { signal: AbortSignal }) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            sawAbort = true;
            reject(new Error('aborted'));
          });
        }),
    });
    const [r] = await pythonCalls(path, [{ method: 'wait', body: '', deadlineMs: 100 }]);
    expect(r).toMatchObject({ ok: false, code: 'ERR_TIMEOUT' });
    await waitFor(() => sawAbort, 10_000, 'the handler to see its signal aborted');
  });
});

describe('uds-ipc RpcClient → Python server', () => {
  async function startPython(): Promise<{ path: string; py: Proc }> {
    const path = tmpSocket('py-rpc.sock');
    const py = new Proc(PYTHON, [PEER, 'serve', path]);
    await py.line((l) => l.event === 'listening', 'the Python server to listen');
    return { path, py };
  }

  async function startClient(path: string, options: Record<string, unknown> = {}): Promise<RpcClient> {
    needRpc();
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const client = track(new RpcClient(path, options as any));
    await client.start();
    return client;
  }

  async function rejection(p: Promise<unknown>): Promise<IpcError> {
    const e = await within(
      p.then(
        () => {
          throw new Error('the call succeeded; it should have failed');
        },
        (err: unknown) => err,
      ),
      'the call to fail',
    );
    expect(e).toBeInstanceOf(IpcError);
    return e as IpcError;
  }

  it('unary calls, remote errors with codes, unknown methods', async () => {
    const { path } = await startPython();
    const client = await startClient(path);
    expect((await within(client.call('echo', 'hello'), 'echo')).toString()).toBe('hello');
    const big = randomBytes(200_000);
    expect((await within(client.call('echo', big), 'echo 200 KB')).equals(big)).toBe(true);
    expect((await within(client.call('echo', Buffer.alloc(0)), 'echo empty')).length).toBe(0);
    expect((await within(client.call('add', JSON.stringify({ a: 2, b: 40 })), 'add')).toString()).toBe('42');

    const fail = await rejection(client.call('fail', 'nope'));
    expect(fail.code).toBe('ERR_REMOTE');
    expect(fail.remoteCode).toBe('E_FAIL');
    expect(fail.message).toContain('nope');

    const unknown = await rejection(client.call('nosuch', ''));
    expect(unknown.code).toBe('ERR_UNKNOWN_METHOD');

    // Many calls in flight on one connection, replies matched by id.
    const bodies = Array.from({ length: 64 }, (_, i) => `call ${i} `.repeat(1 + (i % 7)));
    const replies = await within(Promise.all(bodies.map((b) => client.call('echo', b))), '64 calls in flight');
    expect(replies.map(String)).toEqual(bodies);
  });

  it('streams: every part in order, the client’s credit honored, an early stop cancels', async () => {
    const { path, py } = await startPython();
    const client = await startClient(path, { streamWindow: 4 });
    const parts: string[] = [];
    for await (const part of client.stream('count', '50')) parts.push(part.toString());
    expect(parts).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    // The request carried the client's window as its credit, and the server
    // (which never sends beyond its credit) still delivered all 50 parts.
    // (Ids may be reused once a call ended: the streams are told apart by order.)
    const nth = async (pred: (l: Line) => boolean, n: number, what: string): Promise<Line> => {
      await py.line(() => py.all(pred).length > n, what);
      return py.all(pred)[n];
    };
    const isCountCall = (l: Line) => l.event === 'call' && l.method === 'count' && l.stream === true;
    const isStreamEnd = (l: Line) => l.event === 'stream-end';
    const call = await nth(isCountCall, 0, 'the count call');
    expect(call).toMatchObject({ stream: true, credit: 4 });
    expect(await nth(isStreamEnd, 0, 'the end of the first stream')).toMatchObject({ id: call.id, sent: 50, reason: 'end' });

    // A consumer that stops early: the client sends CANCEL and the server stops.
    const got: string[] = [];
    for await (const part of client.stream('count', '100000')) {
      got.push(part.toString());
      if (got.length === 3) break;
    }
    expect(got).toEqual(['0', '1', '2']);
    const second = await nth(isCountCall, 1, 'the second count call');
    await py.line((l) => l.event === 'cancel' && l.id === second.id, 'the Python server to receive CANCEL');
    const end = await nth(isStreamEnd, 1, 'the cancelled stream to end');
    expect(end).toMatchObject({ id: second.id, reason: 'cancelled' });
    expect(end.sent).toBeLessThan(100_000);

    // A unary call of a streaming method is an error from the server, with its code.
    // (The client may map the code to its own or keep it as remoteCode.)
    const wrong = await rejection(client.call('count', '3'));
    expect([wrong.code, wrong.remoteCode]).toContain('ERR_STREAMING');

    // The connection is still good.
    expect((await within(client.call('echo', 'after'), 'echo after the streams')).toString()).toBe('after');
    expect(py.all((l) => l.event === 'bad-frame')).toEqual([]);
  });
});
