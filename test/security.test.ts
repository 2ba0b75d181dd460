// Security and operations (issue 5): socket file modes and ownership, other
// users (via setpriv, since root bypasses file permissions), peer
// credentials and authorisation, expectOwner, existing paths, path length and
// abstract names.
//
// Children run as uid 65534 load the package from readableCopy() (see
// test/helpers.ts), a world-readable copy in the temp directory, so these tests
// work from a checkout that other users cannot enter; children run as root
// still use test/fixtures in the checkout.
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Reader, Writer, IpcError, MAX_PATH_BYTES, type Batch, type Connection } from '../src/index';
import {
  tmpSocket,
  cleanupDirs,
  waitFor,
  withTimeout,
  FIXTURES,
  DIST,
  Proc,
  killChildren,
  readableCopy,
  assertCanRunAs,
  asUser,
  type ReadableCopy,
} from './helpers';

const NOBODY = 65534;
// Fixtures run as uid 65534 (file names in the readable copy).
const WRITER_FIX = 'sec-writer.js';
const START_FIX = 'sec-start.js';
// Run as root, from the checkout.
const READER_FIX = join(FIXTURES, 'sec-reader.js');
// The system python starts in ~0.1 s; a pyenv shim can take seconds.
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
const extraDirs: string[] = [];

function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}

afterEach(async () => {
  killChildren();
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 300 }).catch(() => {});
});
let copy: ReadableCopy | undefined;

afterAll(() => {
  copy?.remove();
  cleanupDirs();
  for (const d of extraDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


/** Runs a fixture (from the readable copy) with node as uid/gid 65534 and no supplementary groups. */
function asNobody(fixture: string, args: string[]): Proc {
  if (!copy) throw new Error('beforeAll did not make the readable copy');
  return asUser(NOBODY, copy, fixture, args);
}

/** A socket path in a fresh temp directory that uid 65534 can search. */
function sharedSocket(name = 's.sock'): string {
  const p = tmpSocket(name);
  chmodSync(dirname(p), 0o755);
  return p;
}

/** Collects every message (as a string) and the connection it came from. */
function collector() {
  const got: { data: string; conn: Connection }[] = [];
  const handler = (b: Batch) => {
    for (const m of b) got.push({ data: m.toString(), conn: b.connection });
  };
  return { got, handler };
}

function errorLog() {
  const errors: { err: IpcError; context: string; peer: Connection | undefined }[] = [];
  const onError = (err: Error, context: string, peer?: unknown) => errors.push({ err: err as IpcError, context, peer: peer as Connection | undefined });
  return { errors, onError };
}

async function rejection(fn: () => unknown): Promise<IpcError & { code: string }> {
  try {
    await fn();
  } catch (e) {
    return e as IpcError & { code: string };
  }
  throw new Error('expected a failure, but it succeeded');
}

/** A Writer in this process (uid 0) that sends `msgs` and waits until they are flushed. */
async function sendFromHere(path: string, msgs: string[], opts: ConstructorParameters<typeof Writer>[1] = {}): Promise<Writer> {
  const w = track(new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 20 }, ...opts }));
  w.start();
  for (const m of msgs) w.write(m);
  await withTimeout(w.flush(), 20_000, 'flush()');
  return w;
}

function mode(p: string): number {
  return statSync(p).mode & 0o7777;
}

/** A group from /etc/group other than root's, preferring "nogroup". */
function someGroup(): { name: string; gid: number } {
  const groups = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':'))
    .map(([name, , gid]) => ({ name, gid: Number(gid) }))
    .filter((g) => g.gid !== 0 && Number.isInteger(g.gid));
  const g = groups.find((x) => x.name === 'nogroup') ?? groups[0];
  if (!g) throw new Error('/etc/group has no group besides root');
  return g;
}

function someUser(): { name: string; uid: number } {
  const users = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':'))
    .map(([name, , uid]) => ({ name, uid: Number(uid) }))
    .filter((u) => u.uid !== 0 && Number.isInteger(u.uid));
  const u = users.find((x) => x.name === 'nobody') ?? users[0];
  if (!u) throw new Error('/etc/passwd has no user besides root');
  return u;
}

beforeAll(() => {
  // These tests need root (to chown, and to tell root's bypass apart) and
  // setpriv (util-linux) to run a child as uid 65534, which loads the package
  // from a world-readable copy. Anything missing fails here, by name (never a
  // silent skip).
  copy = readableCopy();
  assertCanRunAs(NOBODY, copy);
});

