// File descriptors with messages (issue #19, stream sockets): the public API.
// Open files and a listening TCP socket passed between processes, the
// caller's right to close its fd as soon as write() (or send()) returned,
// argument validation (types, values, closed descriptors, 253/254
// descriptors, the new options), descriptors a handler does not take, and a
// Reader that does not accept descriptors (acceptFds: false).
//
// Child processes: test/fixtures/fd-reader.js (a Reader that describes what
// it receives: each taken descriptor's type, inode and first bytes read
// through it) and test/fixtures/fd-writer.js (a Writer that sends files).
// Descriptor counts of a process are the entries of /proc/<pid>/fd.
import { describe, it, expect, afterEach } from 'vitest';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { Reader, Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, within, FIXTURES, FAST, Proc, killChildren, useTracking, type Line } from './helpers';
import { fdCount, fdsOnFile, fileNear, itOnKernel, metricsOf, readerChild } from './fd-helpers';

const track = useTracking(500);
afterEach(() => killChildren());

/** Polls metricsOf() until `pred(metrics)` holds (or 10 s pass: then returns the last, for the assertion to show). */
async function metricsUntil(p: Proc, pred: (m: Line) => boolean, timeoutMs = 10_000): Promise<Line> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = await metricsOf(p);
    if (pred(m.metrics) || Date.now() > end) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The error `fn` throws (fails if it does not throw). */
function thrown(fn: () => unknown, what = 'the call'): Error & { code?: string } {
  let r: unknown;
  try {
    r = fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error(`expected a throw, but ${what} returned ${String(r)}`);
}

/** The error `fn` throws or rejects with. */
async function failure(fn: () => unknown, what = 'the call'): Promise<Error & { code?: string }> {
  try {
    await fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error(`expected a failure, but ${what} succeeded`);
}

interface Got {
  data: string;
  fdCount: number;
  fds: { ino: number; isFile: boolean; content: string }[];
}

/**
 * A Reader in this process with acceptFds: true that takes every message's
 * descriptors, records each one's inode and first bytes (read through the
 * descriptor at offset 0) and closes it.
 */
async function localReader(path: string, options: object = {}): Promise<{ reader: Reader; got: Got[] }> {
  const got: Got[] = [];
  const reader = track(
    new Reader(
      path,
      (b: Batch) => {
        for (let i = 0; i < b.length; i++) {
          const fdCount = b.fdCount(i);
          const fds = b.takeFds(i).map((fd: number) => {
            const st = fs.fstatSync(fd);
            const buf = Buffer.alloc(64);
            const n = st.isFile() ? fs.readSync(fd, buf, 0, 64, 0) : 0;
            fs.closeSync(fd);
            return { ino: st.ino, isFile: st.isFile(), content: buf.subarray(0, n).toString() };
          });
          got.push({ data: b.at(i)!.toString(), fdCount, fds });
        }
      },
      { acceptFds: true, ...options },
    ),
  );
  await reader.start();
  return { reader, got };
}

describe('passing descriptors between processes', () => {
  it('an open file: the reader process reads the file through the descriptor it received', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'a.txt', 'the content of a.txt');
    const r = await readerChild(path, { options: { acceptFds: true } });
    const w = track(new Writer(path, { reconnect: FAST })).start();
    const fd = fs.openSync(file, 'r');
    expect(w.write('here is a file', { fds: [fd] })).toBe(true);
    await within(w.flush(), 'flush()');
    fs.closeSync(fd);
    const m = await r.line((l) => l.event === 'msg', 'the message with the file');
    expect(m.data).toBe('here is a file');
    expect(m.fdCount).toBe(1);
    expect(m.fds).toEqual([expect.objectContaining({ type: 'file', ino: fs.statSync(file).ino, content: 'the content of a.txt' })]);
    const wm = w.metrics();
    expect(wm.fdsSent).toBe(1);
    expect(wm.fdsBuffered).toBe(0);
    const rm = (await metricsOf(r)).metrics;
    expect(rm.fdsReceived).toBe(1);
    expect(rm.fdsClosedUnclaimed).toBe(0);
    expect(rm.fdsRefused).toBe(0);
  });

  it('the other way: a writer process sends three files (closing each right after write()), this process reads each through its descriptor', async () => {
    const path = tmpSocket();
    const files = ['one', 'two', 'three'].map((c, i) => fileNear(path, `f${i}.txt`, `file number ${c}`));
    const { got, reader } = await localReader(path);
    const w = new Proc(process.execPath, [join(FIXTURES, 'fd-writer.js'), path, JSON.stringify({ mode: 'files', files, writer: { reconnect: FAST } })]);
    const flushed = await w.line((l) => l.event === 'flushed', 'the writer child flushed', 20_000);
    expect(flushed.metrics.fdsSent).toBe(3);
    expect(flushed.metrics.fdsBuffered).toBe(0);
    await waitFor(() => got.length >= 3, 10_000, 'three messages');
    expect(got).toEqual(
      files.map((f, i) => ({
        data: `file:${i}`,
        fdCount: 1,
        fds: [{ ino: fs.statSync(f).ino, isFile: true, content: fs.readFileSync(f, 'utf8') }],
      })),
    );
    expect(reader.metrics().fdsReceived).toBe(3);
    expect(reader.metrics().fdsClosedUnclaimed).toBe(0);
  });

  it('a listening TCP socket on 127.0.0.1: the reader process accepts and serves a client on it', async () => {
    const path = tmpSocket();
    const r = await readerChild(path, { options: { acceptFds: true } });
    const server = net.createServer((s) => s.end(JSON.stringify({ by: 'test process' })));
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    const port = (server.address() as net.AddressInfo).port;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const fd = (server as any)._handle.fd as number;
    expect(fd).toBeGreaterThan(2);
    const w = track(new Writer(path, { reconnect: FAST })).start();
    expect(w.write('listen on this', { fds: [fd] })).toBe(true);
    await within(w.flush(), 'flush()');
    const m = await r.line((l) => l.event === 'msg', 'the message with the socket');
    expect(m.fds).toEqual([expect.objectContaining({ type: 'socket' })]);
    await r.line((l) => l.event === 'serving', 'the reader serving on the received socket');
    // This process closes its own copy: only the reader process can accept now.
    await new Promise<void>((res) => server.close(() => res()));
    const reply = await within(
      new Promise<string>((res, rej) => {
        let text = '';
        const c = net.connect(port, '127.0.0.1');
        c.on('data', (d) => (text += d));
        c.on('end', () => res(text));
        c.on('error', rej);
      }),
      'the TCP reply',
    );
    expect(JSON.parse(reply)).toEqual({ by: 'fd-reader', pid: r.pid });
  });
});

