/**
 * A Reader's inbox: the items its IO thread hands over, decoded one at a
 * time, the {@link Batch} objects built from them, and the acknowledgement
 * and release of a batch's memory once the handler is done with it.
 *
 * Items come from the handle's `take()` (the native dequeue) as one flat array, `protocol.item.SLOTS`
 * values per item, `[tag, connId, a, b, c]` (native/core/protocol.h):
 *
 *   tag       a                          b                           c
 *   BATCH     region (ArrayBuffer)       offsets: see below          payload bytes
 *   OPEN      {pid, uid, gid}
 *   CLOSE     error object, or undefined for a clean end
 *   ERROR     error object
 *   STOPPED   (stop finished: every connection closed, everything received handed over)
 *   REJECTED  {pid, uid, gid} of a peer refused by allowUids/allowGids
 *   DRAINED   bytes of replies discarded by replyTimeoutMs (0: the reply queue emptied)
 *   FDS       Int32Array [index, count, fd x count, ...]: the descriptors of the BATCH that follows
 *   CREDS     Int32Array [pid, uid, gid] per message of the (datagram) BATCH that follows
 *   SESSION   writer session (32 hex digits), or undefined for a plain writer (acked reader)
 *   SEQ       first sequence number, redelivered count: of the (acked) BATCH that follows
 *
 * FDS items never reach the caller: next() keeps their table for the batch
 * after them (src/fd-stash.ts); done() and discard() close what nobody took.
 *
 * An offsets table holds two u32 per message, its start and end in the
 * region. A small batch is copied into one V8-owned ArrayBuffer with its
 * table in front (`[u32 offsets | bytes]`, offsets counted from the start of
 * that buffer), and `b` is the number of u32 entries of the table; a large
 * batch's region is external memory on the receive slab and `b` is the table
 * itself, a Uint32Array with a buffer of its own.
 *
 * Memory: a batch holds the bytes of its region (without a small batch's
 * table) against its connection's maxPendingBytes. When the handler is done
 * the inbox acknowledges them (`ack`) and, unless the batch was retained,
 * hands the region and a large batch's table back with the ack: they are
 * detached (every view of them becomes empty) and their memory is reused.
 * After the Reader stopped (no source), they are released directly.
 * @internal
 */
import { Batch, batchMemory, batchOffsets, isRetained, type Connection } from '../batch';
import { FdStash } from '../fd-stash';
import { fromNative, type IpcError } from '../errors';
import type { Protocol } from '../protocol';
import { withTaken } from '../taken';

/** The native side of an inbox: the ReaderHandle (a fake in tests). */
export interface ItemSource {
  /**
   * Takes every item ready, as a flat array (empty when none); once
   * takeWords() was called, a lone small batch may come as its region
   * alone, the rest of its item in the take words.
   */
  take(): unknown[] | ArrayBuffer;
  /** [connId, offsets entries, payload bytes] of a batch take() returned alone. */
  takeWords?(): Float64Array;
  /** Gives `bytes` back to the connection's budget; `region` and `table`, when given, are detached and reused. */
  ack(connId: number, bytes: number, region?: ArrayBuffer, table?: ArrayBuffer): void;
}

/** A peer's credentials, as an OPEN or REJECTED item carries them. */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** The tag handleAhead() leaves on an item it handled: next() skips it. */
const HANDLED = -2;

export class Inbox {
  #source: ItemSource | undefined;
  readonly #release: (memory: ArrayBuffer) => void;
  readonly #slots: number;
  readonly #batchTag: number;
  readonly #fdsTag: number;
  readonly #fds = new FdStash(); // received descriptors, until their batch takes them
  readonly #credsTag: number;
  #creds: Int32Array | undefined; // a CREDS item's table, for the BATCH after it
  readonly #seqTag: number;
  #seqFirst = 0; // a SEQ item's first sequence number, for the BATCH after it (0: none)
  #seqRedelivered = 0;
  #words: Float64Array | undefined; // the source's take words
  #items: unknown[] = []; // items taken, not yet all handled
  // The BATCH item of a region take() returned alone, its other slots in the take words.
  readonly #loneItem = (region: ArrayBuffer): unknown[] => {
    const w = this.#words!;
    return [this.#batchTag, w[0], region, w[1], w[2]];
  };
  #next = 0; // index of the next item in #items
  #at = 0; // index of the current item (the one next() returned)

  /**
   * @param item - Tags and layout of the items (`binding().protocol.item`).
   * @param release - Detaches a region or table and lets its memory be reused (`binding().release`).
   */
  constructor(item: Protocol['item'], release: (memory: ArrayBuffer) => void) {
    this.#slots = item.SLOTS;
    this.#batchTag = item.BATCH;
    this.#fdsTag = item.FDS;
    this.#credsTag = item.CREDS;
    this.#seqTag = item.SEQ;
    this.#release = release;
  }

  /** From now on items come from `source`, and acknowledgements go to it. */
  attach(source: ItemSource): void {
    this.#source = source;
    this.#words = source.takeWords?.();
  }

