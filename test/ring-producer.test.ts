// The Writer's ring producer on its own: a fake control block, a fake
// sendDirect() and a fake IO thread that reads frames out of the ring. No
// socket, no engine. The layout uses word indices and state values of its
// own (none equal to the addon's), so that a literal in the producer where a
// protocol name belongs shows up as a failure here.
import { describe, it, expect } from 'vitest';
import { Worker } from 'node:worker_threads';
import { binding } from '../src/binding';
import { decodeFrames } from '../src/framing';
import { allocateRing, RingProducer, type DirectSender, type RingLayout, type Target } from '../src/writer/ring-producer';

const LAYOUT: RingLayout = {
  ctrl: { TAIL: 3, HEAD: 17, SENT: 29, SLEEP: 41, NOTIFY_ARMED: 55, NOTIFY_HEAD: 56, NOTIFY_SENT: 57, WORDS: 64, BYTES: 256 },
  sendTurn: { IO_THREAD_SENDS: 7, IDLE: 8, PRODUCER_SENDS: 9 },
  notify: { DISARMED: 4, ARMED: 5 },
};
const C = LAYOUT.ctrl;
const TURN = LAYOUT.sendTurn;

/** What a sendDirect() call saw. */
interface Call {
  frames: number;
  payload: number;
  tail: number;
  sleep: number;
}

/**
 * A producer over a ring of `cap` bytes, with a fake IO side:
 * - `sender.mode`: what sendDirect() does: 'send' (everything goes out: HEAD
 *   and SENT move to the tail, SLEEP back to IDLE), 'handoff' (the socket is
 *   full: SLEEP to IO_THREAD_SENDS), or a number: send everything and rewind
 *   to that tail;
 * - `take()`: the IO thread sends what is published: returns the payloads of
 *   the frames from HEAD to TAIL, read out of the ring (wrap-aware), and
 *   moves HEAD and SENT past them.
 */
