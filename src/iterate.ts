/**
 * The async iterator of a handler-less Reader (`for await (const batch of
 * reader)`).
 *
 * It plugs into the Reader as its handler: `deliver(batch)` returns a promise
 * that settles only when the consumer asks for the batch after it. The Reader
 * treats that promise exactly like an async handler's (the next batch waits,
 * and the connection's pending bytes are acknowledged when it settles), so
 * iterating has the same backpressure as a handler.
 * @internal
 */
import { IpcError } from './errors';
import type { Batch } from './batch';

export class BatchChannel {
  // A batch delivered but not yet yielded (at most one: the Reader waits for
  // its promise before delivering the next), and the function that settles it.
  #batch: Batch | undefined;
  #release: (() => void) | undefined;
  // Settles the batch the consumer holds now, when it asks for the next one.
  #held: (() => void) | undefined;
  #heldBatch: Batch | undefined; // that batch
  #waiter: ((r: IteratorResult<Batch, undefined>) => void) | undefined;
  #ended = false;
  #iterating = false;

  /** The Reader's handler: hand `batch` to the consumer; settles when the consumer is done with it. */
  deliver(batch: Batch): Promise<void> {
    return new Promise<void>((resolve) => {
      const w = this.#waiter;
      if (w) {
        this.#waiter = undefined;
        this.#held = resolve;
        this.#heldBatch = batch;
        w({ done: false, value: batch });
      } else {
        this.#batch = batch;
        this.#release = resolve;
      }
    });
  }

  /** The Reader stopped: after the batch still waiting (if any), iteration is done. */
  end(): void {
    this.#ended = true;
    const w = this.#waiter;
    if (w && !this.#batch) {
      this.#waiter = undefined;
      w({ done: true, value: undefined });
    }
  }

  /**
   * A new iterator; `stop` is called (and awaited) when the consumer leaves
   * the loop early, then `drop` with the batch it held then (not acknowledged:
   * its descriptors nobody took are closed).
   */
  iterate(stop: () => Promise<unknown>, drop: (held: Batch) => void = () => {}): AsyncIterableIterator<Batch> {
    if (this.#iterating && !this.#ended) {
      throw new IpcError('ERR_INVALID_STATE', 'This Reader is already being iterated; a Reader has one consumer at a time');
    }
    this.#iterating = true;
    let closed = false;
    let chain: Promise<unknown> = Promise.resolve();
    const next = (): Promise<IteratorResult<Batch, undefined>> => {
      if (closed) return Promise.resolve({ done: true, value: undefined });
      // Asking for the next batch is what acknowledges the previous one.
      const held = this.#held;
      this.#held = undefined;
      this.#heldBatch = undefined;
      held?.();
      const b = this.#batch;
      if (b) {
        this.#batch = undefined;
        this.#held = this.#release;
        this.#heldBatch = b;
        this.#release = undefined;
        return Promise.resolve({ done: false, value: b });
      }
      if (this.#ended) return Promise.resolve({ done: true, value: undefined });
      return new Promise((resolve) => {
        this.#waiter = resolve;
      });
    };
    const it: AsyncIterableIterator<Batch> = {
      // Calls are serialised, so next() without awaiting the previous one is safe.
      next: () => {
        const p = chain.then(next);
        chain = p.then(
          () => undefined,
          () => undefined,
        );
        return p;
      },
      return: async (): Promise<IteratorResult<Batch, undefined>> => {
        if (!closed) {
          closed = true;
          this.#iterating = false;
          const w = this.#waiter;
          this.#waiter = undefined;
          w?.({ done: true, value: undefined });
          // Leaving the loop ends the consumer: stop the Reader at once. The
          // batch still held is not acknowledged, so nothing more is delivered;
          // what was not yielded is counted in metrics().discarded.
          await stop();
          const b = this.#heldBatch;
          this.#heldBatch = undefined;
          if (b) drop(b);
        }
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }
}
