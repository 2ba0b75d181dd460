// A Writer reads its replies on the JavaScript thread. When its reading is
// paused (onMessage holds maxPendingBytes) and a hostile reader sends
// descriptors against the wire rule and closes, the end of the connection is
// handled after the fact (JsReceiver::Finish(), which reads what the kernel
// still holds): the refusal must be counted (fdsRefused) and reported
// (ERR_UNEXPECTED_FDS) there too, as when it is read live. Found by an
// attack review (stop 32): it was closed but neither counted nor reported.
import { describe, it, expect, afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer, type IpcError } from '../src/index';
import { killChildren, Proc, PYTHON, tmpSocket, useTracking, waitFor } from './helpers';

const track = useTracking(500);
afterEach(() => killChildren());

// argv: path. Accepts one connection; sends a whole reply frame and the
// first 10 bytes of a second one; waits until they were read (the Writer's
// reading is then paused: onMessage holds the first); sends the rest of the
// second frame with a descriptor (against the wire rule: no frame starts in
// that read) and closes.
const PY_SERVER = `
import fcntl, json, os, socket, struct, sys, termios, time
path = sys.argv[1]
l = socket.socket(socket.AF_UNIX); l.bind(path); l.listen(1)
print(json.dumps({'event': 'listening'}), flush=True)
c, _ = l.accept()
frame = bytes([100]) + b'R' * 100
c.send(frame + frame[:10])
while struct.unpack('i', fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, b'\\0\\0\\0\\0'))[0] != 0:
    time.sleep(0.001)
socket.send_fds(c, [frame[10:]], [os.open('/dev/null', os.O_RDONLY)])
c.close()
print(json.dumps({'event': 'closed'}), flush=True)
time.sleep(60)
`;

describe('Writer replies: descriptors against the wire rule at the end of a connection', () => {
  it('are counted (fdsRefused) and reported (ERR_UNEXPECTED_FDS) even when reading was paused as the reader closed', async () => {
    const path = tmpSocket();
    const script = join(dirname(path), 'finish-server.py');
    writeFileSync(script, PY_SERVER);
    const server = new Proc(PYTHON, [script, path]);
    await server.line((l) => l.event === 'listening', 'the server listening');
    const errors: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let batches = 0;
    const w = track(
      new Writer(path, {
        onMessage: async () => {
          batches++;
          await held; // holds maxPendingBytes: reading pauses
        },
        maxPendingBytes: 1,
        acceptFds: true,
        onError: (e) => errors.push((e as IpcError).code),
        reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
      }),
    ).start();
    try {
      await server.line((l) => l.event === 'closed', 'the server sent the rest with a descriptor and closed');
      await waitFor(() => w.metrics().fdsRefused >= 1, 10_000, 'the refused descriptor counted');
      expect(w.metrics().fdsReceived).toBe(0);
      expect(batches).toBe(1);
    } finally {
      release();
    }
    // Events reach onError in order, after the held batch.
    await waitFor(() => errors.includes('ERR_UNEXPECTED_FDS'), 10_000, 'the refusal reported');
  });
});
