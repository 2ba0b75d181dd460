/**
 * File descriptors sent with a Writer's messages (`write(data, { fds })`):
 * checking what the caller passed, and counting the duplicates the native
 * side holds for messages not yet fully sent (`maxBufferedFds`).
 *
 * The native handle dups each descriptor when the message is queued
 * (`attachFds()`, F_DUPFD_CLOEXEC) and closes the dups once the message is
 * fully sent. The ledger here mirrors that count without asking the native
 * side: each message with descriptors is recorded with its frame sequence
 * number (the ring's frames appended after it), and its dups count as held
 * until the ring's SENT word passes that number.
 * @internal
 */
import { closeSync } from 'node:fs';
import { binding } from '../binding';
import { fromNative, invalidArg, IpcError, outOfRange } from '../errors';
import { MAX_FDS_PER_MESSAGE } from '../options';

/** What `fds` may hold: a descriptor number, or an object with an integer `fd` (e.g. `fs.promises.FileHandle`). */
export type FdLike = number | { readonly fd: number };

/** Options of `write()` (and, with `signal`, of `send()`). */
export interface WriteOptions {
  /**
   * File descriptors to send with this message (SCM_RIGHTS): numbers, or
   * objects with an integer `fd` property such as `fs.promises.FileHandle`.
   * They are duplicated when the message is queued, so the caller may close
   * its own as soon as `write()` returns (for `send()`: once its promise
   * resolves). At most 253 (the kernel's `SCM_MAX_FD`).
   */
  fds?: readonly FdLike[];
}

const MAX_FD = 2 ** 31 - 1;

/**
 * The `fds` of write()/send() options as an Int32Array, or undefined when
 * there are none. Throws TypeError `ERR_INVALID_ARG_TYPE` (not an array, an
 * element neither an integer nor an object with an integer `fd`),
 * `ERR_INVALID_ARG_VALUE` (a negative descriptor, e.g. a closed FileHandle's
 * -1) and RangeError `ERR_OUT_OF_RANGE` (more than 253).
 */
export function resolveFds(options: unknown): Int32Array | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== 'object') {
    throw invalidArg('ERR_INVALID_ARG_TYPE', `The "options" argument must be an object. Received ${options === null ? 'null' : typeof options}`);
  }
  const fds = (options as WriteOptions).fds;
  if (fds === undefined) return undefined;
  if (!Array.isArray(fds)) {
    throw invalidArg('ERR_INVALID_ARG_TYPE', `The "fds" option must be an array of file descriptors. Received ${fds === null ? 'null' : typeof fds}`);
  }
  if (fds.length === 0) return undefined;
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw outOfRange('fds.length', `at most ${MAX_FDS_PER_MESSAGE} (SCM_MAX_FD) per message`, fds.length);
  }
  const out = new Int32Array(fds.length);
  for (let i = 0; i < fds.length; i++) {
    const x: unknown = fds[i];
    const fd = typeof x === 'number' ? x : x !== null && typeof x === 'object' ? (x as { fd?: unknown }).fd : undefined;
    if (typeof fd !== 'number' || !Number.isInteger(fd)) {
      throw invalidArg(
        'ERR_INVALID_ARG_TYPE',
        `fds[${i}] must be a file descriptor (an integer) or an object with an integer "fd" property, such as a FileHandle. Received ${describe(x)}`,
      );
    }
    if (fd < 0 || fd > MAX_FD) {
      throw invalidArg('ERR_INVALID_ARG_VALUE', `fds[${i}] (${fd}) is not an open file descriptor${typeof x === 'object' ? ' (a closed FileHandle?)' : ''}`);
    }
    out[i] = fd;
  }
  return out;
}

/**
 * send() options: `fds` checked and taken out (as resolveFds() does), the
 * rest (`signal`) left for resolveSignalOptions().
 */
export function splitFds(options: unknown): { fds: Int32Array | undefined; rest: unknown } {
  if (options === null || typeof options !== 'object' || !('fds' in options)) return { fds: undefined, rest: options };
  const { fds, ...rest } = options as WriteOptions & Record<string, unknown>;
  return { fds: resolveFds({ fds }), rest };
}

