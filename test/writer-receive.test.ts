// A Writer receiving what its reader sends back on the same connection
// (onMessage). The peer is a plain node:net server writing varint-framed
// messages (uvarint length, payload), as a replying Reader will.
import { afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writer, type Batch, type Connection, type IpcError } from '../src/index';
import { encodeFrame, encodeFrames, FrameDecoder } from '../src/framing';
import { binding } from '../src/binding';
import { DIST, FAST, runNode, steady, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking();
const servers: { server: net.Server; conns: net.Socket[] }[] = [];
afterEach(async () => {
  for (const { server, conns } of servers.splice(0)) {
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const c of conns) c.destroy();
    await closed;
  }
});

/** A listening node:net server; `conns` in accept order; `received` the frames writers sent it, decoded. */
async function peer(path: string): Promise<{ server: net.Server; conns: net.Socket[]; received: Buffer[]; next(): Promise<net.Socket> }> {
  const conns: net.Socket[] = [];
  const received: Buffer[] = [];
  const waiting: ((s: net.Socket) => void)[] = [];
  const server = net.createServer((s) => {
    conns.push(s);
    const dec = new FrameDecoder({ maxMessageSize: 64 << 20 });
    s.on('data', (d) => {
      for (const m of dec.push(d)) received.push(Buffer.from(m));
    });
    s.on('error', () => {});
    waiting.shift()?.(s);
  });
  servers.push({ server, conns });
  await new Promise<void>((r) => server.listen(path, r));
  let taken = 0;
  const next = (): Promise<net.Socket> =>
    within(
      new Promise<net.Socket>((r) => {
        if (conns.length > taken) r(conns[taken++]);
        else
          waiting.push((s) => {
            taken++;
            r(s);
          });
      }),
      'a connection',
    );
  return { server, conns, received, next };
}

/** Payload i: its index (u32 LE) then `len - 4` pattern bytes. */
function payload(i: number, len: number): Buffer {
  const b = Buffer.alloc(Math.max(4, len));
  b.writeUInt32LE(i, 0);
  for (let k = 4; k < b.length; k++) b[k] = (i + k) & 0xff;
  return b;
}
function intact(m: Uint8Array, len: number): boolean {
  const i = Buffer.from(m.buffer, m.byteOffset, m.byteLength).readUInt32LE(0);
  if (m.length !== Math.max(4, len)) return false;
  for (let k = 4; k < m.length; k += 509) if (m[k] !== ((i + k) & 0xff)) return false;
  return m.length === 4 || m[m.length - 1] === ((i + m.length - 1) & 0xff);
}
const seqOf = (m: Uint8Array): number => Buffer.from(m.buffer, m.byteOffset, m.byteLength).readUInt32LE(0);

