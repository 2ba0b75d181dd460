// A Writer with onMessage reads its replies on the JavaScript thread, within
// maxPendingBytes. When a connection ends, what the kernel still holds for
// it is read even beyond that budget, so that replies sent before a close
// are not lost -- but only once until the handler has caught up. Before
// (found by an attack review, stop 32), every end was read whole: a reader
// that filled its send buffer and closed, again on every reconnect, grew the
// Writer's memory by that much per connection (8 MB a cycle measured) while
// its handler did not settle. Now the next ends are dropped, counted
// (replyBytesDropped) and reported (ERR_REPLIES_DROPPED).
import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer, type Batch, type IpcError } from '../src/index';
import { FAST, killChildren, Proc, PYTHON, tmpSocket, useTracking, waitFor } from './helpers';

const track = useTracking(500);
afterEach(() => killChildren());

const FRAMES = 8; // per connection
const SIZE = 8192; // payload bytes per frame (a 2-byte length prefix)
const PER_CONNECTION = FRAMES * (SIZE + 2);

// argv: path gate. Serves four connections one after another: on each it
// sends FRAMES frames of SIZE bytes (tagged with the connection's number),
// closes, and prints {"event":"served","n":..}. Before the fourth it
// waits for the file `gate` to exist.
const PY_SERVER = `
import json, os, socket, sys, time
path, gate = sys.argv[1], sys.argv[2]
l = socket.socket(socket.AF_UNIX); l.bind(path); l.listen(8)
print(json.dumps({'event': 'listening'}), flush=True)
for n in range(1, 5):
    if n == 4:
        while not os.path.exists(gate): time.sleep(0.005)
    c, _ = l.accept()
    for i in range(${FRAMES}):
        body = (b'%d:%d:' % (n, i)).ljust(${SIZE}, b'x')
        c.sendall(bytes([0x80 | (${SIZE} & 0x7f), ${SIZE} >> 7]) + body)
    c.close()  # a Unix stream send queues straight into the Writer's socket: all of it is there
    print(json.dumps({'event': 'served', 'n': n}), flush=True)
time.sleep(60)
`;

describe('Writer replies: the ends of connections while onMessage is behind', () => {
  it('the first end is read whole; later ones, until the handler catches up, are dropped, counted and reported; then ends are read whole again', async () => {
    const path = tmpSocket();
    const dir = dirname(path);
    const script = join(dir, 'finish-budget-server.py');
    const gate = join(dir, 'gate');
    writeFileSync(script, PY_SERVER);
    const server = new Proc(PYTHON, [script, path, gate]);
    await server.line((l) => l.event === 'listening', 'the server listening');
    const errors: string[] = [];
    const got: string[] = []; // "connection:index" of each message
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const w = track(
      new Writer(path, {
        onMessage: async (b: Batch) => {
          for (const m of b) got.push(m.subarray(0, 8).toString().split(':').slice(0, 2).join(':'));
          await held; // every batch waits: the handler never catches up until released
        },
        maxPendingBytes: 16 * 1024,
        onError: (e) => errors.push((e as IpcError).code),
        reconnect: FAST,
      }),
    ).start();
    let disconnects = 0;
    w.on('disconnect', () => disconnects++);
    try {
      await server.line((l) => l.event === 'served' && l.n === 3, 'three connections served', 20_000);
      await waitFor(() => w.metrics().replyBytesDropped === 2 * PER_CONNECTION, 10_000, 'the second and third ends dropped');
      // Read: the first connection whole, nothing of the next two.
      expect(w.metrics().bytesRead).toBe(PER_CONNECTION);
    } finally {
      release();
    }
    // Reported in order once the handler lets events through.
    await waitFor(() => errors.length >= 2, 10_000, 'the drops reported');
    expect(errors).toEqual(['ERR_REPLIES_DROPPED', 'ERR_REPLIES_DROPPED']);
    await waitFor(() => got.length === FRAMES, 10_000, "the first connection's messages");
    expect(got).toEqual(Array.from({ length: FRAMES }, (_, i) => `1:${i}`));
    // Caught up: the fourth connection's end (its messages arrive while the
    // handler keeps up, or with the end) is read whole again.
    writeFileSync(gate, '');
    await server.line((l) => l.event === 'served' && l.n === 4, 'the fourth connection served', 20_000);
    await waitFor(() => got.length === 2 * FRAMES, 10_000, "the fourth connection's messages");
    expect(got.slice(FRAMES)).toEqual(Array.from({ length: FRAMES }, (_, i) => `4:${i}`));
    expect(w.metrics().replyBytesDropped).toBe(2 * PER_CONNECTION);
    expect(errors).toEqual(['ERR_REPLIES_DROPPED', 'ERR_REPLIES_DROPPED']);
    expect(disconnects).toBeGreaterThanOrEqual(3);
    expect(existsSync(gate)).toBe(true);
  });
});