describe('socket file: mode, owner, directories', () => {
  it('creates the socket with mode 0600 by default, whatever the umask', async () => {
    const path = tmpSocket();
    const old = process.umask(0o000); // a permissive umask must not widen the default
    try {
      const r = track(new Reader(path, () => {}));
      await r.start();
    } finally {
      process.umask(old);
    }
    const st = lstatSync(path);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o7777).toString(8)).toBe('600');
    expect(st.uid).toBe(0);
  });

  it('applies mode 0o660 with a numeric gid, a group name and a user name', async () => {
    const g = someGroup();
    const u = someUser();

    const p1 = tmpSocket();
    await track(new Reader(p1, () => {}, { mode: 0o660, gid: g.gid })).start();
    expect(mode(p1).toString(8)).toBe('660');
    expect(statSync(p1).gid).toBe(g.gid);
    expect(statSync(p1).uid).toBe(0);

    const p2 = tmpSocket();
    await track(new Reader(p2, () => {}, { mode: 0o660, gid: g.name })).start();
    expect(mode(p2).toString(8)).toBe('660');
    expect(statSync(p2).gid).toBe(g.gid);

    const p3 = tmpSocket();
    await track(new Reader(p3, () => {}, { mode: 0o640, uid: u.name, gid: g.name })).start();
    expect(mode(p3).toString(8)).toBe('640');
    expect(statSync(p3).uid).toBe(u.uid);
    expect(statSync(p3).gid).toBe(g.gid);

    const p4 = tmpSocket();
    await track(new Reader(p4, () => {}, { uid: NOBODY })).start();
    expect(statSync(p4).uid).toBe(NOBODY);
    expect(mode(p4).toString(8)).toBe('600');
  });

  it('creates missing parent directories with directoryMode (default 0700), whatever the umask', async () => {
    const base = dirname(tmpSocket());
    const old = process.umask(0o077); // a restrictive umask must not narrow an explicit directoryMode
    try {
      const p1 = join(base, 'a', 'b', 's.sock');
      await track(new Reader(p1, () => {})).start();
      expect(mode(join(base, 'a')).toString(8)).toBe('700');
      expect(mode(join(base, 'a', 'b')).toString(8)).toBe('700');
      expect(lstatSync(p1).isSocket()).toBe(true);

      const p2 = join(base, 'c', 'd', 's.sock');
      await track(new Reader(p2, () => {}, { directoryMode: 0o751 })).start();
      expect(mode(join(base, 'c')).toString(8)).toBe('751');
      expect(mode(join(base, 'c', 'd')).toString(8)).toBe('751');
      // An existing directory is left as it is.
      expect(mode(base).toString(8)).toBe('700');
    } finally {
      process.umask(old);
    }
  });

  it('rejects a user or group name that does not exist at start() with a TypeError, creating nothing', async () => {
    const base = dirname(tmpSocket());
    const p = join(base, 'newdir', 's.sock');
    const e1 = await rejection(async () => {
      const r = new Reader(p, () => {}, { uid: 'no-such-user-uds-ipc-test' });
      await r.start();
    });
    expect(e1).toBeInstanceOf(TypeError);
    expect(e1.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(e1.message).toContain('no-such-user-uds-ipc-test');
    const e2 = await rejection(async () => {
      const r = new Reader(p, () => {}, { gid: 'no-such-group-uds-ipc-test' });
      await r.start();
    });
    expect(e2).toBeInstanceOf(TypeError);
    expect(e2.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(existsSync(join(base, 'newdir'))).toBe(false);
  });

  it('fails start() when chown is refused (unprivileged user) and removes the socket and the directories it created', async () => {
    // Root may chown to anything, so run the Reader as uid 65534 in a
    // directory it owns; chown to root (uid or gid 0) is then EPERM.
    const base = dirname(tmpSocket());
    chmodSync(base, 0o755);
    const own = join(base, 'own');
    mkdirSync(own, { mode: 0o755 });
    chownSync(own, NOBODY, NOBODY);

    const cases: { name: string; options: object }[] = [
      { name: 'uid', options: { uid: 0 } },
      { name: 'gid', options: { gid: 0 } },
    ];
    for (const c of cases) {
      const created = join(own, `new-${c.name}`);
      const path = join(created, 'deeper', 's.sock');
      const p = asNobody(START_FIX, [JSON.stringify({ path, options: c.options, check: [path, created] })]);
      const res = await p.line((l) => l.event === 'result', `start() result (${c.name})`);
      await p.done();
      expect(res.uid, 'the child really runs as 65534').toBe(NOBODY);
      expect(res.ok, `${c.name}: start() must fail: ${JSON.stringify(res)}`).toBe(false);
      expect(res.code).toBe('ERR_SOCKET');
      expect(res.syscall).toBe('chown');
      expect(res.errno).toBe(1); // EPERM
      expect(res.exists[path], `${c.name}: the socket file it bound was removed`).toBe(false);
      expect(res.exists[created], `${c.name}: the directories it created were removed`).toBe(false);
      expect(existsSync(created)).toBe(false);
      expect(readdirSync(own)).toEqual([]);
    }

    // Control: the same child, without the refused chown, succeeds there.
    const okPath = join(own, 'ok', 's.sock');
    const p = asNobody(START_FIX, [JSON.stringify({ path: okPath, options: { gid: NOBODY }, check: [okPath] })]);
    const res = await p.line((l) => l.event === 'result', 'start() result (control)');
    expect(res.ok, JSON.stringify(res)).toBe(true);
    expect(res.mode).toBe(0o600);
    expect(res.exists[okPath], 'stop() removed its socket').toBe(false);
  });

  it('fails start() when the socket cannot be created in a directory and leaves no directory behind', async () => {
    // A parent "directory" that is a file: mkdir fails (ENOTDIR).
    const base = dirname(tmpSocket());
    writeFileSync(join(base, 'file'), 'x');
    const e = await rejection(() => track(new Reader(join(base, 'file', 'sub', 's.sock'), () => {})).start());
    expect(e).toBeInstanceOf(IpcError);
    expect(e.code).toBe('ERR_SOCKET');
    expect(readFileSync(join(base, 'file'), 'utf8')).toBe('x');
  });
});

