/**
 * Loads the native addon: a prebuilt binary from prebuilds/ when one matches,
 * otherwise build/Release (node-gyp-build's rules). `UDS_IPC_ADDON_PATH`
 * names a `.node` file explicitly (bundlers, unusual layouts).
 * @internal
 */
import * as path from 'node:path';
import { IpcError } from './errors';

export interface NativeReaderHandle {
  listen(onReady: () => void): void;
  drain(): unknown[];
  ack(connId: number, bytes: number, region?: ArrayBuffer): void;
  authorize(connId: number, allowed: boolean): void;
  beginStop(): void;
  /** Joins the IO thread; returns how many received messages were never handed to JS. */
  close(): number;
  ref(): void;
  unref(): void;
  metrics(): Record<string, number>;
}

export interface NativeWriterHandle {
  start(onEvent: () => void): void;
  wake(): void;
  /** Sends the published frames on this thread; only after swapping SLEEP 1 -> 2. */
  sendDirect(): void;
  drain(): unknown[];
  beginStop(timeoutMs: number): void;
  close(): void;
  ref(): void;
  unref(): void;
  metrics(): Record<string, number | boolean>;
}

export interface NativeBinding {
  ReaderHandle: new (path: string, options: object) => NativeReaderHandle;
  WriterHandle: new (path: string, options: object, shared: ArrayBuffer) => NativeWriterHandle;
  MAX_PATH_BYTES: number;
  ctrl: {
    TAIL: number;
    HEAD: number;
    SENT: number;
    SLEEP: number;
    NOTIFY_ARMED: number;
    NOTIFY_HEAD: number;
    NOTIFY_SENT: number;
    BYTES: number;
  };
  liveSlabs(): number;
  /** Detaches a received batch region (its views become empty) and lets its memory be reused. */
  release(region: ArrayBuffer): void;
  lookupUser(name: string): number;
  lookupGroup(name: string): number;
  checkListeningFd(fd: number): null | { code: string; message: string };
  boundPath(fd: number): string;
  notifyDatagram(address: string, message: string): number;
}

function load(): NativeBinding {
  const explicit = process.env.UDS_IPC_ADDON_PATH;
  const root = path.join(__dirname, '..');
  try {
    if (explicit) return require(path.resolve(explicit)) as NativeBinding;
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeBinding;
    return nodeGypBuild(root);
  } catch (e) {
    const where = explicit
      ? `UDS_IPC_ADDON_PATH=${explicit}`
      : `${path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)} and ${path.join(root, 'build', 'Release')}`;
    throw new IpcError(
      'ERR_ADDON_LOAD',
      `uds-ipc: cannot load the native addon (searched ${where}): ${(e as Error).message}. ` +
        'Run `npm rebuild uds-ipc` to build it from source (needs python3, make and a C++ compiler).',
      { cause: e },
    );
  }
}

let cached: NativeBinding | undefined;

/** The addon, loaded on first use. */
export function binding(): NativeBinding {
  return (cached ??= load());
}
