// Validation of everything a user passes: constructor arguments, options,
// stop() options and write() data. Errors must be typed, carry a stable code
// and name the offending option.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { Reader, Writer, IpcError, MAX_PATH_BYTES, DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE_LIMIT } from '../src/index';
import { tmpSocket, cleanupDirs, errorOf, syncError } from './helpers';

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };
const live: Stoppable[] = [];
function track<T extends Stoppable>(x: T): T {
  live.push(x);
  return x;
}
afterEach(async () => {
  for (const x of live.splice(0)) await x.stop({ timeoutMs: 200 }).catch(() => {});
});
afterAll(() => cleanupDirs());

const noop = () => {};

function expectType(e: Error & { code?: string }, mentions: string): void {
  expect(e).toBeInstanceOf(TypeError);
  expect(e.code).toBe('ERR_INVALID_ARG_TYPE');
  expect(e.message).toContain(mentions);
}
function expectRange(e: Error & { code?: string }, mentions: string): void {
  expect(e).toBeInstanceOf(RangeError);
  expect(e.code).toBe('ERR_OUT_OF_RANGE');
  expect(e.message).toContain(mentions);
}
function expectUnknown(e: Error & { code?: string }, mentions: string): void {
  expect(e).toBeInstanceOf(TypeError);
  expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
  expect(e.message).toContain(mentions);
}

const BAD_TYPES: unknown[] = ['1', true, null, {}, [], 1n, () => 1];
const BAD_INT = (min: number, max: number): unknown[] => [min - 1, max + 1, 1.5, NaN, Infinity, -Infinity];

const READER_INT_OPTIONS: Array<[string, number, number]> = [
  ['maxMessageSize', 0, MAX_MESSAGE_SIZE_LIMIT],
  ['maxPendingBytes', 1, 2 ** 40],
  ['backlog', 1, 65535],
  ['mode', 0, 0o777],
  ['slabSize', 64 * 1024, 64 * 1024 * 1024],
];
const WRITER_INT_OPTIONS: Array<[string, number, number]> = [
  ['maxMessageSize', 0, MAX_MESSAGE_SIZE_LIMIT],
  ['maxBufferedWrites', 1, 2 ** 30],
  ['sendBufferSize', 0, 2 ** 30],
];

const mkReader = (opts: unknown) => () => new Reader(tmpSocket(), noop, opts as never);
const mkWriter = (opts: unknown) => () => new Writer(tmpSocket(), opts as never);

describe('Reader options', () => {
  for (const [name, min, max] of READER_INT_OPTIONS) {
    it(`${name}: bad types → TypeError ERR_INVALID_ARG_TYPE naming the option`, () => {
      for (const v of BAD_TYPES) expectType(syncError(mkReader({ [name]: v })), name);
    });
    it(`${name}: out of range → RangeError ERR_OUT_OF_RANGE naming the option (and the range)`, () => {
      for (const v of BAD_INT(min, max)) {
        const e = syncError(mkReader({ [name]: v }));
        expectRange(e, name);
        expect(e.message).toContain(String(min));
      }
    });
    it(`${name}: the bounds ${min} and ${max} are accepted`, () => {
      expect(mkReader({ [name]: min })()).toBeInstanceOf(Reader);
      expect(mkReader({ [name]: max })()).toBeInstanceOf(Reader);
    });
  }

  it('onError: not a function → TypeError ERR_INVALID_ARG_TYPE', () => {
    for (const v of ['f', 1, {}, null, true]) expectType(syncError(mkReader({ onError: v })), 'onError');
    expect(mkReader({ onError: noop })()).toBeInstanceOf(Reader);
  });

  it('unknown option names → TypeError ERR_INVALID_ARG_VALUE naming the option', () => {
    for (const name of ['maxMesageSize', 'timeout', 'reconnect', 'maxBufferedWrites', '']) {
      const e = syncError(mkReader({ [name]: 1 }));
      expectUnknown(e, `"${name}"`);
      expect(e.message).toContain('maxMessageSize'); // lists the known ones
    }
  });

  it('options that are not an object → TypeError ERR_INVALID_ARG_TYPE', () => {
    for (const v of [1, 'x', true, [], null]) expectType(syncError(mkReader(v)), 'options');
    expect(mkReader(undefined)()).toBeInstanceOf(Reader);
    expect(mkReader({})()).toBeInstanceOf(Reader);
  });

  it('handler neither a function, undefined nor (alone) an options object → TypeError ERR_INVALID_ARG_TYPE naming "handler"', () => {
    for (const h of [null, 1, 'fn', []]) {
      const e = syncError(() => new Reader(tmpSocket(), h as never));
      expectType(e, 'handler');
    }
    // An object in the handler's place is the options only when no options follow.
    expectType(syncError(() => new Reader(tmpSocket(), {} as never, {})), 'handler');
  });

  it('an invalid option leaves nothing behind (no socket file)', () => {
    const path = tmpSocket();
    syncError(() => new Reader(path, noop, { backlog: -1 }));
    expect(existsSync(path)).toBe(false);
  });

  it('a valid non-default mode is accepted and a Reader with every option set starts', async () => {
    const path = tmpSocket();
    const r = track(
      new Reader(path, noop, {
        maxMessageSize: 1024,
        maxPendingBytes: 1 << 20,
        backlog: 16,
        mode: 0o640,
        slabSize: 64 * 1024,
        onError: noop,
      }),
    );
    await r.start();
    expect(r.listening).toBe(true);
  });
});

