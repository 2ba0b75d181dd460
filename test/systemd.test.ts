// sd_notify-style READY=1 / STOPPING=1 to a NOTIFY_SOCKET datagram listener
// (systemd integration, issue 5), with python3 as the listener. Socket
// activation needs the real systemd-socket-activate (Debian package "systemd",
// absent on a fresh machine): that is in test/tool/systemd-activate.test.ts,
// run by `npm run test:systemd`.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { execFileSync } from 'node:child_process';
import { tmpSocket, cleanupDirs, FIXTURES, Proc, killChildren, notifyListener, PYTHON } from './helpers';

const READER_FIX = join(FIXTURES, 'sec-reader.js');

afterEach(() => killChildren());
afterAll(() => cleanupDirs());


describe('NOTIFY_SOCKET', () => {

  /**
   * Sends a datagram of our own to the listener and waits until it prints it.
   * Datagrams are queued in order: whatever a process sent before it exited
   * is printed before the marker.
   */
  async function barrier(listener: Proc, address: string): Promise<void> {
    const code = [
      'import socket, sys',
      'a = sys.argv[1]',
      "a = '\\0' + a[1:] if a.startswith('@') else a",
      "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'BARRIER', a)",
    ].join('\n');
    execFileSync(PYTHON, ['-c', code, address]);
    await listener.line((l) => l.event === 'dgram' && l.data === 'BARRIER', 'our marker datagram');
  }

  async function canConnect(path: string): Promise<boolean> {
    return new Promise((resolve) => {
      const s = netConnect(path);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
  }

  async function scenario(notifyAddress: string): Promise<void> {
    const listener = await notifyListener(notifyAddress);
    const path = tmpSocket();
    const p = new Proc(process.execPath, [READER_FIX, JSON.stringify({ readers: [{ path, options: { notifySystemd: true } }] })], {
      NOTIFY_SOCKET: notifyAddress,
    });
    const ready = await listener.line((l) => l.event === 'dgram', 'READY=1');
    expect(ready.data).toBe('READY=1');
    // READY=1 means "listening": a connect succeeds at once.
    expect(await canConnect(path)).toBe(true);
    await p.line((l) => l.event === 'listening', 'listening');

    p.kill('SIGTERM');
    await listener.line((l) => l.event === 'dgram' && l.data === 'STOPPING=1', 'STOPPING=1');
    await p.done();
    expect(p.find((l) => l.event === 'reader-error'), p.stderr).toBeUndefined();
    // Everything the child sent, in order: nothing but READY=1 before stop, and STOPPING=1.
    await barrier(listener, notifyAddress);
    expect(listener.all((l) => l.event === 'dgram').map((l) => l.data)).toEqual(['READY=1', 'STOPPING=1', 'BARRIER']);
    listener.kill();
  }

  it('sends READY=1 once listening and STOPPING=1 on stop (pathname NOTIFY_SOCKET)', async () => {
    await scenario(tmpSocket('notify.sock'));
  });

  it('sends READY=1 and STOPPING=1 to an abstract NOTIFY_SOCKET ("@name", no NUL padding)', async () => {
    await scenario(`@uds-ipc-notify-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  });

  it('sends nothing without notifySystemd', async () => {
    const addr = tmpSocket('notify.sock');
    const listener = await notifyListener(addr);
    const path = tmpSocket();
    const p = new Proc(process.execPath, [READER_FIX, JSON.stringify({ readers: [{ path }] })], { NOTIFY_SOCKET: addr });
    await p.line((l) => l.event === 'listening', 'listening');
    p.kill('SIGTERM');
    await p.done();
    await barrier(listener, addr);
    expect(listener.all((l) => l.event === 'dgram').map((l) => l.data)).toEqual(['BARRIER']);
  });

});
