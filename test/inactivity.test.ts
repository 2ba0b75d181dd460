// Reader inactivityTimeoutMs: idle connections are closed with a reason;
// active ones, and connections paused by backpressure, are not.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { Reader, Writer, IpcError, type Connection } from '../src';
import { cleanupDirs, tmpSocket, waitFor } from './helpers';

const open: Array<{ stop(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.stop({ timeoutMs: 500 } as never).catch(() => {});
});
afterAll(cleanupDirs);

describe('inactivityTimeoutMs', () => {
  it('closes a silent connection with ERR_INACTIVITY_TIMEOUT and keeps a chatty one', async () => {
    const path = tmpSocket();
    const closed: Array<{ conn: Connection; why?: Error }> = [];
    let got = 0;
    const reader = new Reader(path, (b) => void (got += b.length), { inactivityTimeoutMs: 300 });
    reader.on('disconnect', (conn: Connection, why?: Error) => closed.push({ conn, why }));
    await reader.start();
    open.push(reader);

    // Taken before connecting: the reader's clock for the connection starts
    // at its accept(), which can come before this thread sees 'connect'.
    const t0 = Date.now();
    const silent = net.createConnection(path);
    let silentClosedAt = 0;
    silent.on('close', () => (silentClosedAt = Date.now()));
    silent.on('error', () => {});
    await new Promise((r) => silent.once('connect', r));

    const chatty = new Writer(path);
    open.push(chatty);
    chatty.start();
    const timer = setInterval(() => chatty.write('tick'), 50);
    try {
      await waitFor(() => silentClosedAt > 0, 10_000, 'the silent connection to be closed');
      const after = silentClosedAt - t0;
      expect(after).toBeGreaterThanOrEqual(250); // not before inactivityTimeoutMs
      expect(after).toBeLessThan(3000); // and promptly after it
      // Well past the timeout for the chatty one: a window in which it must not be closed.
      await new Promise((r) => setTimeout(r, 700));
      expect(chatty.metrics().disconnects).toBe(0);
      expect(chatty.connected).toBe(true);
    } finally {
      clearInterval(timer);
    }
    expect(closed.length).toBe(1);
    expect(closed[0].why).toBeInstanceOf(IpcError);
    expect((closed[0].why as IpcError).code).toBe('ERR_INACTIVITY_TIMEOUT');
    expect(reader.metrics().errors).toBe(0); // a timeout is a close reason, not an error
    expect(got).toBeGreaterThan(10);
  });

  it('does not close a connection that is only silent because the handler holds it back', async () => {
    const path = tmpSocket();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let got = 0;
    const reasons: unknown[] = [];
    const reader = new Reader(
      path,
      async (b) => {
        got += b.length;
        await gate;
      },
      { inactivityTimeoutMs: 200, maxPendingBytes: 64 * 1024 },
    );
    reader.on('disconnect', (_c: Connection, why?: Error) => reasons.push(why));
    await reader.start();
    open.push(reader);
    const writer = new Writer(path);
    open.push(writer);
    writer.start();
    const msg = Buffer.alloc(1000, 1);
    let written = 0;
    while (written < 2000 && writer.write(msg)) written++;
    await waitFor(() => reader.metrics().pauses > 0, 10_000, 'the reader to pause');
    // 4x the timeout, paused the whole time: a window in which it must not be closed.
    await new Promise((r) => setTimeout(r, 800));
    expect(reasons).toEqual([]);
    release();
    await waitFor(() => got === written, 10_000, 'every message');
    expect(writer.metrics().disconnects).toBe(0);
  });
});
