/**
 * The producer half of a Writer's ring: the JavaScript side of the queue it
 * shares with the native IO thread. It encodes frames into the ring, publishes
 * the tail, hands the sending over to itself when the IO thread is idle,
 * follows a rewound ring, decides whether a frame fits, and keeps the flush()
 * and 'drain' targets and the request to be told when one is reached.
 *
 * It knows nothing of sockets, events or promises: it works against an
 * Int32Array control block, a Uint8Array ring and a {@link DirectSender}
 * (the native handle; a fake in test/ring-producer.test.ts).
 *
 * Memory: the control block (protocol.ctrl.BYTES), then the ring, whose size
 * is a power of two. A frame is `uvarint(length) payload`, written at ring
 * offset `tail & mask` and continued at offset 0 when it runs past the end
 * (its length prefix too). Positions (tail, head) and counts (frames,
 * payload bytes) are kept modulo 2^32 as int32 (`| 0`), the way the control
 * block holds them: a field that went past 2^31 as a u32 would turn from a
 * small integer into a heap number and deoptimize everything that uses it.
 * Differences are taken modulo 2^32 (`>>> 0`, or `| 0` for a signed one).
 *
 * The control block, as this side sees it (word indices from protocol.ctrl):
 *
 *   word          written by                    meaning
 *   TAIL          producer (publish); sendDirect on a rewind
 *                                               ring position after the last published frame
 *   HEAD          IO thread or sendDirect       position of the first frame not fully sent
 *   SENT          IO thread or sendDirect       frames fully sent
 *   SLEEP         both, by compare-and-swap     whose turn it is to send (protocol.sendTurn)
 *   NOTIFY_HEAD,  producer, before arming       the target head and sent count
 *   NOTIFY_SENT
 *   NOTIFY_ARMED  producer arms; either side    whether a NOTIFY event is wanted (protocol.notify)
 *                 disarms
 *
 * SLEEP (protocol.sendTurn):
 *
 *   from             to               by          when
 *   IO_THREAD_SENDS  IDLE             IO thread   connected, nothing in flight, about to wait
 *   IDLE             IO_THREAD_SENDS  IO thread   it sees a new TAIL after announcing IDLE, or wakes up
 *   IDLE             PRODUCER_SENDS   producer    after publishing a tail; only the swap's winner sends
 *   PRODUCER_SENDS   IDLE             sendDirect  everything up to TAIL sent (the ring may be rewound)
 *   PRODUCER_SENDS   IO_THREAD_SENDS  sendDirect  socket full or failed: the IO thread takes over
 *
 * NOTIFY_ARMED (protocol.notify):
 *
 *   from      to        by         when
 *   DISARMED  ARMED     producer   armNearest(): NOTIFY_HEAD/NOTIFY_SENT are written first
 *   ARMED     DISARMED  IO thread  HEAD and SENT reached both targets; it then emits event NOTIFY
 *   ARMED     DISARMED  producer   armNearest() finds the target reached already (the caller settles it)
 *
 * Acked delivery (`acked`): a frame's room is freed when the reader
 * acknowledges it, not when it is sent. Room, the 'drain' target and the
 * acknowledged() targets (`ackTargets`) are then reckoned against ACK_HEAD
 * and ACKED, armed through ACK_NOTIFY_*; flush() targets stay against HEAD
 * and SENT (NOTIFY_*). Without it both views are the same words.
 *
 * Invariants:
 * - Only the producer appends, and only the producer stores TAIL, except
 *   during its own sendDirect() call (a rewind), on its own thread.
 * - The cached head and sent count only trail the shared ones: a frame that
 *   fits by the cache fits.
 * - Everything appended is published by the end of the task that appended
 *   it (one queued microtask per burst), and at least every `publishBytes`.
 * - A rewind happens only inside sendDirect(), once everything is sent: HEAD
 *   and TAIL then jump to the returned tail, so every pending target is
 *   reached; its head is moved there (a target more than 2^31 behind would
 *   read as not reached in the 32-bit comparison).
 * @internal
 */
import { Buffer } from 'node:buffer';
import type { Protocol } from '../protocol';
import * as varint from '../varint';
import * as callerData from './caller-data';

