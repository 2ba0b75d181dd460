// A receiving Writer reads what its reader sends back on JavaScript's thread
// (the IO thread connects and sends; a dup of each connection is watched
// with a uv_poll on the JS thread's loop). Checked through metrics(), never
// through timing.
import { afterEach, describe, expect, it } from 'vitest';
import * as net from 'node:net';
import { Writer, type Batch } from '../src/index';
import { encodeFrame, encodeFrames, FrameDecoder } from '../src/framing';
import { tmpSocket, useTracking, waitFor } from './helpers';

const track = useTracking();
const servers: { server: net.Server; conns: net.Socket[] }[] = [];
afterEach(async () => {
  for (const { server, conns } of servers.splice(0)) {
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const c of conns) c.destroy();
    await closed;
  }
});

/** A node:net server; `onFrame` gets each frame a writer sends, with its socket. */
async function peer(path: string, onFrame: (s: net.Socket, m: Uint8Array) => void = () => {}) {
  const conns: net.Socket[] = [];
  const server = net.createServer((s) => {
    conns.push(s);
    const dec = new FrameDecoder({ maxMessageSize: 1 << 20 });
    s.on('data', (d) => {
      for (const m of dec.push(d)) onFrame(s, m);
    });
    s.on('error', () => {});
  });
  servers.push({ server, conns });
  await new Promise<void>((r) => server.listen(path, r));
  return { conns };
}

describe('Writer onMessage: reads on the JavaScript thread', () => {
  it('request/response: every reply is read on the JavaScript thread (jsThreadReads === readCalls)', async () => {
    const path = tmpSocket();
    await peer(path, (s, m) => s.write(encodeFrame(Buffer.concat([Buffer.from('re:'), m]))));
    const got: string[] = [];
    const w = track(new Writer(path, { onMessage: (b: Batch) => { for (const m of b) got.push(m.toString()); } }));
    w.start();
    for (let i = 0; i < 200; i++) {
      w.write(`q${i}`);
      await waitFor(() => got.length > i, 10_000, `reply ${i}`);
    }
    expect(got[199]).toBe('re:q199');
    const m = w.metrics();
    expect(m.readCalls).toBeGreaterThanOrEqual(100);
    expect(m.jsThreadReads).toBe(m.readCalls);
    expect(m.bytesRead).toBe(got.reduce((n, s) => n + 1 + s.length, 0));
  });

  it('every batch of a connection precedes its disconnect, also when reading is paused at maxPendingBytes as the reader closes', async () => {
    const path = tmpSocket();
    const N = 3000;
    const { conns } = await peer(path);
    const log: string[] = [];
    let received = 0;
    const w = track(
      new Writer(path, {
        maxPendingBytes: 16 * 1024,
        reconnect: false,
        async onMessage(b: Batch) {
          received += b.length;
          await new Promise((r) => setTimeout(r, 1));
        },
      }),
    );
    w.on('connect', () => log.push('connect'));
    w.on('disconnect', () => log.push(`disconnect after ${received}`));
    w.on('error', () => {});
    w.start();
    await waitFor(() => conns.length === 1, 10_000, 'a connection');
    const body = Buffer.alloc(1000, 7);
    conns[0].end(encodeFrames(Array.from({ length: N }, () => body))); // ~3 MB, then FIN
    await waitFor(() => log.length === 2, 30_000, 'the disconnect');
    expect(log).toEqual(['connect', `disconnect after ${N}`]);
    const m = w.metrics();
    expect(m.pauses).toBeGreaterThan(0);
    expect(m.jsThreadReads).toBe(m.readCalls);
    expect(m.bytesRead).toBe(N * (2 + body.length));
  });
});
