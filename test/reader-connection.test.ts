// A Reader connection's reply collection on its own, over a fake native
// sink: what is handed over when. No socket, no engine.
import { describe, it, expect } from 'vitest';
import { decodeFrames } from '../src/framing';
import { ReaderConnection, type ReplySink } from '../src/reader/connection';

function setup() {
  const handed: string[][] = []; // the frames of each reply() call
  let scheduled = 0;
  const sink: ReplySink = {
    reply: (_id, bytes, length = bytes.length) => {
      if (length > 0) handed.push(decodeFrames(Buffer.from(bytes.buffer, bytes.byteOffset, length), { maxMessageSize: 1 << 20 }).map((f) => f.toString()));
      return 0; // all sent
    },
    replyFds: () => 0,
    schedule: () => void scheduled++,
    refused: () => {},
    maxReplyBytes: 8 << 20,
    replies: true,
    maxReplyFds: 253,
  };
  const conn = new ReaderConnection(1, 100, 1000, 1000, sink);
  return { conn, handed, scheduled: () => scheduled };
}

const head = new Uint8Array([0x2a]);

describe('ReaderConnection: reply hand-over', () => {
  it('writeParts() (RPC server replies) hands every 16 frames over at once; the end-of-tick flush hands over the rest', () => {
    const { conn, handed, scheduled } = setup();
    for (let i = 0; i < 40; i++) expect(conn.writeParts(head, 1, `r${i}`, `r${i}`.length)).toBe(true);
    const frame = (i: number): string => `*r${i}`;
    expect(handed).toEqual([Array.from({ length: 16 }, (_, k) => frame(k)), Array.from({ length: 16 }, (_, k) => frame(16 + k))]);
    expect(scheduled()).toBe(1); // one end-of-tick flush, not one per group
    conn.flush();
    expect(handed).toHaveLength(3);
    expect(handed[2]).toEqual(Array.from({ length: 8 }, (_, k) => frame(32 + k)));
    // The next tick counts from zero again.
    for (let i = 0; i < 15; i++) conn.writeParts(head, 1, 'x', 1);
    expect(handed).toHaveLength(3);
    conn.writeParts(head, 1, 'x', 1);
    expect(handed).toHaveLength(4);
    expect(handed[3]).toHaveLength(16);
  });

  it('hold(): writes schedule no flush until the holder flushes; a flush scheduled before stays; groups still go at 16', () => {
    const { conn, handed, scheduled } = setup();
    conn.hold();
    for (let i = 0; i < 3; i++) conn.writeParts(head, 1, `p${i}`, 2);
    conn.write('w');
    expect(scheduled()).toBe(0);
    expect(handed).toEqual([]);
    conn.flush(); // the holder's flush hands everything over and ends the hold
    expect(handed).toEqual([['*p0', '*p1', '*p2', 'w']]);
    conn.write('after');
    expect(scheduled()).toBe(1); // not held any more
    conn.hold(); // the flush scheduled before the hold stays scheduled
    for (let i = 0; i < 16; i++) conn.writeParts(head, 1, 'g', 1);
    expect(scheduled()).toBe(1);
    expect(handed).toHaveLength(2); // a group of 16 is handed over while held, as always
    expect(handed[1]).toEqual(['after', ...Array.from({ length: 16 }, () => '*g')]);
    conn.flush();
    expect(handed).toHaveLength(2); // nothing left
  });

  it('write() keeps one hand-over per tick, however many messages', () => {
    const { conn, handed, scheduled } = setup();
    for (let i = 0; i < 40; i++) expect(conn.write(`m${i}`)).toBe(true);
    expect(handed).toEqual([]);
    expect(scheduled()).toBe(1);
    conn.flush();
    expect(handed).toEqual([Array.from({ length: 40 }, (_, i) => `m${i}`)]);
  });
});
