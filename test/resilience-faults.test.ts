// Resilience (issue 4): peers dying mid-frame, readers that never read,
// oversized messages, stop() deadlines, failing handlers. Every scenario ends
// by checking that the writers' metrics add up.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { existsSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { Reader, Writer, IpcError, type Batch, type ReaderOptions, type WriterOptions } from '../src/index';
import { tmpSocket, cleanupDirs, waitFor, runNode, FIXTURES } from './helpers';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const msg = require('./fixtures/res-msg.js') as {
  make(seq: number, len?: number): Buffer;
  check(m: Buffer, strictSize?: boolean): number | string;
  frame(payload: Buffer): Buffer;
  uvarint(n: number): Buffer;
};

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
const children: ChildProcess[] = [];
const sockets: net.Socket[] = [];
const pumps: Array<{ pumping: boolean; done: Promise<void> }> = [];
function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
afterEach(async () => {
  for (const p of pumps.splice(0)) {
    p.pumping = false;
    await p.done;
  }
  for (const s of sockets.splice(0)) s.destroy();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 100 }).catch(() => {});
});
afterAll(() => cleanupDirs());

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;
const EPIPE = 32;
const ECONNRESET = 104;
const ENOENT = 2;

function sumsUp(w: Writer, where: string): void {
  const m = w.metrics();
  expect(m.written, `${where}: written = sent + dropped + failed + queueDepth (${JSON.stringify(m)})`).toBe(
    m.sent + m.dropped + m.failed + m.queueDepth,
  );
}

interface ErrorRecord {
  code: string;
  context: string;
  conn: number | undefined;
  message: string;
  errno?: number;
  syscall?: string;
}

/** A Reader that validates res-msg.js messages and records everything per connection. */
function checkingReader(path: string, opts: ReaderOptions = {}, slowMs?: (connId: number) => number) {
  const st = {
    seqs: new Map<number, number[]>(), // conn id → seqs in delivery order
    bad: [] as string[],
    errors: [] as ErrorRecord[],
    opened: [] as number[],
    closed: new Map<number, string | undefined>(), // conn id → reason code
    reader: undefined as unknown as Reader,
  };
  st.reader = track(
    new Reader(
      path,
      (b: Batch) => {
        let list = st.seqs.get(b.connection.id);
        if (!list) st.seqs.set(b.connection.id, (list = []));
        for (const m of b) {
          const r = msg.check(m, false);
          if (typeof r === 'string') st.bad.push(`conn ${b.connection.id}: ${r}`);
          else list.push(r);
        }
        const ms = slowMs?.(b.connection.id) ?? 0;
        return ms > 0 ? sleep(ms) : undefined; // a slow handler (the scenario), not a wait
      },
      {
        ...opts,
        onError: (e: Error, context, conn) => {
          const ie = e as IpcError;
          st.errors.push({
            code: ie.code,
            context,
            conn: (conn as { id: number } | undefined)?.id,
            message: ie.message,
            errno: ie.errno,
            syscall: ie.syscall,
          });
        },
      },
    ),
  );
  st.reader.on('connection', (c) => st.opened.push(c.id));
  st.reader.on('disconnect', (c, why?: IpcError) => st.closed.set(c.id, why?.code));
  return st;
}

/** A Writer in this process streaming small res-msg.js messages 0, 1, 2, ... until stopped. */
function survivor(path: string) {
  const w = track(new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 50 } }));
  const errors: string[] = [];
  w.on('error', (e: IpcError, ctx: string) => errors.push(`${ctx} ${e.code}`));
  let disconnects = 0;
  w.on('disconnect', () => disconnects++);
  w.start();
  const s = { w, seq: 0, errors, disconnects: () => disconnects, pumping: true, done: Promise.resolve() };
  pumps.push(s);
  s.done = (async () => {
    while (s.pumping) {
      for (let i = 0; i < 50; i++) {
        if (!w.write(msg.make(s.seq, 64))) break;
        s.seq++;
      }
      await sleep(5); // the rate limit, not a wait
    }
  })();
  return s;
}

