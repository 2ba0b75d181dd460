// The Reader's inbox on its own, fed fabricated item arrays: decoding by tag
// and slot layout, small (copied) and large (external) batches, and the
// acknowledgement and release of their memory. No socket, no engine. The
// layout uses tag values and a slot count of its own (none equal to the
// addon's), so that a literal in the inbox where a protocol name belongs
// shows up as a failure here.
import { describe, it, expect } from 'vitest';
import { IpcError } from '../src/errors';
import { Inbox, type ItemSource } from '../src/reader/inbox';
import type { Connection } from '../src/batch';
import type { Protocol } from '../src/protocol';

const ITEM: Protocol['item'] = { BATCH: 10, OPEN: 11, CLOSE: 12, ERROR: 13, STOPPED: 14, REJECTED: 15, SLOTS: 6, COPY_BATCH_UP_TO: 16384 };
const PAD = 'pad'; // the 6th slot, which the inbox must skip

/** One item: [tag, connId, a, b, c, pad]. */
function item(tag: number, connId: number, a?: unknown, b?: unknown, c?: unknown): unknown[] {
  return [tag, connId, a, b, c, PAD];
}

/** A small batch as the addon copies it: one ArrayBuffer, [u32 offsets (absolute) | bytes]; b = table entries. */
function smallBatch(connId: number, msgs: string[]): unknown[] {
  const bytes = msgs.map((m) => Buffer.from(m));
  const entries = 2 * msgs.length;
  const size = bytes.reduce((n, b) => n + b.length, 0);
  const ab = new ArrayBuffer(4 * entries + size);
  const table = new Uint32Array(ab, 0, entries);
  let pos = 4 * entries;
  bytes.forEach((b, i) => {
    table[2 * i] = pos;
    new Uint8Array(ab, pos, b.length).set(b);
    pos += b.length;
    table[2 * i + 1] = pos;
  });
  return item(ITEM.BATCH, connId, ab, entries, size);
}

/** A large batch: the region (external on a slab in real life) and its own Uint32Array table; length prefixes between messages. */
function largeBatch(connId: number, msgs: string[]): unknown[] {
  const bytes = msgs.map((m) => Buffer.from(m));
  const size = bytes.reduce((n, b) => n + 1 + b.length, 0);
  const region = new ArrayBuffer(size);
  const table = new Uint32Array(2 * msgs.length);
  let pos = 0;
  bytes.forEach((b, i) => {
    new Uint8Array(region)[pos++] = b.length; // the frame's prefix stays in the region
    table[2 * i] = pos;
    new Uint8Array(region, pos, b.length).set(b);
    pos += b.length;
    table[2 * i + 1] = pos;
  });
  return item(ITEM.BATCH, connId, region, table, size - msgs.length);
}

interface Ack {
  connId: number;
  bytes: number;
  region?: ArrayBuffer;
  table?: ArrayBuffer;
}

function setup() {
  const pending: unknown[][] = [];
  const acks: Ack[] = [];
  const released: ArrayBuffer[] = [];
  let drains = 0;
  const source: ItemSource = {
    take() {
      drains++;
      return pending.splice(0).flat();
    },
    ack(connId, bytes, region, table) {
      acks.push({ connId, bytes, region, table });
    },
  };
  const inbox = new Inbox(ITEM, (m) => void released.push(m));
  inbox.attach(source);
  /** The IO thread has `items` ready. */
  const push = (...items: unknown[][]): void => void pending.push(...items);
  return { inbox, push, acks, released, drains: () => drains };
}

const conn = (id: number): Connection => ({ id, pid: 1, uid: 2, gid: 3 });
const texts = (b: { toArray(): Buffer[] }): string[] => b.toArray().map((m) => m.toString());

