/**
 * AbortSignal plumbing shared by the Reader and the Writer.
 * @internal
 */
import { AbortError } from './errors';

/** The error an aborted operation rejects with: an {@link AbortError} whose `cause` is the signal's reason. */
export function abortError(signal: AbortSignal): AbortError {
  return new AbortError(undefined, { cause: signal.reason });
}

/**
 * Calls `fn` once when `signal` aborts. Returns a function that removes the
 * listener; call it as soon as the operation settles, so that a long-lived
 * signal does not collect one listener per call.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  const listener = (): void => fn();
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/**
 * One 'abort' listener per signal, shared by every pending call that uses it:
 * a thousand send()s waiting with one signal add one listener, not a thousand
 * (no MaxListenersExceededWarning), and it is removed with the last of them.
 */
export class AbortGroup {
  readonly #m = new Map<AbortSignal, { fns: Set<() => void>; listener: () => void }>();

  /** Calls `fn` when `signal` aborts, unless the returned remover ran first. */
  add(signal: AbortSignal, fn: () => void): () => void {
    let e = this.#m.get(signal);
    if (!e) {
      const fns = new Set<() => void>();
      const listener = (): void => {
        this.#m.delete(signal);
        for (const f of fns) f();
      };
      e = { fns, listener };
      this.#m.set(signal, e);
      signal.addEventListener('abort', listener, { once: true });
    }
    const entry = e;
    entry.fns.add(fn);
    return () => {
      entry.fns.delete(fn);
      if (entry.fns.size === 0 && this.#m.get(signal) === entry) {
        this.#m.delete(signal);
        signal.removeEventListener('abort', entry.listener);
      }
    };
  }
}
