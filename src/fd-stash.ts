/**
 * The received file descriptors an inbox holds between an FDS item (or
 * event) and the batch after it, and the closing of those nobody took.
 * Shared by the Reader's and the receiving Writer's inboxes.
 *
 * An FDS table is `[index, count, fd x count, ...]`: the descriptors of the
 * messages of the BATCH that follows it. They are the inbox's until its
 * Batch is built, then the Batch's until taken (`batch.takeFds()`); what is
 * left when the batch is released, or never delivered, is closed here and
 * counted.
 * @internal
 */
import { closeSync } from 'node:fs';
import { takeAllFds, type Batch } from './batch';

export class FdStash {
  #table: Int32Array | undefined; // the last FDS table, for the BATCH after it
  /** Descriptors closed because nobody took them. */
  closed = 0;

  /** An FDS table arrived: it belongs to the next batch. */
  keep(table: Int32Array): void {
    if (this.#table !== undefined) this.closeTable(this.#table); // its batch never came (cannot happen)
    this.#table = table;
  }

  /** The table for the batch being built, if its messages carried descriptors. */
  take(): Int32Array | undefined {
    const t = this.#table;
    this.#table = undefined;
    return t;
  }

  /** The batch is released: closes what was not taken. */
  release(batch: Batch): void {
    const left = takeAllFds(batch);
    if (left.length !== 0) this.#close(left);
  }

  /** Closes every descriptor of a table whose batch is not delivered. */
  closeTable(t: Int32Array): void {
    const fds: number[] = [];
    for (let k = 0; k < t.length; k += 2 + t[k + 1]) for (let j = 0; j < t[k + 1]; j++) fds.push(t[k + 2 + j]);
    this.#close(fds);
  }

  /** Closes the kept table, if any (its batch will not be delivered). */
  discard(): void {
    const t = this.take();
    if (t !== undefined) this.closeTable(t);
  }

  #close(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        closeSync(fd);
      } catch {
        // closed already (by a handler that took and closed it): not ours to report
      }
    }
    this.closed += fds.length;
  }
}