describe('Writer onMessage: receiving on the same connection', () => {
  it('round trip: the peer echoes every message; all come back in order, both directions intact', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const got: number[] = [];
    const conns = new Set<unknown>();
    const w = track(
      new Writer(path, {
        onMessage(batch) {
          conns.add(batch.connection);
          for (const m of batch) got.push(seqOf(m));
        },
      }),
    );
    w.start();
    const s = await p.next();
    // Echo: every frame the writer sends goes straight back.
    const dec = new FrameDecoder();
    s.removeAllListeners('data');
    s.on('data', (d) => {
      const msgs = dec.push(d);
      if (msgs.length) s.write(encodeFrames(msgs));
    });
    const N = 20_000;
    for (let i = 0; i < N; i++) if (!w.write(payload(i, 4 + (i % 100)))) await new Promise((r) => w.once('drain', r));
    await w.flush(); // metrics().sent and bytesSent are exact from here
    await waitFor(() => got.length === N, 20_000, 'every echo');
    expect(got.every((v, i) => v === i)).toBe(true);
    const m = w.metrics();
    expect(m.received).toBe(N);
    expect(m.batches).toBeGreaterThan(0);
    expect(m.batches).toBeLessThanOrEqual(N);
    expect(m.bytesReceived).toBe(m.bytesSent);
    expect(m.readCalls).toBeGreaterThan(0);
    expect(m.bytesRead).toBeGreaterThan(m.bytesReceived);
    expect(m.pauses).toBe(0);
    expect(conns.size).toBe(1);
    const [conn] = [...conns] as Connection[];
    expect({ id: conn.id, pid: conn.pid, uid: conn.uid, gid: conn.gid }).toEqual({ id: 1, pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(conn.connected).toBe(true); // live: write()/send() answer the reader (test/duplex.test.ts)
    expect(Object.isFrozen(conn)).toBe(false);
  });

  it('large messages (> 128 KiB, the large-frame path) and a mix of sizes arrive whole and in order', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const sizes: number[] = [];
    for (let i = 0; i < 200; i++) sizes.push(i % 7 === 3 ? 128 * 1024 + 1 + i * 1000 : i % 11 === 5 ? 3 << 20 : i % 3 === 0 ? 0 : 100 + i);
    const got: { seq: number; ok: boolean }[] = [];
    let retained: Batch | undefined;
    let firstLarge: Buffer | undefined;
    const w = track(
      new Writer(path, {
        onMessage(batch) {
          for (const m of batch) {
            const seq = seqOf(m);
            got.push({ seq, ok: intact(m, sizes[seq]) });
            if (sizes[seq] > 128 * 1024 && !firstLarge) {
              firstLarge = m; // a view: empty once the batch is released...
              retained = batch.retain(); // ...unless retained
            }
          }
        },
      }),
    );
    w.start();
    const s = await p.next();
    for (let i = 0; i < sizes.length; i++) s.write(encodeFrame(payload(i, sizes[i])));
    await waitFor(() => got.length === sizes.length, 20_000, 'every message');
    expect(got.map((g) => g.seq)).toEqual(sizes.map((_, i) => i));
    expect(got.every((g) => g.ok)).toBe(true);
    expect(retained?.retained).toBe(true);
    expect(firstLarge!.length).toBe(sizes[seqOf(firstLarge!)]); // still valid: retained
    expect(w.metrics().bytesReceived).toBe(sizes.reduce((a, n) => a + Math.max(4, n), 0));
  });

  it('a slow async onMessage under a flood: reading pauses at maxPendingBytes (the peer’s writes back up), then everything arrives in order', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const limit = 256 * 1024;
    let open = false;
    let release: () => void = () => {};
    let seen = 0;
    let ordered = true;
    const w = track(
      new Writer(path, {
        maxPendingBytes: limit,
        onMessage(batch) {
          for (const m of batch) if (seqOf(m) !== seen++) ordered = false;
          if (open) return;
          return new Promise<void>((r) => (release = r)); // held until the gate opens
        },
      }),
    );
    w.start();
    const s = await p.next();
    const N = 4000;
    const frames: Buffer[] = [];
    for (let i = 0; i < N; i++) frames.push(payload(i, 4096));
    s.write(encodeFrames(frames)); // ~16 MiB: node buffers what the socket does not take
    // The writer reads up to its limit, then stops: nothing moves any more.
    await waitFor(() => w.metrics().pauses > 0, 10_000, 'a pause');
    const read = await steady(() => w.metrics().bytesRead, 200, 20_000, 'reading to stop');
    expect(read).toBeLessThan(limit + 512 * 1024 + 8192); // the limit, one slab read, a frame
    expect(s.writableLength).toBeGreaterThan(8 << 20); // the peer's writes are blocked
    expect(seen).toBeLessThan(N);
    // The handler speeds up: the rest flows.
    open = true;
    release();
    await waitFor(() => seen === N, 30_000, 'every message');
    expect(ordered).toBe(true);
    await waitFor(() => s.writableLength === 0, 10_000, 'the peer’s writes to finish');
    expect(w.metrics().received).toBe(N);
  });

  it('a frame above maxMessageSize: ERR_MESSAGE_TOO_LARGE (context connection), the connection is replaced, later messages arrive', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const got: { seq: number; conn: number }[] = [];
    const errors: [IpcError, string][] = [];
    const log: string[] = [];
    const w = track(
      new Writer(path, {
        maxMessageSize: 1000,
        reconnect: FAST,
        onMessage(batch) {
          for (const m of batch) {
            got.push({ seq: seqOf(m), conn: batch.connection.id });
            log.push(`msg ${seqOf(m)}`);
          }
        },
      }),
    );
    w.on('error', (e, ctx) => {
      errors.push([e, ctx]);
      log.push(`error ${e.code}`);
    });
    w.on('disconnect', (e) => log.push(`disconnect ${e.code}`));
    w.on('connect', () => log.push('connect'));
    w.start();
    const s1 = await p.next();
    s1.write(encodeFrames([payload(1, 1000), payload(2, 1001), payload(3, 10)]));
    const s2 = await p.next();
    s2.write(encodeFrame(payload(4, 10)));
    await waitFor(() => got.length === 2, 10_000, 'the message on the new connection');
    expect(got).toEqual([
      { seq: 1, conn: 1 },
      { seq: 4, conn: 2 },
    ]);
    expect(errors.map(([e, ctx]) => [e.code, ctx])).toEqual([['ERR_MESSAGE_TOO_LARGE', 'connection']]);
    expect(errors[0][0].message).toContain('maxMessageSize 1000');
    expect(log).toEqual(['connect', 'msg 1', 'error ERR_MESSAGE_TOO_LARGE', 'disconnect ERR_MESSAGE_TOO_LARGE', 'connect', 'msg 4']);
  });

  it('the peer dies mid-frame: whole frames before it are delivered, then disconnect; after the reconnect messages still arrive', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const log: string[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage(batch) {
          for (const m of batch) log.push(`${batch.connection.id}:${seqOf(m)}`);
        },
      }),
    );
    w.on('disconnect', () => log.push('disconnect'));
    w.start();
    const s1 = await p.next();
    const half = encodeFrame(payload(99, 5000));
    s1.end(Buffer.concat([encodeFrames([payload(0, 10), payload(1, 300_000), payload(2, 10)]), half.subarray(0, 2000)]));
    const s2 = await p.next();
    s2.write(encodeFrames([payload(3, 10), payload(4, 200_000)]));
    await waitFor(() => log.length === 6, 10_000, 'the messages of both connections');
    expect(log).toEqual(['1:0', '1:1', '1:2', 'disconnect', '2:3', '2:4']);
  });

  it('every batch of a connection is delivered before its disconnect, even while an async onMessage holds them back', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const log: string[] = [];
    let release: () => void = () => {};
    let hold = true;
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage(batch) {
          for (const m of batch) log.push(`msg ${seqOf(m)}`);
          if (!hold) return;
          hold = false;
          return new Promise<void>((r) => (release = r));
        },
      }),
    );
    w.on('disconnect', () => log.push('disconnect'));
    w.on('connect', () => log.push('connect'));
    w.start();
    const s1 = await p.next();
    s1.write(encodeFrame(payload(0, 10)));
    await waitFor(() => log.includes('msg 0'), 10_000, 'the first batch');
    // More arrives while the handler holds the first batch, then the peer goes.
    s1.end(encodeFrames([payload(1, 10), payload(2, 200_000), payload(3, 10)]));
    await waitFor(() => w.metrics().disconnects === 1, 10_000, 'the engine to see the disconnect');
    const s2 = await p.next();
    s2.write(encodeFrame(payload(4, 10)));
    // 11 + 11 + 200_003 + 11 bytes on the first connection, 11 on the second
    await waitFor(() => w.metrics().bytesRead === 200_047, 10_000, 'the second connection’s message to be read');
    expect(log).toEqual(['connect', 'msg 0']); // all of it waits behind the handler, in order
    release();
    await waitFor(() => log.length === 8, 10_000, 'the rest');
    expect(log).toEqual(['connect', 'msg 0', 'msg 1', 'msg 2', 'msg 3', 'disconnect', 'connect', 'msg 4']);
  });

  it('flush() and drain are not held back by a busy onMessage', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    let release: () => void = () => {};
    const w = track(new Writer(path, { onMessage: () => new Promise<void>((r) => (release = r)) }));
    w.start();
    const s = await p.next();
    s.write(encodeFrame('hold'));
    await waitFor(() => w.metrics().received === 1, 10_000, 'the held batch');
    for (let i = 0; i < 100; i++) w.write(`m${i}`);
    await within(w.flush(), 'flush while onMessage is busy', 10_000);
    await waitFor(() => p.received.length === 100, 10_000, 'the peer to get them');
    release();
  });

  it('stop() with a batch held by onMessage: waits for it within the deadline, else releases the rest and closes on time', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const liveBefore = binding().liveSlabs();
    // 1. The handler finishes within the deadline: everything received is delivered before 'close'.
    {
      const log: string[] = [];
      let release: () => void = () => {};
      const w = new Writer(path, {
        onMessage(batch) {
          for (const m of batch) log.push(`msg ${seqOf(m)}`);
          if (log.length === 1) return new Promise<void>((r) => (release = r));
        },
      });
      w.on('close', () => log.push('close'));
      w.start();
      const s = await p.next();
      s.write(encodeFrame(payload(0, 10)));
      await waitFor(() => log.length === 1, 10_000, 'the first batch');
      s.write(encodeFrames([payload(1, 200_000), payload(2, 10)]));
      await waitFor(() => w.metrics().bytesRead > 200_000, 10_000, 'the rest to be read');
      const stopped = w.stop({ timeoutMs: 10_000 });
      release();
      expect(await within(stopped, 'stop')).toEqual({ discarded: 0 });
      expect(log).toEqual(['msg 0', 'msg 1', 'msg 2', 'close']);
    }
    // 2. The handler never finishes in time: stop() resolves at its deadline, the batches behind are released.
    {
      let release: () => void = () => {};
      let calls = 0;
      let held: Buffer | undefined;
      const w = new Writer(path, {
        onMessage(batch) {
          calls++;
          held = batch.at(0);
          return new Promise<void>((r) => (release = r));
        },
      });
      w.start();
      const s = await p.next();
      s.write(encodeFrame(payload(0, 300_000)));
      await waitFor(() => calls === 1, 10_000, 'the first batch');
      s.write(encodeFrames([payload(1, 300_000), payload(2, 10)]));
      await waitFor(() => w.metrics().bytesRead > 600_000, 10_000, 'the rest to be read');
      const t0 = Date.now();
      expect(await within(w.stop({ timeoutMs: 300 }), 'stop')).toEqual({ discarded: 0 });
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(calls).toBe(1); // the batches behind were released, not delivered
      expect(held!.length).toBe(300_000); // the held one stays valid until its handler is done...
      release();
      await waitFor(() => held!.length === 0, 5000, 'its release'); // ...then it is released
    }
    // Nothing leaked: every receive slab went back (pools freed with their engines).
    if (liveBefore >= 0) await waitFor(() => binding().liveSlabs() <= liveBefore, 10_000, 'every slab freed');
  });

  it('a one-way Writer (no onMessage) never reads: what a peer sends it stays unread', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const w = track(new Writer(path));
    w.start();
    const s = await p.next();
    s.write(encodeFrames([payload(0, 10), payload(1, 10)]));
    w.write('x');
    await w.flush();
    await waitFor(() => p.received.length === 1, 10_000, 'the peer to get it');
    const m = w.metrics();
    expect(m).toMatchObject({ received: 0, bytesReceived: 0, batches: 0, readCalls: 0, bytesRead: 0, pauses: 0 });
  });

  it('metrics() carries every native writer key, and metricsText() the receive counters', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const w = track(new Writer(path, { onMessage() {} }));
    w.start();
    const s = await p.next();
    s.write(encodeFrames([payload(0, 10), payload(1, 10)]));
    await waitFor(() => w.metrics().received === 2, 10_000, 'the messages');
    const m = w.metrics() as unknown as Record<string, unknown>;
    for (const k of binding().protocol.metrics.writer) expect(m, k).toHaveProperty(k);
    const text = w.metricsText();
    expect(text).toContain('uds_ipc_writer_messages_received_total 2');
    expect(text).toContain('uds_ipc_writer_batches_total');
    expect(text).toContain('uds_ipc_writer_read_calls_total');
    expect(text).toContain('uds_ipc_writer_pauses_total 0');
    expect(text.split('\n').filter((l) => l.startsWith('# TYPE')).length).toBe(Object.keys(m).length);
  });

  it('validates onMessage and maxPendingBytes', () => {
    const path = tmpSocket();
    expect(() => new Writer(path, { onMessage: 1 as unknown as () => void })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new Writer(path, { maxPendingBytes: 1024 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => new Writer(path, { onMessage() {}, maxPendingBytes: 0 })).toThrow(RangeError);
    expect(() => new Writer(path, { onMessage() {}, maxPendingBytes: 1.5 })).toThrow(RangeError);
    expect(() => new Writer(path, { onMessage() {}, maxPendingBytes: '1' as unknown as number })).toThrow(TypeError);
    expect(() => new Writer(path, { onMessage() {}, bogus: 1 } as object)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    const w = new Writer(path, { onMessage() {}, maxPendingBytes: 4096 });
    return w.stop();
  });

  it('onMessage throwing or rejecting is reported (ERR_HANDLER, context handler) and delivery goes on', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const seen: number[] = [];
    const errs: [string, string][] = [];
    const w = track(
      new Writer(path, {
        onMessage(batch) {
          for (const m of batch) seen.push(seqOf(m));
          const first = seqOf(batch.at(0)!);
          if (first === 0) throw new Error('boom');
          if (first === 1) return Promise.reject(new Error('late boom'));
        },
      }),
    );
    w.on('error', (e, ctx) => errs.push([e.code, ctx]));
    w.start();
    const s = await p.next();
    for (let i = 0; i < 3; i++) {
      s.write(encodeFrame(payload(i, 10)));
      await waitFor(() => seen.length === i + 1, 10_000, `message ${i}`);
    }
    expect(seen).toEqual([0, 1, 2]);
    expect(errs).toEqual([
      ['ERR_HANDLER', 'handler'],
      ['ERR_HANDLER', 'handler'],
    ]);
  });
});

