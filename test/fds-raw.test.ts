// File descriptors with messages (issue #19): the wire rule against raw peers.
// test/fixtures/fd_peer.py, a Python 3 peer written from the wire rules with
// the standard library only (socket.send_fds / recv_fds): descriptors on a
// read where no frame starts are a protocol error; descriptors attached to
// one whole frame sent alone are delivered with that frame (also when the
// kernel returns earlier descriptor-less sends in the same read); a frame
// refused as too large closes its descriptors; a uds-ipc Writer's frames
// with descriptors as the Python receiver sees them; and a Writer reading
// replies from a listener that sends descriptors.
//
// To make the kernel hand the reader several sends in one read (the case the
// "last frame that starts in the read" rule is for), the reader process is
// stopped (SIGSTOP) while the Python peer connects and sends, and continued
// afterwards. To make sure a read holds only the middle of a frame, the peer
// waits until the reader has read everything sent before (SIOCOUTQ = 0).
import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, within, FIXTURES, FAST, Proc, PYTHON, killChildren, useTracking, type Line } from './helpers';
import { fdCount, fileNear, frame, itOnKernel, metricsOf, readerChild, uvarint } from './fd-helpers';

const PEER = join(FIXTURES, 'fd_peer.py');
const track = useTracking(500);
afterEach(() => killChildren());



interface Step {
  hex: string;
  files?: string[];
  waitConsumed?: boolean;
}

function step(bytes: Buffer, files: string[] = [], waitConsumed = false): Step {
  return { hex: bytes.toString('hex'), files, waitConsumed };
}

function pythonSender(path: string, steps: Step[]): Proc {
  const spec = join(dirname(path), `steps-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  fs.writeFileSync(spec, JSON.stringify(steps));
  return new Proc(PYTHON, [PEER, 'send', path, `@${spec}`]);
}

describe('raw peer: descriptors where no frame starts', () => {
  it('descriptors with the middle of a frame (the reader has read its start already) → ERR_UNEXPECTED_FDS, connection closed, descriptors closed', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'a.txt', 'AAA');
    const r = await readerChild(path, { options: { acceptFds: true } });
    const base = fdCount(r.pid);
    const payload = Buffer.alloc(1000, 0x61);
    const f1 = frame(payload);
    const py = pythonSender(path, [
      step(frame('whole-0'), [], true),
      step(f1.subarray(0, 402), [], true), // prefix (2 bytes) + 400 bytes of payload, all read by the reader
      step(f1.subarray(402), [file, file]), // the rest of the frame: no frame starts in this read
    ]);
    const closed = await py.line((l) => l.event === 'closed' || l.event === 'send-error', 'the reader closing the connection');
    expect(closed.event).toBe('closed');
    const err = await r.line((l) => l.event === 'error', 'the reader error');
    expect(err).toMatchObject({ code: 'ERR_UNEXPECTED_FDS', context: 'connection' });
    const disc = await r.line((l) => l.event === 'disconnect', 'the disconnect');
    expect(disc.code).toBe('ERR_UNEXPECTED_FDS');
    expect(r.all((l) => l.event === 'msg').map((l) => l.data)).toEqual(['whole-0']);
    await waitFor(() => fdCount(r.pid) === base, 10_000, `the reader's descriptors back to ${base}`).catch(() => {});
    expect(fdCount(r.pid)).toBe(base);
    // Both descriptors arrived and were closed: fdsRefused counts descriptors
    // ("closed on arrival ... sent against the wire rule"), not events.
    const m = (await metricsOf(r)).metrics;
    expect(m.fdsRefused).toBe(2);
    expect(m.fdsReceived).toBe(0);
  });

  it('descriptors with the second byte of a two-byte length prefix (the frame started in the read before) → ERR_UNEXPECTED_FDS', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'a.txt', 'AAA');
    const r = await readerChild(path, { options: { acceptFds: true } });
    const base = fdCount(r.pid);
    const f1 = frame(Buffer.alloc(300, 0x62)); // prefix 0xac 0x02
    expect(f1[0]).toBeGreaterThanOrEqual(0x80);
    const py = pythonSender(path, [step(f1.subarray(0, 1), [], true), step(f1.subarray(1), [file])]);
    const closed = await py.line((l) => l.event === 'closed' || l.event === 'send-error', 'the reader closing the connection');
    expect(closed.event).toBe('closed');
    const err = await r.line((l) => l.event === 'error', 'the reader error');
    expect(err).toMatchObject({ code: 'ERR_UNEXPECTED_FDS', context: 'connection' });
    expect(r.all((l) => l.event === 'msg')).toEqual([]);
    await waitFor(() => fdCount(r.pid) === base, 10_000, `the reader's descriptors back to ${base}`).catch(() => {});
    expect(fdCount(r.pid)).toBe(base);
  });
});

