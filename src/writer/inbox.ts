/**
 * A receiving Writer's inbox: the events its IO thread hands over (the
 * handle's `take()`), decoded in order, the {@link Batch} objects built from
 * its BATCH events, and the acknowledgement and release of a batch's memory
 * once onMessage is done with it. The writer-side twin of src/reader/inbox.ts,
 * for the writer's event layout: `protocol.event.SLOTS` values per event,
 * `[tag, a, b, c]` (native/core/protocol.h):
 *
 *   tag       a                          b                           c
 *   BATCH     region (ArrayBuffer)       offsets: entries or table   payload bytes
 *   CONNECT   {pid, uid, gid}            connection id (1-based)
 *   FDS       Int32Array [index, count, fd x count, ...]: descriptors of the BATCH after it
 *             (kept for it by next(): see src/fd-stash.ts)
 *   (others as the one-way Writer reads them)
 *
 * A small batch is one V8-owned ArrayBuffer `[u32 offsets | bytes]` and `b`
 * is the number of u32 entries of its table; a large batch's region is
 * external memory on the receive slab and `b` its table, a Uint32Array with
 * a buffer of its own. Acks are global (not per connection): the engine
 * releases batches in the order it handed them over, and this inbox acks
 * them in that order, one batch at a time.
 * @internal
 */
import { Batch, batchMemory, batchOffsets, isRetained, type Connection } from '../batch';
import { FdStash } from '../fd-stash';
import type { NativeWriterHandle } from '../binding';
import type { Protocol } from '../protocol';
import { withTaken } from '../taken';

/**
 * The WriterHandle as a receiving Writer uses it.
 * TODO(lead): `ack` belongs in src/binding.ts's NativeWriterHandle.
 */
export interface ReceivingWriterHandle extends NativeWriterHandle {
  /** `bytes` (batch lengths) are done with; `region` and `table`, when given, are detached and reused. */
  ack(bytes: number, region?: ArrayBuffer, table?: ArrayBuffer): void;
}

/** What the inbox needs of the handle (a fake in tests). */
export interface EventSource {
  /** Every event ready (empty when none); once takeWords() was called, a lone small batch may come as its region alone. */
  take(): unknown[] | ArrayBuffer;
  /** [0, offsets entries, payload bytes] of a batch take() returned alone. */
  takeWords?(): Float64Array;
  ack(bytes: number, region?: ArrayBuffer, table?: ArrayBuffer): void;
}

export class WriterInbox {
  #source: EventSource | undefined;
  readonly #release: (memory: ArrayBuffer) => void;
  readonly #slots: number;
  readonly #batchTag: number;
  readonly #fdsTag: number;
  readonly #fds = new FdStash(); // received descriptors, until their batch takes them
  readonly #words: Float64Array | undefined; // the source's take words
  #items: unknown[] = []; // events taken, not yet all handled
  // The BATCH event of a region take() returned alone, its other slots in the take words.
  readonly #loneEvent = (region: ArrayBuffer): unknown[] => {
    const w = this.#words!;
    return [this.#batchTag, region, w[1], w[2]];
  };
  #next = 0; // index of the next event in #items
  #at = 0; // index of the current event (the one next() returned)

  /**
   * @param event - Tags and layout of the events (`binding().protocol.event`).
   * @param release - Detaches a region or table and lets its memory be reused (`binding().release`).
   */
  constructor(event: Protocol['event'], source: EventSource, release: (memory: ArrayBuffer) => void) {
    this.#slots = event.SLOTS;
    this.#batchTag = event.BATCH;
    this.#fdsTag = event.FDS;
    this.#source = source;
    this.#words = source.takeWords?.();
    this.#release = release;
  }

