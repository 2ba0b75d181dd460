// SOCK_DGRAM (issue #19): a Reader bound to a path (or @name) receives
// datagrams from any number of Writers, each a connected datagram socket; one
// datagram per message. Round trips, credentials per datagram, allowUids per
// datagram against another user, a full reader queue (EAGAIN: the writer
// keeps the datagram and retries), a raw Python sender, datagrams too large,
// and the combinations refused up front.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IpcError, Reader, Writer } from '../src/index';
import { fdCount, KERNEL_REFUSES_FDS } from './fd-helpers';
import { FAST, killChildren, PYTHON, tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking(1000);
afterEach(() => killChildren());

const PY_DGRAM = `
import os, socket, sys
path = sys.argv[1]
if path.startswith('@'):
    path = '\\0' + path[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
for size in [int(x) for x in sys.argv[2].split(',')]:
    s.send(bytes([size & 0xff]) * size)
print(os.getpid(), flush=True)
`;

// Datagrams with descriptors (SCM_RIGHTS): argv[2] is a list of
// size:descriptor-count pairs; each datagram carries that many dups of stdin.
const PY_DGRAM_FDS = `
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
for item in sys.argv[2].split(','):
    size, nfds = (int(x) for x in item.split(':'))
    data = bytes([size & 0xff]) * size
    if nfds:
        try:
            socket.send_fds(s, [data], [0] * nfds)
        except PermissionError:
            pass  # refused by the reader's kernel (SO_PASSRIGHTS off, Linux 6.16+)
    else:
        s.send(data)
print(os.getpid(), flush=True)
`;

/** Runs the Python datagram sender (optionally through setpriv as another user); resolves with its pid. */
function pythonSend(target: string, sizes: number[] | string, asUid?: number, script = PY_DGRAM): Promise<number> {
  const dir = dirname(tmpSocket('py'));
  const file = join(dir, `dgram-${Date.now()}-${Math.random().toString(36).slice(2)}.py`);
  writeFileSync(file, script);
  chmodSync(dir, 0o755);
  chmodSync(file, 0o644);
  const cmd = asUid === undefined ? PYTHON : 'setpriv';
  const args = [file, target, typeof sizes === 'string' ? sizes : sizes.join(',')];
  const full = asUid === undefined ? args : ['--reuid', String(asUid), '--regid', String(asUid), '--clear-groups', PYTHON, ...args];
  return new Promise((resolve, reject) => {
    execFile(cmd, full, { timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stderr}`));
      else resolve(Number(stdout.trim()));
    });
  });
}

describe('type: dgram', () => {
  it('three writers to one reader: 0-byte, 1-byte and maximum-size datagrams and 20k more, none lost, each writer in order', async () => {
    const path = tmpSocket();
    const seen = new Map<number, number[]>(); // writer tag -> sequence numbers
    let sizes: number[] = [];
    const reader = track(
      new Reader(
        path,
        (batch) => {
          for (const m of batch) {
            if (m.length < 5) {
              sizes.push(m.length);
              continue;
            }
            const tag = m[0];
            const seq = m.readUInt32LE(1);
            if (!seen.has(tag)) seen.set(tag, []);
            seen.get(tag)!.push(seq);
          }
        },
        { type: 'dgram' },
      ),
    );
    await reader.start();
    const writers = [1, 2, 3].map(() => track(new Writer(path, { type: 'dgram' }).start()));
    const max = writers[0].maxMessageSize;
    expect(max).toBeGreaterThan(64 * 1024);
    writers[0].write(Buffer.alloc(0));
    writers[0].write(Buffer.alloc(1));
    const big = Buffer.alloc(max, 9);
    big[0] = 9;
    big.writeUInt32LE(0, 1);
    writers[0].write(big);
    await within(writers[0].flush(), 'the first three');
    const N = 7000;
    await Promise.all(
      writers.map(async (w, k) => {
        for (let i = 0; i < N; i++) {
          const m = Buffer.alloc(64);
          m[0] = k + 1;
          m.writeUInt32LE(i, 1);
          while (!w.write(m)) await new Promise((r) => w.once('drain', r));
        }
        await within(w.flush(), 'flush');
      }),
    );
    await waitFor(() => [1, 2, 3].every((k) => (seen.get(k)?.length ?? 0) === N), 20_000, 'every datagram');
    for (const k of [1, 2, 3]) expect(seen.get(k)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(seen.get(9)).toEqual([0]); // the maximum-size one
    expect(sizes).toEqual([0, 1]);
    // The reader's queue holds max_dgram_qlen + 1 datagrams: the writers met EAGAIN and waited.
    expect(writers.reduce((a, w) => a + w.metrics().sent, 0)).toBe(3 * N + 3);
    sizes = [];
  });

  it('a Python SOCK_DGRAM sender: its datagrams arrive whole, with its credentials; one above maxMessageSize is dropped and reported', async () => {
    const path = tmpSocket();
    const got: Array<{ len: number; pid: number | undefined }> = [];
    const errors: IpcError[] = [];
    const reader = track(
      new Reader(
        path,
        (b) => {
          for (let i = 0; i < b.length; i++) got.push({ len: b.at(i)!.length, pid: b.credentials(i)?.pid });
        },
        { type: 'dgram', passCredentials: true, maxMessageSize: 5000, onError: (e) => errors.push(e as IpcError) },
      ),
    );
    await reader.start();
    const pid = await pythonSend(path, [0, 1, 5000, 5001, 3]);
    await waitFor(() => got.length === 4 && errors.length === 1, 10_000, 'the datagrams and the error');
    expect(got).toEqual([0, 1, 5000, 3].map((len) => ({ len, pid })));
    expect(errors[0].code).toBe('ERR_MESSAGE_TOO_LARGE');
  });

  for (const passCredentials of [false, true]) {
    it(`descriptors a sender attaches to datagrams never stay: refused by the kernel (Linux 6.16+, those datagrams not sent) or closed and counted (the datagrams delivered) (passCredentials: ${passCredentials})`, async () => {
      const path = tmpSocket();
      const got: number[] = [];
      const reader = track(
        new Reader(
          path,
          (b) => {
            for (const m of b) got.push(m.length);
          },
          { type: 'dgram', passCredentials },
        ),
      );
      await reader.start();
      const before = fdCount('self');
      // 1 plain, 1 with one descriptor, 1 with three, 1 with 253 (SCM_MAX_FD), 1 plain.
      await pythonSend(path, '10:0,11:1,12:3,13:253,14:0', undefined, PY_DGRAM_FDS);
      if (KERNEL_REFUSES_FDS) {
        // The kernel refused the three with descriptors at the sender: none
        // reached this process, not even to be closed.
        await waitFor(() => got.length === 2, 10_000, 'the two plain datagrams');
        expect(got).toEqual([10, 14]);
        expect(reader.metrics().fdsRefused).toBe(0);
        expect(reader.metrics().fdsReceived).toBe(0);
        expect(fdCount('self')).toBe(before);
        return;
      }
      await waitFor(() => got.length === 5, 10_000, 'the five datagrams');
      expect(got).toEqual([10, 11, 12, 13, 14]);
      const m = reader.metrics();
      // At least one per datagram that carried some; never more than sent. The
      // reader lets at most two of a datagram's descriptors into its table (the
      // kernel discards the rest), so a flood cannot fill it.
      expect(m.fdsRefused).toBeGreaterThanOrEqual(3);
      expect(m.fdsRefused).toBeLessThanOrEqual(6);
      expect(m.fdsReceived).toBe(0);
      expect(fdCount('self')).toBe(before);
    });
  }

  it('allowUids applies per datagram: another user’s are dropped and counted (those above maxMessageSize too, never reported as errors), ours delivered', async () => {
    const name = `@uds-ipc-dgram-${process.pid}-${Date.now()}`; // abstract: no file permissions in the way
    const uids: number[] = [];
    const errors: string[] = [];
    const reader = track(
      new Reader(
        name,
        (b) => {
          for (let i = 0; i < b.length; i++) uids.push(b.credentials(i)!.uid);
        },
        { type: 'dgram', allowUids: [process.getuid!()], maxMessageSize: 100, onError: (e) => errors.push((e as IpcError).code) },
      ),
    );
    await reader.start();
    // 500 and 600 bytes: above maxMessageSize. A refused sender's datagrams
    // are refused whatever their size; reporting them as too large would let
    // anyone flood the reader's onError.
    await pythonSend(name, [10, 500, 11, 600, 12], 65534);
    await waitFor(() => reader.metrics().rejectedDatagrams === 5, 10_000, 'the other user’s datagrams refused');
    expect(errors).toEqual([]);
    await pythonSend(name, [13]);
    await waitFor(() => uids.length === 1, 10_000, 'ours');
    expect(uids).toEqual([process.getuid!()]);
    expect(reader.metrics().received).toBe(1);
  });

  it('a reader that falls behind: its queue fills, writers see EAGAIN and keep every datagram until there is room', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let n = 0;
    let first = true;
    const reader = track(
      new Reader(
        path,
        async (b) => {
          n += b.length;
          if (first) {
            first = false;
            await held; // the handler holds everything back: reading pauses, the kernel queue fills
          }
        },
        { type: 'dgram', maxPendingBytes: 64 * 1024 },
      ),
    );
    await reader.start();
    const writer = track(new Writer(path, { type: 'dgram' }).start());
    const N = 5000;
    for (let i = 0; i < N; i++) writer.write(Buffer.alloc(100));
    await waitFor(() => writer.metrics().sent > 0 && n > 0, 10_000, 'the first batch');
    // Held back: the writer cannot send everything (the reader's queue is full).
    const sentWhileHeld = writer.metrics().sent;
    expect(sentWhileHeld).toBeLessThan(N);
    release();
    await within(writer.flush(), 'flush once the reader reads again');
    await waitFor(() => n === N, 20_000, 'every datagram');
    expect(writer.metrics().dropped).toBe(0);
  });

  it('no reader yet, then a reader: what the writer queued meanwhile is delivered; a reader restarted later gets the rest', async () => {
    const path = tmpSocket();
    const writer = track(new Writer(path, { type: 'dgram', reconnect: FAST }).start());
    for (let i = 0; i < 10; i++) writer.write(`early ${i}`);
    const got: string[] = [];
    const mk = () => new Reader(path, (b) => void got.push(...b.toArray().map((m) => m.toString())), { type: 'dgram' });
    let reader = mk();
    await reader.start();
    await within(writer.flush(), 'flush');
    await waitFor(() => got.length === 10, 10_000, 'the early datagrams');
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `early ${i}`));
    await reader.stop();
    reader = track(mk());
    await reader.start();
    // The writer learns of the dead reader at its next send (ECONNREFUSED), reconnects, and sends again.
    writer.write('late');
    await within(writer.flush(), 'flush after the restart');
    await waitFor(() => got.includes('late'), 10_000, 'the late datagram');
  });

  it('combinations not supported are refused up front', async () => {
    const path = tmpSocket();
    const bad = { code: 'ERR_INVALID_ARG_VALUE' };
    expect(() => new Reader(path, () => {}, { type: 'dgram', authorize: () => true })).toThrow(expect.objectContaining(bad));
    expect(() => new Reader(path, () => {}, { type: 'dgram', acceptFds: true })).toThrow(expect.objectContaining(bad));
    expect(() => new Reader(path, () => {}, { passCredentials: true })).toThrow(expect.objectContaining(bad));
    expect(() => new Writer(path, { type: 'dgram', expectOwner: { uid: 0 } })).toThrow(expect.objectContaining(bad));
    expect(() => new Writer(path, { type: 'dgram', onMessage() {} })).toThrow(expect.objectContaining(bad));
    // No replies on a datagram reader.
    let replyError: unknown;
    const reader = track(
      new Reader(
        path,
        (b) => {
          try {
            b.connection.write('back');
          } catch (e) {
            replyError = e;
          }
        },
        { type: 'dgram' },
      ),
    );
    await reader.start();
    const w = track(new Writer(path, { type: 'dgram' }).start());
    w.write('hi');
    await waitFor(() => replyError !== undefined, 10_000, 'the reply attempt');
    expect(replyError).toMatchObject({ code: 'ERR_INVALID_STATE' });
  });
});