describe('raw peer: descriptors with a frame the reader refuses', () => {
  it('a frame announcing more than maxMessageSize, sent with descriptors → ERR_MESSAGE_TOO_LARGE, and the descriptors are closed', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'a.txt', 'AAA');
    const r = await readerChild(path, { options: { acceptFds: true, maxMessageSize: 1024 } });
    const base = fdCount(r.pid);
    const py = pythonSender(path, [step(frame('small')), step(Buffer.concat([uvarint(4096), Buffer.alloc(100, 0x65)]), [file, file, file])]);
    const closed = await py.line((l) => l.event === 'closed' || l.event === 'send-error', 'the reader closing the connection');
    expect(closed.event).toBe('closed');
    const err = await r.line((l) => l.event === 'error', 'the reader error');
    expect(err.code).toBe('ERR_MESSAGE_TOO_LARGE');
    await waitFor(() => fdCount(r.pid) === base, 10_000, `the reader's descriptors back to ${base}`).catch(() => {});
    expect(fdCount(r.pid)).toBe(base);
    expect(r.all((l) => l.event === 'msg').map((l) => l.data)).toEqual(['small']);
    expect((await metricsOf(r)).metrics.fdsReceived).toBe(0);
  });

  it('a large frame whose first piece brought descriptors, then a stalled peer: ERR_FRAME_TIMEOUT, and the descriptors held for the frame are closed', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'a.txt', 'AAA');
    const r = await readerChild(path, { options: { acceptFds: true, frameTimeoutMs: 300 } });
    const base = fdCount(r.pid);
    const big = frame(Buffer.alloc(1024 * 1024, 0x67));
    const py = pythonSender(path, [step(big.subarray(0, 100_000), [file, file, file], true)]);
    await py.line((l) => l.event === 'sent', 'the first piece sent (and read)');
    const closed = await py.line((l) => l.event === 'closed', 'the reader closing the stalled connection');
    expect(closed.event).toBe('closed');
    const disc = await r.line((l) => l.event === 'disconnect', 'the disconnect');
    expect(disc.code).toBe('ERR_FRAME_TIMEOUT');
    await waitFor(() => fdCount(r.pid) === base, 10_000, `the reader's descriptors back to ${base}`).catch(() => {});
    expect(fdCount(r.pid)).toBe(base);
    expect(r.all((l) => l.event === 'msg')).toEqual([]);
  });
});