describe('the caller may close its descriptor as soon as write() returned', () => {
  it('queued while no reader is there, and sent at once while connected: the reader gets the file that was passed, not what reuses the number', async () => {
    const path = tmpSocket();
    const a = fileNear(path, 'a.txt', 'AAAA the file that was passed');
    const b = fileNear(path, 'b.txt', 'BBBB opened later under the same number');
    const w = track(new Writer(path, { reconnect: FAST })).start();
    const keep: number[] = [];
    try {
      // 1: no reader yet, the frame waits in the queue.
      const fd1 = fs.openSync(a, 'r');
      expect(w.write('queued', { fds: [fd1] })).toBe(true);
      fs.closeSync(fd1);
      const reuse1 = fs.openSync(b, 'r'); // takes the lowest free number: fd1's, as a rule
      keep.push(reuse1);
      expect(w.metrics().fdsBuffered).toBe(1);

      const r = await readerChild(path, { options: { acceptFds: true } });
      const m1 = await r.line((l) => l.event === 'msg' && l.data === 'queued', 'the queued message');
      expect(m1.fds).toEqual([expect.objectContaining({ type: 'file', content: 'AAAA the file that was passed' })]);
      await within(w.flush(), 'flush()');

      // 2: connected and idle: write() may send from this thread at once.
      for (let i = 0; i < 3; i++) {
        const fd = fs.openSync(a, 'r');
        expect(w.write(`connected-${i}`, { fds: [fd] })).toBe(true);
        fs.closeSync(fd);
        keep.push(fs.openSync(b, 'r'));
        await new Promise((res) => setImmediate(res));
      }
      // 3: send() (closed once it resolved: the message is queued then).
      const fd3 = fs.openSync(a, 'r');
      await within(w.send('via send', { fds: [fd3] }), 'send()');
      fs.closeSync(fd3);
      keep.push(fs.openSync(b, 'r'));
      await within(w.flush(), 'flush()');
      for (const data of ['connected-0', 'connected-1', 'connected-2', 'via send']) {
        const m = await r.line((l) => l.event === 'msg' && l.data === data, data);
        expect(m.fds, data).toEqual([expect.objectContaining({ type: 'file', ino: fs.statSync(a).ino, content: 'AAAA the file that was passed' })]);
      }
      expect(w.metrics().fdsSent).toBe(5);
      expect(w.metrics().fdsBuffered).toBe(0);
    } finally {
      for (const fd of keep) fs.closeSync(fd);
    }
  });
});