// The imported functions as module constants: optimized code calls (and
// inlines) them without reading them off the other module's exports object
// and checking what it found on every frame.
const { putUvarint31, putUvarint31Wrapped, uvarintSize } = varint;
const { setBytes, typedArrayBuffer, typedArrayByteOffset } = callerData;

/** Sends published frames on the producer's thread: the native handle, or a fake in tests. */
export interface DirectSender {
  /**
   * Called only by the producer that swapped SLEEP from IDLE to
   * PRODUCER_SENDS. Sends the frames up to the published TAIL, then sets
   * SLEEP to IDLE (all sent) or IO_THREAD_SENDS (the IO thread takes over).
   * `frames`/`payload`: frames and payload bytes appended since the ring was
   * created (mod 2^32) up to that tail. Returns the tail to continue from:
   * the producer's own, or the rewound one when the ring was emptied and
   * moved on to the next multiple of its size.
   */
  sendDirect(frames: number, payload: number): number;
}

/** A flush() or 'drain' target: reached once HEAD and SENT are both at or past it (mod 2^32). */
export interface Target {
  head: number;
  sent: number;
}

/** The parts of the protocol the producer uses. */
export type RingLayout = Pick<Protocol, 'ctrl' | 'sendTurn' | 'notify'>;

/** The bounds of the queue. */
export interface RingLimits {
  /** Bytes of frames (length prefixes included) that may wait: maxBufferedBytes, at most the ring size. */
  maxBytes: number;
  /** Frames that may wait: maxBufferedWrites. */
  maxWrites: number;
}

/** The shared memory of a Writer: control block, then ring. */
export interface SharedRing {
  shared: ArrayBuffer;
  ctrl: Int32Array;
  ring: Uint8Array;
}

/** Allocates a control block and a ring of the smallest power of two ≥ `maxBytes`. */
export function allocateRing(layout: RingLayout, maxBytes: number): SharedRing {
  const c = layout.ctrl;
  let cap = 1;
  while (cap < maxBytes) cap *= 2;
  const shared = new ArrayBuffer(c.BYTES + cap);
  return { shared, ctrl: new Int32Array(shared, 0, c.BYTES / 4), ring: new Uint8Array(shared, c.BYTES, cap) };
}

// Publish the tail at least every this many bytes, and at the end of every
// task. Each publish costs a sendmsg and wakes the reader, so large chunks;
// capped at a quarter of maxBytes so that a small queue still streams.
const PUBLISH_BYTES = 1024 * 1024;

export class RingProducer<T extends Target = Target> {
  /**
   * Pending flush() targets, in no particular order. The owner adds and
   * removes them and settles the reached ones; the producer moves them on a
   * rewind and arms the nearest.
   */
  flushTargets: T[] = [];
  /** The pending 'drain' target (at most one), as {@link RingProducer.flushTargets}. */
  drainTarget: Target | undefined;
  /** Acked delivery: pending acknowledged() targets, as {@link RingProducer.flushTargets} (against the room words). */
  ackTargets: T[] = [];

  readonly #ctrl: Int32Array;
  readonly #ring: Uint8Array;
  readonly #ringBuf: Buffer; // the ring as a Buffer, for Buffer#write of strings
  readonly #mask: number;
  readonly #cap: number;
  readonly #maxBytes: number;
  readonly #maxWrites: number;
  readonly #publishBytes: number;
  readonly #sender: DirectSender;
  readonly #onRewound: () => void;
  // protocol.ctrl word indices and protocol.sendTurn / protocol.notify values
  readonly #iTail: number;
  readonly #iHead: number;
  readonly #iSent: number;
  readonly #iSleep: number;
  readonly #iNotifyArmed: number;
  readonly #iNotifyHead: number;
  readonly #iNotifySent: number;
  // The "sent" view (flush targets, unsent counts): HEAD/SENT/NOTIFY_*, which
  // the room words above are too unless acked.
  readonly #acked: boolean;
  readonly #iSentHead: number;
  readonly #iSentCount: number;
  readonly #iSentArmed: number;
  readonly #iSentNotifyHead: number;
  readonly #iSentNotifySent: number;
  readonly #idle: number;
  readonly #producerSends: number;
  readonly #armed: number;
  readonly #disarmed: number;