describe('raw peer: descriptors attached to one whole frame', () => {
  it('one send with two whole frames and descriptors (against the sender rule, within the reader rule): they go to the last frame that starts in the read', async () => {
    const path = tmpSocket();
    const [a, b] = ['A-file', 'B-file'].map((t, i) => fileNear(path, `${i}.txt`, t));
    const r = await readerChild(path, { options: { acceptFds: true } });
    const py = pythonSender(path, [
      step(frame('first'), [], true),
      step(Buffer.concat([frame('x'), frame('y')]), [a], true),
      step(Buffer.concat([frame('z'), frame(Buffer.alloc(700, 0x66))]), [b], true),
      step(frame('last'), [], true),
    ]);
    await py.line((l) => l.event === 'sent', 'the Python peer sent everything');
    await r.line((l) => l.event === 'msg' && l.data === 'last', 'the last message');
    const got = r.all((l) => l.event === 'msg').map((l) => [l.data ?? l.len, l.fds.map((f: Line) => f.content)]);
    expect(got).toEqual([
      ['first', []],
      ['x', []],
      ['y', ['A-file']],
      ['z', []],
      [700, ['B-file']],
      ['last', []],
    ]);
    expect(r.all((l) => l.event === 'error')).toEqual([]);
  });

  it('each sent alone between descriptor-less frames: delivered with the right messages (takeFds on the right index)', async () => {
    const path = tmpSocket();
    const [a, b, c] = ['A-file', 'B-file', 'C-file'].map((t, i) => fileNear(path, `${i}.txt`, t));
    const r = await readerChild(path, { options: { acceptFds: true } });
    const py = pythonSender(path, [
      step(frame('p0')),
      step(frame('p1')),
      step(frame('with-a'), [a]),
      step(frame('p2')),
      step(frame('with-b-c'), [b, c]),
      step(frame('with-a-again'), [a]),
      step(frame('p3')),
      step(frame('with-c'), [c], true),
    ]);
    await py.line((l) => l.event === 'sent', 'the Python peer sent everything');
    await r.line((l) => l.event === 'msg' && l.data === 'with-c', 'the last message');
    const got = r.all((l) => l.event === 'msg').map((l) => [l.data, l.fds.map((f: Line) => f.content)]);
    expect(got).toEqual([
      ['p0', []],
      ['p1', []],
      ['with-a', ['A-file']],
      ['p2', []],
      ['with-b-c', ['B-file', 'C-file']],
      ['with-a-again', ['A-file']],
      ['p3', []],
      ['with-c', ['C-file']],
    ]);
    expect(r.all((l) => l.event === 'error')).toEqual([]);
    expect(py.find((l) => l.event === 'closed')).toBeUndefined(); // the connection stays up
    expect((await metricsOf(r)).metrics.fdsReceived).toBe(5);
  });

  it('earlier descriptor-less sends returned in the same read: the descriptors go to the last frame that starts in it', async () => {
    const path = tmpSocket();
    const [a, b] = ['A-file', 'B-file'].map((t, i) => fileNear(path, `${i}.txt`, t));
    const r = await readerChild(path, { options: { acceptFds: true } });
    const big = frame(Buffer.alloc(3000, 0x63));
    // The reader is stopped while all of this goes into the kernel's buffers:
    // its first read returns q0, q1 and with-a together and stops there (the
    // kernel ends a read after a send that carried descriptors); then the
    // start of a frame continued by a send with descriptors, both in the same
    // read (the frame starts in that read, so the descriptors are its).
    r.child.kill('SIGSTOP');
    let py: Proc;
    try {
      py = pythonSender(path, [
        step(frame('q0')),
        step(frame('q1')),
        step(frame('with-a'), [a]),
        step(frame('q2')),
        step(big.subarray(0, 1000)),
        step(big.subarray(1000), [b]),
        step(frame('q3')),
      ]);
      await py.line((l) => l.event === 'sent', 'the Python peer sent everything (the reader is stopped)');
    } finally {
      r.child.kill('SIGCONT');
    }
    await r.line((l) => l.event === 'msg' && l.data === 'q3', 'the last message');
    const got = r.all((l) => l.event === 'msg').map((l) => [l.data ?? l.len, l.fds.map((f: Line) => f.content)]);
    expect(got).toEqual([
      ['q0', []],
      ['q1', []],
      ['with-a', ['A-file']],
      ['q2', []],
      [3000, ['B-file']],
      ['q3', []],
    ]);
    expect(r.all((l) => l.event === 'error')).toEqual([]);
  });
});