describe('send() waiting for room', () => {
  it('takes its descriptors when called, like write(): closing them right after send() (before it resolves) cannot make it send whatever reuses the number', async () => {
    // Without this, a send() that waits for room sends whatever descriptor
    // holds the number when room comes: another file, or a socket, of this
    // process, handed to the peer process.
    const path = tmpSocket();
    const a = fileNear(path, 'a.txt', 'AAAA the file that was passed');
    const secret = fileNear(path, 'secret.txt', 'SECRET opened later under the same number');
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedFds: 1 })).start();
    const keep: number[] = [];
    try {
      const fd1 = fs.openSync(a, 'r');
      expect(w.write('first', { fds: [fd1] })).toBe(true); // holds the one dup allowed
      fs.closeSync(fd1);
      const fd2 = fs.openSync(a, 'r');
      const sent = w.send('second', { fds: [fd2] }); // waits: the first holds maxBufferedFds
      fs.closeSync(fd2);
      const reused = fs.openSync(secret, 'r'); // takes fd2's number, as a rule
      keep.push(reused);
      const { got } = await localReader(path);
      await within(sent, 'send()');
      await within(w.flush(), 'flush()');
      await waitFor(() => got.length >= 2, 10_000, 'both messages');
      expect(got.map((g) => [g.data, g.fds.map((f) => f.content)])).toEqual([
        ['first', ['AAAA the file that was passed']],
        ['second', ['AAAA the file that was passed']],
      ]);
    } finally {
      for (const fd of keep) fs.closeSync(fd);
    }
  });
});

