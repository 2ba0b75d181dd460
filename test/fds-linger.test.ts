// A descriptor can be a weapon: releasing the last reference of a TCP socket
// with SO_LINGER and unsent data blocks the releasing thread for the linger
// time (up to 2^31 s). Whoever receives such a descriptor releases it: the
// reader's own close of a refused descriptor, or the kernel discarding one
// for lack of room, both run on the thread that read it (the IO thread, or
// the JavaScript thread while it reads). So a peer that may send could stall
// a Reader without acceptFds at will, even one that allowUids refuses.
// Found by an attack review (stop 32): a dgram Reader's event loop stalled
// 4 s with a 4 s linger, and as long as the sender lived with 2^31.
//
// On Linux 6.16+ a Reader without acceptFds (and every dgram Reader) has the
// kernel refuse descriptors (SO_PASSRIGHTS off): the hostile send fails with
// EPERM and nothing reaches the reader. These tests send the weapon (linger
// 3600 s) to each socket type and check that it was refused and the reader
// goes on; before the fix the send went through and the reader hung for an
// hour. Before Linux 6.16 the kernel cannot refuse: see docs/security.md.
import { describe, expect, afterEach } from 'vitest';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Reader, Writer, type IpcError } from '../src/index';
import { killChildren, Proc, PYTHON, tmpSocket, useTracking, waitFor, within } from './helpers';
import { fdCount, itOnKernel } from './fd-helpers';

const track = useTracking(500);
afterEach(() => killChildren());

// The weapon, armed (argv: type path linger_s): `tcp`, a TCP connection whose
// peer never reads, its send queue filled (`queued` bytes), with SO_LINGER
// set; `types` maps the socket type names.
const ARM = `
import errno, json, os, socket, struct, sys
kind, path, linger = sys.argv[1], sys.argv[2], int(sys.argv[3])
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
lst.bind(('127.0.0.1', 0)); lst.listen(1)
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
tcp.connect(lst.getsockname()); peer, _ = lst.accept()  # never read
tcp.setblocking(False)
queued = 0
try:
    while True: queued += tcp.send(b'z' * 4096)
except BlockingIOError:
    pass
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, linger))
types = {'stream': socket.SOCK_STREAM, 'seqpacket': socket.SOCK_SEQPACKET, 'dgram': socket.SOCK_DGRAM}
`;

// argv: type address linger_s. Arms the weapon, sends it with one message
// (its own copy is never closed), then sends a plain message. Prints one
// JSON line.
const PY_LINGER = `${ARM}addr = '\\0' + path[1:] if path.startswith('@') else path
s = socket.socket(socket.AF_UNIX, types[kind]); s.connect(addr)
frame = (lambda b: bytes([len(b)]) + b) if kind == 'stream' else (lambda b: b)
try:
    socket.send_fds(s, [frame(b'weapon')], [tcp.fileno()])
    result = 'sent'
except PermissionError:
    result = 'refused'
s.send(frame(b'after'))
print(json.dumps({'result': result, 'queued': queued}), flush=True)
os._exit(0)  # an exiting process never lingers (inet_release): close() here would, for an hour
`;

function lingerPeer(type: string, address: string): Promise<{ result: string; queued: number }> {
  const dir = dirname(tmpSocket('py'));
  const file = join(dir, `linger-${process.pid}-${Date.now()}.py`);
  writeFileSync(file, PY_LINGER);
  return new Promise((resolve, reject) => {
    // 20 s is a hang (the script never closes the weapon itself), not a
    // measurement.
    execFile(PYTHON, [file, type, address, '3600'], { timeout: 20_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const line = stdout.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
      else reject(new Error(`the linger peer failed: ${err?.message ?? ''}\n${stderr}`));
    });
  });
}

describe('a descriptor that blocks its last close (TCP, SO_LINGER, unsent data)', () => {
  for (const type of ['dgram', 'stream', 'seqpacket'] as const) {
    itOnKernel(true)(`${type} Reader without acceptFds (Linux 6.16+): the kernel refuses it at the sender; the reader never holds it and goes on`, async () => {
      const path = `@uds-ipc-linger-${type}-${process.pid}-${Date.now()}`; // abstract: anyone on the host may send
      const got: string[] = [];
      const reader = track(new Reader(path, (b) => got.push(...[...b].map(String)), { type, allowUids: [process.getuid!()] }));
      await reader.start();
      const before = fdCount('self');
      const peer = await lingerPeer(type, path);
      expect(peer.queued).toBeGreaterThan(0); // the weapon was armed: unsent bytes behind SO_LINGER
      expect(peer.result).toBe('refused');
      await waitFor(() => got.length === 1, 10_000, 'the message after it');
      expect(got).toEqual(['after']);
      expect(reader.metrics().fdsRefused).toBe(0);
      await waitFor(() => fdCount('self') <= before + (type === 'dgram' ? 0 : 1), 10_000, 'no descriptor left here');
    });
  }
});