describe('Writer options', () => {
  for (const [name, min, max] of WRITER_INT_OPTIONS) {
    it(`${name}: bad types → TypeError ERR_INVALID_ARG_TYPE naming the option`, () => {
      for (const v of BAD_TYPES) expectType(syncError(mkWriter({ [name]: v })), name);
    });
    it(`${name}: out of range → RangeError ERR_OUT_OF_RANGE naming the option`, () => {
      for (const v of BAD_INT(min, max)) expectRange(syncError(mkWriter({ [name]: v })), name);
    });
  }

  it('maxBufferedWrites / sendBufferSize: the bounds are accepted', () => {
    expect(mkWriter({ maxBufferedWrites: 1 })()).toBeInstanceOf(Writer);
    expect(mkWriter({ sendBufferSize: 0 })()).toBeInstanceOf(Writer);
    expect(mkWriter({ maxMessageSize: 0 })()).toBeInstanceOf(Writer);
  });

  it('maxBufferedBytes: bad types and out-of-range values', () => {
    for (const v of BAD_TYPES) expectType(syncError(mkWriter({ maxBufferedBytes: v })), 'maxBufferedBytes');
    for (const v of [0, -1, 1.5, NaN, Infinity, 2 ** 31 + 1]) {
      expectRange(syncError(mkWriter({ maxBufferedBytes: v })), 'maxBufferedBytes');
    }
  });

  it('maxBufferedBytes < maxMessageSize + 10 → RangeError that mentions maxMessageSize', () => {
    let e = syncError(mkWriter({ maxMessageSize: 100, maxBufferedBytes: 109 }));
    expectRange(e, 'maxBufferedBytes');
    expect(e.message).toContain('maxMessageSize');
    expect(e.message).toContain('110');
    // Against the default maxMessageSize (10 MiB).
    e = syncError(mkWriter({ maxBufferedBytes: 1024 * 1024 }));
    expectRange(e, 'maxBufferedBytes');
    expect(e.message).toContain('maxMessageSize');
    expect(e.message).toContain(String(DEFAULT_MAX_MESSAGE_SIZE + 10));
    // Exactly maxMessageSize + 10 is fine, and a message of maxMessageSize fits.
    const w = track(mkWriter({ maxMessageSize: 100, maxBufferedBytes: 110 })());
    expect(w.write(Buffer.alloc(100))).toBe(true);
  });

  it('reconnect: must be false or an object', () => {
    for (const v of ['yes', 1, null, [], () => 1]) expectType(syncError(mkWriter({ reconnect: v })), 'reconnect');
    expect(mkWriter({ reconnect: false })()).toBeInstanceOf(Writer);
    expect(mkWriter({ reconnect: {} })()).toBeInstanceOf(Writer);
  });

  it('reconnect sub-options: types, ranges and unknown names', () => {
    for (const sub of ['initialDelayMs', 'maxDelayMs', 'maxAttempts', 'multiplier']) {
      for (const v of ['1', true, {}]) expectType(syncError(mkWriter({ reconnect: { [sub]: v } })), sub);
    }
    for (const v of [0, -5, 1.5, NaN, 3_600_001]) expectRange(syncError(mkWriter({ reconnect: { initialDelayMs: v } })), 'initialDelayMs');
    for (const v of [0, 2.5, Infinity]) expectRange(syncError(mkWriter({ reconnect: { maxDelayMs: v } })), 'maxDelayMs');
    for (const v of [-1, 0.5, 2 ** 31]) expectRange(syncError(mkWriter({ reconnect: { maxAttempts: v } })), 'maxAttempts');
    for (const v of [0.5, 0, 101, NaN, Infinity]) expectRange(syncError(mkWriter({ reconnect: { multiplier: v } })), 'multiplier');
    expect(mkWriter({ reconnect: { multiplier: 1.5 } })()).toBeInstanceOf(Writer);
    // maxDelayMs below initialDelayMs.
    const e = syncError(mkWriter({ reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }));
    expectRange(e, 'maxDelayMs');
    expect(e.message).toContain('initialDelayMs');
    // Unknown sub-option.
    expectUnknown(syncError(mkWriter({ reconnect: { retries: 3 } })), '"retries"');
  });

  it('onError: not a function → TypeError', () => {
    for (const v of ['f', 1, {}, null]) expectType(syncError(mkWriter({ onError: v })), 'onError');
  });

  it('unknown option names → TypeError ERR_INVALID_ARG_VALUE naming the option', () => {
    for (const name of ['maxBufferedWrite', 'backlog', 'mode', 'highWaterMark']) {
      const e = syncError(mkWriter({ [name]: 1 }));
      expectUnknown(e, `"${name}"`);
      expect(e.message).toContain('maxBufferedWrites');
    }
  });

  it('options that are not an object → TypeError', () => {
    for (const v of [1, 'x', true, []]) expectType(syncError(mkWriter(v)), 'options');
  });
});