describe('other users and file permissions', () => {
  it('a process of another user cannot connect to a 0600 socket (EACCES) and can to a 0666 one', async () => {
    // 0600 (default)
    const p1 = sharedSocket();
    const c1 = collector();
    const r1 = track(new Reader(p1, c1.handler));
    await r1.start();
    const w1 = asNobody(WRITER_FIX, [p1, JSON.stringify({ prefix: 'denied' })]);
    const err = await w1.line((l) => l.event === 'error', 'the connect error');
    await w1.line((l) => l.event === 'end', 'the end');
    expect(err.code).toBe('ERR_CONNECT_FAILED');
    expect(err.errno).toBe(13); // EACCES
    expect(err.context).toBe('connect');
    expect(w1.find((l) => l.event === 'connect')).toBeUndefined();
    expect(r1.metrics().connections).toBe(0);
    expect(c1.got).toEqual([]);

    // 0666
    const p2 = sharedSocket();
    const c2 = collector();
    const r2 = track(new Reader(p2, c2.handler, { mode: 0o666 }));
    await r2.start();
    expect(mode(p2).toString(8)).toBe('666');
    const w2 = asNobody(WRITER_FIX, [p2, JSON.stringify({ prefix: 'ok', count: 3 })]);
    const start = await w2.line((l) => l.event === 'start', 'start');
    expect(start.uid).toBe(NOBODY);
    await w2.line((l) => l.event === 'flushed', 'flushed');
    await waitFor(() => c2.got.length === 3, 10_000, 'three messages from uid 65534');
    expect(c2.got.map((g) => g.data)).toEqual(['ok-0', 'ok-1', 'ok-2']);
    const conn = c2.got[0].conn;
    expect(conn.uid).toBe(NOBODY);
    expect(conn.gid).toBe(NOBODY);
    expect(conn.pid).toBe(w2.pid);
    expect(conn.pid).toBe(start.pid);
    expect(conn.id).toBeGreaterThan(0);
  });

  it('mode 0660 lets the socket group in and keeps other groups out', async () => {
    // gid 65534 on the socket: the child (gid 65534) may connect.
    const p1 = sharedSocket();
    const c1 = collector();
    await track(new Reader(p1, c1.handler, { mode: 0o660, gid: NOBODY })).start();
    const w1 = asNobody(WRITER_FIX, [p1, JSON.stringify({ prefix: 'grp' })]);
    await w1.line((l) => l.event === 'flushed', 'flushed');
    await waitFor(() => c1.got.length === 3, 10_000, 'messages via group permission');
    expect(c1.got[0].conn.gid).toBe(NOBODY);

    // gid 0 on the socket: the child has no supplementary groups → EACCES.
    const p2 = sharedSocket();
    await track(new Reader(p2, () => {}, { mode: 0o660, gid: 0 })).start();
    const w2 = asNobody(WRITER_FIX, [p2, '{}']);
    const err = await w2.line((l) => l.event === 'error', 'the connect error');
    expect(err.code).toBe('ERR_CONNECT_FAILED');
    expect(err.errno).toBe(13);
  });
});

