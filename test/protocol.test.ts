// The JS<->C++ contract (native/core/protocol.h) as the addon exports it,
// checked against what the TypeScript layer does with it: the version the
// loader requires, the option defaults and limits TypeScript applies, and the
// metric keys the public metrics() objects are built from.
import { describe, it, expect } from 'vitest';
import { binding, checked, type NativeBinding } from '../src/binding';
import { PROTOCOL_VERSION } from '../src/protocol';
import { MAX_FDS_PER_MESSAGE, resolveReaderOptions, resolveWriterOptions } from '../src/options';
import { Reader, Writer, MAX_PATH_BYTES, DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE_LIMIT } from '../src/index';
import { tmpSocket, useTracking } from './helpers';

const p = binding().protocol;
const track = useTracking();

// Complete options, as src/reader.ts and src/writer.ts pass them.
function readerHandleOptions(): Record<string, unknown> {
  const d = p.defaults;
  return {
    maxMessageSize: d.maxMessageSize,
    maxPendingBytes: d.maxPendingBytes,
    backlog: d.backlog,
    mode: -1,
    uid: -1,
    gid: -1,
    directoryMode: -1,
    slabSize: d.slabSize,
    inactivityTimeoutMs: 0,
    frameTimeoutMs: d.frameTimeoutMs,
    replyTimeoutMs: d.replyTimeoutMs,
    acceptFds: false,
    maxPendingFds: d.maxPendingFds,
    type: 'stream',
    passCredentials: false,
    delivery: 'at-most-once',
    requireAcked: false,
    maxSessions: d.maxSessions,
    jsThreadPolling: true,
    jsThreadUnderLoad: false,
    allowUids: [],
    allowGids: [],
    authorize: false,
    fd: -1,
  };
}

function writerHandleOptions(): Record<string, unknown> {
  const d = p.defaults;
  return {
    type: 'stream',
    delivery: 'at-most-once',
    handshakeTimeoutMs: d.handshakeTimeoutMs,
    session: '',
    sendBufferSize: 0,
    writeTimeoutMs: 0,
    expectOwner: undefined,
    reconnect: { initialDelayMs: d.reconnectInitialDelayMs, maxDelayMs: d.reconnectMaxDelayMs, multiplier: d.reconnectMultiplier, maxAttempts: 0 },
  };
}