describe('a Python receiver (socket.recv_fds)', () => {
  it("reads a uds-ipc Writer's frames: varint length + payload, descriptors tied to the last frame that starts in the read, each working", async () => {
    const path = tmpSocket();
    const [a, b, c] = ['A-file', 'B-file', 'C-file'].map((t, i) => fileNear(path, `${i}.txt`, t));
    const py = new Proc(PYTHON, [PEER, 'recv', path, '8']);
    await py.line((l) => l.event === 'listening', 'the Python receiver listening');
    const w = track(new Writer(path, { reconnect: FAST })).start();
    const open = (f: string) => fs.openSync(f, 'r');
    const fds = [open(a), open(b), open(c)];
    const big = Buffer.alloc(300_000, 0x64); // more than one socket buffer's piece
    try {
      w.write('n0');
      w.write('f1', { fds: [fds[0]] });
      w.write('n2');
      w.write('f3', { fds: [fds[1], fds[2]] });
      w.write(big, { fds: [fds[0]] });
      w.write('n5');
      w.write('empty', { fds: [] });
      w.write(Buffer.alloc(0), { fds: [fds[2]] }); // a zero-length message with a descriptor
      await within(w.flush(), 'flush()');
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
    const done = await py.line((l) => l.event === 'done', 'the Python receiver done', 20_000);
    const frames = py.all((l) => l.event === 'frame').map((l) => [l.len, l.text, l.fds.map((f: Line) => f.content)]);
    expect(frames).toEqual([
      [2, 'n0', []],
      [2, 'f1', ['A-file']],
      [2, 'n2', []],
      [2, 'f3', ['B-file', 'C-file']],
      [300_000, null, ['A-file']],
      [2, 'n5', []],
      [5, 'empty', []],
      [0, '', ['C-file']],
    ]);
    expect(py.all((l) => l.event === 'violation')).toEqual([]);
    expect(done.fdReads).toBe(4); // one read per send that carried descriptors
    expect(w.metrics().fdsSent).toBe(5);
    await within(py.exited, 'the Python receiver exiting');
    expect(py.exit?.code, py.stderr).toBe(0);
  });
});

describe('a Writer reading replies (onMessage, acceptFds not set) from a listener that sends descriptors', () => {
  itOnKernel(true)("the Writer's socket refuses them from its first byte on (Linux 6.16+): the listener's send fails with EPERM, nothing of it arrives, no error on the writer", async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'w.txt', 'to the writer');
    const steps = [step(frame('r0')), step(frame('with-fds'), [file])];
    const spec = join(dirname(path), 'reply-steps.json');
    fs.writeFileSync(spec, JSON.stringify(steps));
    const py = new Proc(PYTHON, [PEER, 'serve-send', path, `@${spec}`]);
    await py.line((l) => l.event === 'listening', 'the Python listener');
    const replies: string[] = [];
    const errors: (string | undefined)[] = [];
    const w = track(
      new Writer(path, {
        reconnect: false,
        onMessage: (b: Batch) => {
          for (const m of b) replies.push(m.toString());
        },
      }),
    );
    w.on('error', (e) => errors.push(e.code));
    w.start();
    const failed = await py.line((l) => l.event === 'send-error', 'the send with descriptors failing', 20_000);
    expect(failed.i).toBe(1);
    expect(String(failed.error)).toMatch(/Errno 1\]|Operation not permitted/); // EPERM
    await waitFor(() => replies.length >= 1, 10_000, 'the reply before it');
    await w.stop({ timeoutMs: 1000 });
    await py.line((l) => l.event === 'closed', 'the listener seeing the writer close');
    expect(replies).toEqual(['r0']);
    expect(errors).toEqual([]);
    expect(w.metrics().fdsRefused).toBe(0);
    expect(w.metrics().fdsReceived).toBe(0);
  });

  itOnKernel(false)('none of them reaches the writer process: ERR_UNEXPECTED_FDS, the connection replaced, the writer survives', async () => {
    // Descriptors that come back to a Writer without acceptFds must not land
    // in its descriptor table (a flood would fill it).
    const path = tmpSocket();
    const file = fileNear(path, 'w.txt', 'to the writer');
    const steps = [step(frame('r0'))];
    for (let i = 0; i < 20; i++) steps.push(step(frame(`with-fds-${i}`), new Array(50).fill(file)));
    steps.push(step(frame('r-last'), [], true));
    const spec = join(dirname(path), 'reply-steps.json');
    fs.writeFileSync(spec, JSON.stringify(steps));
    const py = new Proc(PYTHON, [PEER, 'serve-send', path, `@${spec}`]);
    await py.line((l) => l.event === 'listening', 'the Python listener');
    const onFile = () => {
      const real = fs.realpathSync(file);
      return fs.readdirSync('/proc/self/fd').filter((e) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${e}`) === real;
        } catch {
          return false;
        }
      }).length;
    };
    const replies: string[] = [];
    const reasons: (string | undefined)[] = [];
    const errors: { code?: string; context: string }[] = [];
    const w = track(
      new Writer(path, {
        reconnect: false,
        onMessage: (b: Batch) => {
          for (const m of b) replies.push(m.toString());
        },
      }),
    );
    w.on('disconnect', (why) => reasons.push(why?.code));
    w.on('error', (e, context) => errors.push({ code: e.code, context }));
    w.start();
    await py.line((l) => l.event === 'closed' || l.event === 'send-error', 'the writer closing the connection', 20_000);
    await waitFor(() => reasons.length > 0, 10_000, "the writer's disconnect");
    expect(onFile()).toBe(0);
    expect(reasons).toEqual(['ERR_UNEXPECTED_FDS']);
    expect(errors).toEqual([{ code: 'ERR_UNEXPECTED_FDS', context: 'connection' }]);
    // Nothing that came with (or after) descriptors was delivered; r0 may have
    // come in the same read as the first descriptors.
    expect(replies.filter((r) => r !== 'r0')).toEqual([]);
    expect(w.metrics().fdsRefused).toBeGreaterThanOrEqual(1);
    expect(w.metrics().fdsReceived).toBe(0);
  });
});