  #tail = 0; // ring position after the last frame
  #accepted = 0; // frames appended
  #payload = 0; // payload bytes appended
  #headCache = 0; // last HEAD read (only moves forward)
  #sentCache = 0; // last SENT read
  #unpublished = 0; // bytes appended since the tail was last published
  #publishQueued = false;
  readonly #publishTask = (): void => {
    this.#publishQueued = false;
    if (this.#unpublished !== 0) this.#publish();
  };

  /**
   * @param ctrl - The control block (zeroed: an empty ring at position 0).
   * @param ring - The ring; its length is a power of two ≥ `limits.maxBytes`.
   * @param sender - Sends on this thread when the IO thread is idle.
   * @param layout - Word indices and states (`binding().protocol`).
   * @param limits - The bounds of the queue.
   * @param onRewound - Called after a rewind moved pending targets (they are
   *   all reached then): the owner settles them. Not called when none is pending.
   */
  constructor(
    ctrl: Int32Array,
    ring: Uint8Array,
    sender: DirectSender,
    layout: RingLayout,
    limits: RingLimits,
    onRewound: () => void,
    acked = false,
  ) {
    const cap = ring.length;
    if (cap === 0 || (cap & (cap - 1)) !== 0 || cap < limits.maxBytes) {
      throw new RangeError(`uds-ipc: the ring size (${cap}) must be a power of two of at least maxBytes (${limits.maxBytes})`);
    }
    this.#ctrl = ctrl;
    this.#ring = ring;
    this.#ringBuf = Buffer.from(ring.buffer, ring.byteOffset, cap);
    this.#cap = cap;
    this.#mask = cap - 1;
    this.#maxBytes = limits.maxBytes;
    this.#maxWrites = limits.maxWrites;
    this.#publishBytes = Math.max(1, Math.min(PUBLISH_BYTES, Math.floor(limits.maxBytes / 4)));
    this.#sender = sender;
    this.#onRewound = onRewound;
    const c = layout.ctrl;
    this.#iTail = c.TAIL;
    this.#acked = acked;
    this.#iSentHead = c.HEAD;
    this.#iSentCount = c.SENT;
    this.#iSentArmed = c.NOTIFY_ARMED;
    this.#iSentNotifyHead = c.NOTIFY_HEAD;
    this.#iSentNotifySent = c.NOTIFY_SENT;
    this.#iHead = acked ? c.ACK_HEAD : c.HEAD;
    this.#iSent = acked ? c.ACKED : c.SENT;
    this.#iSleep = c.SLEEP;
    this.#iNotifyArmed = acked ? c.ACK_NOTIFY_ARMED : c.NOTIFY_ARMED;
    this.#iNotifyHead = acked ? c.ACK_NOTIFY_HEAD : c.NOTIFY_HEAD;
    this.#iNotifySent = acked ? c.ACK_NOTIFY_SENT : c.NOTIFY_SENT;
    this.#idle = layout.sendTurn.IDLE;
    this.#producerSends = layout.sendTurn.PRODUCER_SENDS;
    this.#armed = layout.notify.ARMED;
    this.#disarmed = layout.notify.DISARMED;
  }

  /** Ring position after the last frame appended (int32). */
  get tail(): number {
    return this.#tail;
  }

  /** Frames appended so far (mod 2^32, int32). */
  get accepted(): number {
    return this.#accepted;
  }