describe('socket path validation', () => {
  for (const [what, make] of [
    ['Reader', (p: unknown) => new Reader(p as string, noop)],
    ['Writer', (p: unknown) => new Writer(p as string)],
  ] as const) {
    it(`${what}: a path that is not a string → TypeError ERR_INVALID_ARG_TYPE naming "path"`, () => {
      for (const p of [undefined, null, 1, {}, Buffer.from('/tmp/x.sock'), ['/tmp/x.sock']]) {
        expectType(syncError(() => make(p)), 'path');
      }
    });

    it(`${what}: an empty path or one with a NUL byte → TypeError naming the path`, () => {
      for (const p of ['', '/tmp/a\0b.sock']) {
        const e = syncError(() => make(p));
        expect(e).toBeInstanceOf(Error);
        // Node convention for a bad value of the right type.
        expect(e).toBeInstanceOf(TypeError);
        expect(e.code).toBe('ERR_INVALID_ARG_VALUE');
        expect(e.message).toMatch(/path/);
      }
    });

    it(`${what}: a path longer than ${MAX_PATH_BYTES} bytes → IpcError ERR_PATH_TOO_LONG with the byte count`, () => {
      const p = '/tmp/' + 'x'.repeat(200);
      const e = syncError(() => make(p));
      expect(e).toBeInstanceOf(IpcError);
      expect(e.code).toBe('ERR_PATH_TOO_LONG');
      expect(e.message).toContain('205');
      expect(e.message).toContain(String(MAX_PATH_BYTES));
    });
  }
});