describe('send()s waiting with descriptors are bounded', () => {
  it('a send() that would wait while the waiting sends hold maxBufferedFds dups rejects with ERR_FDS_LIMIT (it never reads the number later)', async () => {
    const path = tmpSocket();
    const a = fileNear(path, 'a.txt', 'AAAA the file that was passed');
    const w = track(new Writer(path, { reconnect: FAST, maxBufferedFds: 1 })).start();
    const fd = fs.openSync(a, 'r');
    try {
      expect(w.write('first', { fds: [fd] })).toBe(true); // holds the one dup allowed
      const second = w.send('second', { fds: [fd] }); // waits, holding its own dup (alone it may)
      await expect(w.send('third', { fds: [fd] })).rejects.toMatchObject({ code: 'ERR_FDS_LIMIT' });
      // Without descriptors a send() still waits in line as usual.
      const plain = w.send('plain');
      const { got } = await localReader(path);
      await within(Promise.all([second, plain]), 'the waiting sends');
      await within(w.flush(), 'flush()');
      await waitFor(() => got.length >= 3, 10_000, 'the messages');
      expect(got.map((g) => g.data)).toEqual(['first', 'second', 'plain']);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('argument validation', () => {
  it('fds must be an array of descriptors: TypeError ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE, nothing queued, no descriptor leaked', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'v.txt', 'validation file');
    const { got } = await localReader(path);
    const w = track(new Writer(path, { reconnect: FAST })).start();
    expect(w.write('first')).toBe(true);
    await within(w.flush(), 'flush()');
    const fd = fs.openSync(file, 'r');
    try {
      const typeCases: [string, unknown][] = [
        ['a number', 3],
        ['a string', 'x'],
        ['an object', { 0: fd, length: 1 }],
        ['a string element', [String(fd)]],
        ['a null element', [null]],
        ['an object without fd', [{}]],
        ['an object with a string fd', [{ fd: String(fd) }]],
        ['an object with a fractional fd', [{ fd: 1.5 }]],
        ['a bigint element', [BigInt(fd)]],
        // Not integers: not descriptors at all (the implementation's reading
        // of "not an fd-like"; the spec's "a number that is not an open
        // descriptor" could also be read as ERR_INVALID_ARG_VALUE).
        ['a fractional number', [1.5]],
        ['NaN', [NaN]],
        ['Infinity', [Infinity]],
      ];
      const valueCases: [string, unknown][] = [
        ['a negative number', [-1]],
        ['a number above int32', [2 ** 31]],
        ['two valid descriptors and a negative number', [fd, fd, -5]],
      ];
      const before = w.metrics();
      expect(fdsOnFile(file)).toBe(1);
      for (const [what, fds] of [...typeCases, ...valueCases]) {
        const expected = typeCases.some(([t]) => t === what) ? 'ERR_INVALID_ARG_TYPE' : 'ERR_INVALID_ARG_VALUE';
        const e = thrown(() => w.write(`bad: ${what}`, { fds } as never), `write() with ${what}`);
        expect(e, what).toBeInstanceOf(TypeError);
        expect(e.code, `${what}: ${e.message}`).toBe(expected);
        const e2 = await failure(() => w.send(`bad send: ${what}`, { fds } as never), `send() with ${what}`);
        expect(e2, `send() ${what}`).toBeInstanceOf(TypeError);
        expect(e2.code, `send() ${what}: ${e2.message}`).toBe(expected);
      }
      // Nothing queued, nothing counted as written, no dup left behind (the
      // valid descriptors before an invalid one included).
      const after = w.metrics();
      expect(after.written).toBe(before.written);
      expect(after.queueDepth).toBe(0);
      expect(after.dropped).toBe(before.dropped);
      expect(after.fdsBuffered).toBe(0);
      expect(fdsOnFile(file)).toBe(1);

      // Accepted: a FileHandle, an object with an integer fd, an empty array, no fds at all.
      const fh = await fs.promises.open(file, 'r');
      expect(w.write('a FileHandle', { fds: [fh] })).toBe(true);
      await fh.close();
      expect(w.write('an fd-like object', { fds: [{ fd }] })).toBe(true);
      expect(w.write('an empty array', { fds: [] })).toBe(true);
      expect(w.write('fds undefined', { fds: undefined })).toBe(true);
      expect(w.write('no options')).toBe(true);
      const fh2 = await fs.promises.open(file, 'r');
      await within(w.send('send with a FileHandle and a number', { fds: [fh2, fd] }), 'send()');
      await fh2.close();
      await within(w.flush(), 'flush()');
      await waitFor(() => got.length >= 7, 10_000, 'the accepted messages');
      const ino = fs.statSync(file).ino;
      const one = { ino, isFile: true, content: 'validation file' };
      expect(got).toEqual([
        { data: 'first', fdCount: 0, fds: [] },
        { data: 'a FileHandle', fdCount: 1, fds: [one] },
        { data: 'an fd-like object', fdCount: 1, fds: [one] },
        { data: 'an empty array', fdCount: 0, fds: [] },
        { data: 'fds undefined', fdCount: 0, fds: [] },
        { data: 'no options', fdCount: 0, fds: [] },
        { data: 'send with a FileHandle and a number', fdCount: 2, fds: [one, one] },
      ]);
      expect(w.metrics().fdsSent).toBe(4);
      expect(w.metrics().fdsBuffered).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a number that is not an open descriptor (closed, never opened, a closed one in an fd-like object): TypeError ERR_INVALID_ARG_VALUE, nothing queued', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'c.txt', 'closed');
    const { got } = await localReader(path);
    const w = track(new Writer(path, { reconnect: FAST })).start();
    expect(w.write('first')).toBe(true);
    await within(w.flush(), 'flush()');
    await waitFor(() => got.length === 1, 10_000, 'the first message'); // the connection is accepted: no descriptor opens meanwhile
    const closed = fs.openSync(file, 'r');
    fs.closeSync(closed);
    // Not open in this process (its RLIMIT_NOFILE is far above the descriptors in use).
    const neverOpen = 19_000;
    const before = w.metrics();
    for (const [what, fds] of [
      ['a closed descriptor', [closed]],
      ['a descriptor never opened', [neverOpen]],
      ['an object with a closed fd', [{ fd: closed }]],
    ] as [string, unknown[]][]) {
      expect(() => fs.fstatSync(closed)).toThrow();
      expect(() => fs.fstatSync(neverOpen)).toThrow();
      const e = thrown(() => w.write(`bad: ${what}`, { fds } as never), `write() with ${what}`);
      expect(e.code, `${what}: ${e.message}`).toBe('ERR_INVALID_ARG_VALUE');
      expect(e, `${what}: ${e.message} (constructor ${e?.constructor?.name})`).toBeInstanceOf(TypeError);
      const e2 = await failure(() => w.send(`bad send: ${what}`, { fds } as never), `send() with ${what}`);
      expect(e2.code, `send() ${what}: ${e2.message}`).toBe('ERR_INVALID_ARG_VALUE');
      expect(e2, `send() ${what}: ${e2.message} (constructor ${e2?.constructor?.name})`).toBeInstanceOf(TypeError);
    }
    expect(w.metrics().written).toBe(before.written);
    expect(w.metrics().fdsBuffered).toBe(0);
    expect(w.write('last')).toBe(true);
    await within(w.flush(), 'flush()');
    await waitFor(() => got.length >= 2, 10_000, 'the last message');
    expect(got.map((g) => g.data)).toEqual(['first', 'last']);
  });

  it('an open descriptor followed by a closed one whose number the library\'s own dup of the first would take: still ERR_INVALID_ARG_VALUE, nothing sent', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'd.txt', 'dup race');
    const { got } = await localReader(path);
    const w = track(new Writer(path, { reconnect: FAST })).start();
    expect(w.write('first')).toBe(true);
    await within(w.flush(), 'flush()');
    await waitFor(() => got.length === 1, 10_000, 'the first message');
    const fd = fs.openSync(file, 'r');
    try {
      // open() returns the lowest free number: once closed, `closed` is the
      // lowest free number again, the one a dup of `fd` made now gets.
      const closed = fs.openSync(file, 'r');
      fs.closeSync(closed);
      const before = w.metrics();
      let r: unknown;
      let err: (Error & { code?: string }) | undefined;
      try {
        r = w.write('mixed', { fds: [fd, closed] });
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err?.code, `write() returned ${String(r)} instead of throwing`).toBe('ERR_INVALID_ARG_VALUE');
      expect(w.metrics().written).toBe(before.written);
      expect(w.metrics().fdsBuffered).toBe(0);
      expect(fdsOnFile(file)).toBe(1);
      expect(w.write('last')).toBe(true);
      await within(w.flush(), 'flush()');
      await waitFor(() => got.length >= 2, 10_000, 'the last message');
      expect(got.map((g) => [g.data, g.fdCount])).toEqual([
        ['first', 0],
        ['last', 0],
      ]);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('254 descriptors in one write() → RangeError ERR_OUT_OF_RANGE and nothing sent; 253 are delivered, every one working', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'm.txt', 'max fds');
    const { got, reader } = await localReader(path);
    const w = track(new Writer(path, { reconnect: FAST })).start();
    expect(w.write('first')).toBe(true);
    await within(w.flush(), 'flush()');
    await waitFor(() => got.length === 1, 10_000, 'the first message');
    got.length = 0;
    const fd = fs.openSync(file, 'r');
    try {
      const before = w.metrics();
      const e = thrown(() => w.write('254', { fds: new Array(254).fill(fd) }));
      expect(e).toBeInstanceOf(RangeError);
      expect(e.code, e.message).toBe('ERR_OUT_OF_RANGE');
      const e2 = await failure(() => w.send('254 by send', { fds: new Array(254).fill(fd) }));
      expect(e2).toBeInstanceOf(RangeError);
      expect(e2.code, e2.message).toBe('ERR_OUT_OF_RANGE');
      const e3 = thrown(() => w.write('1000', { fds: new Array(1000).fill(fd) }));
      expect(e3.code, e3.message).toBe('ERR_OUT_OF_RANGE');
      expect(w.metrics().written).toBe(before.written);
      expect(w.metrics().fdsBuffered).toBe(0);
      expect(fdsOnFile(file)).toBe(1);

      expect(w.write('253', { fds: new Array(253).fill(fd) })).toBe(true);
      expect(w.write('after')).toBe(true);
      await within(w.flush(), 'flush()');
      await waitFor(() => got.length >= 2, 10_000, 'the 253-descriptor message');
      expect(got.map((g) => g.data)).toEqual(['253', 'after']);
      expect(got[0].fdCount).toBe(253);
      expect(got[0].fds).toHaveLength(253);
      const ino = fs.statSync(file).ino;
      expect(got[0].fds.every((f) => f.isFile && f.ino === ino && f.content === 'max fds')).toBe(true);
      expect(got[1].fds).toEqual([]);
      expect(w.metrics().fdsSent).toBe(253);
      expect(w.metrics().fdsBuffered).toBe(0);
      expect(reader.metrics().fdsReceived).toBe(253);
      // All dups closed again (the writer's and the 253 received, closed by the handler).
      await waitFor(() => fdsOnFile(file) === 1, 5000, 'one descriptor of the file left').catch(() => {});
      expect(fdsOnFile(file)).toBe(1);
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('options and descriptors nobody takes', () => {
  it('acceptFds, maxPendingFds and maxBufferedFds are validated like the other options', () => {
    const path = tmpSocket();
    const bad: [() => unknown, string, string][] = [
      [() => new Reader(path, () => {}, { acceptFds: 'yes' } as never), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [() => new Reader(path, () => {}, { acceptFds: 1 } as never), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [() => new Reader(path, () => {}, { maxPendingFds: '8' } as never), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [() => new Reader(path, () => {}, { maxPendingFds: 0 }), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [() => new Reader(path, () => {}, { maxPendingFds: -1 }), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [() => new Writer(path, { maxBufferedFds: '8' } as never), 'TypeError', 'ERR_INVALID_ARG_TYPE'],
      [() => new Writer(path, { maxBufferedFds: 0 }), 'RangeError', 'ERR_OUT_OF_RANGE'],
      [() => new Writer(path, { maxBufferedFds: -3 }), 'RangeError', 'ERR_OUT_OF_RANGE'],
    ];
    for (const [fn, type, code] of bad) {
      const e = thrown(fn, String(fn));
      expect(e.name, String(fn)).toBe(type);
      expect(e.code, String(fn)).toBe(code);
    }
    expect(() => new Reader(path, () => {}, { acceptFds: true, maxPendingFds: 1 })).not.toThrow();
    expect(() => new Writer(path, { maxBufferedFds: 1 })).not.toThrow();
  });

  it('a handler that throws, or takes only some: what it did not take is closed and counted (fdsClosedUnclaimed)', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'u.txt', 'unclaimed');
    let calls = 0;
    const taken: number[][] = [];
    const indexErrors: string[] = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          calls++;
          for (let i = 0; i < b.length; i++) {
            const text = b.at(i)!.toString();
            if (text === 'throw') throw new Error('handler failure on purpose');
            if (text === 'ignored') {
              // Indexes are checked: RangeError ERR_OUT_OF_RANGE, nothing taken.
              for (const bad of [-1, b.length, 1.5, NaN]) {
                for (const call of [() => b.takeFds(bad), () => b.fdCount(bad)]) {
                  const e = thrown(call, `index ${bad}`);
                  indexErrors.push(`${e.name} ${e.code}`);
                }
              }
            }
            if (text === 'take-one') {
              // takeFds hands over all of a message's descriptors: take them, keep one, close the rest
              const fds = b.takeFds(i);
              taken.push(fds);
              for (const fd of fds.slice(1)) fs.closeSync(fd);
            }
          }
        },
        { acceptFds: true, onError: () => {} },
      ),
    );
    await reader.start();
    const w = track(new Writer(path, { reconnect: FAST })).start();
    w.write('warm');
    await within(w.flush(), 'flush()');
    await waitFor(() => calls >= 1, 10_000, 'the first batch');
    const fd = fs.openSync(file, 'r');
    try {
      w.write('ignored', { fds: [fd, fd] });
      await within(w.flush(), 'flush()');
      await waitFor(() => reader.metrics().fdsClosedUnclaimed >= 2, 10_000, 'the ignored descriptors closed');
      w.write('throw', { fds: [fd, fd, fd] });
      await within(w.flush(), 'flush()');
      await waitFor(() => reader.metrics().handlerErrors >= 1, 10_000, 'the handler error');
      await waitFor(() => reader.metrics().fdsClosedUnclaimed >= 5, 10_000, 'the descriptors of the failed batch closed');
      w.write('take-one', { fds: [fd, fd] });
      await within(w.flush(), 'flush()');
      await waitFor(() => taken.length === 1, 10_000, 'take-one');
    } finally {
      fs.closeSync(fd);
    }
    expect(indexErrors).toEqual(new Array(8).fill('RangeError ERR_OUT_OF_RANGE'));
    expect(taken[0]).toHaveLength(2);
    const kept = taken[0][0];
    expect(fs.fstatSync(kept).ino).toBe(fs.statSync(file).ino); // still ours: the library did not close it
    expect(fdsOnFile(file)).toBe(1); // `kept`: everything else the reader got is closed
    fs.closeSync(kept);
    const m = reader.metrics();
    expect(m.fdsReceived).toBe(7);
    expect(m.fdsClosedUnclaimed).toBe(5);
    expect(fdsOnFile(file)).toBe(0);
  });
});

describe('acceptFds: false (the default)', () => {
  // Linux 6.16+: the Reader has the kernel refuse descriptors (SO_PASSRIGHTS
  // off), so none reaches its process (closing one can block: a TCP socket
  // with SO_LINGER). The Writer's send fails with EPERM before anything of
  // the message goes: that message is dropped and reported, the connection
  // stays. Older kernels: the test after this one.
  itOnKernel(true)('a writer sending descriptors (Linux 6.16+): refused by the kernel, ERR_FDS_REFUSED at the writer, that message dropped, the connection kept; nothing reaches the reader', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'x.txt', 'unwanted');
    const r = await readerChild(path, {}); // acceptFds not set: false
    const w = track(new Writer(path, { reconnect: false })).start();
    const errors: { code?: string; context: string }[] = [];
    let disconnects = 0;
    w.on('error', (e: { code?: string }, context: string) => errors.push({ code: e.code, context }));
    w.on('disconnect', () => disconnects++);
    w.write('before');
    await r.line((l) => l.event === 'msg' && l.data === 'before', 'before');
    const baseline = fdCount(r.pid); // with the connection
    const fd = fs.openSync(file, 'r');
    try {
      expect(w.write('bad', { fds: [fd, fd, fd] })).toBe(true);
      w.write('between');
      expect(w.write('flood', { fds: new Array(253).fill(fd) })).toBe(true);
      w.write('after');
    } finally {
      fs.closeSync(fd);
    }
    await r.line((l) => l.event === 'msg' && l.data === 'after', 'after');
    await waitFor(() => errors.length === 2, 10_000, 'two ERR_FDS_REFUSED');
    expect(errors).toEqual([
      { code: 'ERR_FDS_REFUSED', context: 'send' },
      { code: 'ERR_FDS_REFUSED', context: 'send' },
    ]);
    expect(r.all((l) => l.event === 'msg').map((l) => l.data)).toEqual(['before', 'between', 'after']);
    expect(r.all((l) => l.event === 'error')).toEqual([]);
    expect(disconnects).toBe(0);
    expect(w.metrics().connects).toBe(1);
    expect(w.metrics().fdsSent).toBe(0);
    expect((await metricsOf(r)).metrics.fdsRefused).toBe(0);
    expect(fdCount(r.pid)).toBe(baseline);
    // The writer's duplicates were closed with the dropped messages.
    await waitFor(() => fdsOnFile(file) === 0, 10_000, "the writer's duplicates closed");
  });

  itOnKernel(false)('a writer sending descriptors (before Linux 6.16): ERR_UNEXPECTED_FDS, its connection closed, the descriptors closed and counted; another connection unaffected', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'x.txt', 'unwanted');
    const r = await readerChild(path, {}); // acceptFds not set: false
    const good = track(new Writer(path, { reconnect: FAST })).start();
    let goodDisconnects = 0;
    good.on('disconnect', () => goodDisconnects++);
    good.write('good-1');
    await r.line((l) => l.event === 'msg' && l.data === 'good-1', 'good-1');
    const baseline = fdCount(r.pid);

    const fd = fs.openSync(file, 'r');
    try {
      // 1: three descriptors with an ordinary message.
      const bad = track(new Writer(path, { reconnect: false })).start();
      let badDisconnect: { code?: string } | undefined;
      bad.on('disconnect', (why) => (badDisconnect = why));
      bad.on('error', () => {});
      bad.write('bad-before');
      const before = await r.line((l) => l.event === 'msg' && l.data === 'bad-before', 'bad-before');
      const badConn = before.conn as number;
      bad.write('bad', { fds: [fd, fd, fd] });
      const err = await r.line((l) => l.event === 'error' && l.conn === badConn, 'the reader error for the bad connection');
      expect(err).toMatchObject({ code: 'ERR_UNEXPECTED_FDS', context: 'connection' });
      const disc = await r.line((l) => l.event === 'disconnect' && l.id === badConn, 'the bad connection closed');
      expect(disc.code).toBe('ERR_UNEXPECTED_FDS');
      await waitFor(() => badDisconnect !== undefined, 10_000, "the bad writer's disconnect");
      // Counted as they arrive: the reader does not make room for more than
      // it needs to see that some came, and the kernel discards the rest.
      const refused1 = (await metricsUntil(r, (x) => x.fdsRefused >= 1)).metrics.fdsRefused as number;
      expect(refused1).toBeGreaterThanOrEqual(1);
      expect(refused1).toBeLessThanOrEqual(3);
      await waitFor(() => fdCount(r.pid) === baseline, 10_000, `the reader's descriptors back to ${baseline}`).catch(() => {});
      expect(fdCount(r.pid)).toBe(baseline);

      // 2: a flood: 253 descriptors in one message.
      const flood = track(new Writer(path, { reconnect: false })).start();
      flood.on('error', () => {});
      flood.write('flood', { fds: new Array(253).fill(fd) });
      await r.line((l) => l.event === 'disconnect' && l.id !== badConn && l.code === 'ERR_UNEXPECTED_FDS', 'the flood connection closed');
      await waitFor(() => fdCount(r.pid) === baseline, 10_000, `the reader's descriptors back to ${baseline}`).catch(() => {});
      expect(fdCount(r.pid)).toBe(baseline);
      const m = (await metricsUntil(r, (x) => x.fdsRefused > refused1)).metrics;
      expect(m.fdsRefused).toBeGreaterThan(refused1);
      expect(m.fdsRefused).toBeLessThanOrEqual(refused1 + 253);
      expect(m.fdsReceived).toBe(0);
    } finally {
      fs.closeSync(fd);
    }

    // The good connection never noticed.
    good.write('good-2');
    await r.line((l) => l.event === 'msg' && l.data === 'good-2', 'good-2');
    expect(goodDisconnects).toBe(0);
    expect(good.metrics().connects).toBe(1);
    // No message ever reached the handler with descriptors.
    expect(r.all((l) => l.event === 'msg' && (l.fdCount !== 0 || l.fds.length !== 0))).toEqual([]);
    expect(r.all((l) => l.event === 'error').map((l) => l.code)).toEqual(['ERR_UNEXPECTED_FDS', 'ERR_UNEXPECTED_FDS']);
  });
});