// argv: type path linger_s. A hostile listener at a Writer's path: arms the
// weapon as above, accepts one connection, tries to send the weapon with a
// reply frame, then sends a plain reply frame, prints {"event":"tried",
// "result":"sent"|"refused","queued":..}, and reads until EOF
// ({"event":"eof","got":hex}; a second reset counts as the end). It keeps the TCP pair alive until it exits.
const PY_LINGER_LISTENER = `${ARM}l = socket.socket(socket.AF_UNIX, types[kind]); l.bind(path); l.listen(8)
print(json.dumps({'event': 'listening'}), flush=True)
c, _ = l.accept()
frame = (lambda b: bytes([len(b)]) + b) if kind == 'stream' else (lambda b: b)
try:
    socket.send_fds(c, [frame(b'weapon')], [tcp.fileno()])
    result = 'sent'
except PermissionError:
    result = 'refused'
c.send(frame(b'after'))
print(json.dumps({'event': 'tried', 'result': result, 'queued': queued}), flush=True)
got = b''
resets = 0
while resets < 2:
    try:
        d = c.recv(65536)
    except ConnectionResetError:
        # A one-way writer closes with our reply unread. The kernel may report
        # that before packets still queued here: read on, once.
        resets += 1
        continue
    if not d: break
    got += d
print(json.dumps({'event': 'eof', 'got': got.hex()}), flush=True)
os._exit(0)  # never close the weapon here: that would linger
`;

// The same weapon, sent to a Writer by whoever listens at its path (found by
// the third attack review, stop 32): a one-way Writer never reads, so the
// descriptor sat in its socket until stop() closed it, and that close (on
// the IO thread) blocked for the linger time, so stop() overran its
// timeoutMs; a Writer reading replies without acceptFds closed it on the
// JavaScript thread and froze it. Now a Writer's socket refuses descriptors
// from before connect() unless it has acceptFds (Linux 6.16+).
describe('a descriptor that blocks its last close, sent to a Writer by the listener at its path', () => {
  for (const type of ['stream', 'seqpacket'] as const) {
    for (const replies of [false, true]) {
      if (replies && type === 'seqpacket') continue; // seqpacket Writers do not read replies
      const what = replies ? 'reading replies (onMessage, no acceptFds)' : 'one-way';
      itOnKernel(true)(`${type} Writer, ${what} (Linux 6.16+): the kernel refuses it at the listener; the writer goes on and stops in time`, async () => {
        const path = tmpSocket();
        const script = join(dirname(path), 'linger-listener.py');
        writeFileSync(script, PY_LINGER_LISTENER);
        const py = new Proc(PYTHON, [script, type, path, '3600']);
        await py.line((l) => l.event === 'listening', 'the hostile listener');
        const got: string[] = [];
        const errors: (string | undefined)[] = [];
        const w = track(
          new Writer(path, {
            type,
            reconnect: false,
            ...(replies ? { onMessage: (b: Iterable<Buffer>) => void got.push(...[...b].map(String)) } : {}),
          }),
        );
        w.on('error', (e) => errors.push((e as IpcError).code));
        w.start();
        const tried = await py.line((l) => l.event === 'tried', 'the send of the weapon', 20_000);
        expect(tried.queued).toBeGreaterThan(0); // armed: unsent bytes behind SO_LINGER
        expect(tried.result).toBe('refused');
        if (replies) await waitFor(() => got.length === 1, 10_000, 'the reply after it');
        expect(got).toEqual(replies ? ['after'] : []);
        expect(w.write('hello')).toBe(true);
        await within(w.flush(), 'flush()');
        // Before the fix this stop() closed the weapon, for an hour.
        await within(w.stop({ timeoutMs: 1000 }), 'stop()', 20_000);
        const eof = await py.line((l) => l.event === 'eof', 'the listener seeing the writer close');
        expect(Buffer.from(String(eof.got), 'hex').toString()).toBe(type === 'stream' ? '\x05hello' : 'hello');
        expect(errors).toEqual([]);
        expect(w.metrics().fdsRefused).toBe(0);
      });
    }
  }

  itOnKernel(true)("acked Writer (Linux 6.16+): the kernel refuses it at the listener (which is not an acked reader: ERR_PROTOCOL_MISMATCH); stop() keeps its timeoutMs", async () => {
    const path = tmpSocket();
    const script = join(dirname(path), 'linger-listener.py');
    writeFileSync(script, PY_LINGER_LISTENER);
    const py = new Proc(PYTHON, [script, 'stream', path, '3600']);
    await py.line((l) => l.event === 'listening', 'the hostile listener');
    const errors: (string | undefined)[] = [];
    const w = track(new Writer(path, { delivery: 'acked', reconnect: false }));
    w.on('error', (e) => errors.push((e as IpcError).code));
    w.start();
    w.write('kept');
    const tried = await py.line((l) => l.event === 'tried', 'the send of the weapon', 20_000);
    expect(tried.queued).toBeGreaterThan(0);
    expect(tried.result).toBe('refused');
    await waitFor(() => errors.length > 0, 10_000, 'the mismatch');
    expect(errors).toEqual(['ERR_PROTOCOL_MISMATCH']);
    // The unacknowledged message is discarded at the deadline; before the
    // fix this stop() closed the weapon, for an hour.
    const r = await within(w.stop({ timeoutMs: 200 }), 'stop()', 20_000);
    expect(r.discarded).toBe(1);
  });
});
