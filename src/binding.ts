/**
 * Loads the native addon with node-gyp-build's rules: build/Release (a source
 * build) when there is one, else the prebuilt binary in prebuilds/ that
 * matches. `UDS_IPC_ADDON_PATH` names a `.node` file explicitly (bundlers,
 * unusual layouts). When nothing loads, an IpcError `ERR_ADDON_LOAD` says
 * where it looked and how to fix it.
 * @internal
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { IpcError } from './errors';
import { PROTOCOL_VERSION, type Protocol } from './protocol';

/**
 * The addon's handles take their options complete: every key the Reader and
 * Writer pass today must be present (a missing or mistyped one throws a
 * TypeError naming it); the addon applies no defaults of its own.
 */
export interface NativeReaderHandle {
  /** onReady: called with what take() would return (the JS-thread poller) or with nothing (then call take()). */
  listen(onReady: (taken?: unknown[] | ArrayBuffer) => void): void;
  /**
   * Every item ready: protocol.item.SLOTS values per item (see src/protocol.ts).
   * Once takeWords() was called, exactly one small batch and nothing else
   * comes as its region alone, the rest of its item in the take words.
   */
  take(): unknown[] | ArrayBuffer;
  /** The Float64Array (the same one every call) of a lone batch's [connId, offsets entries, payload bytes]. */
  takeWords(): Float64Array;
  /** `region` and `table` (a large batch's offsets buffer), when given, are detached. */
  ack(connId: number, bytes: number, region?: ArrayBuffer, table?: ArrayBuffer): void;
  authorize(connId: number, allowed: boolean): void;
  /**
   * Sends or queues whole frames to connection `connId` (the first `length`
   * bytes of `bytes`, default all; with `fds`, exactly one frame); returns
   * the bytes queued for it natively, -1 if it is closed.
   */
  reply(connId: number, bytes: Uint8Array, fds?: Int32Array, length?: number): number;
  beginStop(): void;
  /** Joins the IO thread; returns how many received messages were never handed to JS. */
  close(): number;
  ref(): void;
  unref(): void;
  metrics(): Record<string, number>;
  /** Removes the socket file now if it is still the one listen() created (for process.exit()). */
  removeSocketFile(): void;
}

export interface NativeWriterHandle {
  /** onEvent: called with what take() would return (the receiver on this thread) or with nothing (then call take()). */
  start(onEvent: (taken?: unknown[] | ArrayBuffer) => void): void;
  /**
   * Sends the published frames on this thread; only after swapping SLEEP
   * sendTurn.IDLE -> sendTurn.PRODUCER_SENDS. `frames`/`payload`: frames and
   * payload bytes appended since the ring was created (mod 2^32, as int32 or
   * u32 numbers) up to the tail just published. Once the ring is empty it is
   * rewound to ring offset 0 (head and tail move on to the next multiple of
   * the capacity); returns the tail to continue from (int32, as the Writer
   * keeps positions).
   */
  sendDirect(frames: number, payload: number): number;
  /**
   * The frame about to be appended at ring span [start, end) (int32
   * positions) carries dups of `fds` (made now, F_DUPFD_CLOEXEC), sent with
   * it and closed once it is fully sent. Throws a native error object
   * (ERR_INVALID_ARG_VALUE for a descriptor that is not open), attaching nothing.
   */
  attachFds(start: number, end: number, fds: Int32Array): void;
  /**
   * Every event since the last call: protocol.event.SLOTS values per event.
   * Once takeWords() was called, exactly one small batch and no other event
   * comes as its region alone, the rest of its event in the take words.
   */
  take(): unknown[] | ArrayBuffer;
  /** The Float64Array (the same one every call) of a lone batch's [0, offsets entries, payload bytes]. */
  takeWords(): Float64Array;
  beginStop(timeoutMs: number): void;
  close(): void;
  ref(): void;
  unref(): void;
  metrics(): Record<string, number | boolean>;
}

export interface NativeBinding {
  ReaderHandle: new (path: string, options: object) => NativeReaderHandle;
  WriterHandle: new (path: string, options: object, shared: ArrayBuffer) => NativeWriterHandle;
  /** native/core/protocol.h, frozen. */
  protocol: Protocol;
  liveSlabs(): number;
  /** Dups (F_DUPFD_CLOEXEC) of `fds`, the caller's to close; throws a native error object for a descriptor that is not open. */
  dupFds(fds: Int32Array): Int32Array;
  /** The largest packet a socket of `type` can send once its SO_SNDBUF is raised to `sendBufferSize` (0 if unknown). */
  packetLimit(type: 'seqpacket' | 'dgram', sendBufferSize: number): number;
  /** Whether the kernel can refuse descriptors sent to a socket (SO_PASSRIGHTS, Linux 6.16): Readers without acceptFds use it. */
  kernelRefusesFds(): boolean;
  /** Detaches a received batch region (its views become empty) and lets its memory be reused. */
  release(region: ArrayBuffer): void;
  lookupUser(name: string): number;
  lookupGroup(name: string): number;
  checkListeningFd(fd: number): null | { code: string; message: string };
  boundPath(fd: number): string;
  notifyDatagram(address: string, message: string): number;
}