  /**
   * Takes the items the IO thread has ready (`given`: what the source's
   * take() returned, already called by the addon). False when there were none.
   */
  take(given?: unknown[] | ArrayBuffer): boolean {
    const s = this.#source;
    if (!s) return false;
    const list = withTaken(this.#items, this.#next, given ?? s.take(), this.#slots, this.#loneItem);
    if (list === undefined) return false;
    if (list !== this.#items) {
      this.#items = list;
      this.#next = 0;
    }
    return true;
  }

  /**
   * Calls `fn(connId, dropped)` for each item with tag `tag` not yet handled,
   * and has next() skip them: for the items that may not wait behind a busy
   * handler (DRAINED: a handler awaiting connection.send() waits for it).
   */
  handleAhead(tag: number, fn: (connId: number, dropped: number) => void): void {
    const q = this.#items;
    for (let i = this.#next; i < q.length; i += this.#slots) {
      if (q[i] !== tag) continue;
      q[i] = HANDLED;
      fn(q[i + 1] as number, q[i + 2] as number);
    }
  }

  /** Whether every item taken so far was handled (next() would return -1). */
  idle(): boolean {
    return this.#next >= this.#items.length;
  }

  /** The connection id of the lone batch take() returned as its region alone (read before loneBatch()). */
  loneConnId(): number {
    return this.#words![0];
  }

  /**
   * The lone small batch that the source's take() returned as its region
   * alone (src/binding.ts), as a Batch from `conn`, without going through
   * the item list: for an idle() inbox only (nothing taken before it waits).
   * Messages that come one at a time reach their handler this way.
   */
  loneBatch(region: ArrayBuffer, conn: Connection): Batch {
    const w = this.#words!;
    const offsets = new Uint32Array(region, 0, w[1]);
    const creds = this.#creds;
    this.#creds = undefined;
    const first = this.#seqFirst;
    this.#seqFirst = 0;
    return new Batch(conn, region, offsets, w[2], this.#fds.take(), creds, first, this.#seqRedelivered);
  }

  /** Moves on to the next item and returns its tag (a `protocol.item` value); -1 when none is left. */
  next(): number {
    const q = this.#items;
    for (;;) {
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
      // Items that only set state for the next BATCH, or were handled ahead:
      // on to the next (a loop: many in a row must not grow the stack).
      if (tag === HANDLED) continue;
      if (tag === this.#fdsTag) {
        this.#fds.keep(q[i + 2] as Int32Array);
        q[i + 2] = undefined;
        continue;
      }
      if (tag === this.#credsTag) {
        this.#creds = q[i + 2] as Int32Array;
        continue;
      }
      if (tag === this.#seqTag) {
        this.#seqFirst = q[i + 2] as number;
        this.#seqRedelivered = q[i + 3] as number;
        continue;
      }
      return tag;
    }
  }

  /** The current item's connection id (0 for a peer refused before it got one, or the listening socket). */
  connId(): number {
    return this.#items[this.#at + 1] as number;
  }

  /** The current OPEN or REJECTED item's peer credentials. */
  peer(): PeerCredentials {
    return this.#items[this.#at + 2] as PeerCredentials;
  }

  /** The current SESSION item's writer session (32 hex digits), or undefined for a plain writer. */
  session(): string | undefined {
    return this.#items[this.#at + 2] as string | undefined;
  }

  /** The current DRAINED item's bytes discarded by the reply timeout (0: everything was sent). */
  dropped(): number {
    return this.#items[this.#at + 2] as number;
  }

  /** The current CLOSE or ERROR item's error as an IpcError; undefined for a clean end of a connection. */
  error(): IpcError | undefined {
    const e = this.#items[this.#at + 2];
    return e === undefined ? undefined : (fromNative(Object.assign(new Error(), e as object)) as IpcError);
  }

  /** The current BATCH item as a Batch from `conn`: its memory is the Batch's from now on. */
  batch(conn: Connection): Batch {
    const q = this.#items;
    const i = this.#at;
    const region = q[i + 2] as ArrayBuffer;
    const o = q[i + 3] as Uint32Array | number;
    const offsets = typeof o === 'number' ? new Uint32Array(region, 0, o) : o;
    q[i + 2] = q[i + 3] = undefined; // let the slab go once the batch is done
    const creds = this.#creds;
    this.#creds = undefined;
    const first = this.#seqFirst;
    this.#seqFirst = 0;
    return new Batch(conn, region, offsets, q[i + 4] as number, this.#fds.take(), creds, first, this.#seqRedelivered);
  }

  /** Descriptors closed because no handler took them (metrics().fdsClosedUnclaimed). */
  get closedFds(): number {
    return this.#fds.closed;
  }

  /** The handler is done with `batch`: acknowledge its bytes and release its memory unless it was retained. */
  /** Closes (and counts) the descriptors of `batch` nobody took, without releasing it. */
  closeUntakenFds(batch: Batch): void {
    this.#fds.release(batch);
  }

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
      if (retained) s.ack(batch.connection.id, held);
      else s.ack(batch.connection.id, held, region, table);
    } else if (!retained) {
      // stopped meanwhile: still release it
      this.#release(region);
      if (table) this.#release(table);
    }
  }

  /**
   * The Reader stopped: releases the memory of every batch not handed out
   * yet, forgets every item and detaches from the source. Returns how many
   * messages those batches held.
   */
  discard(): number {
    let discarded = 0;
    const q = this.#items;
    this.#fds.discard();
    for (let i = this.#next; i < q.length; i += this.#slots) {
      if (q[i] === this.#fdsTag) this.#fds.closeTable(q[i + 2] as Int32Array);
      if (q[i] !== this.#batchTag) continue;
      const o = q[i + 3] as Uint32Array | number;
      discarded += (typeof o === 'number' ? o : o.length) >>> 1;
      this.#release(q[i + 2] as ArrayBuffer);
      if (typeof o !== 'number') this.#release(o.buffer as ArrayBuffer);
    }
    this.#items = [];
    this.#next = 0;
    this.#source = undefined;
    return discarded;
  }
}
