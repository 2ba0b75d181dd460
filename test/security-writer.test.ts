// Writer-side attacks (issue 16): a listener of another user behind a socket
// file that passes expectOwner's file check must get no byte; write() must
// use the real byte length and offset of its data, never user-overridable
// getters or methods; argument errors name arguments as arguments.
//
// The expectOwner tests run as root and start listeners as uid 65534 with
// setpriv. The listener (test/fixtures/secw-listener.js) is a plain node:net
// server; as uid 65534 it runs from readableCopy() (test/helpers.ts), so
// these tests work wherever the checkout lives (a checkout under a 0700
// directory is unreadable to uid 65534). Missing prerequisites (not root, no
// setpriv) fail the tests loudly; nothing is skipped.
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import { chmodSync, chownSync, lstatSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as vm from 'node:vm';
import { Reader, Writer, IpcError, type Batch } from '../src/index';
import {
  tmpSocket,
  waitFor,
  withTimeout,
  FIXTURES,
  FAST,
  Proc,
  killChildren,
  useTracking,
  readableCopy,
  assertCanRunAs,
  asUser,
  type Line,
  type ReadableCopy,
} from './helpers';

const NOBODY = 65534;

const track = useTracking(300);
const extraDirs: string[] = [];
let copy: ReadableCopy | undefined;
afterEach(() => killChildren());
afterAll(() => {
  copy?.remove();
  for (const d of extraDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function collector() {
  const got: Buffer[] = [];
  const handler = (b: Batch) => {
    for (const m of b) got.push(Buffer.from(m));
  };
  return { got, handler };
}

function errorLog() {
  const errors: { err: IpcError; context: string }[] = [];
  const onError = (err: Error, context: string) => errors.push({ err: err as IpcError, context });
  return { errors, onError };
}

// ─── expectOwner: the process behind the socket ─────────────────────────────

describe('expectOwner checks the process listening, not only the socket file', () => {
  beforeAll(() => {
    // Loud failures, never skips (not root, no setpriv, uid 65534 unusable):
    // these are the prerequisites of the attack. The listener runs from a
    // copy every user can read, wherever the checkout is.
    copy = readableCopy();
    assertCanRunAs(NOBODY, copy);
  });

  /** A fresh directory owned by uid 65534 (mode 0755): its listener can bind there. */
  function nobodyDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'uds-ipc-secw-'));
    extraDirs.push(d);
    chownSync(d, NOBODY, NOBODY);
    chmodSync(d, 0o755);
    return d;
  }

  /** A fresh root-owned directory (mode 0755) for a socket path. */
  function rootDir(): string {
    const d = mkdtempSync(join(tmpdir(), 'uds-ipc-secw-'));
    extraDirs.push(d);
    chmodSync(d, 0o755);
    return d;
  }

  async function listener(path: string, asUid: number): Promise<Proc> {
    const p =
      asUid === 0
        ? new Proc(process.execPath, [join(FIXTURES, 'secw-listener.js'), path])
        : asUser(asUid, copy!, 'secw-listener.js', [path]);
    const l = await p.line((x) => x.event === 'listening', `listener as uid ${asUid}`);
    expect(l.uid).toBe(asUid);
    return p;
  }

  const isClose = (x: Line) => x.event === 'close';
  const isData = (x: Line) => x.event === 'data';

  it('a listener run by another uid behind a socket file chown-ed to the expected owner gets no byte: ERR_UNTRUSTED_SOCKET, counted, the writer stops', async () => {
    const path = join(nobodyDir(), 's.sock');
    const l = await listener(path, NOBODY);
    chownSync(path, 0, 0); // the file check now passes: a root-owned socket
    expect(lstatSync(path).uid).toBe(0);

    const log = errorLog();
    const w = track(new Writer(path, { expectOwner: { uid: 0 }, reconnect: FAST, onError: log.onError }));
    let connected = false;
    w.on('connect', () => (connected = true));
    expect(w.write('queued before start()')).toBe(true); // waits in the ring: would go out on connect
    w.start();
    expect(w.write('written after start()')).toBe(true); // may try the direct-send path
    await waitFor(() => log.errors.length > 0, 10_000, 'ERR_UNTRUSTED_SOCKET');

    const { err, context } = log.errors[0];
    expect(err).toBeInstanceOf(IpcError);
    expect(err.code).toBe('ERR_UNTRUSTED_SOCKET');
    expect(context).toBe('connect');
    expect(err.message).toContain(`the process listening on ${path} runs as uid ${NOBODY}, expected 0`);

    // The writer did connect (the check needs a connected socket), then
    // closed the connection without sending: the listener saw it end empty.
    const closed = await l.line(isClose, 'the refused connection to end');
    expect(closed.total, 'bytes the untrusted listener received').toBe(0);
    expect(l.all(isData)).toEqual([]);

    expect(w.write('written after the refusal')).toBe(true);
    const m = w.metrics();
    expect(m.untrustedPeers).toBe(1);
    expect(m.connects, 'a refused connection is no successful connect').toBe(0);
    expect(m.connectAttempts).toBe(1);
    expect(m.connected).toBe(false);
    expect(m.sent).toBe(0);
    expect(m.queueDepth).toBe(3);
    expect(connected).toBe(false);
    expect(w.metricsText()).toMatch(/^uds_ipc_writer_untrusted_peers_total 1$/m);

    // Fatal, like the file check: no retry, so stop() ends at once (a
    // writer still retrying would wait for its deadline) and the listener
    // never saw a second connection.
    const res = await withTimeout(w.stop({ timeoutMs: 30_000 }), 10_000, 'stop() of a writer that gave up');
    expect(res.discarded).toBe(3);
    expect(w.metrics().connectAttempts).toBe(1);
    expect(l.all((x) => x.event === 'conn')).toHaveLength(1);
    expect(l.all(isData)).toEqual([]);
    expect(log.errors).toHaveLength(1);
  });

  it('a reconnect that lands on another user\'s listener (moved into place already root-owned, 0600) sends none of the queued frames', async () => {
    const path = join(rootDir(), 's.sock');
    const c = collector();
    const r = track(new Reader(path, c.handler));
    await r.start();
    const log = errorLog();
    const w = track(new Writer(path, { expectOwner: { uid: 0, gid: 0, mode: 0o600 }, reconnect: FAST, onError: log.onError }));
    let disconnects = 0;
    w.on('disconnect', () => disconnects++);
    w.start();
    w.write('one');
    await withTimeout(w.flush(), 10_000, 'flush to the root reader');
    await waitFor(() => c.got.length === 1, 10_000, 'delivery to the root reader');
    await r.stop();
    await waitFor(() => disconnects === 1, 10_000, 'disconnect');
    w.write('two'); // queued while nobody listens: sent on the next connection
    w.write('three');

    // The attacker binds in a directory of its own; root (say, a careless
    // deploy script) chowns the file and renames it into place, so the path
    // only ever names a root:root 0600 socket and every file check passes.
    const npath = join(nobodyDir(), 's.sock');
    const l = await listener(npath, NOBODY);
    chownSync(npath, 0, 0);
    chmodSync(npath, 0o600);
    renameSync(npath, path);

    await waitFor(() => log.errors.length > 0, 10_000, 'ERR_UNTRUSTED_SOCKET');
    expect(log.errors[0].err.code).toBe('ERR_UNTRUSTED_SOCKET');
    expect(log.errors[0].err.message).toContain(`runs as uid ${NOBODY}, expected 0`);
    const closed = await l.line(isClose, 'the refused connection to end');
    expect(closed.total, 'bytes the untrusted listener received').toBe(0);
    expect(l.all(isData)).toEqual([]);
    const m = w.metrics();
    expect(m.untrustedPeers).toBe(1);
    expect(m.connects).toBe(1);
    expect(m.sent).toBe(1);
    expect(m.queueDepth).toBe(2);
    expect(c.got.map(String)).toEqual(['one']);
  });

  it('the uid must match the file and the process: a root Reader whose socket file is owned by uid 65534 is refused for expectOwner { uid: 65534 }', async () => {
    const path = join(rootDir(), 's.sock');
    const c = collector();
    const r = track(new Reader(path, c.handler, { uid: NOBODY, gid: NOBODY })); // nobody:nogroup 0600, listener root
    await r.start();
    expect(lstatSync(path).uid).toBe(NOBODY);
    const log = errorLog();
    const w = track(new Writer(path, { expectOwner: { uid: NOBODY, gid: NOBODY, mode: 0o600 }, reconnect: FAST, onError: log.onError }));
    w.write('not for root');
    w.start();
    await waitFor(() => log.errors.length > 0, 10_000, 'ERR_UNTRUSTED_SOCKET');
    expect(log.errors[0].err.code).toBe('ERR_UNTRUSTED_SOCKET');
    expect(log.errors[0].err.message).toContain(`the process listening on ${path} runs as uid 0, expected ${NOBODY}`);
    expect(w.metrics().untrustedPeers).toBe(1);
    // The Reader saw the connection open and end, and not a byte of it.
    await waitFor(() => r.metrics().connections === 1 && r.metrics().activeConnections === 0, 10_000, 'the refused connection at the reader');
    expect(r.metrics().bytesRead).toBe(0);
    expect(c.got).toEqual([]);
  });

  it('a root listener passes expectOwner { uid: 0 } and receives exactly the frames', async () => {
    const path = join(rootDir(), 's.sock');
    const l = await listener(path, 0);
    const log = errorLog();
    const w = track(new Writer(path, { expectOwner: { uid: 0, gid: 0 }, reconnect: FAST, onError: log.onError }));
    w.write('hello'); // 1 + 5 bytes
    w.start();
    await waitFor(() => w.metrics().connects === 1, 10_000, 'connect');
    w.write('world!'); // 1 + 6 bytes
    await withTimeout(w.flush(), 10_000, 'flush');
    await waitFor(() => (l.all(isData).at(-1)?.total ?? 0) >= 13, 10_000, 'bytes at the listener');
    expect(l.all(isData).at(-1)!.total).toBe(13);
    expect(log.errors).toEqual([]);
    expect(w.metrics().untrustedPeers).toBe(0);
    expect(w.metrics().sent).toBe(2);
  });

  it('a listener of the expected non-root uid passes', async () => {
    const path = join(nobodyDir(), 's.sock');
    const l = await listener(path, NOBODY);
    expect(lstatSync(path).uid).toBe(NOBODY);
    const log = errorLog();
    const w = track(new Writer(path, { expectOwner: { uid: NOBODY }, reconnect: FAST, onError: log.onError }));
    w.start();
    w.write('to nobody');
    await withTimeout(w.flush(), 10_000, 'flush');
    await waitFor(() => (l.all(isData).at(-1)?.total ?? 0) >= 10, 10_000, 'bytes at the listener');
    expect(l.all(isData).at(-1)!.total).toBe(10);
    expect(log.errors).toEqual([]);
    expect(w.metrics().untrustedPeers).toBe(0);
  });
});

// ─── write() reads the real bytes ───────────────────────────────────────────

/** A started Reader/Writer pair on a fresh path; resolves once connected. */
async function pair(writerOptions: ConstructorParameters<typeof Writer>[1] = {}, start = true) {
  const path = tmpSocket();
  const c = collector();
  const r = track(new Reader(path, c.handler));
  await r.start();
  const w = track(new Writer(path, { reconnect: FAST, ...writerOptions }));
  if (start) {
    w.start();
    await waitFor(() => w.metrics().connected, 10_000, 'connect');
  }
  return { r, w, got: c.got };
}

/** Waits until `msgs` arrived and checks them, byte for byte, and the writer's counters. */
async function expectDelivered(p: Awaited<ReturnType<typeof pair>>, msgs: Uint8Array[]): Promise<void> {
  await withTimeout(p.w.flush(), 10_000, 'flush');
  await waitFor(() => p.got.length >= msgs.length, 10_000, `${msgs.length} messages`);
  expect(p.got.map((b) => b.toString('hex'))).toEqual(msgs.map((b) => Buffer.from(b).toString('hex')));
  const m = p.w.metrics();
  expect(m.queueDepth).toBe(0);
  expect(m.queuedBytes).toBe(0);
  expect(m.sent).toBe(msgs.length);
  expect(m.bytesSent).toBe(msgs.reduce((s, b) => s + b.byteLength, 0));
  expect(m.written).toBe(m.sent + m.dropped + m.failed + m.queueDepth);
}

const real = (s: string) => Uint8Array.from(Buffer.from(s));
const B = (s: string) => Buffer.from(s);

/** A Uint8Array whose `length` getter returns `lie`. */
function lyingLength(bytes: Uint8Array, lie: number): Uint8Array {
  class LyingLength extends Uint8Array {
    override get length(): number {
      return lie;
    }
  }
  const u = new LyingLength(bytes.length);
  u.set(bytes);
  return u;
}

/** A Uint8Array whose every overridable accessor and method lies (its length too, unless `honestLength`). */
function liarOfEverything(bytes: Uint8Array, honestLength = false): Uint8Array {
  const decoy = Buffer.from('DECOY-DECOY-DECOY-DECOY-DECOY-DECOY-DECOY-DECOY-DECOY');
  class Liar extends Uint8Array {
    override get length(): number {
      return honestLength ? super.length : 3;
    }
    override get byteLength(): number {
      return 2;
    }
    override get byteOffset(): number {
      return 5;
    }
    override get buffer(): ArrayBuffer {
      return decoy.buffer as ArrayBuffer;
    }
  }
  for (const method of ['subarray', 'slice', 'valueOf']) {
    Object.defineProperty(Liar.prototype, method, { value: () => decoy });
  }
  const u = new Liar(bytes.length);
  u.set(bytes);
  return u;
}

describe('write() uses the real byte length, never a user-overridable one', () => {
  const payload = real('real bytes!'); // 11 bytes
  const lies: [string, number][] = [
    ['negative', -5],
    ['larger than the buffer', payload.length + 100],
    ['far larger', 1 << 30],
    ['fractional', 2.5],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['zero', 0],
  ];

  it.each(lies)('a length getter that lies (%s): the reader gets exactly the real bytes', async (_name, lie) => {
    const p = await pair();
    const liar = lyingLength(payload, lie);
    expect(liar.length).toBe(lie);
    expect(p.w.write('before')).toBe(true);
    expect(p.w.write(liar)).toBe(true);
    expect(p.w.write('after')).toBe(true);
    await expectDelivered(p, [B('before'), payload, B('after')]);
  });

  it('an own "length" property on a Buffer is ignored', async () => {
    const p = await pair();
    const own = Buffer.from('own length');
    Object.defineProperty(own, 'length', { value: 1000 });
    expect(own.length).toBe(1000);
    const own2 = new Uint8Array([1, 2, 3]);
    Object.defineProperty(own2, 'length', { get: () => -1 });
    expect(p.w.write(own)).toBe(true);
    expect(p.w.write(own2)).toBe(true);
    await expectDelivered(p, [B('own length'), Uint8Array.from([1, 2, 3])]);
  });

  it('every accessor and method lying (length, byteLength, byteOffset, buffer, subarray, slice, valueOf): write(), send() and a stream send the real bytes', async () => {
    const p = await pair();
    expect(p.w.write(liarOfEverything(payload))).toBe(true);
    await p.w.send(liarOfEverything(payload));
    const s = p.w.createWriteStream();
    await new Promise<void>((resolve, reject) => s.write(liarOfEverything(payload), (e) => (e ? reject(e) : resolve())));
    await expectDelivered(p, [payload, payload, payload]);
  });

  it('the size limit applies to the real length: a small length claimed by a large message does not pass', async () => {
    const p = await pair({ maxMessageSize: 50, maxBufferedBytes: 64 });
    const big = lyingLength(new Uint8Array(100).fill(7), 1);
    expect(() => p.w.write(big)).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    await expect(p.w.send(big)).rejects.toMatchObject({ code: 'ERR_MESSAGE_TOO_LARGE' });
    expect(p.w.write('fine')).toBe(true);
    await expectDelivered(p, [B('fine')]);
    expect(p.w.metrics().written).toBe(1);
  });

  it('a frame that wraps around the end of the ring copies the real bytes (views with a byte offset, lying methods)', async () => {
    // maxBufferedBytes 64: a 64-byte ring, so a 41-byte frame after another wraps.
    const p = await pair({ maxMessageSize: 50, maxBufferedBytes: 64 });
    const pool = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ');
    const view = pool.subarray(7, 47); // 40 bytes at byteOffset 7 (plus the pool's own offset)
    const filler = B('f'.repeat(40));
    // Positions 0, 41, 82, ... of a 64-byte ring: most of these frames wrap.
    for (const msg of [filler, view, filler, liarOfEverything(view, true), filler, lyingLength(view, -5), filler, lyingLength(view, 3)]) {
      while (!p.w.write(msg)) await new Promise<void>((r) => p.w.once('drain', () => r()));
      await withTimeout(p.w.flush(), 10_000, 'flush');
    }
    await expectDelivered(p, [filler, view, filler, view, filler, view, filler, view]);
  });

  it('send() waiting for room keeps the real bytes, not what the lying accessors or valueOf() report', async () => {
    const p = await pair({ maxBufferedWrites: 1 }, false); // not started: the queue stays full
    expect(p.w.write('first')).toBe(true);
    const waiting = [p.w.send(liarOfEverything(payload)), p.w.send(lyingLength(payload, -5)), p.w.send(lyingLength(payload, 1000))];
    for (const x of waiting) x.catch(() => {}); // awaited below
    p.w.start();
    await withTimeout(Promise.all(waiting), 10_000, 'the waiting sends');
    await expectDelivered(p, [B('first'), payload, payload, payload]);
  });

  it('an honest Uint8Array subclass, a Buffer view with an offset and a Uint8Array of another realm work', async () => {
    class Honest extends Uint8Array {
      hello(): string {
        return 'hi';
      }
    }
    const p = await pair();
    const h = new Honest(4);
    h.set([9, 8, 7, 6]);
    const pool = Buffer.from('xxhello-viewxx');
    const other = vm.runInNewContext('new Uint8Array([1, 2, 3, 4, 5])') as Uint8Array;
    expect(other instanceof Uint8Array).toBe(false);
    expect(p.w.write(h)).toBe(true);
    expect(p.w.write(pool.subarray(2, 12))).toBe(true);
    expect(p.w.write(other)).toBe(true);
    expect(p.w.write(new Uint8Array(0))).toBe(true);
    await expectDelivered(p, [Uint8Array.from([9, 8, 7, 6]), B('hello-view'), Uint8Array.from([1, 2, 3, 4, 5]), new Uint8Array(0)]);
  });
});

describe('write()/send() reject what is not a Uint8Array or string with ERR_INVALID_ARG_TYPE, worded as an argument', () => {
  const notData: [string, () => unknown][] = [
    ['a Proxy around a Buffer', () => new Proxy(Buffer.from('abc'), {})],
    ['a Proxy around a Uint8Array', () => new Proxy(new Uint8Array(3), {})],
    ['an object inheriting from Uint8Array.prototype', () => Object.create(Uint8Array.prototype)],
    ['an object inheriting from Buffer.prototype', () => Object.create(Buffer.prototype)],
    ['a DataView', () => new DataView(new ArrayBuffer(4))],
    ['an ArrayBuffer', () => new ArrayBuffer(4)],
    ['a Uint16Array', () => new Uint16Array(2)],
    ['a Uint8ClampedArray', () => new Uint8ClampedArray(2)],
    ['an array-like', () => ({ length: 3, 0: 1, 1: 2, 2: 3 })],
    ['a number', () => 123],
    ['null', () => null],
    ['undefined', () => undefined],
  ];

  it.each(notData)('%s', async (_name, make) => {
    const p = await pair();
    let thrown: unknown;
    try {
      p.w.write(make() as Uint8Array);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect((thrown as { code?: string }).code).toBe('ERR_INVALID_ARG_TYPE');
    expect((thrown as Error).message).toMatch(/^The "data" argument must be a Uint8Array, Buffer or string\. Received /);
    await expect(p.w.send(make() as Uint8Array)).rejects.toMatchObject({
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_TYPE',
      message: expect.stringMatching(/^The "data" argument must be /),
    });
    const m = p.w.metrics();
    expect(m.written).toBe(0);
    expect(m.queueDepth).toBe(0);
    expect(p.w.write('still fine')).toBe(true);
    await expectDelivered(p, [B('still fine')]);
  });

  it('the message names the received value', () => {
    const w = new Writer(tmpSocket());
    expect(() => w.write(123 as unknown as string)).toThrow('The "data" argument must be a Uint8Array, Buffer or string. Received number 123');
    void w.stop({ timeoutMs: 0 });
  });

  it('send() waiting for room checks its data the same way', async () => {
    const p = await pair({ maxBufferedWrites: 1 }, false);
    expect(p.w.write('first')).toBe(true);
    const waiting = p.w.send('second'); // waits: the queue is full
    waiting.catch(() => {}); // awaited below; no unhandled rejection if the test fails first
    await expect(p.w.send(new Proxy(Buffer.from('abc'), {}))).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_TYPE',
      message: expect.stringMatching(/^The "data" argument must be /),
    });
    p.w.start();
    await withTimeout(waiting, 10_000, 'the waiting send');
    await expectDelivered(p, [B('first'), B('second')]);
  });
});
