// A Writer with onMessage reads its replies on the JavaScript thread, within
// maxPendingBytes. When a connection ends, what the kernel still holds for
// it is read whole, even beyond that limit, so that replies sent before a
// close are not lost. So that this cannot repeat connection after
// connection, a Writer whose handler holds maxPendingBytes makes no new
// connection until the handler catches up. Before (found by an attack
// review, stop 32), a reader that filled its send buffer and closed, again on
// every reconnect, grew the Writer's memory by that much per connection
// (8 MB a cycle measured) while its handler did not settle.
import { describe, it, expect, afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer, type Batch, type IpcError } from '../src/index';
import { FAST, killChildren, Proc, PYTHON, sleep, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking(500);
afterEach(() => killChildren());

const FRAMES = 8;
const SIZE = 8192; // payload bytes per frame (a 2-byte length prefix)
const BURST = FRAMES * (SIZE + 2);

// argv: path. Serves three connections one after another, printing
// {"event":"accepted","n":..} and, once done, {"event":"served","n":..,"got":hex}
// with what the writer sent on it. 1 and 3: FRAMES frames of SIZE bytes
// (tagged "n:i:"), then close. 2: one short reply "2:r:", reads what the
// writer sent until it has "queued", then closes.
const PY_SERVER = `
import json, socket, sys
l = socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen(8)
print(json.dumps({'event': 'listening'}), flush=True)
for n in range(1, 4):
    c, _ = l.accept()
    print(json.dumps({'event': 'accepted', 'n': n}), flush=True)
    got = b''
    if n == 2:
        c.sendall(bytes([4]) + b'2:r:')
        while b'queued' not in got:
            d = c.recv(65536)
            if not d: break
            got += d
    else:
        for i in range(${FRAMES}):
            body = (b'%d:%d:' % (n, i)).ljust(${SIZE}, b'x')
            c.sendall(bytes([0x80 | (${SIZE} & 0x7f), ${SIZE} >> 7]) + body)
    c.close()  # a Unix stream send queues straight into the Writer's socket: all of it is there
    print(json.dumps({'event': 'served', 'n': n, 'got': got.hex()}), flush=True)
`;

describe('Writer replies: a connection that ends while onMessage holds maxPendingBytes', () => {
  it('its replies are all delivered; no new connection until the handler catches up (writes queue meanwhile); then it reconnects and goes on', async () => {
    const path = tmpSocket();
    const script = join(dirname(path), 'hold-server.py');
    writeFileSync(script, PY_SERVER);
    const server = new Proc(PYTHON, [script, path]);
    await server.line((l) => l.event === 'listening', 'the server listening');
    const errors: string[] = [];
    const got: string[] = []; // "connection:index" of each message
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding = true;
    const w = track(
      new Writer(path, {
        onMessage: async (b: Batch) => {
          for (const m of b) got.push(m.subarray(0, 8).toString().split(':').slice(0, 2).join(':'));
          if (holding) await held; // the handler does not catch up until released
        },
        maxPendingBytes: 16 * 1024,
        onError: (e) => errors.push((e as IpcError).code),
        reconnect: FAST,
      }),
    ).start();
    try {
      await server.line((l) => l.event === 'served' && l.n === 1, 'the first connection served');
      // Its end is read whole, beyond maxPendingBytes.
      await waitFor(() => w.metrics().bytesRead === BURST, 10_000, 'the whole first connection read');
      expect(w.write('queued')).toBe(true);
      // FAST reconnects within milliseconds: a connection would have been
      // made by now. (Waiting cannot make this fail wrongly, only pass late.)
      await sleep(300);
      expect(server.find((l) => l.event === 'accepted' && l.n === 2)).toBeUndefined();
      expect(w.metrics().connectAttempts).toBe(1);
      expect(got.length).toBeGreaterThan(0); // the first batch, held
      expect(got.every((t) => t.startsWith('1:'))).toBe(true);
    } finally {
      holding = false;
      release();
    }
    // Caught up: it reconnects, sends what was queued, gets the reply of the
    // second connection, then the third connection's burst, whole.
    const second = await server.line((l) => l.event === 'served' && l.n === 2, 'the second connection served');
    expect(Buffer.from(String(second.got), 'hex').toString()).toContain('queued');
    await server.line((l) => l.event === 'served' && l.n === 3, 'the third connection served');
    await waitFor(() => got.length === 2 * FRAMES + 1, 10_000, 'every message');
    const tags = (n: number) => Array.from({ length: FRAMES }, (_, i) => `${n}:${i}`);
    expect(got).toEqual([...tags(1), '2:r', ...tags(3)]);
    expect(errors).toEqual([]);
    await within(w.stop({ timeoutMs: 500 }), 'stop()');
  });
});