// The system interpreter when there is one: version-manager shims can take seconds to start.
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Runs python3 with `code`; resolves once it prints `ready`. */
async function python(code: string, args: string[]): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(PYTHON, ['-c', code, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  await waitFor(() => out.includes('ready') || child.exitCode !== null, 10_000, 'python listener');
  if (!out.includes('ready')) throw new Error(`python exited: ${err}`);
  return { child, out: () => out };
}

async function killAndWait(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const gone = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await gone;
}

// ─── writer killed mid-frame ─────────────────────────────────────────────────

describe('a writer process killed in the middle of a frame', () => {
  it('raw node:net writers (cut in the payload, cut in the length prefix): ERR_TRUNCATED_FRAME for that connection only; another connection keeps delivering', async () => {
    const path = tmpSocket();
    const st = checkingReader(path);
    await st.reader.start();
    const s = survivor(path);
    await waitFor(() => st.opened.length === 1 && (st.seqs.get(st.opened[0])?.length ?? 0) > 0, 10_000, 'survivor delivering');
    const survivorConn = st.opened[0];

    const cases = [
      { mode: 'payload', base: 1_000_000 },
      { mode: 'prefix', base: 2_000_000 },
    ];
    for (const c of cases) {
      const before = st.seqs.get(survivorConn)!.length;
      const res = await runNode(join(FIXTURES, 'res-raw-partial.js'), [path, c.mode, String(c.base), '5'], { timeoutMs: 20_000 });
      expect(res.signal, res.stderr).toBe('SIGKILL');
      expect(res.stdout).toBe('sent\n');
      // The child's connection is the one that delivered its seqs.
      const connOf = () => [...st.seqs.entries()].find(([, seqs]) => seqs[0] === c.base)?.[0];
      await waitFor(() => connOf() !== undefined, 10_000, `${c.mode}: the whole frames before the cut delivered`);
      const conn = connOf();
      await waitFor(() => st.closed.has(conn!), 10_000, `${c.mode}: connection closed`);
      expect(st.seqs.get(conn!)).toEqual([0, 1, 2, 3, 4].map((i) => c.base + i));
      const mine = st.errors.filter((e) => e.conn === conn);
      expect(mine.map((e) => [e.code, e.context]), c.mode).toEqual([['ERR_TRUNCATED_FRAME', 'connection']]);
      expect(st.closed.get(conn!)).toBe('ERR_TRUNCATED_FRAME');
      // The other connection is untouched and keeps delivering.
      await waitFor(() => st.seqs.get(survivorConn)!.length > before + 100, 10_000, 'survivor still delivering');
    }
    s.pumping = false;
    await s.done;
    await s.w.flush();
    await waitFor(() => st.seqs.get(survivorConn)!.length === s.seq, 10_000, 'survivor fully delivered');
    expect(st.seqs.get(survivorConn)).toEqual(Array.from({ length: s.seq }, (_, i) => i));
    expect(st.errors.filter((e) => e.conn === survivorConn || e.conn === undefined)).toEqual([]);
    expect(st.closed.has(survivorConn)).toBe(false);
    expect(st.bad).toEqual([]);
    expect(s.errors).toEqual([]);
    expect(s.disconnects()).toBe(0);
    expect(st.reader.metrics().errors).toBe(2);
    sumsUp(s.w, 'survivor');
  }, 40_000);

  it('a Writer child SIGKILLed while streaming 3 MB messages: a truncated frame on its connection only, every whole message intact, the other connection unaffected', async () => {
    const path = tmpSocket();
    const SIZE = 3_000_001;
    // The reader takes 50 ms per batch of the big writers (one message each)
    // and reads at most 1 MiB ahead: slower than they produce, so their
    // sockets stay full and a kill lands in the middle of a frame. (With a
    // fast reader every frame goes out in a sendmsg of its own into an empty
    // socket, and the kernel takes it whole: the stream ends on a boundary.)
    let survivorConn = -1;
    const st = checkingReader(path, { maxPendingBytes: 1 * MiB }, (id) => (id === survivorConn ? 0 : 50));
    await st.reader.start();
    const s = survivor(path);
    await waitFor(() => st.opened.length === 1, 10_000, 'survivor connected');
    survivorConn = st.opened[0];

    // A kill lands on a frame boundary only by a fluke; allow a few tries.
    let truncated = 0;
    const tries: string[] = [];
    for (let attempt = 0; attempt < 4 && truncated === 0; attempt++) {
      const base = (attempt + 1) * 10_000_000;
      const p = runNode(join(FIXTURES, 'res-writer-big.js'), [path, String(base), String(SIZE)], { timeoutMs: 30_000 });
      children.push(p.child);
      const connOf = () => [...st.seqs.entries()].find(([, seqs]) => seqs[0] === base)?.[0];
      await waitFor(() => (st.seqs.get(connOf() ?? -1)?.length ?? 0) >= 5, 20_000, 'big writer delivering');
      const conn = connOf()!;
      await sleep(Math.floor(Math.random() * 50)); // a random kill point, not a wait
      p.child.kill('SIGKILL');
      const res = await p;
      expect(res.signal).toBe('SIGKILL');
      expect(res.stderr).toBe('');
      await waitFor(() => st.closed.has(conn), 10_000, 'killed writer connection closed');
      const seqs = st.seqs.get(conn)!;
      // Every whole message it sent arrived intact and in order.
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => base + i));
      const mine = st.errors.filter((e) => e.conn === conn);
      tries.push(`${seqs.length} msgs, ${mine.map((e) => e.code).join(',') || 'clean EOF'}`);
      expect(mine.length).toBeLessThanOrEqual(1);
      if (mine.length === 1) {
        expect(['ERR_TRUNCATED_FRAME', 'ERR_INVALID_FRAME']).toContain(mine[0].code);
        expect(mine[0].context).toBe('connection');
        expect(st.closed.get(conn)).toBe(mine[0].code);
        truncated++;
      } else {
        expect(st.closed.get(conn)).toBeUndefined();
      }
    }
    console.log(`[writer-kill] tries: ${tries.join(' | ')}`);
    expect(truncated).toBe(1);

    s.pumping = false;
    await s.done;
    await s.w.flush();
    await waitFor(() => st.seqs.get(survivorConn)!.length === s.seq, 10_000, 'survivor fully delivered');
    expect(st.seqs.get(survivorConn)).toEqual(Array.from({ length: s.seq }, (_, i) => i));
    expect(st.errors.filter((e) => e.conn === survivorConn || e.conn === undefined)).toEqual([]);
    expect(st.bad).toEqual([]);
    expect(s.disconnects()).toBe(0);
    sumsUp(s.w, 'survivor');
  }, 60_000);
});

