// Acknowledged delivery with file descriptors (issues #19 and #21): the
// writer keeps its duplicates until the message is acknowledged, not just
// sent, and sends them again with the message after a reconnect; the reader
// closes the descriptors of copies it drops.
import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { Reader, Writer, type Batch, type IpcError } from '../src/index';
import { FAST, tmpSocket, useTracking, waitFor, within } from './helpers';
import { fdsOnFile, itOnKernel } from './fd-helpers';

const track = useTracking(500);

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe("delivery: 'acked' with descriptors", () => {
  it('a reader that dies with the messages unacknowledged: the next one gets each message again with a working descriptor; the writer holds its duplicates until then, and none after', async () => {
    const path = tmpSocket();
    const file = join(dirname(path), 'note.txt');
    fs.writeFileSync(file, 'passed by descriptor');
    const before = openFds();
    // Reader 1 takes the messages (and their descriptors) and never finishes: nothing is acknowledged.
    let firstSeen = 0;
    const r1 = new Reader(
      path,
      (b: Batch) => {
        firstSeen += b.length;
        // Uses the descriptors (closes them), then never finishes: as a reader that dies mid-batch.
        for (let i = 0; i < b.length; i++) for (const fd of b.takeFds(i)) fs.closeSync(fd);
        return new Promise<void>(() => {});
      },
      { delivery: 'acked', acceptFds: true },
    );
    await r1.start();
    const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST }).start());
    const N = 20;
    for (let i = 1; i <= N; i++) {
      const fd = fs.openSync(file, 'r');
      expect(w.write(`f${i}`, { fds: [fd] })).toBe(true);
      fs.closeSync(fd); // the writer keeps its own duplicate
    }
    await waitFor(() => firstSeen >= 1, 10_000, 'reader 1 to take the first batch');
    await within(w.flush(), 'flush(): every message handed to the kernel');
    // Sent but not acknowledged: the writer still holds every duplicate.
    expect(w.metrics().fdsBuffered).toBe(N);
    expect(w.metrics().acked).toBe(0);
    await r1.stop({ timeoutMs: 0 }); // dies with its batches unacknowledged

    const got: { data: string; seq: number | undefined; redelivered: boolean; text: string }[] = [];
    const r2 = track(
      new Reader(
        path,
        (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            const fds = b.takeFds(i);
            expect(fds).toHaveLength(1);
            const text = fs.readFileSync(fds[0], 'utf8');
            fs.closeSync(fds[0]);
            got.push({ data: b.at(i)!.toString(), seq: b.sequence(i), redelivered: b.redelivered(i), text });
          }
        },
        { delivery: 'acked', acceptFds: true },
      ),
    );
    await r2.start();
    await within(w.acknowledged(), 'acknowledged() by reader 2');
    expect(got.map((g) => g.data)).toEqual(Array.from({ length: N }, (_, i) => `f${i + 1}`));
    expect(got.every((g) => g.text === 'passed by descriptor' && g.redelivered)).toBe(true);
    expect(got.map((g) => g.seq)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    const m = w.metrics();
    expect(m.fdsBuffered).toBe(0); // closed once acknowledged
    expect(m.fdsSent).toBe(2 * N); // each sent twice, with its message
    await w.stop();
    await r2.stop();
    await waitFor(() => openFds() <= before, 10_000, 'the descriptor count back where it started');
  });

  it('copies dropped within one reader life have their descriptors closed (counted in fdsRefused), the originals are delivered once', async () => {
    const path = tmpSocket();
    const file = join(dirname(path), 'note.txt');
    fs.writeFileSync(file, 'x');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let calls = 0;
    const seen: string[] = [];
    let taken = 0;
    const reader = track(
      new Reader(
        path,
        async (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            seen.push(b.at(i)!.toString());
            for (const fd of b.takeFds(i)) {
              taken++;
              fs.closeSync(fd);
            }
          }
          if (calls++ === 0) await gate; // held: unacknowledged while the connection is cut
        },
        { delivery: 'acked', acceptFds: true, inactivityTimeoutMs: 200 },
      ),
    );
    await reader.start();
    let disconnects = 0;
    const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST }));
    w.on('disconnect', () => disconnects++);
    w.start();
    const N = 10;
    for (let i = 1; i <= N; i++) {
      const fd = fs.openSync(file, 'r');
      w.write(`c${i}`, { fds: [fd] });
      fs.closeSync(fd);
    }
    await waitFor(() => calls === 1, 10_000, 'the first batch held');
    await waitFor(() => disconnects >= 1 && w.metrics().resent > 0, 10_000, 'the inactivity cut and the re-send');
    await waitFor(() => reader.metrics().duplicatesDropped > 0, 10_000, 'the copies dropped');
    release();
    await within(w.acknowledged(), 'acknowledged()');
    await waitFor(() => seen.length >= N, 10_000, 'every message');
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => `c${i + 1}`)); // once each
    expect(taken).toBe(N);
    const rm = reader.metrics();
    // The copies' descriptors were closed on arrival: each copy came with its one.
    expect(rm.fdsRefused).toBe(rm.duplicatesDropped);
    expect(w.metrics().fdsBuffered).toBe(0);
  });

  // Before, an acked reader without acceptFds closed the connection (as a
  // plain reader does), and the writer re-sent the same message, with its
  // descriptors, on every reconnect: nothing after it was ever delivered.
  itOnKernel(true)("a reader without acceptFds (Linux 6.16+: its socket refuses them): the messages that carry descriptors are delivered without them, in order, once; the writer reports ERR_FDS_REFUSED for each and keeps its connection", async () => {
    const path = tmpSocket();
    const file = join(dirname(path), 'unwanted.txt');
    fs.writeFileSync(file, 'not wanted');
    const got: { data: string; fds: number }[] = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          for (let i = 0; i < b.length; i++) got.push({ data: b.at(i)!.toString(), fds: b.fdCount(i) });
        },
        { delivery: 'acked' },
      ),
    );
    await reader.start();
    const errors: { code?: string; context: string }[] = [];
    const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST }));
    w.on('error', (e, context) => errors.push({ code: (e as IpcError).code, context }));
    w.start();
    const N = 9;
    for (let i = 1; i <= N; i++) {
      if (i % 3 === 0) {
        const fd = fs.openSync(file, 'r');
        expect(w.write(`m${i}`, { fds: [fd] })).toBe(true);
        fs.closeSync(fd);
      } else {
        expect(w.write(`m${i}`)).toBe(true);
      }
    }
    await within(w.acknowledged(), 'every message acknowledged', 10_000);
    expect(got).toEqual(Array.from({ length: N }, (_, i) => ({ data: `m${i + 1}`, fds: 0 })));
    expect(errors).toEqual(new Array(N / 3).fill({ code: 'ERR_FDS_REFUSED', context: 'send' }));
    expect(w.metrics().connects).toBe(1);
    expect(w.metrics().acked).toBe(N);
    expect(w.metrics().fdsBuffered).toBe(0);
    expect(reader.metrics().fdsRefused).toBe(0);
    expect(fdsOnFile(file)).toBe(0);
  });
});