const FIX_BUILD =
  'To build it from source run `npm rebuild uds-ipc --build-from-source` (or install with ' +
  '`npm install uds-ipc --build-from-source`, or set npm_config_build_from_source=true); ' +
  'that needs python3, make and a C++20 compiler.';

/** Loads a `.node` file as an addon, whatever its extension (never as JavaScript). */
function dlopen(file: string): NativeBinding {
  const m = { exports: {} as NativeBinding };
  process.dlopen(m, path.toNamespacedPath(file));
  return m.exports;
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}

function load(): NativeBinding {
  const explicit = process.env.UDS_IPC_ADDON_PATH;
  if (explicit) {
    const file = path.resolve(explicit);
    let b: NativeBinding;
    try {
      b = dlopen(file);
    } catch (e) {
      const why = existsSync(file) ? `it failed to load: ${firstLine(e)}` : 'no such file';
      throw new IpcError(
        'ERR_ADDON_LOAD',
        `uds-ipc: cannot load the native addon from UDS_IPC_ADDON_PATH=${explicit} (${file}): ${why}. ` +
          'Point UDS_IPC_ADDON_PATH at a uds_ipc.node built for this platform (for example ' +
          "node_modules/uds-ipc/build/Release/uds_ipc.node or the file in node_modules/uds-ipc/prebuilds/), or unset it to use the package's own binary. " +
          FIX_BUILD,
        { cause: e },
      );
    }
    return checked(b, `from UDS_IPC_ADDON_PATH=${explicit} (${file})`);
  }

  // node-gyp-build's search (node_modules/node-gyp-build/node-gyp-build.js):
  // build/Release, build/Debug (skipped with PREBUILDS_ONLY), then the best
  // match in prebuilds/<platform>-<arch>/, then prebuilds/ next to the node
  // executable. UDS_IPC_PREBUILD replaces the package directory.
  const root = process.env.UDS_IPC_PREBUILD || path.join(__dirname, '..');
  const tuple = `${process.platform}-${process.arch}`;
  const searched = [
    ...(process.env.PREBUILDS_ONLY ? [] : [path.join(root, 'build', 'Release'), path.join(root, 'build', 'Debug')]),
    path.join(root, 'prebuilds', tuple),
    path.join(path.dirname(process.execPath), 'prebuilds', tuple),
  ];
  const skipped = process.env.PREBUILDS_ONLY ? ' (build/ skipped: PREBUILDS_ONLY is set)' : '';
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const nodeGypBuild = require('node-gyp-build') as ((dir: string) => NativeBinding) & { resolve?: (dir: string) => string };
  let b: NativeBinding;
  try {
    b = nodeGypBuild(root);
  } catch (e) {
    let file: string | undefined;
    try {
      file = nodeGypBuild.resolve?.(root);
    } catch {
      // nothing matched
    }
    const what = file
      ? `found ${file} but it failed to load: ${firstLine(e)}`
      : `no binary for ${tuple} (${libc()}, Node ${process.versions.node}) was found`;
    throw new IpcError(
      'ERR_ADDON_LOAD',
      `uds-ipc: cannot load the native addon: ${what}. Searched, in order: ${searched.join(', ')}${skipped}. ` +
        FIX_BUILD +
        ' Or set UDS_IPC_ADDON_PATH to a uds_ipc.node file.',
      { cause: e },
    );
  }
  let file = 'found in ' + root;
  try {
    file = nodeGypBuild.resolve?.(root) ?? file;
  } catch {
    // loaded, so it resolves; keep the generic wording if not
  }
  return checked(b, file);
}

/** The C library node-gyp-build matches prebuilds against. */
function libc(): string {
  if (process.env.LIBC) return process.env.LIBC;
  return process.platform === 'linux' && existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
}

let cached: NativeBinding | undefined;

/**
 * An addon built from another version of this package's sources speaks
 * another contract: refuse it here rather than misread its arrays later.
 */
export function checked(b: NativeBinding, from: string): NativeBinding {
  const version = (b as Partial<NativeBinding>).protocol?.version;
  if (version !== PROTOCOL_VERSION) {
    throw new IpcError(
      'ERR_ADDON_LOAD',
      `uds-ipc: the native addon ${from} speaks protocol ${String(version)}, but this JavaScript expects ${PROTOCOL_VERSION}: ` +
        'it was built from another version of uds-ipc. Rebuild it (`npm rebuild uds-ipc --build-from-source`) or reinstall the package.',
    );
  }
  return b;
}

/** The addon, loaded on first use. */
export function binding(): NativeBinding {
  return (cached ??= load());
}
