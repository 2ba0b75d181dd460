// A Reader's handler (concurrency 'serial', the default) that awaits
// connection.send() for more replies than fit maxReplyBytes: send() waits
// for the queue to drain, and the news that it drained must reach it while
// the handler is still running. It was queued behind the busy handler's own
// batch, so the handler waited for itself: a deadlock (found by an attack
// review, stop 33: stuck at 37 of 1500 messages).
import { describe, it, expect } from 'vitest';
import { Reader, Writer, type Batch } from '../src/index';
import { FAST, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking(500);

describe("concurrency 'serial': a handler awaiting connection.send() on a full reply queue", () => {
  it('goes on once the writer reads (no deadlock): every reply arrives, in order', async () => {
    const path = tmpSocket();
    const N = 200;
    const SIZE = 64 * 1024;
    let sent = 0;
    const reader = track(
      new Reader(
        path,
        async (b: Batch) => {
          for (const m of b) {
            if (m.toString() !== 'go') continue;
            for (let i = 0; i < N; i++) {
              const reply = Buffer.alloc(SIZE, i & 0xff);
              reply.writeUInt32LE(i, 0);
              await b.connection.send(reply); // waits for room: maxReplyBytes holds 3 of them
              sent++;
            }
          }
        },
        { maxReplyBytes: 4 * SIZE },
      ),
    );
    await reader.start();
    const got: number[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage: (b: Batch) => {
          for (const m of b) got.push(m.readUInt32LE(0));
        },
      }),
    ).start();
    w.write('go');
    await waitFor(() => got.length === N, 20_000, 'every reply');
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(sent).toBe(N);
    await within(w.stop({ timeoutMs: 500 }), 'stop()');
  });
});