/**
 * Dups of `fds`, taken now (for a send() that has to wait: the caller may
 * close its own as soon as send() returns, as after write()). The caller
 * of this closes them ({@link closeFds}) once the message is queued or the
 * send fails.
 */
export function holdFds(fds: Int32Array): Int32Array {
  try {
    return binding().dupFds(fds);
  } catch (e) {
    throw fdError(e);
  }
}

/**
 * The dups taken by send()s that wait for room, bounded: a burst of them
 * must not fill the process's descriptor table (the Writer could then not
 * even connect to drain them). {@link WaitingFds.take} dups a send()'s
 * descriptors while the total stays within `max` (one send() alone may pass
 * it); beyond it the send() is refused (`ERR_FDS_LIMIT`): using the caller's
 * numbers later could send whatever reuses them.
 */
export class WaitingFds {
  #held = 0;

  /**
   * The descriptors a waiting send() should use, and what to call once it
   * settles (closes the dups it took, if any).
   * @throws IpcError `ERR_FDS_LIMIT` when the waiting send()s already hold `max`.
   */
  take(fds: Int32Array | undefined, max: number): { fds: Int32Array | undefined; release: () => void } {
    if (fds === undefined) return { fds, release: () => {} };
    if (this.#held !== 0 && this.#held + fds.length > max) {
      throw new IpcError(
        'ERR_FDS_LIMIT',
        `send() with ${fds.length} descriptor(s) would wait while waiting sends already hold ${this.#held} duplicates (the limit is ${max}); await earlier sends first, or raise the limit`,
      );
    }
    const held = holdFds(fds);
    this.#held += held.length;
    let done = false;
    return {
      fds: held,
      release: () => {
        if (done) return;
        done = true;
        this.#held -= held.length;
        closeFds(held);
      },
    };
  }
}

/** Closes descriptors this library holds (see {@link holdFds}). */
export function closeFds(fds: ArrayLike<number>): void {
  for (let i = 0; i < fds.length; i++) {
    try {
      closeSync(fds[i]);
    } catch {
      // closed already
    }
  }
}

/** An error of the native dup of `fds` as thrown to the caller: a TypeError for a descriptor that is not open. */
export function fdError(e: unknown): unknown {
  if (e !== null && typeof e === 'object' && (e as { code?: unknown }).code === 'ERR_INVALID_ARG_VALUE') {
    return invalidArg('ERR_INVALID_ARG_VALUE', (e as Error).message);
  }
  return fromNative(e);
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'number') return String(x);
  if (typeof x === 'object') return 'an object without an integer "fd"';
  return typeof x;
}

/** The descriptors held for messages not yet fully sent. */
export class FdLedger {
  #seq: number[] = []; // per message with descriptors: frames appended after it (int32)
  #count: number[] = [];
  #first = 0; // index of the oldest entry still held
  #held = 0;

  /** Descriptors held now, given the frames fully sent (`sent`, int32). */
  held(sent: number): number {
    const seq = this.#seq;
    let i = this.#first;
    while (i < seq.length && ((sent - seq[i]) | 0) >= 0) this.#held -= this.#count[i++];
    if (i === seq.length) {
      this.#seq = [];
      this.#count = [];
      i = 0;
    } else if (i > 1024 && i * 2 > seq.length) {
      this.#seq = seq.slice(i);
      this.#count = this.#count.slice(i);
      i = 0;
    }
    this.#first = i;
    return this.#held;
  }

  /** A message with `n` descriptors was queued; it is frame number `seq` (frames appended after it). */
  add(seq: number, n: number): void {
    this.#seq.push(seq);
    this.#count.push(n);
    this.#held += n;
  }

  /**
   * Whether a message with `n` descriptors may be queued: they fit under
   * `max`, or nothing is held (one message above the limit goes alone).
   */
  fits(sent: number, n: number, max: number): boolean {
    const held = this.held(sent);
    return held === 0 || held + n <= max;
  }

  /**
   * The frame count SENT must reach for a message of `n` descriptors to fit
   * (after fits() said no).
   */
  sentTarget(n: number, max: number): number {
    let left = this.#held + n - max;
    let i = this.#first;
    for (; i < this.#seq.length - 1; i++) {
      left -= this.#count[i];
      if (left <= 0) break;
    }
    return this.#seq[i];
  }
}