function setup(cap: number, limits: { maxBytes?: number; maxWrites?: number } = {}) {
  const shared = new ArrayBuffer(C.BYTES + cap);
  const ctrl = new Int32Array(shared, 0, C.BYTES / 4);
  const ring = new Uint8Array(shared, C.BYTES, cap);
  ctrl[C.SLEEP] = TURN.IO_THREAD_SENDS;
  ctrl[C.NOTIFY_ARMED] = LAYOUT.notify.DISARMED;
  const calls: Call[] = [];
  let rewinds = 0;
  const sender: DirectSender & { mode: 'send' | 'handoff' | number } = {
    mode: 'send',
    sendDirect(frames, payload) {
      calls.push({ frames, payload, tail: ctrl[C.TAIL], sleep: ctrl[C.SLEEP] });
      if (this.mode === 'handoff') {
        Atomics.store(ctrl, C.SLEEP, TURN.IO_THREAD_SENDS);
        return ctrl[C.TAIL];
      }
      take();
      if (typeof this.mode === 'number') {
        ctrl[C.HEAD] = ctrl[C.TAIL] = this.mode;
      }
      Atomics.store(ctrl, C.SLEEP, TURN.IDLE);
      return ctrl[C.TAIL];
    },
  };
  const mask = cap - 1;
  function take(): Buffer[] {
    const head = ctrl[C.HEAD];
    const n = (ctrl[C.TAIL] - head) >>> 0;
    const bytes = Buffer.alloc(n);
    for (let i = 0; i < n; i++) bytes[i] = ring[(head + i) & mask];
    const frames = decodeFrames(bytes, { maxMessageSize: cap });
    ctrl[C.HEAD] = ctrl[C.TAIL];
    ctrl[C.SENT] = (ctrl[C.SENT] + frames.length) | 0;
    return frames;
  }
  const p = new RingProducer(
    ctrl,
    ring,
    sender,
    LAYOUT,
    { maxBytes: limits.maxBytes ?? cap, maxWrites: limits.maxWrites ?? 1_000_000 },
    () => rewinds++,
  );
  return { p, ctrl, ring, sender, calls, take, rewinds: () => rewinds };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RingProducer: frames', () => {
  it('encodes each frame as uvarint(length) + payload, bytes and UTF-8 strings alike', async () => {
    const { p, take } = setup(1 << 20);
    const msgs: (Buffer | string)[] = [
      Buffer.alloc(0),
      Buffer.from([1]),
      Buffer.alloc(127, 2),
      Buffer.alloc(128, 3),
      Buffer.alloc(300, 4),
      Buffer.alloc(16384, 5),
      '',
      'héllo wörld ✓',
      'x'.repeat(200),
    ];
    for (const m of msgs) expect(p.append(m, typeof m === 'string' ? Buffer.byteLength(m) : m.length)).toBe(true);
    await tick();
    const got = take();
    expect(got.map((b) => b.toString('hex'))).toEqual(msgs.map((m) => Buffer.from(m).toString('hex')));
    // The ring holds exactly the wire bytes, back to back from offset 0.
    expect(p.tail).toBe(msgs.reduce((n, m) => n + (Buffer.from(m).length < 128 ? 1 : Buffer.from(m).length < 16384 ? 2 : 3) + Buffer.from(m).length, 0));
    expect(p.accepted).toBe(msgs.length);
  });

  it('a frame that runs past the end of the ring continues at offset 0: payload, and the length prefix too', async () => {
    const cap = 256;
    const { p, ring, take } = setup(cap);
    // Fill to 2 bytes before the end, then a 200-byte frame: its 2-byte
    // prefix ends the ring exactly, its payload starts at offset 0.
    expect(p.append(Buffer.alloc(cap - 2 - 2, 1), cap - 4)).toBe(true); // 2-byte prefix + 252 = 254
    await tick();
    expect(take()).toHaveLength(1);
    const a = Buffer.alloc(200, 0xaa);
    expect(p.append(a, 200)).toBe(true);
    expect(ring[254]).toBe((200 & 0x7f) | 0x80);
    expect(ring[255]).toBe(200 >> 7);
    expect(ring[0]).toBe(0xaa);
    await tick();
    expect(take()).toEqual([a]);
    // Now at 254 + 202 = 456, offset 200: a frame whose prefix itself wraps.
    expect(p.append(Buffer.alloc(55 - 2 - 1 - 1, 1), 51)).toBe(true); // 1 + 51: to offset 252
    await tick();
    take();
    expect(p.append(Buffer.alloc(2, 1), 2)).toBe(true); // 1 + 2: to offset 255
    await tick();
    take();
    expect(p.tail & (cap - 1)).toBe(255);
    const b = Buffer.from(Array.from({ length: 150 }, (_, i) => i));
    expect(p.append(b, 150)).toBe(true);
    expect(ring[255]).toBe((150 & 0x7f) | 0x80); // first prefix byte at the last offset
    expect(ring[0]).toBe(150 >> 7); // second one at offset 0
    expect(Buffer.from(ring.subarray(1, 151))).toEqual(b);
    await tick();
    expect(take()).toEqual([b]);
    // A string split by the end of the ring.
    const s = 'é'.repeat(60); // 120 bytes
    expect(p.append(s, 120)).toBe(true);
    await tick();
    expect(take().map((x) => x.toString())).toEqual([s]);
  });
});

describe('RingProducer: room', () => {
  it('refuses a frame that would pass maxBytes, and takes it once the IO side has sent enough', async () => {
    const { p, take } = setup(256, { maxBytes: 200 });
    expect(p.append(Buffer.alloc(99), 99)).toBe(true); // 100 bytes
    expect(p.append(Buffer.alloc(98), 98)).toBe(true); // 199
    expect(p.append(Buffer.alloc(0), 0)).toBe(true); // 200: exactly full
    expect(p.append(Buffer.alloc(0), 0)).toBe(false);
    expect(p.unsentBytes()).toBe(200);
    expect(p.unsentFrames()).toBe(3);
    await tick();
    take(); // the IO side sends it all
    expect(p.append(Buffer.alloc(198), 198)).toBe(true); // the cache said full; the shared words say empty
    expect(p.unsentBytes()).toBe(200);
  });

  it('refuses a frame past maxWrites, whatever the bytes', async () => {
    const { p, take } = setup(1024, { maxWrites: 3 });
    for (let i = 0; i < 3; i++) expect(p.append('x', 1)).toBe(true);
    expect(p.append('', 0)).toBe(false);
    expect(p.accepted).toBe(3);
    await tick();
    expect(take()).toHaveLength(3);
    expect(p.append('', 0)).toBe(true);
  });

  it('with the queue full, publishes what waits and takes the frame if a direct send emptied it', () => {
    const { p, ctrl, calls } = setup(1024, { maxWrites: 4 });
    for (let i = 0; i < 4; i++) expect(p.append('x', 1)).toBe(true); // the first is published (nothing sent: IO thread's turn)
    expect(calls).toHaveLength(0);
    ctrl[C.SLEEP] = TURN.IDLE; // the IO thread went idle
    expect(p.append('y', 1)).toBe(true); // full by the counts: publish, send directly, room
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ frames: 4, payload: 4, tail: 8 });
    expect(p.unsentFrames()).toBe(1);
  });
});