describe('Inbox: items', () => {
  it('decodes each item by its tag and the slot layout, in order, then says none is left', () => {
    const { inbox, push } = setup();
    push(
      item(ITEM.OPEN, 7, { pid: 100, uid: 1000, gid: 100 }),
      smallBatch(7, ['a']),
      item(ITEM.ERROR, 7, { code: 'ERR_INVALID_FRAME', message: 'bad prefix' }),
      item(ITEM.CLOSE, 7, { code: 'ERR_INVALID_FRAME', message: 'bad prefix' }),
      item(ITEM.CLOSE, 8, undefined),
      item(ITEM.REJECTED, 0, { pid: 5, uid: 6, gid: 7 }),
      item(ITEM.STOPPED, 0),
    );
    expect(inbox.next()).toBe(-1); // nothing taken yet
    expect(inbox.take()).toBe(true);
    expect(inbox.next()).toBe(ITEM.OPEN);
    expect(inbox.connId()).toBe(7);
    expect(inbox.peer()).toEqual({ pid: 100, uid: 1000, gid: 100 });
    expect(inbox.next()).toBe(ITEM.BATCH);
    expect(texts(inbox.batch(conn(7)))).toEqual(['a']);
    expect(inbox.next()).toBe(ITEM.ERROR);
    const e = inbox.error();
    expect(e).toBeInstanceOf(IpcError);
    expect([e?.code, e?.message]).toEqual(['ERR_INVALID_FRAME', 'bad prefix']);
    expect(inbox.next()).toBe(ITEM.CLOSE);
    expect(inbox.error()?.code).toBe('ERR_INVALID_FRAME');
    expect(inbox.next()).toBe(ITEM.CLOSE);
    expect([inbox.connId(), inbox.error()]).toEqual([8, undefined]); // a clean end
    expect(inbox.next()).toBe(ITEM.REJECTED);
    expect([inbox.connId(), inbox.peer()]).toEqual([0, { pid: 5, uid: 6, gid: 7 }]);
    expect(inbox.next()).toBe(ITEM.STOPPED);
    expect(inbox.next()).toBe(-1);
    expect(inbox.next()).toBe(-1);
  });

  it('take() adds to the items not handled yet, and starts afresh once all were', () => {
    const { inbox, push, drains } = setup();
    expect(inbox.take()).toBe(false); // the IO thread had nothing
    push(item(ITEM.OPEN, 1, { pid: 1, uid: 1, gid: 1 }), item(ITEM.OPEN, 2, { pid: 2, uid: 2, gid: 2 }));
    inbox.take();
    expect(inbox.next()).toBe(ITEM.OPEN);
    push(item(ITEM.CLOSE, 1));
    inbox.take(); // while item 2 waits
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.OPEN, 2]);
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.CLOSE, 1]);
    expect(inbox.next()).toBe(-1);
    push(item(ITEM.CLOSE, 2));
    inbox.take();
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.CLOSE, 2]);
    expect(drains()).toBe(4);
  });
});