describe('peer credentials: allowUids, allowGids, authorize', () => {
  it('allowUids rejects another user before any message is delivered, counts and reports it; an allowed peer gets through', async () => {
    const path = sharedSocket();
    const c = collector();
    const log = errorLog();
    const r = track(new Reader(path, c.handler, { mode: 0o666, allowUids: [process.getuid!()], onError: log.onError }));
    await r.start();

    const w = asNobody(WRITER_FIX, [path, JSON.stringify({ prefix: 'evil', count: 5, waitDisconnectMs: 2000 })]);
    await w.line((l) => l.event === 'connect', 'connect (connect() succeeds before accept)');
    await waitFor(() => r.metrics().rejected === 1, 10_000, 'rejected = 1');
    const end = await w.line((l) => l.event === 'end', 'child end');
    expect(w.find((l) => l.event === 'disconnect'), 'the rejected writer saw its connection closed').toBeDefined();
    expect(end.metrics.connects).toBe(1);
    await sleep(100); // a window in which nothing may be delivered: that is the assertion
    expect(c.got, 'nothing of a rejected peer is delivered').toEqual([]);
    expect(r.metrics().received).toBe(0);

    expect(log.errors).toHaveLength(1);
    const { err, context, peer } = log.errors[0];
    expect(err).toBeInstanceOf(IpcError);
    expect(err.code).toBe('ERR_PEER_REJECTED');
    expect(context).toBe('authorize');
    expect(peer).toBeDefined();
    expect(peer!.uid).toBe(NOBODY);
    expect(peer!.gid).toBe(NOBODY);
    expect(peer!.pid).toBe(w.pid);
    expect(err.message).toContain(String(w.pid));
    expect(err.message).toContain(String(NOBODY));

    // The test process (root) is in allowUids.
    await sendFromHere(path, ['root-0', 'root-1']);
    await waitFor(() => c.got.length === 2, 10_000, 'messages from root');
    expect(c.got.map((g) => g.data)).toEqual(['root-0', 'root-1']);
    expect(c.got[0].conn).toMatchObject({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(r.metrics().rejected).toBe(1);
  });

  it('allowGids admits a peer by group even when its uid is not listed', async () => {
    const path = sharedSocket();
    const c = collector();
    const log = errorLog();
    const r = track(new Reader(path, c.handler, { mode: 0o666, allowUids: [0], allowGids: [NOBODY], onError: log.onError }));
    await r.start();
    const w = asNobody(WRITER_FIX, [path, JSON.stringify({ prefix: 'g', count: 2 })]);
    await w.line((l) => l.event === 'flushed', 'flushed');
    await waitFor(() => c.got.length === 2, 10_000, 'messages admitted by gid');
    expect(c.got[0].conn).toMatchObject({ uid: NOBODY, gid: NOBODY, pid: w.pid });
    expect(r.metrics().rejected).toBe(0);
    expect(log.errors).toEqual([]);

    // allowGids alone, not matching the root writer → rejected.
    const path2 = tmpSocket();
    const log2 = errorLog();
    const c2 = collector();
    const r2 = track(new Reader(path2, c2.handler, { allowGids: [NOBODY], onError: log2.onError }));
    await r2.start();
    const w2 = track(new Writer(path2, { reconnect: false }));
    w2.start();
    w2.write('nope');
    await waitFor(() => r2.metrics().rejected === 1, 10_000, 'root rejected by allowGids');
    await sleep(50); // a window in which nothing may be delivered: that is the assertion
    expect(c2.got).toEqual([]);
    expect(log2.errors[0].err.code).toBe('ERR_PEER_REJECTED');
    expect(log2.errors[0].peer).toMatchObject({ pid: process.pid, uid: 0, gid: 0 });
  });

  it('authorize(peer) sees the credentials, holds the connection until it decides, and refuses another user', async () => {
    const path = sharedSocket();
    const log = errorLog();
    const asked: Connection[] = [];
    const decided = new Set<number>();
    // Each verdict waits until the test releases it, once the peer's
    // messages are in the reader's socket.
    const release: Array<() => void> = [];
    const got: { data: string; conn: Connection; decided: boolean }[] = [];
    const r = track(
      new Reader(
        path,
        (b: Batch) => {
          for (const m of b) got.push({ data: m.toString(), conn: b.connection, decided: decided.has(b.connection.id) });
        },
        {
          mode: 0o666,
          onError: log.onError,
          authorize: async (peer) => {
            asked.push(peer);
            await new Promise<void>((res) => release.push(res));
            decided.add(peer.id);
            return peer.uid !== NOBODY;
          },
        },
      ),
    );
    await r.start();
    const w = asNobody(WRITER_FIX, [path, JSON.stringify({ prefix: 'held', count: 4, waitDisconnectMs: 2000 })]);
    await w.line((l) => l.event === 'flushed', 'flushed (messages are in the reader socket before the verdict)');
    await waitFor(() => release.length === 1, 10_000, 'authorize to be asked');
    release[0]();
    await waitFor(() => r.metrics().rejected === 1, 10_000, 'rejected by authorize');
    await w.line((l) => l.event === 'end', 'child end');
    await sleep(50); // a window in which nothing may be delivered: that is the assertion
    expect(got, 'nothing delivered from the refused peer').toEqual([]);
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({ uid: NOBODY, gid: NOBODY, pid: w.pid });
    expect(asked[0].id).toBeGreaterThan(0);
    expect(log.errors).toHaveLength(1);
    expect(log.errors[0].err.code).toBe('ERR_PEER_REJECTED');
    expect(log.errors[0].context).toBe('authorize');
    expect(log.errors[0].peer).toMatchObject({ uid: NOBODY, pid: w.pid });

    // Root is authorised, but nothing is delivered before the verdict, though
    // its messages are in the socket.
    await sendFromHere(path, ['a', 'b', 'c']);
    await waitFor(() => release.length === 2, 10_000, 'authorize to be asked again');
    expect(got).toEqual([]);
    release[1]();
    await waitFor(() => got.length === 3, 10_000, 'authorised messages');
    expect(got.map((g) => g.data)).toEqual(['a', 'b', 'c']);
    const conn = got[0].conn;
    expect(conn).toMatchObject({ pid: process.pid, uid: 0, gid: 0 });
    expect(asked[1].id).toBe(conn.id);
    expect(got.every((g) => g.decided), 'every message was delivered after the verdict').toBe(true);
    expect(r.metrics().rejected).toBe(1);
  });

  // (The async verdicts come a little later on purpose: sleep(20) is part of the scenario.)
  const verdicts: { name: string; fn: () => boolean | Promise<boolean>; delivered: boolean }[] = [
    { name: 'returns false', fn: () => false, delivered: false },
    { name: 'throws', fn: () => { throw new Error('boom'); }, delivered: false },
    { name: 'resolves false', fn: () => sleep(20).then(() => false), delivered: false },
    { name: 'rejects', fn: () => sleep(20).then(() => Promise.reject(new Error('nope'))), delivered: false },
    { name: 'returns true', fn: () => true, delivered: true },
    { name: 'resolves true', fn: () => sleep(20).then(() => true), delivered: true },
  ];
  for (const v of verdicts) {
    it(`authorize that ${v.name} → ${v.delivered ? 'delivered' : 'rejected'}`, async () => {
      const path = tmpSocket();
      const c = collector();
      const log = errorLog();
      const connections: Connection[] = [];
      const r = track(new Reader(path, c.handler, { authorize: v.fn, onError: log.onError }));
      r.on('connection', (conn: Connection) => connections.push(conn));
      await r.start();
      const w = track(new Writer(path, { reconnect: false }));
      w.start();
      w.write('m1');
      w.write('m2');
      if (v.delivered) {
        await waitFor(() => c.got.length === 2, 10_000, 'delivered');
        expect(c.got.map((g) => g.data)).toEqual(['m1', 'm2']);
        expect(c.got[0].conn).toMatchObject({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
        expect(connections).toHaveLength(1);
        expect(connections[0].id).toBe(c.got[0].conn.id);
        expect(r.metrics().rejected).toBe(0);
        expect(log.errors).toEqual([]);
      } else {
        await waitFor(() => r.metrics().rejected === 1, 10_000, 'rejected');
        await sleep(50); // a window in which nothing may be delivered: that is the assertion
        expect(c.got).toEqual([]);
        expect(r.metrics().received).toBe(0);
        expect(connections, "no 'connection' event for a refused peer").toEqual([]);
        expect(log.errors).toHaveLength(1);
        expect(log.errors[0].err.code).toBe('ERR_PEER_REJECTED');
        expect(log.errors[0].context).toBe('authorize');
        expect(log.errors[0].peer).toMatchObject({ pid: process.pid, uid: process.getuid!() });
      }
    });
  }
});

describe('expectOwner', () => {
  async function attempt(path: string, expectOwner: { uid?: number; gid?: number; mode?: number }) {
    const log = errorLog();
    const w = track(new Writer(path, { expectOwner, reconnect: { initialDelayMs: 5, maxDelayMs: 20 }, onError: log.onError }));
    let connected = false;
    w.on('connect', () => (connected = true));
    w.start();
    w.write('hello');
    await waitFor(() => connected || log.errors.length > 0, 10_000, 'connect or error');
    return { w, log, connected };
  }

  it('refuses a socket whose mode, owner or group differ (ERR_UNTRUSTED_SOCKET) and accepts a matching one', async () => {
    const path = tmpSocket();
    const c = collector();
    const r = track(new Reader(path, c.handler, { mode: 0o666 })); // root:root 0666
    await r.start();

    const refused = [
      { mode: 0o600 }, // socket is 0666: wider than allowed
      { uid: NOBODY }, // owned by root
      { gid: NOBODY }, // group root
      { uid: 0, gid: 0, mode: 0o660 },
    ];
    for (const eo of refused) {
      const { w, log, connected } = await attempt(path, eo);
      expect(connected, JSON.stringify(eo)).toBe(false);
      expect(log.errors[0].err, JSON.stringify(eo)).toBeInstanceOf(IpcError);
      expect(log.errors[0].err.code, JSON.stringify(eo)).toBe('ERR_UNTRUSTED_SOCKET');
      expect(log.errors[0].context).toBe('connect');
      await sleep(60); // a window in which it must not try again: that is the assertion
      expect(w.metrics().connects, 'never connected').toBe(0);
      expect(w.metrics().connectAttempts, 'the writer stops trying').toBe(1);
      expect(log.errors).toHaveLength(1);
    }
    expect(r.metrics().connections, 'no refused writer reached the reader').toBe(0);

    const ok = await attempt(path, { uid: 0, gid: 0, mode: 0o666 });
    expect(ok.log.errors).toEqual([]);
    expect(ok.connected).toBe(true);
    await waitFor(() => c.got.length === 1, 10_000, 'delivered');

    // A narrower socket than allowed is fine; the owner a user would see.
    const path2 = tmpSocket();
    const c2 = collector();
    await track(new Reader(path2, c2.handler, { uid: NOBODY, gid: NOBODY })).start(); // 0600 nobody:nogroup
    const ok2 = await attempt(path2, { gid: NOBODY, mode: 0o660 });
    expect(ok2.log.errors).toEqual([]);
    expect(ok2.connected).toBe(true);
    // The file is nobody's but the listening process is root: expectOwner.uid checks both.
    const peer2 = await attempt(path2, { uid: NOBODY, gid: NOBODY, mode: 0o660 });
    expect(peer2.connected).toBe(false);
    expect(peer2.log.errors[0]?.err.code).toBe('ERR_UNTRUSTED_SOCKET');
    expect(peer2.log.errors[0].err.message).toContain(`runs as uid 0, expected ${NOBODY}`);
    const bad2 = await attempt(path2, { uid: 0 });
    expect(bad2.log.errors[0]?.err.code).toBe('ERR_UNTRUSTED_SOCKET');
    expect(bad2.log.errors[0].err.message).toContain(String(NOBODY));
  });

  it('refuses a path that is not a socket', async () => {
    const path = tmpSocket();
    writeFileSync(path, 'not a socket');
    const { log, connected } = await attempt(path, { uid: 0 });
    expect(connected).toBe(false);
    expect(log.errors[0].err.code).toBe('ERR_UNTRUSTED_SOCKET');
  });
});

describe('existing paths', () => {
  function staleSocket(path: string): void {
    // python binds and exits without listening or unlinking: a stale socket file.
    execFileSync(PYTHON, ['-c', 'import os,socket,sys; os.umask(0o022); s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', path]);
    expect(lstatSync(path).isSocket()).toBe(true);
  }

  it('replaces a stale socket', async () => {
    const path = tmpSocket();
    staleSocket(path);
    // python's bind leaves mode 0777 & ~umask; ours is 0600. (Inode numbers
    // are reused at once on tmpfs, so they cannot tell the files apart.)
    const oldMode = lstatSync(path).mode & 0o777;
    expect(oldMode).not.toBe(0o600);
    const c = collector();
    const r = track(new Reader(path, c.handler));
    await r.start();
    const st = lstatSync(path);
    expect(st.isSocket()).toBe(true);
    expect((st.mode & 0o777).toString(8)).toBe('600');
    await sendFromHere(path, ['after-stale']);
    await waitFor(() => c.got.length === 1, 10_000, 'delivery on the replaced socket');
  });

  it('does not steal a live socket (ERR_ADDRESS_IN_USE), ours or a foreign listener', async () => {
    const path = tmpSocket();
    const c = collector();
    const a = track(new Reader(path, c.handler));
    await a.start();
    const ino = lstatSync(path).ino;
    const e = await rejection(() => track(new Reader(path, () => {})).start());
    expect(e).toBeInstanceOf(IpcError);
    expect(e.code).toBe('ERR_ADDRESS_IN_USE');
    expect(lstatSync(path).ino).toBe(ino);
    await sendFromHere(path, ['still-a']);
    await waitFor(() => c.got.length === 1, 10_000, 'A still works');

    // A listener that is not uds-ipc (Node's net server).
    const net = await import('node:net');
    const p2 = tmpSocket();
    const srv = net.createServer();
    await new Promise<void>((res) => srv.listen(p2, res));
    try {
      const e2 = await rejection(() => track(new Reader(p2, () => {})).start());
      expect(e2.code).toBe('ERR_ADDRESS_IN_USE');
      expect(lstatSync(p2).isSocket()).toBe(true);
    } finally {
      await new Promise((res) => srv.close(res));
    }
  });

  it('leaves a regular file, a directory and a symlink untouched (ERR_NOT_A_SOCKET)', async () => {
    const file = tmpSocket();
    writeFileSync(file, 'precious');
    const e1 = await rejection(() => track(new Reader(file, () => {})).start());
    expect(e1).toBeInstanceOf(IpcError);
    expect(e1.code).toBe('ERR_NOT_A_SOCKET');
    expect(readFileSync(file, 'utf8')).toBe('precious');

    const dir = tmpSocket();
    mkdirSync(dir);
    writeFileSync(join(dir, 'inside'), 'x');
    const e2 = await rejection(() => track(new Reader(dir, () => {})).start());
    expect(e2.code).toBe('ERR_NOT_A_SOCKET');
    expect(readFileSync(join(dir, 'inside'), 'utf8')).toBe('x');

    // A symlink to a stale socket is still not a socket itself.
    const target = tmpSocket();
    staleSocket(target);
    const link = tmpSocket();
    symlinkSync(target, link);
    const e3 = await rejection(() => track(new Reader(link, () => {})).start());
    expect(e3.code).toBe('ERR_NOT_A_SOCKET');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(lstatSync(target).isSocket()).toBe(true);
  });

  it('two processes starting at the same moment on the same path: exactly one wins, and its socket works (x20)', async () => {
    for (let round = 0; round < 20; round++) {
      const path = tmpSocket();
      const cfg = JSON.stringify({ readers: [{ path }], onSignal: true, exitOnError: true, lifetimeMs: 15_000 });
      const ps = [new Proc(process.execPath, [READER_FIX, cfg]), new Proc(process.execPath, [READER_FIX, cfg])];
      // Both loaded and waiting: release them together.
      await Promise.all(ps.map((p) => p.line((l) => l.event === 'env', `round ${round}: child ready`)));
      for (const p of ps) p.child.kill('SIGUSR1');
      const outcome = await Promise.all(
        ps.map((p) => p.line((l) => l.event === 'listening' || l.event === 'start-error', `round ${round}: start outcome`)),
      );
      const winners = outcome.filter((o) => o.event === 'listening');
      const losers = outcome.filter((o) => o.event === 'start-error');
      expect(winners.length, `round ${round}: ${JSON.stringify(outcome)}`).toBe(1);
      expect(losers[0].code, `round ${round}: ${JSON.stringify(losers[0])}`).toBe('ERR_ADDRESS_IN_USE');
      const winner = ps[outcome.indexOf(winners[0])];
      const w = await sendFromHere(path, [`round-${round}`]);
      const msg = await winner.line((l) => l.event === 'msg', `round ${round}: the winner receives`);
      expect(msg.data).toBe(`round-${round}`);
      expect(msg.conn.pid).toBe(process.pid);
      await w.stop({ timeoutMs: 200 });
      winner.kill('SIGTERM');
      const stopped = await winner.line((l) => l.event === 'stopped', `round ${round}: stopped`);
      expect(stopped.exists).toBe(false);
      await Promise.all(ps.map((p) => p.done(5000)));
    }
  });

  it("an old reader's stop() does not remove its successor's socket", async () => {
    const path = tmpSocket();
    const a = track(new Reader(path, () => {}));
    await a.start();
    unlinkSync(path); // someone removes A's file
    const c = collector();
    const b = track(new Reader(path, c.handler));
    await b.start();
    const ino = lstatSync(path).ino;
    await a.stop();
    expect(existsSync(path), "B's socket survives A's stop").toBe(true);
    expect(lstatSync(path).ino).toBe(ino);
    await sendFromHere(path, ['to-b']);
    await waitFor(() => c.got.length === 1, 10_000, 'B still receives');
    await b.stop();
    expect(existsSync(path), 'B removes its own socket').toBe(false);
  });
});

describe('path length', () => {
  function pathOfBytes(bytes: number, fill = 'x'): string {
    const dir = dirname(tmpSocket());
    const head = dir + '/';
    const fillBytes = Buffer.byteLength(fill);
    let p = head;
    while (Buffer.byteLength(p) + fillBytes <= bytes) p += fill;
    while (Buffer.byteLength(p) < bytes) p += 'y';
    expect(Buffer.byteLength(p)).toBe(bytes);
    return p;
  }

  async function tooLong(path: string, bytes: number): Promise<void> {
    const e = await rejection(async () => {
      const r = track(new Reader(path, () => {}));
      await r.start();
    });
    expect(e).toBeInstanceOf(IpcError);
    expect(e.code).toBe('ERR_PATH_TOO_LONG');
    expect(e.message).toContain(String(bytes));
    expect(e.message).toContain('107');
    expect(existsSync(path)).toBe(false);
    const e2 = await rejection(() => {
      const w = track(new Writer(path));
      w.start();
    });
    expect(e2.code).toBe('ERR_PATH_TOO_LONG');
  }

  it('exports MAX_PATH_BYTES = 107', async () => {
    expect(MAX_PATH_BYTES).toBe(107);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    expect((require(DIST) as { MAX_PATH_BYTES: number }).MAX_PATH_BYTES).toBe(107);
  });

  it('a 107-byte path works; 108 bytes fails with ERR_PATH_TOO_LONG naming both lengths', async () => {
    const p107 = pathOfBytes(107);
    const c = collector();
    await track(new Reader(p107, c.handler)).start();
    expect(lstatSync(p107).isSocket()).toBe(true);
    await sendFromHere(p107, ['long']);
    await waitFor(() => c.got.length === 1, 10_000, 'delivery on a 107-byte path');

    await tooLong(pathOfBytes(108), 108);
    await tooLong(pathOfBytes(150), 150);
  });

  it('counts multi-byte UTF-8 in bytes, not characters', async () => {
    // 'é' is 2 bytes, '€' is 3.
    const ok = pathOfBytes(107, 'é');
    expect(ok.length).toBeLessThan(107);
    const c = collector();
    await track(new Reader(ok, c.handler)).start();
    expect(lstatSync(ok).isSocket()).toBe(true);
    expect(readdirSync(dirname(ok))).toContain(ok.slice(dirname(ok).length + 1));
    await sendFromHere(ok, ['utf8']);
    await waitFor(() => c.got.length === 1, 10_000, 'delivery on a multi-byte path');

    const bad = pathOfBytes(108, '€');
    expect(bad.length, 'fewer than 108 JS characters').toBeLessThan(108);
    await tooLong(bad, 108);
  });
});

describe('abstract names', () => {
  const uniq = () => `@uds-ipc-sec-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

  function procNetUnix(): string[][] {
    return readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((l) => l.trim().split(/\s+/));
  }

  it('round-trips, is listed as exactly "@name" (no NUL padding) and creates no file', async () => {
    const name = uniq();
    const cwdBefore = readdirSync(process.cwd());
    const c = collector();
    const r = track(new Reader(name, c.handler));
    await r.start();

    // /proc/net/unix shows NULs as '@': a padded name would read "@name@@@@...".
    const entries = procNetUnix().filter((f) => f.length >= 8 && f[7].startsWith(name));
    expect(entries.map((f) => f[7])).toEqual([name]);
    expect(entries[0][5], 'listening (state 01)').toBe('01');

    let ssOut = '';
    try {
      ssOut = execFileSync('ss', ['-xlH'], { encoding: 'utf8' });
    } catch {
      ssOut = '';
    }
    if (ssOut) {
      const tokens = ssOut.split(/\s+/).filter((t) => t.startsWith(name));
      expect(tokens).toEqual([name]);
    }

    await sendFromHere(name, ['abs-1', 'abs-2']);
    await waitFor(() => c.got.length === 2, 10_000, 'abstract round trip');
    expect(c.got.map((g) => g.data)).toEqual(['abs-1', 'abs-2']);
    expect(c.got[0].conn.pid).toBe(process.pid);

    // A client using the exact name (python: "\0name", addrlen = its length) gets in.
    execFileSync(PYTHON, [
      '-c',
      'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect("\\0"+sys.argv[1]); m=b"from-python"; s.sendall(bytes([len(m)])+m); s.close()',
      name.slice(1),
    ]);
    await waitFor(() => c.got.length === 3, 10_000, 'message from an exact-name client');
    expect(c.got[2].data).toBe('from-python');

    expect(readdirSync(process.cwd())).toEqual(cwdBefore);
    expect(existsSync(name)).toBe(false);

    await r.stop();
    expect(procNetUnix().filter((f) => f[7]?.startsWith(name))).toEqual([]);
    // The name is free again.
    await track(new Reader(name, () => {})).start();
  });

  it('rejects file options with an abstract name (TypeError ERR_INVALID_ARG_VALUE)', () => {
    const name = uniq();
    for (const opt of [{ mode: 0o600 }, { uid: 0 }, { gid: 0 }, { uid: 'root' }, { directoryMode: 0o700 }]) {
      let err: (Error & { code?: string }) | undefined;
      try {
        track(new Reader(name, () => {}, opt)).start().catch(() => {});
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err, JSON.stringify(opt)).toBeInstanceOf(TypeError);
      expect(err!.code).toBe('ERR_INVALID_ARG_VALUE');
      expect(err!.message).toContain(Object.keys(opt)[0]);
    }
    let werr: (Error & { code?: string }) | undefined;
    try {
      track(new Writer(name, { expectOwner: { uid: 0 } }));
    } catch (e) {
      werr = e as Error & { code?: string };
    }
    expect(werr).toBeInstanceOf(TypeError);
    expect(werr!.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(werr!.message).toContain('expectOwner');
  });

  it('a second Reader on the same abstract name gets ERR_ADDRESS_IN_USE; the first keeps working', async () => {
    const name = uniq();
    const c = collector();
    await track(new Reader(name, c.handler)).start();
    const e = await rejection(() => track(new Reader(name, () => {})).start());
    expect(e).toBeInstanceOf(IpcError);
    expect(e.code).toBe('ERR_ADDRESS_IN_USE');
    await sendFromHere(name, ['first']);
    await waitFor(() => c.got.length === 1, 10_000, 'first still receives');
  });

  it('abstract name length limit is 107 bytes after "@"', async () => {
    const base = `@${process.pid}-`;
    const ok = base + 'a'.repeat(108 - base.length);
    expect(Buffer.byteLength(ok) - 1).toBe(107);
    const c = collector();
    await track(new Reader(ok, c.handler)).start();
    await sendFromHere(ok, ['max-abstract']);
    await waitFor(() => c.got.length === 1, 10_000, 'delivery on a 107-byte abstract name');
    const e = await rejection(() => track(new Reader(ok + 'b', () => {})).start());
    expect(e.code).toBe('ERR_PATH_TOO_LONG');
  });
});