describe('RingProducer: publishing and the send hand-over', () => {
  it('publishes the first frame of a task at once and the rest at the end of the task (or every publish chunk)', async () => {
    const { p, ctrl } = setup(1 << 16); // publish chunk: maxBytes / 4 = 16 KiB
    expect(p.append('a', 1)).toBe(true);
    expect(ctrl[C.TAIL]).toBe(2);
    expect(p.append('b', 1)).toBe(true);
    expect(ctrl[C.TAIL]).toBe(2); // not yet visible
    await Promise.resolve();
    expect(ctrl[C.TAIL]).toBe(4); // the end-of-task publish
    await tick();
    expect(p.append('c', 1)).toBe(true); // first of a new task
    expect(ctrl[C.TAIL]).toBe(6);
    const big = Buffer.alloc(8190);
    expect(p.append(big, 8190)).toBe(true); // 8192: below the chunk
    expect(ctrl[C.TAIL]).toBe(6);
    expect(p.append(big, 8190)).toBe(true); // 16384 unpublished: published now
    expect(ctrl[C.TAIL]).toBe(6 + 2 * 8192);
    expect(p.append('d', 1)).toBe(true);
    p.publishPending();
    expect(ctrl[C.TAIL]).toBe(p.tail);
  });

  it('corked, the first frame of a task waits too; publishPending() publishes the group at once, and the end of the task still does', async () => {
    const { p, ctrl, calls } = setup(1 << 16);
    ctrl[C.SLEEP] = TURN.IDLE; // the IO side is idle: a publish is a direct send
    p.corked = true;
    expect(p.append('a', 1)).toBe(true);
    expect(p.append('b', 1)).toBe(true);
    expect(ctrl[C.TAIL]).toBe(0);
    expect(calls).toHaveLength(0);
    p.corked = false;
    p.publishPending();
    expect(ctrl[C.TAIL]).toBe(4);
    expect(calls).toEqual([{ frames: 2, payload: 2, tail: 4, sleep: TURN.PRODUCER_SENDS }]); // one send for the group
    await tick();
    // Left corked, what was appended still goes at the end of the task.
    p.corked = true;
    expect(p.append('c', 1)).toBe(true);
    expect(ctrl[C.TAIL]).toBe(4);
    await Promise.resolve();
    expect(ctrl[C.TAIL]).toBe(6);
    expect(calls).toHaveLength(2);
  });

  it('appendFramed() queues frames encoded elsewhere with one copy, across the end of the ring too; all or none', async () => {
    const cap = 256;
    const { p, take } = setup(cap, { maxWrites: 10 });
    const msgs = [Buffer.alloc(100, 1), Buffer.alloc(3, 2), Buffer.alloc(130, 3)];
    const enc = Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from(m.length < 128 ? [m.length] : [(m.length & 0x7f) | 0x80, m.length >> 7]), m])));
    const src = Buffer.concat([Buffer.from([9, 9]), enc, Buffer.from([9])]); // offsets inside a larger buffer
    expect(p.append(Buffer.alloc(60, 7), 60)).toBe(true); // ring position 61
    await tick();
    expect(take()).toHaveLength(1);
    // 101 + 4 + 132 = 237 bytes from 61: runs past 256 and continues at 0.
    expect(p.appendFramed(src, 2, 2 + enc.length, 3, 233)).toBe(true);
    expect(p.tail).toBe(61 + enc.length);
    expect(p.accepted).toBe(4);
    await tick();
    expect(take()).toEqual(msgs);
    // No room for 237 more bytes beside 200 queued: nothing is appended.
    expect(p.append(Buffer.alloc(197, 1), 197)).toBe(true);
    expect(p.appendFramed(src, 2, 2 + enc.length, 3, 233)).toBe(false);
    expect(p.accepted).toBe(5);
    await tick();
    take();
    // maxWrites: 10 frames may wait; 8 wait, so 3 more do not fit, whatever the bytes.
    for (let i = 0; i < 8; i++) expect(p.append('x', 1)).toBe(true);
    const three = Buffer.from([1, 0x61, 1, 0x62, 1, 0x63]);
    expect(p.appendFramed(three, 0, 6, 3, 3)).toBe(false);
    expect(p.appendFramed(three, 0, 4, 2, 2)).toBe(true);
    await tick();
    expect(take().map(String)).toEqual([...'xxxxxxxx', 'a', 'b']);
  });

  it('reserve() and commit() queue a frame encoded in place; -1 (nothing reserved) when it does not fit or would wrap', async () => {
    const cap = 256;
    const { p, take } = setup(cap, { maxWrites: 4 });
    const put = (bytes: Buffer): void => {
      const at = p.reserve(bytes.length);
      expect(at).toBeGreaterThanOrEqual(0);
      bytes.copy(p.bytes, at);
      p.commit(bytes.length);
    };
    put(Buffer.from('in place'));
    put(Buffer.alloc(130, 3)); // a two-byte length prefix
    expect(p.tail).toBe(9 + 132);
    expect(p.accepted).toBe(2);
    await tick();
    expect(take()).toEqual([Buffer.from('in place'), Buffer.alloc(130, 3)]);
    // From 141, 120 bytes and their prefix would run past 256: -1, nothing
    // changes, and append() takes it across the end instead.
    expect(p.reserve(120)).toBe(-1);
    expect([p.tail, p.accepted]).toEqual([141, 2]);
    expect(p.append(Buffer.alloc(120, 5), 120)).toBe(true);
    await tick();
    expect(take()).toEqual([Buffer.alloc(120, 5)]);
    // maxWrites: 4 frames may wait.
    for (let i = 0; i < 4; i++) put(Buffer.from([0x61 + i]));
    expect(p.reserve(1)).toBe(-1);
    await tick();
    expect(take().map(String)).toEqual(['a', 'b', 'c', 'd']);
    // No room for the bytes: -1.
    put(Buffer.alloc(100, 1));
    expect(p.reserve(200)).toBe(-1);
    await tick();
    expect(take()).toEqual([Buffer.alloc(100, 1)]);
  });

  it('sends directly only when SLEEP is IDLE, after swapping it to PRODUCER_SENDS', async () => {
    const { p, ctrl, calls, sender } = setup(1024);
    ctrl[C.SLEEP] = TURN.IO_THREAD_SENDS;
    p.append('one', 3);
    expect(calls).toHaveLength(0);
    ctrl[C.SLEEP] = TURN.PRODUCER_SENDS; // (not a state the IO thread leaves it in; nobody else may send)
    await tick();
    p.append('two', 3);
    expect(calls).toHaveLength(0);
    ctrl[C.SLEEP] = TURN.IDLE;
    await tick();
    p.append('three', 5);
    expect(calls).toEqual([{ frames: 3, payload: 11, tail: 4 + 4 + 6, sleep: TURN.PRODUCER_SENDS }]);
    expect(ctrl[C.SLEEP]).toBe(TURN.IDLE); // the fake sent everything and handed back
    expect(p.unsentFrames()).toBe(0);
    sender.mode = 'handoff';
    await tick();
    p.append('four', 4);
    expect(calls).toHaveLength(2);
    expect(ctrl[C.SLEEP]).toBe(TURN.IO_THREAD_SENDS); // handed to the IO thread
    await tick();
    p.append('five', 4);
    expect(calls).toHaveLength(2);
  });

  it('calls sendDirect() only when its own swap won, with an IO thread taking the turn back meanwhile', async () => {
    // A worker plays the IO thread: it offers the turn (IO_THREAD_SENDS ->
    // IDLE), waits a moment, takes it back (IDLE -> IO_THREAD_SENDS) if the
    // producer did not take it, and then sends for a moment itself. Both
    // sides count themselves into `owners` while they send: it must never
    // reach 2. Every sendDirect() call must also find SLEEP at
    // PRODUCER_SENDS (the producer's won swap).
    const cap = 1 << 16;
    const sab = new SharedArrayBuffer(C.BYTES + cap);
    const ctrl = new Int32Array(sab, 0, C.BYTES / 4);
    ctrl[C.SLEEP] = TURN.IO_THREAD_SENDS;
    const shared = new Int32Array(new SharedArrayBuffer(12)); // [stop, owners, bad]
    const worker = new Worker(
      `const { workerData: { ctrl, shared, S, IO, IDLE } } = require('node:worker_threads');
       while (Atomics.load(shared, 0) === 0) {
         if (Atomics.compareExchange(ctrl, S, IO, IDLE) !== IO) continue;
         for (let i = 0; i < 100; i++) Atomics.load(ctrl, S); // idle for a moment
         if (Atomics.compareExchange(ctrl, S, IDLE, IO) !== IDLE) continue; // the producer took it
         if (Atomics.add(shared, 1, 1) !== 0) Atomics.add(shared, 2, 1);
         for (let i = 0; i < 100; i++) Atomics.load(ctrl, S); // sending
         if (Atomics.load(shared, 1) !== 1) Atomics.add(shared, 2, 1);
         Atomics.sub(shared, 1, 1);
       }`,
      { eval: true, workerData: { ctrl, shared, S: C.SLEEP, IO: TURN.IO_THREAD_SENDS, IDLE: TURN.IDLE } },
    );
    let bad = 0;
    let direct = 0;
    const sender: DirectSender = {
      sendDirect() {
        direct++;
        if (Atomics.load(ctrl, C.SLEEP) !== TURN.PRODUCER_SENDS) bad++;
        if (Atomics.add(shared, 1, 1) !== 0) bad++;
        for (let i = 0; i < 100; i++) Atomics.load(ctrl, C.SLEEP); // sending
        if (Atomics.load(shared, 1) !== 1) bad++;
        Atomics.sub(shared, 1, 1);
        ctrl[C.HEAD] = ctrl[C.TAIL];
        Atomics.store(ctrl, C.SLEEP, TURN.IO_THREAD_SENDS);
        return ctrl[C.TAIL];
      },
    };
    const p = new RingProducer(ctrl, new Uint8Array(sab, C.BYTES, cap), sender, LAYOUT, { maxBytes: cap, maxWrites: 1e9 }, () => {});
    try {
      await new Promise((r) => worker.once('online', r));
      // Until the hand-over happened often (a busy machine may not run the worker for a while).
      const deadline = Date.now() + 10_000;
      for (let i = 0; (i < 20_000 || direct < 500) && Date.now() < deadline; i++) {
        p.append('x', 1);
        p.publishPending();
        ctrl[C.HEAD] = ctrl[C.TAIL]; // what the IO thread sent meanwhile
        ctrl[C.SENT] = p.accepted;
      }
    } finally {
      Atomics.store(shared, 0, 1);
      await worker.terminate();
    }
    expect(bad + shared[2]).toBe(0);
    expect(direct).toBeGreaterThanOrEqual(500);
  });
});