describe('Inbox: batches', () => {
  it('a small batch: one buffer with its offsets table in front, b = the table entries', () => {
    const { inbox, push } = setup();
    const msgs = ['hello', '', 'wörld', 'x'.repeat(300)];
    push(smallBatch(3, msgs));
    inbox.take();
    expect(inbox.next()).toBe(ITEM.BATCH);
    const b = inbox.batch(conn(3));
    expect(b.connection).toEqual(conn(3));
    expect(b.length).toBe(4);
    expect(b.byteLength).toBe(msgs.reduce((n, m) => n + Buffer.byteLength(m), 0));
    expect(texts(b)).toEqual(msgs);
    expect(b.start(0)).toBe(4 * 8); // the table is in front of the bytes
    expect(Buffer.from(b.bytes.subarray(b.start(2), b.end(2))).toString()).toBe('wörld');
  });

  it('a large batch: the region and a Uint32Array table of its own', () => {
    const { inbox, push } = setup();
    const msgs = ['one', 'two', '', 'three'];
    push(largeBatch(4, msgs));
    inbox.take();
    inbox.next();
    const b = inbox.batch(conn(4));
    expect(b.length).toBe(4);
    expect(b.byteLength).toBe(11);
    expect(texts(b)).toEqual(msgs);
    expect(b.start(0)).toBe(1); // after the first frame's prefix
  });

  it('done(): acknowledges the bytes the batch held and hands its memory back with the ack', () => {
    const { inbox, push, acks, released } = setup();
    const small = smallBatch(1, ['abc', 'de']);
    const large = largeBatch(2, ['fgh', 'ij']);
    push(small, large);
    inbox.take();
    inbox.next();
    const s = inbox.batch(conn(1));
    inbox.next();
    const l = inbox.batch(conn(2));
    inbox.done(s);
    inbox.done(l);
    expect(acks).toEqual([
      // a small batch holds its region without the table: 5 bytes
      { connId: 1, bytes: 5, region: small[2], table: undefined },
      // a large batch holds its whole region (prefixes included), and has a table to hand back
      { connId: 2, bytes: 7, region: large[2], table: (large[3] as Uint32Array).buffer },
    ]);
    expect(released).toEqual([]);
  });

  it('done() of a retained batch acknowledges its bytes but keeps its memory', () => {
    const { inbox, push, acks } = setup();
    push(largeBatch(2, ['keep me']));
    inbox.take();
    inbox.next();
    const b = inbox.batch(conn(2)).retain();
    inbox.done(b);
    expect(acks).toEqual([{ connId: 2, bytes: 8, region: undefined, table: undefined }]);
  });

  it('discard() releases the batches not handed out, counts their messages, and detaches: later done() releases directly', () => {
    const { inbox, push, acks, released } = setup();
    const delivered = largeBatch(1, ['a', 'b']);
    const waiting1 = smallBatch(1, ['c', 'd', 'e']);
    const waiting2 = largeBatch(2, ['f']);
    const kept = largeBatch(3, ['g']);
    push(delivered, kept, item(ITEM.OPEN, 4, { pid: 0, uid: 0, gid: 0 }), waiting1, waiting2);
    inbox.take();
    inbox.next();
    const d = inbox.batch(conn(1)); // with an async handler, say
    inbox.next();
    const k = inbox.batch(conn(3)).retain();
    expect(inbox.discard()).toBe(3 + 1);
    expect(released).toEqual([waiting1[2], waiting2[2], (waiting2[3] as Uint32Array).buffer]);
    expect(inbox.next()).toBe(-1);
    expect(inbox.take()).toBe(false); // no source any more
    inbox.done(d); // the handler finished after the stop
    inbox.done(k);
    expect(acks).toEqual([]);
    expect(released.slice(3)).toEqual([delivered[2], (delivered[3] as Uint32Array).buffer]); // not the retained one
  });
});