describe('Writer onMessage: process and thread lifecycle', () => {
  // Child scripts written on the fly (they load the built package, dist/).
  const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-wr-'));
  const script = (name: string, body: string): string => {
    const file = join(dir, name);
    writeFileSync(file, `'use strict';\nconst { Writer, encodeFrame } = require(${JSON.stringify(DIST)});\n${body}`);
    return file;
  };

  it('an unref()ed receiving Writer, connected and with a handler still holding a batch, does not keep the process alive', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const file = script(
      'unref.js',
      // A ref'd timer keeps the process up until the batch arrives (an
      // unref()ed Writer alone may let it exit before it even connects);
      // from then on only the Writer, holding that batch, is left.
      `const keep = setInterval(() => {}, 1000);
       const w = new Writer(process.argv[2], { onMessage: () => { clearInterval(keep); return new Promise(() => {}); } });
       w.on('connect', () => process.stdout.write('connected\\n'));
       w.start().unref();
       w.write('hello');`,
    );
    const run = runNode(file, [path], { timeoutMs: 20_000 });
    const s = await p.next();
    s.write(encodeFrame('reply'));
    const res = await run;
    expect(res.signal).toBeNull();
    expect(res.code).toBe(0);
    expect(res.stderr).toBe('');
  });

  it('a receiving Writer in a worker thread: messages arrive, and terminating the worker mid-stream is clean', async () => {
    const path = tmpSocket();
    const p = await peer(path);
    const file = script(
      'worker.js',
      `const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
       if (isMainThread) {
         const w = new Worker(__filename, { workerData: process.argv[2] });
         let done = false;
         w.on('message', (m) => {
           if (done) return;
           done = true;
           process.stdout.write(JSON.stringify(m) + '\\n');
           w.terminate().then((code) => process.stdout.write('terminated ' + code + '\\n'));
         });
         w.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); });
       } else {
         let got = 0;
         const w = new Writer(workerData, { onMessage(batch) { got += batch.length; if (got >= 1000) parentPort.postMessage({ got }); } });
         w.start();
         w.write('go');
       }`,
    );
    const run = runNode(file, [path], { timeoutMs: 30_000 });
    const s = await p.next();
    const frames: Buffer[] = [];
    for (let i = 0; i < 5000; i++) frames.push(payload(i, 100));
    s.write(encodeFrames(frames));
    s.on('error', () => {});
    const res = await run;
    expect(res.code).toBe(0);
    expect(res.stderr).toBe('');
    expect(res.stdout).toContain('"got"');
    expect(res.stdout).toMatch(/terminated 1\n$/);
  });
});
