// Messages that come one at a time reach the Reader's handler by a short
// way (src/reader.ts #onReady: a lone small batch, handed over by the
// JS-thread poller as its region alone, runs without the item list). These
// tests hold that way to the rules of the long one: one batch at a time
// ('serial'), in order, behind whatever waits, with the right connection.
import { describe, it, expect } from 'vitest';
import net from 'node:net';
import { Reader, Writer, encodeFrame, type Batch, type Connection } from '../src/index';
import { tmpSocket, useTracking, waitFor, within } from './helpers';

const track = useTracking();

/** A raw peer: each send() is one frame in one write, so each can arrive as a lone batch. */
async function rawPeer(path: string) {
  const sock = net.connect(path);
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', () => r()));
  return { sock, send: (text: string) => sock.write(encodeFrame(Buffer.from(text))) };
}

describe('lone batches (messages one at a time)', () => {
  it("serial: a message arriving while an async handler is pending waits for it, and all come in order", async () => {
    const path = tmpSocket();
    const got: string[] = [];
    let running = 0;
    let maxRunning = 0;
    let release: (() => void) | undefined;
    const reader = track(
      new Reader(path, async (batch: Batch) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        for (const m of batch) got.push(m.toString());
        if (got[0] === 'hold' && release === undefined) await new Promise<void>((r) => (release = r));
        running--;
      }),
    );
    await reader.start();
    const p = await rawPeer(path);
    p.send('hold');
    await within(waitFor(() => release !== undefined), 'the first handler to start');
    // Each of these arrives alone while the handler is still pending.
    for (let i = 0; i < 20; i++) {
      p.send(`m${i}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(got).toEqual(['hold']);
    release!();
    await within(waitFor(() => got.length === 21), 'every message');
    expect(got).toEqual(['hold', ...Array.from({ length: 20 }, (_, i) => `m${i}`)]);
    expect(maxRunning).toBe(1);
    p.sock.destroy();
  });

  it('each lone batch carries its own connection (credentials included), from several peers in turn', async () => {
    const path = tmpSocket();
    const seen: Array<[string, number, number]> = [];
    const reader = track(
      new Reader(path, (batch: Batch) => {
        for (const m of batch) seen.push([m.toString(), batch.connection.id, batch.connection.pid]);
      }),
    );
    await reader.start();
    const peers = [await rawPeer(path), await rawPeer(path), await rawPeer(path)];
    for (let round = 0; round < 10; round++) {
      for (let k = 0; k < peers.length; k++) {
        peers[k].send(`p${k}r${round}`);
        await within(waitFor(() => seen.length === round * peers.length + k + 1), 'the message');
      }
    }
    const idOf = new Map<number, number>();
    for (const [text, id, pid] of seen) {
      const k = Number(text[1]);
      if (!idOf.has(k)) idOf.set(k, id);
      expect(id).toBe(idOf.get(k)); // every message of a peer on that peer's connection
      expect(pid).toBe(process.pid); // the raw peers are this process
    }
    expect(new Set(idOf.values()).size).toBe(3);
    expect(reader.metrics().received).toBe(30);
    for (const p of peers) p.sock.destroy();
  });

  it("a Writer's onMessage: replies arriving one at a time while an async onMessage is pending wait for it, in order", async () => {
    const path = tmpSocket();
    let conn: Connection | undefined;
    const reader = track(new Reader(path, () => {}));
    reader.on('connection', (c: Connection) => (conn = c));
    await reader.start();
    const got: string[] = [];
    let running = 0;
    let maxRunning = 0;
    let release: (() => void) | undefined;
    const writer = track(
      new Writer(path, {
        async onMessage(batch: Batch) {
          running++;
          maxRunning = Math.max(maxRunning, running);
          for (const m of batch) got.push(m.toString());
          if (got[0] === 'hold' && release === undefined) await new Promise<void>((r) => (release = r));
          running--;
        },
      }),
    );
    writer.start();
    await within(waitFor(() => conn !== undefined), 'the connection');
    conn!.write('hold');
    await within(waitFor(() => release !== undefined), 'onMessage to start');
    for (let i = 0; i < 20; i++) {
      conn!.write(`r${i}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(got).toEqual(['hold']);
    release!();
    await within(waitFor(() => got.length === 21), 'every reply');
    expect(got).toEqual(['hold', ...Array.from({ length: 20 }, (_, i) => `r${i}`)]);
    expect(maxRunning).toBe(1);
    // And one at a time with onMessage idle: each straight through, none lost.
    for (let i = 0; i < 20; i++) {
      conn!.write(`s${i}`);
      await within(waitFor(() => got.length === 22 + i), 'the reply');
    }
    expect(got.slice(21)).toEqual(Array.from({ length: 20 }, (_, i) => `s${i}`));
    expect(writer.metrics().received).toBe(41);
  });
});
