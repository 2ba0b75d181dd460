// SOCK_SEQPACKET (issue #19): one packet per message, no length prefix, the
// kernel keeps the boundaries. Round trips through the public API, the size
// limit on both sides, a raw Python peer both ways, reconnects, the type
// probe (EPROTOTYPE) and the combinations refused up front.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IpcError, Reader, RpcServer, Writer, type Connection } from '../src/index';
import { FAST, killChildren, PYTHON, tmpSocket, useTracking, waitFor, within } from './helpers';
import { KERNEL_REFUSES_FDS } from './fd-helpers';

const track = useTracking(1000);
afterEach(() => killChildren());

/** Runs a Python script (given as text) with `args`; resolves with its stdout, rejects on failure. */
function python(code: string, args: string[], timeoutMs = 20_000): Promise<string> {
  const file = join(dirname(args[0]), `peer-${Date.now()}-${Math.random().toString(36).slice(2)}.py`);
  writeFileSync(file, code);
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [file, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const PY_SEND = `
import socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(path)
for size in [int(x) for x in sys.argv[2].split(',')]:
    try:
        s.send(bytes([size & 0xff]) * size)
    except (BrokenPipeError, ConnectionResetError):
        break  # the reader closed this connection (a packet too large)
s.close()
`;

const PY_RECV = `
import socket, sys, os
path = sys.argv[1]
want = int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.bind(path)
s.listen(1)
print('ready', flush=True)
c, _ = s.accept()
sizes = []
while len(sizes) < want:
    m = c.recv(8 * 1024 * 1024)
    ok = all(b == (len(m) & 0xff) for b in m)
    sizes.append(len(m) if ok else -1)
print(','.join(str(x) for x in sizes), flush=True)
`;

function filled(n: number): Buffer {
  return Buffer.alloc(n, n & 0xff);
}

describe('type: seqpacket', () => {
  it('round trip: 0-byte, 1-byte and maximum-size messages, and 20k more, whole and in order', async () => {
    const path = tmpSocket();
    const sizes: number[] = [];
    let bad = 0;
    const reader = track(
      new Reader(
        path,
        (batch) => {
          for (const m of batch) {
            sizes.push(m.length);
            if (m.length > 0 && (m[0] !== (m.length & 0xff) || m[m.length - 1] !== (m.length & 0xff))) bad++;
          }
        },
        { type: 'seqpacket' },
      ),
    );
    await reader.start();
    const writer = track(new Writer(path, { type: 'seqpacket' }).start());
    const max = writer.maxMessageSize;
    expect(max).toBeGreaterThan(64 * 1024); // the packet limit of this socket, from its send buffer
    expect(max).toBeLessThanOrEqual(4 * 1024 * 1024);
    const want = [0, 1, max, 0, 2];
    for (let i = 0; i < 20_000; i++) want.push(i % 300);
    for (const n of want) {
      while (!writer.write(filled(n))) await new Promise((r) => writer.once('drain', r));
    }
    await within(writer.flush(), 'flush');
    await waitFor(() => sizes.length === want.length, 20_000, 'every message');
    expect(sizes).toEqual(want);
    expect(bad).toBe(0);
    // Many packets per system call both ways (recvmmsg/sendmmsg).
    expect(reader.metrics().readCalls).toBeLessThan(want.length / 2);
    expect(writer.metrics().sendCalls).toBeLessThan(want.length / 2);
  });

  it('a message above the packet limit throws ERR_MESSAGE_TOO_LARGE in write(); maxMessageSize below it is kept', async () => {
    const path = tmpSocket();
    const writer = track(new Writer(path, { type: 'seqpacket' }));
    expect(() => writer.write(Buffer.alloc(writer.maxMessageSize + 1))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    const small = track(new Writer(path, { type: 'seqpacket', maxMessageSize: 1000 }));
    expect(small.maxMessageSize).toBe(1000);
    expect(() => small.write(Buffer.alloc(1001))).toThrow(expect.objectContaining({ code: 'ERR_MESSAGE_TOO_LARGE' }));
    // A stream Writer has no packet limit.
    expect(track(new Writer(path)).maxMessageSize).toBe(10 * 1024 * 1024);
  });

  it('a raw Python seqpacket peer: its packets arrive as messages; one above maxMessageSize closes that connection only', async () => {
    const path = tmpSocket();
    const got: number[] = [];
    const errors: IpcError[] = [];
    const reader = track(
      new Reader(path, (batch) => void got.push(...batch.toArray().map((m) => m.length)), {
        type: 'seqpacket',
        maxMessageSize: 5000,
        onError: (e) => errors.push(e as IpcError),
      }),
    );
    await reader.start();
    await python(PY_SEND, [path, '0,1,5000,17']);
    await waitFor(() => got.length === 4, 10_000, 'the Python packets');
    expect(got).toEqual([0, 1, 5000, 17]);
    // Too large: reported, never truncated; what came before it is delivered.
    await python(PY_SEND, [path, '3,5001,4']);
    await waitFor(() => errors.length === 1, 10_000, 'the error');
    expect(errors[0].code).toBe('ERR_MESSAGE_TOO_LARGE');
    expect(errors[0].message).toContain('5001');
    expect(got).toEqual([0, 1, 5000, 17, 3]);
    // The reader goes on serving others.
    await python(PY_SEND, [path, '9']);
    await waitFor(() => got.length === 6, 10_000, 'the next peer');
    expect(got[5]).toBe(9);
  });

  it('0-byte packets are told from EOF whether the peer has an address or not, and when it binds only after connecting', async () => {
    // The reader tells a 0-byte packet from EOF by the sender address each
    // packet carries (a peer whose socket is bound, as the Writer's is) or
    // else by SO_PASSCRED credentials. A peer may bind after the reader
    // looked: the kernel gives every packet the address the sender has
    // when it is read, so the packets sent before the bind carry it too.
    const PY_PEERS = `
import socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
if mode == 'named':
    s.bind('')  # a kernel-chosen abstract name, as the Writer does
s.connect(path)
s.send(b'')
s.send(b'a')
if mode == 'late':
    time.sleep(0.2)  # most likely after the reader attached it (either order must work)
    s.bind('')
s.send(b'')
s.send(b'')
s.send(b'bb')
s.send(b'')
s.close()
`;
    const path = tmpSocket();
    const got: string[][] = [];
    const closed: number[] = [];
    const reader = track(
      new Reader(
        path,
        (batch) => {
          const id = batch.connection.id;
          got[id] ??= [];
          for (const m of batch.toArray()) got[id].push(m.toString());
        },
        { type: 'seqpacket' },
      ),
    );
    reader.on('disconnect', (c: Connection) => closed.push(c.id));
    await reader.start();
    for (const mode of ['named', 'unnamed', 'late']) {
      const before = closed.length;
      await python(PY_PEERS, [path, mode]);
      await waitFor(() => closed.length === before + 1, 10_000, `the ${mode} peer's close`);
      expect({ mode, got: got[closed[before]] }).toEqual({ mode, got: ['', 'a', '', '', 'bb', ''] });
    }
  });

  it('a uds-ipc seqpacket Writer talks to a Python SOCK_SEQPACKET listener: one packet per message, no prefix', async () => {
    const path = tmpSocket();
    const sizes = [0, 1, 300, 70_000, 5];
    const out = python(PY_RECV, [path, String(sizes.length)]);
    await waitFor(() => existsSync(path), 10_000, 'the Python listener');
    const writer = track(new Writer(path, { type: 'seqpacket', reconnect: FAST }).start());
    for (const n of sizes) writer.write(filled(n));
    await within(writer.flush(), 'flush');
    const lines = (await out).trim().split('\n');
    expect(lines[lines.length - 1]).toBe(sizes.join(','));
  });

  it('the Writer reconnects to a restarted seqpacket Reader and goes on', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const mk = () => new Reader(path, (b) => void got.push(...b.toArray().map((m) => m.toString())), { type: 'seqpacket' });
    let reader = mk();
    await reader.start();
    const writer = track(new Writer(path, { type: 'seqpacket', reconnect: FAST }).start());
    writer.write('one');
    await within(writer.flush(), 'flush');
    await waitFor(() => got.length === 1, 10_000, 'one');
    await reader.stop();
    await waitFor(() => !writer.connected, 10_000, 'the disconnect');
    reader = track(mk());
    await reader.start();
    writer.write('two');
    await within(writer.flush(), 'flush after the restart');
    await waitFor(() => got.length === 2, 10_000, 'two');
    expect(got).toEqual(['one', 'two']);
  });

  it('the connection carries the writer credentials (SO_PEERCRED); a graceful stop delivers what was sent', async () => {
    const path = tmpSocket();
    let conn: Connection | undefined;
    let n = 0;
    const reader = new Reader(
      path,
      (b) => {
        conn = b.connection;
        n += b.length;
      },
      { type: 'seqpacket' },
    );
    await reader.start();
    const writer = track(new Writer(path, { type: 'seqpacket' }).start());
    for (let i = 0; i < 5000; i++) writer.write('x');
    await within(writer.flush(), 'flush');
    const r = await within(reader.stop(), 'stop');
    expect(r.discarded).toBe(0);
    expect(n).toBe(5000);
    expect(conn?.pid).toBe(process.pid);
    expect(conn?.uid).toBe(process.getuid!());
  });

  it('types do not mix: a live socket of another type is never taken for stale, and a writer of the wrong type is refused', async () => {
    const path = tmpSocket();
    const seq = track(new Reader(path, () => {}, { type: 'seqpacket' }));
    await seq.start();
    // A stream Reader's stale probe gets EPROTOTYPE from the live seqpacket socket: in use, not stale.
    await expect(new Reader(path, () => {}).start()).rejects.toMatchObject({ code: 'ERR_ADDRESS_IN_USE' });
    // A stream Writer cannot connect to it (EPROTOTYPE): it fails clearly.
    const errors: IpcError[] = [];
    const w = track(new Writer(path, { reconnect: false, onError: (e) => errors.push(e as IpcError) }).start());
    await waitFor(() => errors.length > 0, 10_000, 'the connect error');
    expect(errors[0].code).toBe('ERR_CONNECT_FAILED');
    expect(w.connected).toBe(false);
    // And the other way round.
    const path2 = tmpSocket();
    const stream = track(new Reader(path2, () => {}));
    await stream.start();
    await expect(new Reader(path2, () => {}, { type: 'seqpacket' }).start()).rejects.toMatchObject({ code: 'ERR_ADDRESS_IN_USE' });
  });

  it('combinations not supported are refused up front with ERR_INVALID_ARG_VALUE (and replies with ERR_INVALID_STATE)', async () => {
    const path = tmpSocket();
    const bad = { code: 'ERR_INVALID_ARG_VALUE' };
    expect(() => new Reader(path, () => {}, { type: 'nope' as 'stream' })).toThrow(expect.objectContaining(bad));
    expect(() => new Reader(path, () => {}, { type: 1 as unknown as 'stream' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new Reader(path, () => {}, { type: 'seqpacket', systemd: { name: 'x' } })).toThrow(expect.objectContaining(bad));
    expect(() => new Writer(path, { type: 'seqpacket', onMessage() {} })).toThrow(expect.objectContaining(bad));
    expect(() => new RpcServer(path, { m: () => 'x' }, { type: 'seqpacket' })).toThrow(expect.objectContaining(bad));
    const w = track(new Writer(path, { type: 'seqpacket' }));
    // A reader connection cannot reply on seqpacket yet.
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
        { type: 'seqpacket' },
      ),
    );
    await reader.start();
    w.start();
    w.write('hi');
    await waitFor(() => replyError !== undefined, 10_000, 'the reply attempt');
    expect(replyError).toMatchObject({ code: 'ERR_INVALID_STATE' });
  });
});

describe('type: seqpacket from the command line', () => {
  it('uds-ipc listen --type seqpacket prints what uds-ipc send --type seqpacket sends', async () => {
    const { spawn } = await import('node:child_process');
    const cli = join(__dirname, '..', 'dist', 'cli.js');
    const path = tmpSocket();
    const listen = spawn(process.execPath, [cli, 'listen', '--type', 'seqpacket', '--count', '2', '--quiet', path]);
    let out = '';
    listen.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => listen.on('exit', (c) => r(c)));
    await waitFor(() => existsSync(path), 10_000, 'the listener');
    const send = spawn(process.execPath, [cli, 'send', '--type', 'seqpacket', path, 'hello', 'packet']);
    expect(await within(new Promise((r) => send.on('exit', r)), 'send')).toBe(0);
    expect(await within(exited, 'listen')).toBe(0);
    expect(out).toBe('hello\npacket\n');
  });
});

describe('type: seqpacket with the stream features the table lists', () => {
  it('abstract names, authorize and allowUids work as on stream', async () => {
    const name = `@uds-ipc-seq-${process.pid}-${Date.now()}`;
    const got: string[] = [];
    const peers: number[] = [];
    const reader = track(
      new Reader(name, (b) => void got.push(...b.toArray().map((m) => m.toString())), {
        type: 'seqpacket',
        allowUids: [process.getuid!()],
        authorize: (peer) => {
          peers.push(peer.pid);
          return Promise.resolve(true);
        },
      }),
    );
    await reader.start();
    const writer = track(new Writer(name, { type: 'seqpacket' }).start());
    writer.write('abstract');
    await within(writer.flush(), 'flush');
    await waitFor(() => got.length === 1, 10_000, 'the message');
    expect(got).toEqual(['abstract']);
    expect(peers).toEqual([process.pid]);
    // A peer refused by allowUids is closed unread.
    const refused = track(
      new Reader(`${name}-2`, () => {}, { type: 'seqpacket', allowUids: [process.getuid!() + 1], allowGids: [] }),
    );
    await refused.start();
    const w2 = track(new Writer(`${name}-2`, { type: 'seqpacket', reconnect: false }).start());
    w2.write('nope');
    await waitFor(() => refused.metrics().rejected === 1, 10_000, 'the rejection');
    expect(refused.metrics().received).toBe(0);
  });
});

describe('type: seqpacket with file descriptors', () => {
  it(`a descriptor goes with its packet: the reader reads the file through it; without acceptFds ${KERNEL_REFUSES_FDS ? 'the kernel refuses it (Linux 6.16+: ERR_FDS_REFUSED at the writer, the connection kept)' : 'the connection is refused'}`, async () => {
    const { openSync, closeSync, readSync, writeFileSync: write } = await import('node:fs');
    const path = tmpSocket();
    const file = join(dirname(path), 'note.txt');
    write(file, 'through a seqpacket');
    const texts: string[] = [];
    const plain: string[] = [];
    const reader = track(
      new Reader(
        path,
        (batch) => {
          for (let i = 0; i < batch.length; i++) {
            const fds = batch.takeFds(i);
            if (fds.length === 0) plain.push(batch.at(i)!.toString());
            for (const fd of fds) {
              const buf = Buffer.alloc(64);
              texts.push(buf.subarray(0, readSync(fd, buf, 0, 64, 0)).toString());
              closeSync(fd);
            }
          }
        },
        { type: 'seqpacket', acceptFds: true },
      ),
    );
    await reader.start();
    const writer = track(new Writer(path, { type: 'seqpacket' }).start());
    const fd = openSync(file, 'r');
    for (let i = 0; i < 50; i++) {
      writer.write(`plain ${i}`);
      writer.write(`fd ${i}`, { fds: [fd] });
    }
    closeSync(fd); // the Writer holds its own duplicates
    await within(writer.flush(), 'flush');
    await waitFor(() => texts.length === 50 && plain.length === 50, 10_000, 'every message');
    expect(new Set(texts)).toEqual(new Set(['through a seqpacket']));
    expect(plain).toEqual(Array.from({ length: 50 }, (_, i) => `plain ${i}`));
    expect(writer.metrics().fdsSent).toBe(50);
    expect(writer.metrics().fdsBuffered).toBe(0);
    expect(reader.metrics().fdsReceived).toBe(50);
    const path2 = tmpSocket();
    const errors: IpcError[] = [];
    const got: string[] = [];
    const refusing = track(new Reader(path2, (b) => got.push(...[...b].map(String)), { type: 'seqpacket', onError: (e) => errors.push(e as IpcError) }));
    await refusing.start();
    const w2 = track(new Writer(path2, { type: 'seqpacket', reconnect: false }).start());
    if (KERNEL_REFUSES_FDS) {
      // Linux 6.16+: the kernel refuses it at the writer; the packets around it go.
      const werrors: { code?: string; context: string }[] = [];
      w2.on('error', (e: IpcError, context: string) => werrors.push({ code: e.code, context }));
      w2.write('a');
      w2.write('x', { fds: [0] });
      w2.write('b');
      await waitFor(() => got.length === 2 && werrors.length === 1, 10_000, 'a, b and the refusal');
      expect(got).toEqual(['a', 'b']);
      expect(werrors).toEqual([{ code: 'ERR_FDS_REFUSED', context: 'send' }]);
      expect(errors).toEqual([]);
      expect(refusing.metrics().fdsRefused).toBe(0);
      expect(w2.metrics().connects).toBe(1);
      return;
    }
    // Before 6.16: a reader without acceptFds closes such a connection.
    w2.write('x', { fds: [0] });
    await waitFor(() => errors.length > 0, 10_000, 'the refusal');
    expect(errors[0].code).toBe('ERR_UNEXPECTED_FDS');
    expect(refusing.metrics().fdsRefused).toBeGreaterThan(0);
  });
});