describe('Inbox: a lone batch taken as its region alone (the take words)', () => {
  // The addon's take() returns one plain small batch as its ArrayBuffer
  // alone, the rest of its item in a Float64Array it shares once
  // (takeWords()): [connId, offsets entries, payload bytes].
  function wordsSetup() {
    const pending: unknown[] = []; // each entry: an item array, or a lone region
    const acks: Ack[] = [];
    const words = new Float64Array(4);
    const source: ItemSource = {
      take() {
        const next = pending.shift();
        if (next === undefined) return [];
        if (Array.isArray(next)) return next;
        const { region, connId, entries, bytes } = next as { region: ArrayBuffer; connId: number; entries: number; bytes: number };
        words.set([connId, entries, bytes]);
        return region;
      },
      takeWords: () => words,
      ack(connId, bytes, region, table) {
        acks.push({ connId, bytes, region, table });
      },
    };
    const inbox = new Inbox(ITEM, () => undefined);
    inbox.attach(source);
    /** The lone batch a take() returns as its region alone. */
    const lone = (connId: number, msgs: string[]): void => {
      const it = smallBatch(connId, msgs);
      pending.push({ region: it[2], connId, entries: it[3], bytes: it[4] });
    };
    return { inbox, pending, acks, words, lone };
  }

  it('decodes the region with the words as a BATCH item of that connection, and acks what it held', () => {
    const { inbox, acks, words, lone } = wordsSetup();
    lone(9, ['ping', '', 'pöng']);
    expect(inbox.take()).toBe(true);
    words.fill(-1); // read at take(), not later
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.BATCH, 9]);
    const b = inbox.batch(conn(9));
    expect(texts(b)).toEqual(['ping', '', 'pöng']);
    expect(b.byteLength).toBe(9);
    expect(inbox.next()).toBe(-1);
    inbox.done(b);
    expect(acks).toEqual([{ connId: 9, bytes: 9, region: expect.any(ArrayBuffer), table: undefined }]);
  });

  it('keeps the order with item arrays taken before and after, and with a region given to take() directly', () => {
    const { inbox, pending, words, lone } = wordsSetup();
    pending.push(item(ITEM.OPEN, 1, { pid: 1, uid: 1, gid: 1 }));
    lone(1, ['first']);
    pending.push([...smallBatch(1, ['second']), ...item(ITEM.CLOSE, 1)]);
    expect(inbox.take()).toBe(true);
    expect(inbox.next()).toBe(ITEM.OPEN);
    inbox.take(); // appended behind what waits
    inbox.take();
    expect(inbox.next()).toBe(ITEM.BATCH);
    expect(texts(inbox.batch(conn(1)))).toEqual(['first']);
    expect(inbox.next()).toBe(ITEM.BATCH);
    expect(texts(inbox.batch(conn(1)))).toEqual(['second']);
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.CLOSE, 1]);
    // The JS-thread poller passes what it took along: take(given) decodes
    // that (a region alone, its words set), and leaves the source alone.
    const it = smallBatch(2, ['given']);
    words.set([2, it[3] as number, it[4] as number]);
    lone(3, ['still pending']);
    expect(inbox.take(it[2] as ArrayBuffer)).toBe(true);
    expect([inbox.next(), inbox.connId()]).toEqual([ITEM.BATCH, 2]);
    expect(texts(inbox.batch(conn(2)))).toEqual(['given']);
    expect(inbox.next()).toBe(-1);
    expect(pending).toHaveLength(1); // the source was not asked
    expect(inbox.take([])).toBe(false); // an empty array given: nothing
  });
});

describe('Inbox: handleAhead()', () => {
  it('handles the items of one tag not yet reached, in order, and next() skips them, however many in a row', () => {
    const { inbox, push } = setup();
    const DRAINED = 16; // a tag of this test's own layout
    const N = 50_000; // handled ahead in a row: next() must not recurse once per item
    const items: unknown[][] = [smallBatch(7, ['a'])];
    for (let i = 0; i < N; i++) items.push(item(DRAINED, i + 1, i % 3));
    items.push(item(ITEM.CLOSE, 7, undefined), item(ITEM.STOPPED, 0));
    push(...items);
    expect(inbox.take()).toBe(true);
    expect(inbox.next()).toBe(ITEM.BATCH);
    texts(inbox.batch(conn(7)));
    const seen: [number, number][] = [];
    inbox.handleAhead(DRAINED, (connId, dropped) => seen.push([connId, dropped]));
    expect(seen.length).toBe(N);
    expect(seen.slice(0, 4)).toEqual([[1, 0], [2, 1], [3, 2], [4, 0]]);
    expect(inbox.next()).toBe(ITEM.CLOSE);
    expect(inbox.next()).toBe(ITEM.STOPPED);
    expect(inbox.next()).toBe(-1);
    // Nothing left to handle twice.
    inbox.handleAhead(DRAINED, () => seen.push([0, 0]));
    expect(seen.length).toBe(N);
  });
});