describe('RingProducer: flush and drain targets', () => {
  it('aimAtTail() publishes and points at everything appended; reached() once HEAD and SENT both got there', async () => {
    const { p, ctrl, take } = setup(1024);
    p.append('a', 1);
    p.append('bb', 2);
    const t: Target = { head: 0, sent: 0 };
    p.aimAtTail(t);
    expect(t).toEqual({ head: 5, sent: 2 });
    expect(ctrl[C.TAIL]).toBe(5);
    expect(p.reached(t)).toBe(false);
    ctrl[C.HEAD] = 5; // bytes out, but SENT not yet
    expect(p.reached(t)).toBe(false);
    ctrl[C.HEAD] = 0;
    take();
    expect(p.reached(t)).toBe(true);
  });

  it('the drain target: the queue at most half full, by bytes and by count, and the refused frame fitting', () => {
    const { p } = setup(1024, { maxBytes: 1000, maxWrites: 10 });
    for (let i = 0; i < 9; i++) p.append(Buffer.alloc(99), 99); // 900 bytes
    expect(p.drainTargetFor(10)).toEqual({ head: 900 - 500, sent: 9 - 5 }); // half: 500 bytes of room
    expect(p.drainTargetFor(600)).toEqual({ head: 900 - (1000 - 602), sent: 4 }); // room for 602 bytes
  });

  it('targets compare modulo 2^32: across 2^31 and across 2^32', () => {
    const { p, ctrl } = setup(1024);
    for (const base of [0x7ffffff0 | 0, -16, 0x7fffffff, -1]) {
      const t: Target = { head: (base + 32) | 0, sent: (base + 3) | 0 };
      ctrl[C.HEAD] = base;
      ctrl[C.SENT] = base;
      expect(p.reached(t)).toBe(false);
      ctrl[C.HEAD] = (base + 32) | 0;
      expect(p.reached(t)).toBe(false);
      ctrl[C.SENT] = (base + 3) | 0;
      expect(p.reached(t)).toBe(true);
      ctrl[C.HEAD] = (base + 33) | 0;
      ctrl[C.SENT] = (base + 1000) | 0;
      expect(p.reached(t)).toBe(true);
    }
  });

  it('a rewind moves every pending target to the new tail and lets the owner settle them; the next frame starts at offset 0', async () => {
    const cap = 1024;
    const { p, ctrl, ring, sender, rewinds } = setup(cap);
    p.append(Buffer.alloc(100, 1), 100);
    const f1: Target = { head: 0, sent: 0 };
    const f2: Target = { head: 0, sent: 0 };
    p.aimAtTail(f1);
    p.append(Buffer.alloc(100, 2), 100);
    p.aimAtTail(f2);
    p.flushTargets.push(f1, f2);
    p.drainTarget = p.drainTargetFor(10);
    // Positions near 2^31: the new tail is the next lap of a ring whose
    // targets would read as more than 2^31 behind it.
    const next = (0x80000000 + cap) | 0;
    sender.mode = next;
    ctrl[C.SLEEP] = TURN.IDLE;
    await tick();
    p.append(Buffer.alloc(50, 3), 50); // sent directly, ring emptied and rewound
    expect(rewinds()).toBe(1);
    expect(p.tail).toBe(next);
    expect(f1.head).toBe(next);
    expect(f2.head).toBe(next);
    expect(p.drainTarget!.head).toBe(next);
    for (const t of [f1, f2, p.drainTarget!]) expect(p.reached(t)).toBe(true);
    // The producer continues from the rewound tail: ring offset 0, positions as int32.
    sender.mode = 'handoff';
    await tick();
    p.append(Buffer.alloc(7, 9), 7);
    expect(ring[0]).toBe(7);
    expect(ring[1]).toBe(9);
    expect(p.tail).toBe((next + 8) | 0);
    expect(ctrl[C.TAIL]).toBe((next + 8) | 0);
    expect(Number.isInteger(p.tail) && p.tail < 0).toBe(true);
  });

  it('a rewind with nothing pending does not call the owner', async () => {
    const { p, ctrl, sender, rewinds } = setup(1024);
    sender.mode = 4096;
    ctrl[C.SLEEP] = TURN.IDLE;
    p.append('x', 1);
    expect(p.tail).toBe(4096);
    expect(rewinds()).toBe(0);
  });

  it('armNearest() arms the nearest pending target, and disarms when it is reached already', () => {
    const { p, ctrl } = setup(1024);
    const N = LAYOUT.notify;
    expect(p.armNearest()).toBe(true); // nothing pending
    expect(ctrl[C.NOTIFY_ARMED]).toBe(N.DISARMED);
    for (let i = 0; i < 10; i++) p.append('x', 1);
    const far: Target = { head: 20, sent: 10 };
    const near: Target = { head: 6, sent: 3 };
    p.flushTargets.push(far, near);
    expect(p.armNearest()).toBe(true);
    expect([ctrl[C.NOTIFY_HEAD], ctrl[C.NOTIFY_SENT], ctrl[C.NOTIFY_ARMED]]).toEqual([6, 3, N.ARMED]);
    p.drainTarget = { head: 2, sent: 1 };
    ctrl[C.HEAD] = 1;
    expect(p.armNearest()).toBe(true);
    expect([ctrl[C.NOTIFY_HEAD], ctrl[C.NOTIFY_SENT]]).toEqual([2, 1]);
    ctrl[C.HEAD] = 2;
    ctrl[C.SENT] = 1; // the drain target is reached before the request is seen
    expect(p.armNearest()).toBe(false);
    expect(ctrl[C.NOTIFY_ARMED]).toBe(N.DISARMED);
  });
});

describe('RingProducer: construction', () => {
  it('wants a power-of-two ring at least maxBytes long; allocateRing() makes one after the control block', () => {
    const mk = (cap: number, maxBytes: number) => () =>
      new RingProducer(new Int32Array(64), new Uint8Array(cap), { sendDirect: () => 0 }, LAYOUT, { maxBytes, maxWrites: 1 }, () => {});
    expect(mk(1000, 1000)).toThrow(RangeError);
    expect(mk(512, 1000)).toThrow(RangeError);
    expect(mk(1024, 1000)).not.toThrow();
    const proto = binding().protocol;
    const { shared, ctrl, ring } = allocateRing(proto, 1000);
    expect(shared.byteLength).toBe(proto.ctrl.BYTES + 1024);
    expect(ctrl.length * 4).toBe(proto.ctrl.BYTES);
    expect([ring.byteOffset, ring.length]).toEqual([proto.ctrl.BYTES, 1024]);
  });
});