  /** Frames whose room is free: fully sent (SENT), or acknowledged (ACKED) when acked (mod 2^32, int32). */
  releasedFrames(): number {
    return Atomics.load(this.#ctrl, this.#iSent);
  }

  /** The ring position of the first frame whose room is not free (HEAD, or ACK_HEAD when acked). */
  roomHead(): number {
    return Atomics.load(this.#ctrl, this.#iHead);
  }

  /** Frames appended and not yet sent. */
  unsentFrames(): number {
    return (this.#accepted - Atomics.load(this.#ctrl, this.#iSentCount)) >>> 0;
  }

  /** Bytes of frames appended and not yet sent. */
  unsentBytes(): number {
    return (this.#tail - Atomics.load(this.#ctrl, this.#iSentHead)) >>> 0;
  }

  /** Acked: frames appended and not yet acknowledged (else: not yet sent). */
  unreleasedFrames(): number {
    return (this.#accepted - Atomics.load(this.#ctrl, this.#iSent)) >>> 0;
  }

  /**
   * Appends the frame of one message, `len` payload bytes (checked by the
   * caller: a real Uint8Array of that length, or a string of that many UTF-8
   * bytes; at most 1 GiB), and publishes it as the publish rule says.
   * `before(start, end)`, if given, is called with the frame's ring span once
   * it is known to fit and before anything is written or published (the
   * Writer attaches the message's descriptors there); if it throws, nothing
   * is appended.
   * @returns false, appending nothing, when the queue has no room for it.
   */
  append(data: Uint8Array | string, len: number, before?: (start: number, end: number) => void): boolean {
    const total = len + uvarintSize(len);
    // Room is checked against the cached head and sent count first; the
    // shared ones are only read when the cache says the queue might be full.
    if (!this.#fits(total) && !this.#roomAfterAll(total)) return false;
    const tail = this.#tail; // read after #roomAfterAll(): a publish may rewind the ring
    if (before !== undefined) before(tail, (tail + total) | 0);
    const ring = this.#ring;
    let pos = tail & this.#mask;
    if (pos + total <= this.#cap) {
      pos = putUvarint31(ring, pos, len);
      if (typeof data === 'string') this.#ringBuf.write(data, pos, len, 'utf8');
      else if (len > 0) setBytes.call(ring, data, pos);
    } else {
      this.#appendWrapped(pos, len, data);
    }
    this.#tail = (tail + total) | 0;
    this.#accepted = (this.#accepted + 1) | 0;
    this.#payload = (this.#payload + len) | 0;
    // The first frame of a burst goes out at once (nothing waits behind it
    // yet: no added latency), unless corked; the rest of the burst is
    // published every #publishBytes and when the task ends (one microtask
    // per burst).
    this.#unpublished += total;
    if (this.#unpublished >= this.#publishBytes) this.#publish();
    else if (!this.#publishQueued) {
      this.#publishQueued = true;
      if (!this.corked) this.#publish();
      queueMicrotask(this.#publishTask);
    }
    return true;
  }

  /**
   * Appends `frames` frames that are already encoded (each uvarint(length) +
   * payload, `payload` bytes of payload in all) back to back in
   * `src[start, end)`, with one copy, and publishes as append() does (one
   * burst). The caller vouches for the encoding: nothing here parses it.
   * @returns false, appending nothing, when the queue has no room for all of them.
   */
  appendFramed(src: Uint8Array, start: number, end: number, frames: number, payload: number): boolean {
    const total = end - start;
    if (!this.#fitsMany(total, frames) && !this.#roomAfterAll(total, frames)) return false;
    const tail = this.#tail; // read after #roomAfterAll(): a publish may rewind the ring
    const ring = this.#ring;
    const pos = tail & this.#mask;
    const first = Math.min(total, this.#cap - pos);
    setBytes.call(ring, new Uint8Array(src.buffer, src.byteOffset + start, first), pos);
    if (first < total) setBytes.call(ring, new Uint8Array(src.buffer, src.byteOffset + start + first, total - first), 0);
    this.#appended(total, frames, payload);
    return true;
  }

  // As at the end of append(), which keeps its own copy: sharing this
  // helper measured a few per cent slower on the one-way 64 B path (8
  // interleaved runs, medians 18.5 M vs 19.2 M msgs/s, within noise but
  // lower in 10 of 14 pairs).
  #appended(total: number, frames: number, payload: number): void {
    this.#tail = (this.#tail + total) | 0;
    this.#accepted = (this.#accepted + frames) | 0;
    this.#payload = (this.#payload + payload) | 0;
    this.#unpublished += total;
    if (this.#unpublished >= this.#publishBytes) this.#publish();
    else if (!this.#publishQueued) {
      this.#publishQueued = true;
      if (!this.corked) this.#publish();
      queueMicrotask(this.#publishTask);
    }
  }

  /**
   * Room for one frame of `len` payload bytes that the caller encodes in
   * place (RpcClient's requests, without a copy of their own): writes the
   * frame's length prefix and returns the offset in {@link RingProducer.bytes}
   * where its `len` payload bytes go. The caller writes exactly those and
   * calls {@link RingProducer.commit} before anything else is appended.
   * -1, reserving nothing, when the queue has no room for it or the frame
   * would run past the end of the ring (the caller then appends it).
   */
  reserve(len: number): number {
    const total = len + uvarintSize(len);
    if (!this.#fits(total) && !this.#roomAfterAll(total)) return -1;
    const pos = this.#tail & this.#mask; // read after #roomAfterAll(): a publish may rewind the ring
    if (pos + total > this.#cap) return -1;
    return putUvarint31(this.#ring, pos, len);
  }

  /** Appends the frame of `len` payload bytes written in place after {@link RingProducer.reserve}, and publishes as append() does. */
  commit(len: number): void {
    this.#appended(len + uvarintSize(len), 1, len);
  }

  /** The ring's memory, as a Buffer (for {@link RingProducer.reserve}). */
  get bytes(): Buffer {
    return this.#ringBuf;
  }

  /**
   * While true, append() does not publish the first frame of a burst at
   * once: the caller appends a group of frames and then calls
   * {@link RingProducer.publishPending}, so that the group goes out in one
   * send. What is appended is still published every #publishBytes and at
   * the end of the task, corked or not.
   */
  corked = false;

  /** Publishes what was appended since the last publish, if anything. */
  publishPending(): void {
    if (this.#unpublished !== 0) this.#publish();
  }

  /** Points `t` at everything appended so far (publishing it first): the target of a flush(). */
  aimAtTail(t: Target): void {
    if (this.#unpublished !== 0) this.#publish();
    t.head = this.#tail;
    t.sent = this.#accepted;
  }

  /**
   * The 'drain' target after a message of `len` bytes was refused: the queue
   * at most half full, by bytes and by count, and that message fitting.
   */
  drainTargetFor(len: number): Target {
    const total = len + uvarintSize(len);
    const room = Math.min(Math.floor(this.#maxBytes / 2), this.#maxBytes - total);
    return {
      head: (this.#tail - room) | 0,
      sent: (this.#accepted - Math.floor(this.#maxWrites / 2)) | 0,
    };
  }

  /** Whether the room words (HEAD and SENT; ACK_HEAD and ACKED when acked) both reached `t` (modulo 2^32): drain and acknowledged() targets. */
  reached(t: Target): boolean {
    const ctrl = this.#ctrl;
    return ((Atomics.load(ctrl, this.#iHead) - t.head) | 0) >= 0 && ((Atomics.load(ctrl, this.#iSent) - t.sent) | 0) >= 0;
  }

  /** Whether HEAD and SENT both reached `t` (modulo 2^32): flush() targets. */
  reachedSent(t: Target): boolean {
    const ctrl = this.#ctrl;
    return ((Atomics.load(ctrl, this.#iSentHead) - t.head) | 0) >= 0 && ((Atomics.load(ctrl, this.#iSentCount) - t.sent) | 0) >= 0;
  }

  /**
   * Asks the IO thread for a NOTIFY event once the nearest pending target
   * (flush targets and the drain target) is reached.
   * @returns true when armed, or when nothing is pending; false when that
   *   target turned out reached already (disarmed again): the caller settles
   *   the reached targets and calls again.
   */
  armNearest(): boolean {
    if (!this.#acked) {
      return this.#armOne(this.drainTarget, this.flushTargets, this.#iHead, this.#iSent, this.#iNotifyArmed, this.#iNotifyHead, this.#iNotifySent);
    }
    // Two requests: the room view (drain, acknowledged()) and the sent view (flush()).
    return (
      this.#armOne(this.drainTarget, this.ackTargets, this.#iHead, this.#iSent, this.#iNotifyArmed, this.#iNotifyHead, this.#iNotifySent) &&
      this.#armOne(undefined, this.flushTargets, this.#iSentHead, this.#iSentCount, this.#iSentArmed, this.#iSentNotifyHead, this.#iSentNotifySent)
    );
  }

  #armOne(first: Target | undefined, list: readonly Target[], iHead: number, iSent: number, iArmed: number, iNH: number, iNS: number): boolean {
    const ctrl = this.#ctrl;
    const head = Atomics.load(ctrl, iHead);
    let best: Target | undefined = first;
    for (const t of list) {
      if (!best || ((t.head - head) | 0) < ((best.head - head) | 0)) best = t;
    }
    if (!best) return true;
    // Atomic stores: the IO thread may still be reading the previous targets.
    Atomics.store(ctrl, iNH, best.head);
    Atomics.store(ctrl, iNS, best.sent);
    Atomics.store(ctrl, iArmed, this.#armed);
    // The IO thread may have passed the target before it saw the request.
    if (((Atomics.load(ctrl, iHead) - best.head) | 0) < 0 || ((Atomics.load(ctrl, iSent) - best.sent) | 0) < 0) return true;
    Atomics.store(ctrl, iArmed, this.#disarmed);
    return false;
  }

  // Whether a frame of `total` bytes fits, by the cached head and sent count.
  #fits(total: number): boolean {
    return (
      ((this.#tail - this.#headCache) >>> 0) + total <= this.#maxBytes &&
      ((this.#accepted - this.#sentCache) >>> 0) < this.#maxWrites
    );
  }

  // Whether `frames` frames of `total` bytes in all fit, by the cached head and sent count.
  #fitsMany(total: number, frames: number): boolean {
    return (
      ((this.#tail - this.#headCache) >>> 0) + total <= this.#maxBytes &&
      ((this.#accepted - this.#sentCache) >>> 0) + frames <= this.#maxWrites
    );
  }

  // The cached head/sent say the queue may be full. Looks at the shared
  // values; if the queue is still full, publishes what waits (a direct send
  // may empty it at once, e.g. when maxWrites small frames fill it before a
  // publish chunk does) and looks again.
  #roomAfterAll(total: number, frames = 1): boolean {
    for (;;) {
      this.#headCache = Atomics.load(this.#ctrl, this.#iHead);
      this.#sentCache = Atomics.load(this.#ctrl, this.#iSent);
      if (this.#fitsMany(total, frames)) return true;
      if (this.#unpublished === 0) return false;
      this.#publish();
    }
  }

  // Makes every appended frame visible to the IO thread, or sends it from
  // here when the IO thread is idle: cheaper than waking it (sendDirect hands
  // back if the socket fills up). The counts spare it walking every frame
  // header of a send that empties the ring, which may also rewind the ring.
  #publish(): void {
    const ctrl = this.#ctrl;
    this.#unpublished = 0;
    Atomics.store(ctrl, this.#iTail, this.#tail);
    const idle = this.#idle;
    if (Atomics.load(ctrl, this.#iSleep) === idle && Atomics.compareExchange(ctrl, this.#iSleep, idle, this.#producerSends) === idle) {
      const tail = this.#sender.sendDirect(this.#accepted, this.#payload);
      if (typeof tail === 'number' && tail !== this.#tail) this.#rewound(tail);
    }
  }

  // The ring was rewound: everything up to the old tail is sent, and head and
  // tail moved on to `tail`. Every pending target is reached: move it there
  // and let the owner settle it.
  #rewound(tail: number): void {
    this.#tail = this.#headCache = tail;
    if (this.flushTargets.length === 0 && this.drainTarget === undefined) return;
    for (const t of this.flushTargets) t.head = tail;
    if (this.drainTarget !== undefined) this.drainTarget.head = tail;
    this.#onRewound();
  }

  // A frame that runs past the end of the ring: the length prefix byte by
  // byte (it may wrap too), then the payload in at most two copies straight
  // from the caller's memory, never through a temporary.
  #appendWrapped(pos: number, len: number, data: Uint8Array | string): void {
    const ring = this.#ring;
    const p = putUvarint31Wrapped(ring, pos, this.#mask, len);
    if (len === 0) return;
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const first = Math.min(len, this.#cap - p);
    if (first === len) {
      setBytes.call(ring, bytes, p);
      return;
    }
    // Two views of the real bytes, built from the internal buffer and offset
    // (not the caller's `subarray()`, `buffer` or `byteOffset`).
    const buf = typedArrayBuffer.call(bytes);
    const off = typedArrayByteOffset.call(bytes);
    setBytes.call(ring, new Uint8Array(buf, off, first), p);
    setBytes.call(ring, new Uint8Array(buf, off + first, len - first), 0);
  }
}