describe('stop() options', () => {
  it('Reader.stop validates timeoutMs and unknown names, and a bad call does not stop the reader', async () => {
    const r = track(new Reader(tmpSocket(), noop));
    await r.start();
    expectType(await errorOf(() => r.stop({ timeoutMs: '100' } as never)), 'timeoutMs');
    expectRange(await errorOf(() => r.stop({ timeoutMs: -1 })), 'timeoutMs');
    expectRange(await errorOf(() => r.stop({ timeoutMs: 1.5 })), 'timeoutMs');
    expectRange(await errorOf(() => r.stop({ timeoutMs: NaN })), 'timeoutMs');
    expectRange(await errorOf(() => r.stop({ timeoutMs: 2 ** 31 })), 'timeoutMs');
    expectUnknown(await errorOf(() => r.stop({ timeout: 100 } as never)), '"timeout"');
    expectType(await errorOf(() => r.stop(100 as never)), 'options');
    expect(r.listening).toBe(true);
    expect(await r.stop({ timeoutMs: 0 })).toEqual({ discarded: 0 });
    expect(r.listening).toBe(false);
  });

  it('Writer.stop validates timeoutMs and unknown names, and a bad call does not stop the writer', async () => {
    const w = track(new Writer(tmpSocket(), { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    expectType(await errorOf(() => w.stop({ timeoutMs: null } as never)), 'timeoutMs');
    expectRange(await errorOf(() => w.stop({ timeoutMs: -10 })), 'timeoutMs');
    expectRange(await errorOf(() => w.stop({ timeoutMs: Infinity })), 'timeoutMs');
    expectType(await errorOf(() => w.stop({ signal: 1 } as never)), '"signal"');
    expectUnknown(await errorOf(() => w.stop({ signl: 1 } as never)), '"signl"');
    expectType(await errorOf(() => w.stop('soon' as never)), 'options');
    // Still running: write() works.
    expect(w.write('still running')).toBe(true);
    const res = await w.stop({ timeoutMs: 50 });
    expect(res.discarded).toBe(1);
  });
});

describe('write() data validation', () => {
  it('anything but a string or Uint8Array → TypeError ERR_INVALID_ARG_TYPE, not counted as written', () => {
    const w = track(new Writer(tmpSocket(), { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    for (const v of [42, {}, null, undefined, true, [1, 2], new ArrayBuffer(4), 10n]) {
      const e = syncError(() => w.write(v as never));
      expect(e).toBeInstanceOf(TypeError);
      expect(e.code).toBe('ERR_INVALID_ARG_TYPE');
      expect(e.message).toMatch(/data/);
    }
    const m = w.metrics();
    expect(m.written).toBe(0);
    expect(m.dropped).toBe(0);
    expect(m.queueDepth).toBe(0);
  });

  it('accepts strings, Buffers, Uint8Arrays and empty messages', () => {
    const w = track(new Writer(tmpSocket(), { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    expect(w.write('')).toBe(true);
    expect(w.write('héllo')).toBe(true);
    expect(w.write(Buffer.from('abc'))).toBe(true);
    expect(w.write(new Uint8Array([1, 2, 3]))).toBe(true);
    expect(w.write(new Uint8Array(0))).toBe(true);
    expect(w.metrics().written).toBe(5);
    // Frames: 1 + (1+6) + (1+3) + (1+3) + 1.
    expect(w.metrics().queuedBytes).toBe(17);
  });

  it('a message above maxMessageSize → IpcError ERR_MESSAGE_TOO_LARGE (bytes of UTF-8 for strings), not counted', () => {
    const w = track(new Writer(tmpSocket(), { maxMessageSize: 10, reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    expect(w.write(Buffer.alloc(10))).toBe(true);
    let e = syncError(() => w.write(Buffer.alloc(11)));
    expect(e).toBeInstanceOf(IpcError);
    expect(e.code).toBe('ERR_MESSAGE_TOO_LARGE');
    expect(e.message).toContain('11');
    expect(e.message).toContain('10');
    // 6 characters, 12 bytes of UTF-8.
    e = syncError(() => w.write('éééééé'));
    expect(e.code).toBe('ERR_MESSAGE_TOO_LARGE');
    expect(w.metrics().written).toBe(1);
  });
});
