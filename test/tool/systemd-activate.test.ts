// systemd socket activation (issue 5), end to end with the real tool:
// /usr/bin/systemd-socket-activate (Debian package "systemd", which a fresh
// machine lacks; .ci/run installs it), so these tests run in
// `npm run test:systemd`, not in npm test. sd_notify-style READY=1 /
// STOPPING=1 without the tool is tested in test/systemd.test.ts.
//
// systemd-socket-activate binds and listens, then on the first connection
// execs the command in place (same pid: LISTEN_PID is that pid) with the
// listeners as fds 3, 4, ... It passes only TERM, PATH, USER, HOME and -E
// variables to the command.
import { describe, it, expect, afterEach, afterAll, beforeAll } from 'vitest';
import { existsSync, lstatSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Writer } from '../../src/index';
import { tmpSocket, cleanupDirs, waitFor, FIXTURES, Proc, killChildren, notifyListener, type Line } from '../helpers';

const ACTIVATE = '/usr/bin/systemd-socket-activate';
const READER_FIX = join(FIXTURES, 'sec-reader.js');

const writers: Writer[] = [];
afterEach(async () => {
  killChildren();
  for (const w of writers.splice(0)) await w.stop({ timeoutMs: 200 }).catch(() => {});
});
afterAll(() => cleanupDirs());

interface ReaderSpec {
  path: string;
  options?: object;
}

/**
 * Runs `systemd-socket-activate -l <each listen> [extra...] node sec-reader.js cfg`
 * and waits until it listens on every address.
 */
async function activate(listen: string[], readers: ReaderSpec[], extra: string[] = []): Promise<Proc> {
  const args: string[] = [];
  for (const l of listen) args.push('-l', l);
  args.push(...extra, process.execPath, READER_FIX, JSON.stringify({ readers, lifetimeMs: 30_000 }));
  const p = new Proc(ACTIVATE, args);
  for (const l of listen) await p.stderrMatch(new RegExp(`Listening on ${l.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} as \\d+`), `listening on ${l}`);
  return p;
}

function writer(path: string): Writer {
  const w = new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 50 } });
  writers.push(w);
  w.start();
  return w;
}

/** Stops the fixture's Readers (SIGTERM) and returns the 'stopped' lines. */
async function stopFixture(p: Proc, count: number): Promise<Line[]> {
  p.kill('SIGTERM');
  await p.done(10_000);
  const stopped = p.all((l) => l.event === 'stopped');
  expect(stopped.length, `stderr: ${p.stderr}`).toBe(count);
  return stopped;
}

beforeAll(() => {
  // The real tool is required: CI installs it (apt-get install systemd). No skipping.
  expect(existsSync(ACTIVATE), `${ACTIVATE} must exist (apt-get install -y systemd)`).toBe(true);
  const v = execFileSync(ACTIVATE, ['--version'], { encoding: 'utf8' });
  expect(v).toMatch(/systemd \d+/);
});

