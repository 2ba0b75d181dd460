/**
 * Deadlines of many calls with one timer: an indexed binary min-heap (O(log
 * n) add and remove) and a single `setTimeout` armed for the earliest one.
 * Removing the earliest does not re-arm the timer: it fires, finds nothing
 * due and re-arms, so calls that finish in time cost no timer churn.
 * @internal
 */

/** Something with a deadline in a {@link DeadlineQueue}. */
export interface Timed {
  /** Absolute deadline (performance.now() ms). */
  deadlineAt: number;
  /** Position in the heap; -1 when not queued. */
  heapIndex: number;
}

/** The longest delay setTimeout() takes as given. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class DeadlineQueue<T extends Timed> {
  readonly #heap: T[] = [];
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  readonly #onExpire: (item: T) => void;
  readonly #fire = (): void => this.#expire();

  /** @param onExpire - Called for each item whose deadline passed (already removed). */
  constructor(onExpire: (item: T) => void) {
    this.#onExpire = onExpire;
  }

  get size(): number {
    return this.#heap.length;
  }

  add(item: T): void {
    const h = this.#heap;
    item.heapIndex = h.length;
    h.push(item);
    this.#up(item.heapIndex);
    if (item.deadlineAt < this.#timerAt) this.#arm();
  }

  remove(item: T): void {
    const i = item.heapIndex;
    if (i < 0) return;
    item.heapIndex = -1;
    const h = this.#heap;
    const last = h.pop()!;
    if (i === h.length) return;
    h[i] = last;
    last.heapIndex = i;
    this.#down(i);
    this.#up(last.heapIndex);
  }

  /** Removes everything and the timer. */
  clear(): void {
    for (const it of this.#heap) it.heapIndex = -1;
    this.#heap.length = 0;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #arm(): void {
    const h = this.#heap;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (h.length === 0) return;
    const at = h[0].deadlineAt;
    this.#timerAt = at;
    // setTimeout takes at most 2^31 - 1 ms (more becomes 1 ms, with a
    // warning each time): a farther deadline (a peer may ask for one) is
    // re-armed when that fires.
    this.#timer = setTimeout(this.#fire, Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(at - performance.now()))));
    this.#timer.unref();
  }

  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const h = this.#heap;
    const now = performance.now() + 0.5;
    while (h.length !== 0 && h[0].deadlineAt <= now) {
      const it = h[0];
      this.remove(it);
      this.#onExpire(it);
    }
    if (h.length !== 0 && this.#timer === undefined) this.#arm();
  }

  #up(i: number): void {
    const h = this.#heap;
    const it = h[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p];
      if (parent.deadlineAt <= it.deadlineAt) break;
      h[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    h[i] = it;
    it.heapIndex = i;
  }

  #down(i: number): void {
    const h = this.#heap;
    const n = h.length;
    const it = h[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && h[r].deadlineAt < h[l].deadlineAt ? r : l;
      if (h[c].deadlineAt >= it.deadlineAt) break;
      h[i] = h[c];
      h[i].heapIndex = i;
      i = c;
    }
    h[i] = it;
    it.heapIndex = i;
  }
}
