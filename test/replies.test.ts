// Replies on the same connection, Reader side: connection.write()/send()
// back to writers, checked with plain node:net peers (which speak the wire
// format: uvarint length prefix + payload) so that what is asserted is the
// bytes on the socket.
import { describe, it, expect } from 'vitest';
import net from 'node:net';
import { Reader, FrameDecoder, encodeFrame, type Connection, type IpcError } from '../src/index';
import { tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking();

/** A node:net writer that collects every reply frame it reads. */
function peer(path: string, opts: { read?: boolean } = {}) {
  const sock = net.connect(path);
  const replies: Buffer[] = [];
  const dec = new FrameDecoder();
  if (opts.read !== false) {
    sock.on('data', (d) => {
      for (const m of dec.push(d)) replies.push(Buffer.from(m));
    });
  } else {
    sock.pause();
  }
  sock.on('error', () => {});
  const connected = new Promise<void>((r) => sock.once('connect', () => r()));
  return { sock, replies, connected, dec };
}

describe('replies on the same connection (Reader side)', () => {
  it('replies to every message of 10 writers, each reply to the right writer, in order', async () => {
    const path = tmpSocket();
    const N = 2000;
    const reader = track(
      new Reader(path, (batch) => {
        for (const m of batch) batch.connection.write(Buffer.concat([Buffer.from('re:'), m]));
      }),
    );
    await reader.start();
    const peers = Array.from({ length: 10 }, () => peer(path));
    await Promise.all(peers.map((p) => p.connected));
    peers.forEach((p, k) => {
      const frames: Buffer[] = [];
      for (let i = 0; i < N; i++) frames.push(encodeFrame(`w${k}-${i}`));
      p.sock.write(Buffer.concat(frames));
    });
    await within(
      waitFor(() => peers.every((p) => p.replies.length >= N), 20_000, 'all replies'),
      'all replies',
    );
    peers.forEach((p, k) => {
      expect(p.replies.length).toBe(N);
      for (let i = 0; i < N; i++) expect(p.replies[i].toString()).toBe(`re:w${k}-${i}`);
    });
    const m = reader.metrics();
    expect(m.replyBytesSent).toBeGreaterThan(0);
    // Replies written in one handler tick go out together: far fewer send calls than replies.
    expect(m.replySendCalls).toBeLessThan(10 * N);
    expect(m.repliesDropped).toBe(0);
    for (const p of peers) p.sock.destroy();
  });

  it('the connection event gives a live connection that can push unprompted, with send() and strings', async () => {
    const path = tmpSocket();
    const reader = track(new Reader(path, () => {}));
    const got = new Promise<Connection>((r) => reader.once('connection', r));
    await reader.start();
    const p = peer(path);
    const conn = await within(got, 'connection');
    expect(conn.connected).toBe(true);
    expect(conn.pid).toBe(process.pid);
    expect(conn.write('hello')).toBe(true);
    await conn.send(new Uint8Array([1, 2, 3]));
    await conn.send('');
    await waitFor(() => p.replies.length === 3, 10_000, 'three replies');
    expect(p.replies[0].toString()).toBe('hello');
    expect([...p.replies[1]]).toEqual([1, 2, 3]);
    expect(p.replies[2].length).toBe(0);
    p.sock.destroy();
  });

  it('writing to a closed connection throws ERR_NOT_CONNECTED, and a waiting send() rejects with it', async () => {
    const path = tmpSocket();
    const reader = track(new Reader(path, () => {}, { maxReplyBytes: 64 * 1024 }));
    const got = new Promise<Connection>((r) => reader.once('connection', r));
    const gone = new Promise<void>((r) => reader.once('disconnect', () => r()));
    await reader.start();
    const p = peer(path, { read: false });
    const conn = await within(got, 'connection');
    // Fill the socket buffers and the queue (the peer does not read) so that a send() waits.
    const big = Buffer.alloc(32 * 1024, 7);
    for (;;) {
      while (conn.write(big));
      await new Promise((r) => setImmediate(r)); // this tick's replies handed over
      if (conn.bufferedBytes + big.length + 3 > 64 * 1024) break;
    }
    const waiting = conn.send(big);
    p.sock.destroy();
    await within(gone, 'disconnect');
    await expect(waiting).rejects.toMatchObject({ code: 'ERR_NOT_CONNECTED' });
    expect(conn.connected).toBe(false);
    expect(() => conn.write('x')).toThrow(expect.objectContaining({ code: 'ERR_NOT_CONNECTED' }));
    await expect(conn.send('x')).rejects.toMatchObject({ code: 'ERR_NOT_CONNECTED' });
    expect(reader.metrics().repliesDropped).toBeGreaterThan(0);
  });

  it('rejects bad arguments and replies that can never fit', async () => {
    const path = tmpSocket();
    const reader = track(new Reader(path, () => {}, { maxReplyBytes: 1024 }));
    const got = new Promise<Connection>((r) => reader.once('connection', r));
    await reader.start();
    const p = peer(path);
    const conn = await within(got, 'connection');
    expect(() => conn.write(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => conn.write(Buffer.alloc(2000))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    await expect(conn.send('x', { signal: 5 as unknown as AbortSignal })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(() => new Reader(tmpSocket(), () => {}, { maxReplyBytes: 0 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => new Reader(tmpSocket(), () => {}, { concurrency: 'parallel' as 'serial' })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    p.sock.destroy();
  });

  it('send() waits for room while the writer does not read, then everything arrives in order', async () => {
    const path = tmpSocket();
    const reader = track(new Reader(path, () => {}, { maxReplyBytes: 64 * 1024 }));
    const got = new Promise<Connection>((r) => reader.once('connection', r));
    await reader.start();
    const p = peer(path, { read: false });
    const conn = await within(got, 'connection');
    const N = 400;
    const msg = (i: number) => Buffer.alloc(8 * 1024, i & 0xff);
    let sent = 0;
    const all = (async () => {
      for (let i = 0; i < N; i++) {
        await conn.send(msg(i));
        sent++;
      }
    })();
    // 3.2 MiB of replies: more than the socket buffers and the queue hold.
    await waitFor(() => reader.metrics().replyBytesSent > 0 && conn.bufferedBytes > 32 * 1024, 10_000, 'a full reply queue');
    expect(sent).toBeLessThan(N);
    p.sock.on('data', (d) => {
      for (const m of p.dec.push(d)) p.replies.push(Buffer.from(m));
    });
    p.sock.resume();
    await within(all, 'every send()');
    await waitFor(() => p.replies.length === N, 20_000, 'every reply');
    for (let i = 0; i < N; i++) expect(p.replies[i][0]).toBe(i & 0xff);
    expect(reader.metrics().repliesDropped).toBe(0);
    p.sock.destroy();
  });

  it('replies to a writer that never reads are dropped and counted; other connections are unaffected', async () => {
    const path = tmpSocket();
    const errors: IpcError[] = [];
    const reader = track(
      new Reader(
        path,
        (batch) => {
          // 16 KiB per message to the deaf writer, 16 bytes to the other one.
          for (const m of batch) batch.connection.write(Buffer.alloc(m[0] === 2 ? 16 : 16 * 1024, m[0]));
        },
        { maxReplyBytes: 256 * 1024, replyTimeoutMs: 300, onError: (e) => errors.push(e as IpcError) },
      ),
    );
    await reader.start();
    const deaf = peer(path, { read: false }); // a Go writer: never reads
    const ok = peer(path);
    await Promise.all([deaf.connected, ok.connected]);
    const frames = (tag: number, n: number) => Buffer.concat(Array.from({ length: n }, () => encodeFrame(Buffer.from([tag]))));
    deaf.sock.write(frames(1, 2000)); // 32 MiB of replies asked for
    await waitFor(() => reader.metrics().repliesDropped > 0, 10_000, 'replies to the deaf writer dropped');
    ok.sock.write(frames(2, 500));
    await waitFor(() => ok.replies.length === 500, 10_000, 'replies to the reading writer');
    expect(ok.replies.every((r) => r.length === 16 && r[0] === 2)).toBe(true);
    // The deaf writer's queue makes no progress: discarded after replyTimeoutMs, reported.
    await waitFor(() => errors.some((e) => e.code === 'ERR_WRITE_TIMEOUT'), 10_000, 'ERR_WRITE_TIMEOUT');
    expect(reader.metrics().replyBytesDropped).toBeGreaterThan(0);
    // Still connected and still read.
    expect(reader.metrics().activeConnections).toBe(2);
    const before = reader.metrics().received;
    deaf.sock.write(frames(3, 10));
    await waitFor(() => reader.metrics().received >= before + 10, 10_000, 'the deaf writer still read');
    deaf.sock.destroy();
    ok.sock.destroy();
  });

  it("concurrency 'connection': a busy handler holds back only its own connection", async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: string[] = [];
    const reader = track(
      new Reader(
        path,
        async (batch) => {
          for (const m of batch) {
            seen.push(m.toString());
            if (m.toString() === 'slow-0') await gate;
          }
        },
        { concurrency: 'connection' },
      ),
    );
    await reader.start();
    const slow = peer(path);
    const fast = peer(path);
    await Promise.all([slow.connected, fast.connected]);
    slow.sock.write(encodeFrame('slow-0'));
    await waitFor(() => seen.includes('slow-0'), 10_000, 'the slow handler running');
    slow.sock.write(encodeFrame('slow-1'));
    for (let i = 0; i < 100; i++) fast.sock.write(encodeFrame(`fast-${i}`));
    await waitFor(() => seen.includes('fast-99'), 10_000, 'the other connection delivered');
    expect(seen).not.toContain('slow-1');
    release();
    await waitFor(() => seen.includes('slow-1'), 10_000, 'the slow connection resumes');
    expect(seen.filter((s) => s.startsWith('fast-'))).toEqual(Array.from({ length: 100 }, (_, i) => `fast-${i}`));
    slow.sock.destroy();
    fast.sock.destroy();
  });

  it("concurrency 'connection': messages that come one at a time keep each connection's order while its handler is pending", async () => {
    // Each message here arrives alone, with the connection already open:
    // the Reader hands such a batch straight to the handler (no item list),
    // and a pending handler must still hold back that connection's next ones.
    const path = tmpSocket();
    const gates = new Map<string, () => void>();
    const seen: string[] = [];
    const opened: Connection[] = [];
    const reader = track(
      new Reader(
        path,
        async (batch) => {
          for (const m of batch) {
            const s = m.toString();
            seen.push(s);
            if (s.endsWith('-0')) await new Promise<void>((r) => gates.set(s, r));
          }
        },
        { concurrency: 'connection' },
      ),
    );
    reader.on('connection', (c) => opened.push(c));
    await reader.start();
    const a = peer(path);
    const b = peer(path);
    await Promise.all([a.connected, b.connected]);
    await waitFor(() => opened.length === 2, 10_000, 'both connections open');
    a.sock.write(encodeFrame('a-0'));
    await waitFor(() => gates.has('a-0'), 10_000, "a's handler pending");
    a.sock.write(encodeFrame('a-1'));
    await waitFor(() => reader.metrics().bytesRead >= 8, 10_000, 'a-1 read');
    // b's first message while a's handler is pending; then b's handler is pending too.
    b.sock.write(encodeFrame('b-0'));
    await waitFor(() => gates.has('b-0'), 10_000, "b's handler pending");
    b.sock.write(encodeFrame('b-1'));
    await waitFor(() => reader.metrics().bytesRead >= 16, 10_000, 'b-1 read');
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual(['a-0', 'b-0']);
    gates.get('b-0')!();
    await waitFor(() => seen.includes('b-1'), 10_000, 'b resumes');
    expect(seen).toEqual(['a-0', 'b-0', 'b-1']);
    gates.get('a-0')!();
    await waitFor(() => seen.includes('a-1'), 10_000, 'a resumes');
    // Both idle again: the next lone messages go straight through.
    a.sock.write(encodeFrame('a-2'));
    await waitFor(() => seen.includes('a-2'), 10_000, 'a-2');
    b.sock.write(encodeFrame('b-2'));
    await waitFor(() => seen.includes('b-2'), 10_000, 'b-2');
    expect(seen).toEqual(['a-0', 'b-0', 'b-1', 'a-1', 'a-2', 'b-2']);
    a.sock.destroy();
    b.sock.destroy();
  });

  it("concurrency 'connection': a graceful stop waits for busy connections and delivers what they sent", async () => {
    const path = tmpSocket();
    const gates: Array<() => void> = [];
    const seen: string[] = [];
    const reader = new Reader(
      path,
      async (batch) => {
        for (const m of batch) seen.push(m.toString());
        await new Promise<void>((r) => gates.push(r));
      },
      { concurrency: 'connection' },
    );
    await reader.start();
    const a = peer(path);
    const b = peer(path);
    await Promise.all([a.connected, b.connected]);
    a.sock.write(encodeFrame('a-0'));
    b.sock.write(encodeFrame('b-0'));
    await waitFor(() => gates.length === 2, 10_000, 'both handlers busy');
    a.sock.write(encodeFrame('a-1'));
    await waitFor(() => reader.metrics().bytesRead >= 8, 10_000, 'a-1 read');
    const stopped = reader.stop({ timeoutMs: 10_000 });
    // Release handlers as they come until the stop finishes.
    let done = false;
    void stopped.then(() => (done = true));
    while (!done) {
      gates.splice(0).forEach((g) => g());
      await new Promise((r) => setImmediate(r));
    }
    expect((await stopped).discarded).toBe(0);
    expect(seen.sort()).toEqual(['a-0', 'a-1', 'b-0']);
    a.sock.destroy();
    b.sock.destroy();
  });
});