describe('protocol: the addon and TypeScript agree', () => {
  it('the addon speaks the version this TypeScript expects, and its contract is frozen', () => {
    expect(p.version).toBe(PROTOCOL_VERSION);
    expect(Object.isFrozen(p)).toBe(true);
    for (const v of Object.values(p)) if (typeof v === 'object') expect(Object.isFrozen(v)).toBe(true);
  });

  it('an addon built from other sources (another protocol version, or none) is refused with ERR_ADDON_LOAD', () => {
    for (const fake of [{}, { protocol: { ...p, version: PROTOCOL_VERSION + 1 } }]) {
      let e: (Error & { code?: string }) | undefined;
      try {
        checked(fake as unknown as NativeBinding, 'from /x/uds_ipc.node');
      } catch (err) {
        e = err as Error & { code?: string };
      }
      expect(e?.code).toBe('ERR_ADDON_LOAD');
      expect(e?.message).toContain('/x/uds_ipc.node');
      expect(e?.message).toContain('Rebuild it');
    }
    expect(checked(binding(), 'here')).toBe(binding());
  });

  it('control block: distinct words, each group on its own cache line, all inside BYTES', () => {
    const c = p.ctrl;
    const words = [c.TAIL, c.HEAD, c.SENT, c.SLEEP, c.NOTIFY_ARMED, c.NOTIFY_HEAD, c.NOTIFY_SENT];
    expect(new Set(words).size).toBe(words.length);
    const lines = [c.TAIL, c.HEAD, c.SENT, c.SLEEP, c.NOTIFY_ARMED].map((w) => Math.floor((w * 4) / 64));
    expect(new Set(lines).size).toBe(lines.length);
    for (const w of words) expect(w).toBeLessThan(c.WORDS);
    expect(c.WORDS * 4).toBeLessThanOrEqual(c.BYTES);
    expect(c.BYTES % 64).toBe(0);
    expect(new Set(Object.values(p.sendTurn)).size).toBe(3);
    expect(new Set(Object.values(p.notify)).size).toBe(2);
  });

  it('item and event tags are distinct and fit their slot layouts', () => {
    const { SLOTS: itemSlots, COPY_BATCH_UP_TO, ...items } = p.item;
    expect(new Set(Object.values(items)).size).toBe(Object.keys(items).length);
    expect(itemSlots).toBe(5);
    expect(COPY_BATCH_UP_TO).toBeGreaterThan(0);
    const { SLOTS: eventSlots, ...events } = p.event;
    expect(new Set(Object.values(events)).size).toBe(Object.keys(events).length);
    expect(eventSlots).toBe(4);
  });

  it('option defaults and limits TypeScript applies are the ones the core declares', () => {
    const r = resolveReaderOptions({});
    expect(r.maxMessageSize).toBe(p.defaults.maxMessageSize);
    expect(r.slabSize).toBe(p.defaults.slabSize);
    expect(r.maxPendingBytes).toBe(p.defaults.maxPendingBytes);
    expect(r.frameTimeoutMs).toBe(p.defaults.frameTimeoutMs);
    expect(r.backlog).toBe(p.defaults.backlog);
    expect(r.maxReplyBytes).toBe(p.defaults.maxReplyBytes);
    expect(r.replyTimeoutMs).toBe(p.defaults.replyTimeoutMs);
    expect(r.maxPendingFds).toBe(p.defaults.maxPendingFds);
    expect(resolveWriterOptions({}).maxBufferedFds).toBe(p.defaults.maxBufferedFds);
    expect(r.maxSessions).toBe(p.defaults.maxSessions);
    expect(resolveWriterOptions({}).handshakeTimeoutMs).toBe(p.defaults.handshakeTimeoutMs);
    expect(MAX_FDS_PER_MESSAGE).toBe(p.defaults.maxFdsPerMessage);
    const w = resolveWriterOptions({});
    expect(w.maxMessageSize).toBe(p.defaults.maxMessageSize);
    expect(w.reconnect).toMatchObject({
      initialDelayMs: p.defaults.reconnectInitialDelayMs,
      maxDelayMs: p.defaults.reconnectMaxDelayMs,
      multiplier: p.defaults.reconnectMultiplier,
    });
    expect(DEFAULT_MAX_MESSAGE_SIZE).toBe(p.defaults.maxMessageSize);
    expect(MAX_MESSAGE_SIZE_LIMIT).toBe(p.limits.maxMessageSize);
    expect(MAX_PATH_BYTES).toBe(p.limits.maxPathBytes);
    // The limits are enforced where TypeScript validates.
    expect(() => resolveReaderOptions({ maxMessageSize: p.limits.maxMessageSize + 1 })).toThrow(RangeError);
    expect(() => resolveReaderOptions({ slabSize: p.limits.minSlabSize - 1 })).toThrow(RangeError);
    expect(() => resolveReaderOptions({ slabSize: p.limits.maxSlabSize + 1 })).toThrow(RangeError);
    expect(resolveReaderOptions({ slabSize: p.limits.maxSlabSize }).slabSize).toBe(p.limits.maxSlabSize);
  });

  it('the handles report exactly the declared metric keys, and the public metrics() carry each one', async () => {
    const path = tmpSocket();
    const reader = track(new Reader(path, () => {}));
    await reader.start();
    const writer = track(new Writer(path));
    writer.start();
    writer.write('x');
    await writer.flush();
    const rn = (reader as unknown as { metrics(): Record<string, unknown> }).metrics();
    const wn = (writer as unknown as { metrics(): Record<string, unknown> }).metrics();
    for (const k of p.metrics.reader) expect(rn, `Reader.metrics().${k}`).toHaveProperty(k);
    for (const k of p.metrics.writer) expect(wn, `Writer.metrics().${k}`).toHaveProperty(k);
    const rh = new (binding().ReaderHandle)(tmpSocket(), readerHandleOptions());
    try {
      expect(Object.keys(rh.metrics())).toEqual([...p.metrics.reader]);
    } finally {
      rh.close();
    }
    const wh = new (binding().WriterHandle)(tmpSocket(), writerHandleOptions(), new ArrayBuffer(p.ctrl.BYTES + 1024));
    try {
      expect(Object.keys(wh.metrics())).toEqual([...p.metrics.writer]);
    } finally {
      wh.close();
    }
  });

  it('the handles take their options complete: a missing or mistyped one is a TypeError naming it', () => {
    const ring = () => new ArrayBuffer(p.ctrl.BYTES + 1024);
    for (const key of Object.keys(readerHandleOptions())) {
      const o = readerHandleOptions();
      delete o[key];
      expect(() => new (binding().ReaderHandle)(tmpSocket(), o), key).toThrow(TypeError);
      expect(() => new (binding().ReaderHandle)(tmpSocket(), o), key).toThrow(`"${key}"`);
    }
    for (const key of ['sendBufferSize', 'writeTimeoutMs', 'reconnect']) {
      const o = writerHandleOptions();
      delete o[key];
      expect(() => new (binding().WriterHandle)(tmpSocket(), o, ring()), key).toThrow(`"${key}"`);
    }
    for (const key of ['initialDelayMs', 'maxDelayMs', 'multiplier', 'maxAttempts']) {
      const o = writerHandleOptions();
      const r = { ...(o.reconnect as object) } as Record<string, unknown>;
      delete r[key];
      expect(() => new (binding().WriterHandle)(tmpSocket(), { ...o, reconnect: r }, ring()), key).toThrow(`"${key}"`);
    }
    for (const key of ['uid', 'gid', 'mode']) {
      const e: Record<string, unknown> = { uid: -1, gid: -1, mode: -1 };
      delete e[key];
      expect(() => new (binding().WriterHandle)(tmpSocket(), { ...writerHandleOptions(), expectOwner: e }, ring()), key).toThrow(`"${key}"`);
    }
    const wh = new (binding().WriterHandle)(tmpSocket(), { ...writerHandleOptions(), reconnect: false }, ring());
    wh.close();
  });

  it('the handles offer take(), not the old drain(); no wake()', () => {
    const rh = new (binding().ReaderHandle)(tmpSocket(), readerHandleOptions());
    const wh = new (binding().WriterHandle)(tmpSocket(), writerHandleOptions(), new ArrayBuffer(p.ctrl.BYTES + 1024));
    try {
      expect(rh.take()).toEqual([]);
      expect((rh as unknown as Record<string, unknown>).drain).toBeUndefined();
      expect(wh.take()).toEqual([]);
      expect((wh as unknown as Record<string, unknown>).drain).toBeUndefined();
      expect((wh as unknown as Record<string, unknown>).wake).toBeUndefined();
    } finally {
      rh.close();
      wh.close();
    }
  });
});