// ─── a reader that never reads ───────────────────────────────────────────────

const PY_ACCEPT_NEVER_READ = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
print('ready', flush=True)
conns = []
while True:
    c, _ = s.accept()
    conns.append(c)
    print('accepted', len(conns), flush=True)
`;

describe('a reader that never reads: writeTimeoutMs', () => {
  it('a listener that accepts and never reads, burst written while connected: ERR_WRITE_TIMEOUT (context send) after ~300 ms, connection replaced; a working reader then gets every message not already swallowed', async () => {
    const path = tmpSocket();
    const py = await python(PY_ACCEPT_NEVER_READ, [path]);
    const N = 1000;
    const w = track(
      new Writer(path, { writeTimeoutMs: 300, sendBufferSize: 0, reconnect: { initialDelayMs: 10, maxDelayMs: 100 } }),
    );
    const timeline: Array<{ t: number; ev: string; code?: string; ctx?: string }> = [];
    w.on('connect', () => timeline.push({ t: Date.now(), ev: 'connect' }));
    w.on('disconnect', (why: IpcError) => timeline.push({ t: Date.now(), ev: 'disconnect', code: why?.code }));
    const errs: ErrorRecord[] = [];
    w.on('error', (e: IpcError, ctx: string) => {
      timeline.push({ t: Date.now(), ev: 'error', code: e.code, ctx });
      errs.push({ code: e.code, context: ctx, conn: undefined, message: e.message });
    });
    w.start();
    // Connected and idle, then a burst: the common case of a writer that
    // writes while connected (the burst is sent from the JS thread).
    await waitFor(() => timeline.some((e) => e.ev === 'connect'), 10_000, 'connected');
    const tWrite = Date.now();
    for (let i = 0; i < N; i++) expect(w.write(msg.make(i, 1000))).toBe(true); // ~1 MB, far more than one socket buffer
    await waitFor(() => errs.length >= 2, 10_000, 'two write timeouts');
    expect(errs[0].code).toBe('ERR_WRITE_TIMEOUT');
    expect(errs[0].context).toBe('send');
    expect(errs[0].message).toMatch(/300 ms/);
    // Each timeout comes about writeTimeoutMs after its connection stopped moving.
    const connects = timeline.filter((e) => e.ev === 'connect');
    const timeouts = timeline.filter((e) => e.ev === 'error');
    // Events reach this thread late on a busy machine, so a lower bound is
    // only sound from a time taken before the writer's clock started: the
    // first connection's clock starts after tWrite, the second's after the
    // first timeout (its reconnect): the k-th timeout cannot come before
    // tWrite + k × 300 ms. The upper bounds (promptness) are generous.
    const gaps = [timeouts[0].t - tWrite, timeouts[1].t - timeouts[0].t];
    expect(connects[1].t).toBeGreaterThanOrEqual(timeouts[0].t);
    expect(timeouts[0].t - tWrite).toBeGreaterThanOrEqual(250);
    expect(timeouts[1].t - tWrite).toBeGreaterThanOrEqual(2 * 250);
    for (const g of gaps) expect(g).toBeLessThan(3000);
    // ... and the connection is replaced: a disconnect with that reason, then a new connection.
    const firstTimeout = timeline.indexOf(timeouts[0]);
    expect(timeline.slice(firstTimeout + 1).map((e) => e.ev)).toEqual(expect.arrayContaining(['disconnect', 'connect']));
    expect(timeline.find((e, i) => i > firstTimeout && e.ev === 'disconnect')?.code).toBe('ERR_WRITE_TIMEOUT');
    await waitFor(() => /accepted 2/.test(py.out()), 10_000, 'python saw the second connection');
    sumsUp(w, 'during timeouts');

    // Replace the black hole with a working reader.
    await killAndWait(py.child);
    await waitFor(() => !w.metrics().connected, 10_000, 'writer noticed');
    const sentToPython = w.metrics().sent; // frames the kernel took on the black-hole connections
    unlinkSync(path);
    const st = checkingReader(path);
    await st.reader.start();
    await w.flush();
    const got = () => [...st.seqs.values()].flat();
    await waitFor(() => got().includes(N - 1), 10_000, 'the last message');
    // The messages not yet sent, in order, whole (a cut frame is re-sent
    // whole), up to the last one. (The writer may also have got into the
    // dying listener's backlog after sentToPython was read: what it sent
    // there is lost too, so the suffix may start a little later.)
    const seqs = got();
    const s0 = seqs[0];
    expect(s0).toBeGreaterThanOrEqual(sentToPython);
    expect(seqs).toEqual(Array.from({ length: N - s0 }, (_, i) => s0 + i));
    const lostToPython = s0;
    expect(st.bad).toEqual([]);
    expect(st.errors).toEqual([]);
    const m = w.metrics();
    expect(m.sent).toBe(N);
    expect(m.queueDepth).toBe(0);
    sumsUp(w, 'after recovery');
    console.log(
      `[write-timeout/python] timeouts=${timeouts.length} connect→timeout ms=${gaps.join(',')} swallowed=${lostToPython} delivered=${N - lostToPython}`,
    );
    expect((await w.stop()).discarded).toBe(0);
  }, 30_000);

  it('a Reader whose handler never settles (maxPendingBytes 64 KiB), messages queued before start(): ERR_WRITE_TIMEOUT and new connections; once the handler settles every message arrives exactly once', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seqs: number[] = [];
    const bad: string[] = [];
    const readerErrors: string[] = [];
    const reader = track(
      new Reader(
        path,
        async (b: Batch) => {
          for (const m of b) {
            const r = msg.check(m, false);
            if (typeof r === 'string') bad.push(r);
            else seqs.push(r);
          }
          await gate;
        },
        { maxPendingBytes: 64 * 1024, onError: (e: Error, ctx) => readerErrors.push(`${ctx} ${(e as IpcError).code}`) },
      ),
    );
    await reader.start();
    const N = 2000;
    const w = track(
      new Writer(path, { writeTimeoutMs: 300, sendBufferSize: 0, reconnect: { initialDelayMs: 10, maxDelayMs: 100 } }),
    );
    const errs: string[] = [];
    w.on('error', (e: IpcError, ctx: string) => errs.push(`${ctx} ${e.code}`));
    // Queued before start(): the writer's IO thread sends them.
    for (let i = 0; i < N; i++) expect(w.write(msg.make(i, 1000))).toBe(true); // ~2 MB
    const t0 = Date.now();
    w.start();
    await waitFor(() => errs.length >= 1, 10_000, 'a write timeout');
    const firstTimeoutMs = Date.now() - t0;
    expect(errs[0]).toBe('send ERR_WRITE_TIMEOUT');
    expect(firstTimeoutMs).toBeGreaterThanOrEqual(250); // t0 was taken before the writer's clock started
    expect(firstTimeoutMs).toBeLessThan(3000);
    await waitFor(() => w.metrics().connects >= 2, 10_000, 'connection replaced');
    sumsUp(w, 'stalled');
    release();
    await w.flush();
    await waitFor(() => seqs.length >= N, 15_000, 'everything delivered');
    // Nothing more can arrive once both have stopped: the writer with
    // everything sent, then the reader gracefully (it reads every
    // connection's buffers to the end before it resolves).
    expect((await w.stop({ timeoutMs: 10_000 })).discarded).toBe(0);
    expect((await reader.stop({ timeoutMs: 10_000 })).discarded).toBe(0);
    // Each message exactly once: what the writer counted as sent on a replaced
    // connection was still in that connection's buffers and got read.
    expect(seqs.length).toBe(N);
    expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(bad).toEqual([]);
    // Only the writer's deliberate replacement mid-frame may show up on the reader's side.
    for (const e of readerErrors) expect(e).toBe('connection ERR_TRUNCATED_FRAME');
    expect(w.metrics().sent).toBe(N);
    sumsUp(w, 'after release');
    console.log(
      `[write-timeout/stalled handler] first timeout after ${firstTimeoutMs} ms, timeouts=${errs.length} connects=${w.metrics().connects} readerErrors=${readerErrors.length}`,
    );
  }, 30_000);
});

// ─── oversized messages ──────────────────────────────────────────────────────

describe('oversized messages', () => {
  it('a raw peer announcing more than maxMessageSize: ERR_MESSAGE_TOO_LARGE, that connection closed, what came before delivered', async () => {
    const path = tmpSocket();
    const st = checkingReader(path, { maxMessageSize: 1 * MiB });
    await st.reader.start();
    for (const announced of [MiB + 1, 2 ** 40]) {
      const before = st.opened.length;
      const sock = net.connect(path);
      sockets.push(sock);
      let closedByPeer = false;
      sock.on('error', () => {});
      sock.on('close', () => (closedByPeer = true));
      sock.resume();
      await new Promise((r) => sock.once('connect', r));
      sock.write(Buffer.concat([msg.frame(msg.make(7, 100)), msg.uvarint(announced), Buffer.alloc(1000, 1)]));
      await waitFor(() => closedByPeer, 10_000, 'reader closes the connection');
      // The socket closes before the reader's JS side has seen the last batch.
      await waitFor(() => st.opened.length > before && st.closed.has(st.opened[before]), 10_000, 'the reader to report the close');
      const conn = st.opened[before];
      expect(st.seqs.get(conn)).toEqual([7]);
      const mine = st.errors.filter((e) => e.conn === conn);
      expect(mine).toHaveLength(1);
      expect(mine[0].code).toBe('ERR_MESSAGE_TOO_LARGE');
      expect(mine[0].context).toBe('connection');
      expect(mine[0].message).toMatch(/maxMessageSize/);
      expect(st.closed.get(conn)).toBe('ERR_MESSAGE_TOO_LARGE');
    }
    expect(st.bad).toEqual([]);
    expect(st.reader.metrics().activeConnections).toBe(0);
  }, 20_000);

  it('a Writer configured larger than the reader: the reader refuses each attempt, the writer backs off (no hot loop over 2 s), both sides say why', async () => {
    const path = tmpSocket();
    const st = checkingReader(path, { maxMessageSize: 1 * MiB });
    await st.reader.start();
    const s = survivor(path);
    await waitFor(() => st.opened.length === 1, 10_000, 'survivor connected');
    const survivorConn = st.opened[0];

    // 10 MiB: more than the writer's socket buffer, so the frame can never be
    // fully accepted by the kernel and is tried again on every connection.
    const w = track(new Writer(path, { maxMessageSize: 16 * MiB }));
    const disconnects: IpcError[] = [];
    const reconnecting: Array<{ attempt: number; delayMs: number; error: IpcError }> = [];
    const errs: string[] = [];
    w.on('disconnect', (why: IpcError) => disconnects.push(why));
    w.on('reconnecting', (info: { attempt: number; delayMs: number; error: IpcError }) => reconnecting.push(info));
    w.on('error', (e: IpcError, ctx: string) => errs.push(`${ctx} ${e.code}`));
    expect(w.write(msg.make(0, 10 * MiB))).toBe(true);
    const t0 = Date.now();
    w.start();
    // It retries...
    await waitFor(() => w.metrics().connects >= 2, 10_000, 'a second connection');
    // ...and over 2 s (at least) makes only a few attempts: the window is the assertion.
    await sleep(Math.max(0, t0 + 2000 - Date.now()));
    const elapsed = Date.now() - t0;
    const m = w.metrics();
    const readerConns = st.reader.metrics().connections - 1; // minus the survivor
    const tooLarge = st.errors.filter((e) => e.code === 'ERR_MESSAGE_TOO_LARGE');
    console.log(
      `[oversized] in ${elapsed} ms: writer connectAttempts=${m.connectAttempts} connects=${m.connects} reader connections=${readerConns} ` +
        `ERR_MESSAGE_TOO_LARGE=${tooLarge.length} delays=${reconnecting.map((r) => r.delayMs).join(',')} reason="${disconnects[0]?.message}"`,
    );
    expect(m.sendBufferSize).toBeLessThan(10 * MiB);
    expect(m.connects).toBeGreaterThanOrEqual(2); // it did retry
    expect(m.connectAttempts).toBeLessThanOrEqual(10);
    expect(readerConns).toBeLessThanOrEqual(10);
    // The reader: one ERR_MESSAGE_TOO_LARGE per connection of that writer, never on the survivor.
    await waitFor(() => st.errors.filter((e) => e.code === 'ERR_MESSAGE_TOO_LARGE').length >= m.connects - 1, 10_000, 'errors of the connects');
    const tooLargeNow = st.errors.filter((e) => e.code === 'ERR_MESSAGE_TOO_LARGE');
    expect(tooLargeNow.length).toBeGreaterThanOrEqual(m.connects - 1);
    for (const e of tooLargeNow) {
      expect(e.context).toBe('connection');
      expect(e.conn).not.toBe(survivorConn);
      expect(e.message).toMatch(/at least \d+ bytes, above maxMessageSize 1048576/);
    }
    expect(st.errors.filter((e) => e.code !== 'ERR_MESSAGE_TOO_LARGE')).toEqual([]);
    // The writer: each lost connection says the peer closed it; the retries
    // back off (attempt numbers keep growing, delays within the growing cap).
    expect(disconnects.length).toBeGreaterThanOrEqual(m.connects - 1);
    for (const d of disconnects) {
      expect(d).toBeInstanceOf(IpcError);
      expect(d.code).toBe('ERR_SOCKET');
      expect([EPIPE, ECONNRESET]).toContain(d.errno);
      expect(d.message.length).toBeGreaterThan(10);
    }
    expect(reconnecting.map((r) => r.attempt)).toEqual(reconnecting.map((_, i) => i + 1));
    for (const r of reconnecting) {
      expect(r.delayMs).toBeGreaterThanOrEqual(1);
      expect(r.delayMs).toBeLessThanOrEqual(Math.min(100 * 2 ** (r.attempt - 1), 5000));
      expect(r.error).toBeInstanceOf(IpcError);
    }
    expect(errs).toEqual([]); // lost connections are not 'error's; nothing gave up
    expect(m.sent).toBe(0);
    sumsUp(w, 'oversized');
    // The survivor was never disturbed.
    expect(s.disconnects()).toBe(0);
    expect(st.closed.has(survivorConn)).toBe(false);
    // stop() gives up on the message and says so.
    const res = await w.stop({ timeoutMs: 200 });
    expect(res.discarded).toBe(1);
    const mm = w.metrics();
    expect([mm.written, mm.sent, mm.dropped, mm.failed, mm.queueDepth]).toEqual([1, 0, 0, 1, 0]);
    s.pumping = false;
    await s.done;
    await s.w.flush();
    await waitFor(() => st.seqs.get(survivorConn)!.length === s.seq, 10_000, 'survivor delivered');
    expect(st.seqs.get(survivorConn)).toEqual(Array.from({ length: s.seq }, (_, i) => i));
    sumsUp(s.w, 'survivor');
  }, 20_000);
});

// ─── stop() deadlines ────────────────────────────────────────────────────────

describe('stop() never hangs past its deadline', () => {
  it('writer.stop({ timeoutMs: 300 }) with no reader and no socket file: returns on time and reports the discarded count', async () => {
    const cases: Array<{ name: string; path: string; opts: WriterOptions }> = [
      { name: 'no socket file', path: tmpSocket(), opts: {} },
      { name: 'no directory either', path: join(dirname(tmpSocket()), 'missing', 's.sock'), opts: {} },
      // A backoff sleep much longer than the deadline must not delay stop().
      { name: 'long backoff', path: tmpSocket(), opts: { reconnect: { initialDelayMs: 30_000, maxDelayMs: 60_000 } } },
    ];
    for (const c of cases) {
      const w = track(new Writer(c.path, c.opts));
      const reasons: IpcError[] = [];
      w.on('reconnecting', (info: { error: IpcError }) => reasons.push(info.error));
      w.start();
      for (let i = 0; i < 5; i++) expect(w.write(`m${i}`)).toBe(true);
      await waitFor(() => reasons.length > 0, 10_000, `${c.name}: a failed connect`);
      const t0 = Date.now();
      const res = await w.stop({ timeoutMs: 300 });
      const took = Date.now() - t0;
      console.log(`[writer.stop] ${c.name}: ${took} ms, discarded ${res.discarded}`);
      // Its deadline (the long backoff would be 30 s), with room for a busy machine.
      expect(took, c.name).toBeLessThan(300 + 2000);
      expect(res.discarded, c.name).toBe(5);
      const m = w.metrics();
      expect([m.sent, m.failed, m.queueDepth], c.name).toEqual([0, 5, 0]);
      sumsUp(w, c.name);
      expect(reasons.length, c.name).toBeGreaterThan(0);
      expect(reasons[0].errno, c.name).toBe(ENOENT);
      expect(existsSync(c.path)).toBe(false);
    }
  }, 20_000);

  it('reader.stop({ timeoutMs: 300 }) after someone else deleted the socket file: returns on time; the writer backs off on ENOENT', async () => {
    const path = tmpSocket();
    const st = checkingReader(path);
    await st.reader.start();
    const s = survivor(path);
    const idle = track(new Writer(path, { reconnect: { initialDelayMs: 10, maxDelayMs: 200 } }));
    idle.start();
    const streamingConn = () => [...st.seqs.entries()].find(([, seqs]) => seqs[0] === 0)?.[0] ?? -1;
    await waitFor(() => st.opened.length === 2 && (st.seqs.get(streamingConn())?.length ?? 0) > 100, 10_000, 'both connected');
    unlinkSync(path);
    const t0 = Date.now();
    const res = await st.reader.stop({ timeoutMs: 300 });
    const took = Date.now() - t0;
    console.log(`[reader.stop] after unlink: ${took} ms, discarded ${res.discarded}`);
    expect(took).toBeLessThan(300 + 2000); // its deadline, with room for a busy machine
    expect(res.discarded).toBe(0);
    expect(st.reader.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    // Everything the streaming writer got into the socket was delivered. Its
    // sent count is final once it has handled the end of its connection
    // ('disconnect', emitted after its last send on it).
    await waitFor(() => s.disconnects() > 0, 10_000, "the streaming writer's 'disconnect'");
    const delivered = st.seqs.get(streamingConn())!;
    expect(delivered).toEqual(Array.from({ length: delivered.length }, (_, i) => i));
    expect(delivered.length).toBe(s.w.metrics().sent);
    expect(st.errors).toEqual([]);
    // With no socket file, the writers retry with backoff, not in a loop.
    const a0 = idle.metrics().connectAttempts;
    await sleep(1000); // a rate over a window: the window is the assertion
    const attempts = idle.metrics().connectAttempts - a0;
    // Full jitter, cap 10 → 200 ms: about 14 expected in a second; a loop would make thousands.
    expect(attempts).toBeLessThanOrEqual(40);
    s.pumping = false;
    await s.done;
    sumsUp(s.w, 'streaming writer');
    sumsUp(idle, 'idle writer');
    const sr = await s.w.stop({ timeoutMs: 100 });
    expect(sr.discarded).toBe(s.w.metrics().failed);
    sumsUp(s.w, 'streaming writer stopped');
  }, 20_000);
});

// ─── failing handlers ────────────────────────────────────────────────────────

describe('a handler that throws or rejects', () => {
  it("is reported as ERR_HANDLER with context 'handler'; the connection and the following messages carry on; failed batches count as received", async () => {
    const path = tmpSocket();
    const seen: string[] = [];
    const errors: Array<{ err: IpcError; ctx: string; conn?: { id: number } }> = [];
    const events: Array<{ err: IpcError; ctx: string }> = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          const texts = b.toArray().map(String);
          seen.push(...texts);
          if (texts.some((t) => t.startsWith('throw'))) throw new Error(`thrown at ${texts[0]}`);
          if (texts.some((t) => t.startsWith('reject'))) return Promise.reject(new Error(`rejected at ${texts[0]}`));
          if (texts.some((t) => t.startsWith('async'))) return sleep(5); // an async handler (the scenario)
          return undefined;
        },
        { onError: (err, ctx, conn) => errors.push({ err: err as IpcError, ctx, conn: conn as { id: number } }) },
      ),
    );
    reader.on('error', (err: IpcError, ctx: string) => events.push({ err, ctx }));
    const disconnects: number[] = [];
    reader.on('disconnect', (c) => disconnects.push(c.id));
    await reader.start();
    const w = track(new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    // One message per batch: wait for each to be received before the next.
    const plan = ['ok0', 'throw1', 'ok2', 'reject3', 'ok4', 'async5', 'throw6', 'reject7', 'ok8', 'ok9'];
    for (const [i, text] of plan.entries()) {
      w.write(text);
      await w.flush();
      await waitFor(() => reader.metrics().received === i + 1, 10_000, `message ${text}`);
    }
    // A batch of several messages whose handler throws: all of it counts as received.
    for (let i = 0; i < 20; i++) w.write(i === 0 ? 'throw-multi' : `multi${i}`);
    await w.flush();
    await waitFor(() => reader.metrics().received === plan.length + 20, 10_000, 'multi batch');
    // And delivery goes on after all that.
    w.write('last');
    await w.flush();
    await waitFor(() => seen.includes('last'), 10_000, 'last');

    expect(seen.slice(0, plan.length)).toEqual(plan);
    expect(seen).toHaveLength(plan.length + 20 + 1);
    const failedBatches = errors.length;
    expect(failedBatches).toBeGreaterThanOrEqual(5); // throw1, reject3, throw6, reject7, and the batch with throw-multi
    expect(errors.map((e) => e.err.message).slice(0, 4)).toEqual([
      'The batch handler failed: thrown at throw1',
      'The batch handler failed: rejected at reject3',
      'The batch handler failed: thrown at throw6',
      'The batch handler failed: rejected at reject7',
    ]);
    for (const e of errors) {
      expect(e.err).toBeInstanceOf(IpcError);
      expect(e.err.code).toBe('ERR_HANDLER');
      expect(e.ctx).toBe('handler');
      expect(e.conn?.id).toBe(1);
      expect((e.err as Error & { cause?: unknown }).cause).toBeInstanceOf(Error);
    }
    expect(events.map((e) => [e.err.code, e.ctx])).toEqual(errors.map((e) => [e.err.code, e.ctx]));
    const m = reader.metrics();
    expect(m.received).toBe(plan.length + 21);
    expect(m.handlerErrors).toBe(failedBatches);
    expect(m.errors).toBe(failedBatches);
    expect(m.activeConnections).toBe(1);
    expect(disconnects).toEqual([]);
    const wm = w.metrics();
    expect([wm.connects, wm.disconnects]).toEqual([1, 0]);
    sumsUp(w, 'handler errors');
  }, 20_000);

  it('with neither onError nor an error listener, a failing handler crashes nothing and produces no unhandled rejection', async () => {
    const path = tmpSocket();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      let n = 0;
      const reader = track(
        new Reader(path, () => {
          n++;
          if (n % 2) throw new Error('sync');
          return Promise.reject(new Error('async'));
        }),
      );
      await reader.start();
      const w = track(new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
      w.start();
      for (let i = 0; i < 6; i++) {
        w.write(`x${i}`);
        await w.flush();
        await waitFor(() => reader.metrics().received === i + 1, 10_000, `x${i}`);
      }
      await sleep(50); // a window for an unhandled rejection to show up: it must not
      expect(unhandled).toEqual([]);
      expect(reader.metrics().handlerErrors).toBe(n);
      expect(reader.metrics().activeConnections).toBe(1);
      sumsUp(w, 'no listeners');
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }, 20_000);
});