  /**
   * Takes the events the IO thread has ready (`given`: what the source's
   * take() returned, already called by the addon). False when there were
   * none (or the source is gone).
   */
  take(given?: unknown[] | ArrayBuffer): boolean {
    const s = this.#source;
    if (!s) return false;
    const list = withTaken(this.#items, this.#next, given ?? s.take(), this.#slots, this.#loneEvent);
    if (list === undefined) return false;
    if (list !== this.#items) {
      this.#items = list;
      this.#next = 0;
    }
    return true;
  }

  /** Whether every event taken so far was handled (next() would return -1). */
  idle(): boolean {
    return this.#next >= this.#items.length;
  }

  /**
   * The lone small batch that the source's take() returned as its region
   * alone (src/binding.ts), as a Batch from `conn`, without going through
   * the event list: for an idle() inbox only (nothing taken before it waits).
   */
  loneBatch(region: ArrayBuffer, conn: Connection): Batch {
    const w = this.#words!;
    return new Batch(conn, region, new Uint32Array(region, 0, w[1]), w[2], this.#fds.take());
  }

  /** Moves on to the next event and returns its tag; -1 when none is left. */
  next(): number {
    const q = this.#items;
    const i = this.#next;
    if (i >= q.length) {
      if (q.length !== 0) {
        this.#items = [];
        this.#next = 0;
      }
      return -1;
    }
    this.#at = i;
    this.#next = i + this.#slots;
    const tag = q[i] as number;
    if (tag === this.#fdsTag) {
      this.#fds.keep(q[i + 1] as Int32Array);
      q[i + 1] = undefined;
      return this.next();
    }
    return tag;
  }

  /** Descriptors closed because onMessage did not take them (metrics().fdsClosedUnclaimed). */
  get closedFds(): number {
    return this.#fds.closed;
  }

  /** Slot a, b or c of the current event. */
  a(): unknown {
    return this.#items[this.#at + 1];
  }
  b(): unknown {
    return this.#items[this.#at + 2];
  }
  c(): unknown {
    return this.#items[this.#at + 3];
  }

  /** The current BATCH event as a Batch from `conn`: its memory is the Batch's from now on. */
  batch(conn: Connection): Batch {
    const q = this.#items;
    const i = this.#at;
    const region = q[i + 1] as ArrayBuffer;
    const o = q[i + 2] as Uint32Array | number;
    const offsets = typeof o === 'number' ? new Uint32Array(region, 0, o) : o;
    q[i + 1] = q[i + 2] = undefined; // let the slab go once the batch is done
    return new Batch(conn, region, offsets, q[i + 3] as number, this.#fds.take());
  }

  /** onMessage is done with `batch`: acknowledge its bytes and release its memory unless it was retained. */
  done(batch: Batch): void {
    this.#fds.release(batch);
    const region = batchMemory(batch);
    const offsets = batchOffsets(batch);
    // A small batch's table is at the start of its region; a large batch's has a buffer of its own.
    const small = offsets.buffer === region;
    const table = small ? undefined : (offsets.buffer as ArrayBuffer);
    const held = small ? region.byteLength - offsets.byteLength : region.byteLength;
    const retained = isRetained(batch);
    const s = this.#source;
    if (s) {
      if (retained) s.ack(held);
      else s.ack(held, region, table);
    } else if (!retained) {
      // stopped meanwhile: still release it
      this.#release(region);
      if (table) this.#release(table);
    }
  }

  /** The current BATCH event is not delivered (a forced stop): release its memory. Returns its messages. */
  drop(): number {
    this.#fds.discard();
    const q = this.#items;
    const i = this.#at;
    const o = q[i + 2] as Uint32Array | number;
    if (o === undefined) return 0;
    const region = q[i + 1] as ArrayBuffer;
    q[i + 1] = q[i + 2] = undefined;
    const table = typeof o === 'number' ? undefined : (o.buffer as ArrayBuffer);
    // Acked too while the engine runs, so that its budget is not left short.
    const held = typeof o === 'number' ? region.byteLength - o * 4 : region.byteLength;
    if (this.#source) this.#source.ack(held, region, table);
    else {
      this.#release(region);
      if (table) this.#release(table);
    }
    return (typeof o === 'number' ? o : o.length) >>> 1;
  }

  /**
   * The Writer stopped: releases the memory of every batch not handed out
   * yet, forgets every event and detaches from the source. Returns how many
   * messages those batches held.
   */
  discard(): number {
    let discarded = 0;
    const q = this.#items;
    this.#fds.discard();
    for (let i = this.#next; i < q.length; i += this.#slots) {
      if (q[i] === this.#fdsTag) this.#fds.closeTable(q[i + 1] as Int32Array);
      if (q[i] !== this.#batchTag) continue;
      const o = q[i + 2] as Uint32Array | number;
      if (o === undefined) continue;
      discarded += (typeof o === 'number' ? o : o.length) >>> 1;
      this.#release(q[i + 1] as ArrayBuffer);
      if (typeof o !== 'number') this.#release(o.buffer as ArrayBuffer);
    }
    this.#items = [];
    this.#next = 0;
    this.#source = undefined;
    return discarded;
  }

  /** Whether events are waiting to be handled. */
  get pending(): boolean {
    return this.#next < this.#items.length;
  }
}
