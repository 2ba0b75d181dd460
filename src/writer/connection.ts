/**
 * A Writer's connection as its `onMessage` batches carry it: the listening
 * peer's credentials (SO_PEERCRED, read at connect) and the way back to it.
 * `write()`/`send()` go through the Writer's own queue, so they keep its
 * order, limits and backpressure; they refuse once this connection is gone
 * (a message written to it must not go out on the next connection instead).
 * @internal
 */
import type { Connection } from '../batch';
import { IpcError } from '../errors';
import type { WriteOptions } from './fds';

/** What a connection needs of its Writer. */
export interface WriterPort {
  write(data: Uint8Array | string, options?: WriteOptions): boolean;
  send(data: Uint8Array | string, options?: { signal?: AbortSignal } & WriteOptions): Promise<void>;
}

export class WriterConnection implements Connection {
  readonly id: number;
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  #port: WriterPort | undefined;

  /** @internal */
  constructor(id: number, pid: number, uid: number, gid: number, port: WriterPort | undefined) {
    this.id = id;
    this.pid = pid;
    this.uid = uid;
    this.gid = gid;
    this.#port = port;
  }

  /** False once this connection broke or the Writer stopped. */
  get connected(): boolean {
    return this.#port !== undefined;
  }

  /** Writes `data` to the reader through the Writer's queue (`writer.write()`); throws `ERR_NOT_CONNECTED` once this connection is gone. */
  write(data: Uint8Array | string, options?: WriteOptions): boolean {
    if (!this.#port) throw this.#gone();
    return this.#port.write(data, options);
  }

  /** `writer.send()` while this connection is up; rejects with `ERR_NOT_CONNECTED` once it is gone. */
  send(data: Uint8Array | string, options?: { signal?: AbortSignal } & WriteOptions): Promise<void> {
    if (!this.#port) return Promise.reject(this.#gone());
    return this.#port.send(data, options);
  }

  /** @internal This connection ended. */
  closed(): void {
    this.#port = undefined;
  }

  #gone(): IpcError {
    return new IpcError('ERR_NOT_CONNECTED', `The Writer's connection ${this.id} is closed; write to the Writer itself to reach its next connection`);
  }
}
