// A Writer with onMessage reads its replies on the JavaScript thread, within
// maxPendingBytes. When a connection ends, what the kernel still holds for
// it is read beyond that limit, so that replies sent before a close are not
// lost: by up to max(maxPendingBytes, 4 x net.core.wmem_max) more, enough
// for any one connection's end (a send buffer is at most 2 x wmem_max). What is left beyond that goes with its
// connection, counted (replyBytesDropped) and reported (ERR_REPLIES_DROPPED).
// Before (found by an attack review, stop 32), every end was read whole: a
// reader that filled its send buffer and closed, again on every reconnect,
// grew the Writer's memory by that much per connection (8 MB a cycle
// measured) while its handler did not settle.
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer, type Batch, type IpcError } from '../src/index';
import { FAST, killChildren, Proc, PYTHON, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking(500);
afterEach(() => killChildren());

const LIMIT = 64 * 1024; // maxPendingBytes
const KERNEL = 4 * Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8')); // the allowance for one connection's end
const CAP = LIMIT + Math.max(LIMIT, KERNEL);
const SIZE = 16384; // payload bytes per frame (a 3-byte length prefix)

// argv: path count. Serves `count` connections one after another, each:
// raises its send buffer as far as it goes, sends 16 KiB frames until the
// Writer's socket takes no more, closes, prints {"event":"served","n":..,
// "bytes":..}.
const PY_SERVER = `
import json, socket, sys
l = socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen(8)
print(json.dumps({'event': 'listening'}), flush=True)
body = b'r' * ${SIZE}
frame = bytes([0x80 | (len(body) & 0x7f), 0x80 | ((len(body) >> 7) & 0x7f), len(body) >> 14]) + body
for n in range(1, int(sys.argv[2]) + 1):
    c, _ = l.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)
    c.setblocking(False)
    sent = 0
    try:
        while True:
            sent += c.send(frame)  # whole frames: a unix stream send of this size goes whole or not at all
    except BlockingIOError:
        pass
    c.close()
    print(json.dumps({'event': 'served', 'n': n, 'bytes': sent}), flush=True)
`;

describe('Writer replies: connections that end while onMessage is behind', () => {
  it("one end is always read whole; beyond the end cap the rest is dropped, counted and reported; memory stays bounded across reconnects", async () => {
    const path = tmpSocket();
    const script = join(dirname(path), 'end-cap-server.py');
    writeFileSync(script, PY_SERVER);
    const N = 4;
    const server = new Proc(PYTHON, [script, path, String(N)]);
    await server.line((l) => l.event === 'listening', 'the server listening');
    const errors: string[] = [];
    let messages = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding = true;
    const w = track(
      new Writer(path, {
        onMessage: async (b: Batch) => {
          messages += b.length;
          if (holding) await held; // the handler does not catch up until released
        },
        maxPendingBytes: LIMIT,
        onError: (e) => errors.push((e as IpcError).code),
        reconnect: FAST,
      }),
    );
    const log: string[] = [];
    w.on('error', (e) => log.push((e as IpcError).code));
    w.on('disconnect', () => log.push('disconnect'));
    w.start();
    let sent: number[] = [];
    try {
      await server.line((l) => l.event === 'served' && l.n === N, `${N} connections served`, 30_000);
      sent = server.all((l) => l.event === 'served').map((l) => l.bytes as number);
      const total = sent.reduce((a, b) => a + b, 0);
      await waitFor(() => w.metrics().bytesRead + w.metrics().replyBytesDropped >= total, 10_000, 'every end read or dropped');
      const m = w.metrics();
      // Held at once: at most the cap plus one read (a frame and what came with it).
      expect(m.bytesRead - m.replyBytesDropped).toBeLessThanOrEqual(CAP + 2 * (SIZE + 3));
      expect(m.bytesRead).toBeGreaterThanOrEqual(sent[0]);
      expect(m.replyBytesDropped).toBeGreaterThan(0);
      // The first connection's end was read whole (one end always fits).
      expect(m.replyBytesDropped).toBeLessThanOrEqual(total - sent[0]);
    } finally {
      holding = false;
      release();
    }
    await waitFor(() => errors.length >= 1, 10_000, 'the drops reported');
    expect(new Set(errors)).toEqual(new Set(['ERR_REPLIES_DROPPED']));
    // Each report comes right before the 'disconnect' of the connection it is about.
    await waitFor(() => log.filter((x) => x === 'disconnect').length >= N, 10_000, 'every disconnect');
    log.forEach((x, i) => {
      if (x === 'ERR_REPLIES_DROPPED') expect(log[i + 1]).toBe('disconnect');
    });
    // Each frame was read whole and delivered, or dropped.
    await waitFor(() => messages * (SIZE + 3) + w.metrics().replyBytesDropped === sent.reduce((a, b) => a + b, 0), 10_000, 'every message delivered or dropped');
    expect(w.metrics().received).toBe(messages);
    await within(w.stop({ timeoutMs: 500 }), 'stop()');
  });
});