describe('socket activation with systemd-socket-activate', () => {
  it('the Reader takes the listener systemd passes, messages arrive, LISTEN_* are removed, the file is never removed', async () => {
    const path = tmpSocket();
    const p = await activate([path], [{ path }]);
    const ino = lstatSync(path).ino;
    expect(lstatSync(path).isSocket()).toBe(true);

    // The first connection makes systemd-socket-activate exec the reader;
    // what the writer sends meanwhile waits in the backlog.
    const w = writer(path);
    for (let i = 0; i < 5; i++) w.write(`sd-${i}`);
    const listening = await p.line((l) => l.event === 'listening', 'the reader listening');
    expect(listening.systemdActivated).toBe(true);

    const before = await p.line((l) => l.event === 'env' && l.when === 'before', 'env before');
    expect(before.pid, 'exec in place: the fixture has the spawned pid').toBe(p.pid);
    expect(before.LISTEN_PID).toBe(String(p.pid));
    expect(before.LISTEN_FDS).toBe('1');
    const after = await p.line((l) => l.event === 'env' && l.when === 'after', 'env after');
    expect(after.LISTEN_PID).toBeUndefined();
    expect(after.LISTEN_FDS).toBeUndefined();
    expect(after.LISTEN_FDNAMES).toBeUndefined();
    expect(after.LISTEN_PIDFDID).toBeUndefined();

    await waitFor(() => p.all((l) => l.event === 'msg').length === 5, 10_000, 'five messages');
    const msgs = p.all((l) => l.event === 'msg');
    expect(msgs.map((m) => m.data)).toEqual(['sd-0', 'sd-1', 'sd-2', 'sd-3', 'sd-4']);
    expect(msgs[0].conn).toMatchObject({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });

    // A second writer, after the reader runs.
    const w2 = writer(path);
    w2.write('later');
    await p.line((l) => l.event === 'msg' && l.data === 'later', 'a later message');
    expect(p.find((l) => l.event === 'reader-error' || l.event === 'start-error')).toBeUndefined();
    expect(lstatSync(path).ino, 'the Reader did not rebind the path').toBe(ino);

    await w.stop({ timeoutMs: 500 });
    await w2.stop({ timeoutMs: 500 });
    const stopped = await stopFixture(p, 1);
    expect(stopped[0].exists, 'the file still exists right after the Reader stopped').toBe(true);
    expect(existsSync(path), 'systemd owns the socket file: still there after the process exits').toBe(true);
    expect(lstatSync(path).ino).toBe(ino);
  });

  it('--fdname=NAME with the systemd: { name } option', async () => {
    const path = tmpSocket('named.sock');
    // The Reader's path differs from the bound one: it is chosen by name only.
    const other = join(dirname(path), 'elsewhere.sock');
    const p = await activate([path], [{ path: other, options: { systemd: { name: 'ipc-main' } } }], ['--fdname=ipc-main']);
    const w = writer(path);
    w.write('by-name');
    const listening = await p.line((l) => l.event === 'listening', 'listening');
    expect(listening.systemdActivated).toBe(true);
    const before = await p.line((l) => l.event === 'env' && l.when === 'before', 'env before');
    expect(before.LISTEN_FDNAMES).toBe('ipc-main');
    const after = await p.line((l) => l.event === 'env' && l.when === 'after', 'env after');
    expect(after.LISTEN_FDNAMES).toBeUndefined();
    const msg = await p.line((l) => l.event === 'msg', 'the message');
    expect(msg.data).toBe('by-name');
    expect(existsSync(other), 'nothing was bound at the Reader path').toBe(false);
    await w.stop({ timeoutMs: 500 });
    const stopped = await stopFixture(p, 1);
    expect(stopped[0].exists).toBe(false); // "elsewhere.sock" never existed
    expect(lstatSync(path).isSocket(), "systemd's file is still there").toBe(true);
  });

  it('a name systemd did not pass is an ERR_SYSTEMD start error', async () => {
    const path = tmpSocket();
    const p = await activate([path], [{ path, options: { systemd: { name: 'missing' } } }], ['--fdname=present']);
    const w = writer(path);
    w.write('x');
    const err = await p.line((l) => l.event === 'start-error', 'the start error');
    expect(err.code).toBe('ERR_SYSTEMD');
    expect(err.message).toContain('missing');
    expect(err.message).toContain('present');
    await w.stop({ timeoutMs: 100 });
  });

  it('two sockets with --fdname=a:b: two Readers, each takes its own by name', async () => {
    const a = tmpSocket('a.sock');
    const b = join(dirname(a), 'b.sock');
    // Readers listed b first, so that fd order alone would pick wrongly.
    const p = await activate(
      [a, b],
      [
        { path: b, options: { systemd: { name: 'b' } } },
        { path: a, options: { systemd: { name: 'a' } } },
      ],
      ['--fdname=a:b'],
    );
    const wa = writer(a);
    wa.write('to-a');
    await waitFor(() => p.all((l) => l.event === 'listening').length === 2, 10_000, 'both readers listening');
    expect(p.all((l) => l.event === 'listening').every((l) => l.systemdActivated === true)).toBe(true);
    const wb = writer(b);
    wb.write('to-b');
    await waitFor(() => p.all((l) => l.event === 'msg').length === 2, 10_000, 'both messages');
    const byIdx = Object.fromEntries(p.all((l) => l.event === 'msg').map((m) => [m.data, m.idx]));
    expect(byIdx).toEqual({ 'to-b': 0, 'to-a': 1 });
    const before = await p.line((l) => l.event === 'env' && l.when === 'before', 'env before');
    expect(before.LISTEN_FDS).toBe('2');
    expect(before.LISTEN_FDNAMES).toBe('a:b');
    const after = await p.line((l) => l.event === 'env' && l.when === 'after', 'env after');
    expect([after.LISTEN_PID, after.LISTEN_FDS, after.LISTEN_FDNAMES]).toEqual([undefined, undefined, undefined]);
    await wa.stop({ timeoutMs: 500 });
    await wb.stop({ timeoutMs: 500 });
    const stopped = await stopFixture(p, 2);
    expect(stopped.every((s) => s.exists === true)).toBe(true);
    expect(lstatSync(a).isSocket()).toBe(true);
    expect(lstatSync(b).isSocket()).toBe(true);
  });

  it('two unnamed sockets: each Reader takes the one bound to its path', async () => {
    const a = tmpSocket('a.sock');
    const b = join(dirname(a), 'b.sock');
    const p = await activate([a, b], [{ path: b }, { path: a }]);
    const wb = writer(b);
    wb.write('to-b');
    const wa = writer(a);
    wa.write('to-a');
    await waitFor(() => p.all((l) => l.event === 'msg').length === 2, 10_000, 'both messages');
    const byIdx = Object.fromEntries(p.all((l) => l.event === 'msg').map((m) => [m.data, m.idx]));
    expect(byIdx).toEqual({ 'to-b': 0, 'to-a': 1 });
    const before = await p.line((l) => l.event === 'env' && l.when === 'before', 'env before');
    expect(before.LISTEN_FDS).toBe('2');
    await wa.stop({ timeoutMs: 500 });
    await wb.stop({ timeoutMs: 500 });
    const stopped = await stopFixture(p, 2);
    expect(stopped.every((s) => s.exists === true)).toBe(true);
    expect(existsSync(a) && existsSync(b)).toBe(true);
  });
});

describe('NOTIFY_SOCKET under systemd-socket-activate', () => {

  it('under systemd-socket-activate: activation and notification together', async () => {
    const addr = tmpSocket('notify.sock');
    const listener = await notifyListener(addr);
    const path = tmpSocket();
    const p = await activate([path], [{ path, options: { notifySystemd: true } }], [`-E`, `NOTIFY_SOCKET=${addr}`]);
    const w = writer(path);
    w.write('hi');
    await p.line((l) => l.event === 'msg' && l.data === 'hi', 'the message');
    expect((await p.line((l) => l.event === 'listening', 'listening')).systemdActivated).toBe(true);
    await listener.line((l) => l.event === 'dgram' && l.data === 'READY=1', 'READY=1');
    await w.stop({ timeoutMs: 500 });
    const stopped = await stopFixture(p, 1);
    expect(stopped[0].exists).toBe(true);
    await listener.line((l) => l.event === 'dgram' && l.data === 'STOPPING=1', 'STOPPING=1');
    expect(statSync(path).isSocket()).toBe(true);
  });
});
