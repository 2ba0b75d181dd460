// Light traffic is read on the JavaScript thread (one wake-up per message);
// bulk traffic on the reader's IO thread. Checked through metrics(), never
// through timing.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Reader, Writer, type Batch, type ReaderOptions } from '../src';
import { spawnSync } from 'node:child_process';
import { cleanupDirs, DIST, tmpSocket, waitFor } from './helpers';

const readers: Reader[] = [];
const writers: Writer[] = [];
afterEach(async () => {
  await Promise.allSettled(writers.splice(0).map((w) => w.stop({ timeoutMs: 1000 })));
  await Promise.allSettled(readers.splice(0).map((r) => r.stop({ timeoutMs: 1000 })));
});
afterAll(() => cleanupDirs());

async function pair(opts: ReaderOptions = {}) {
  const got: string[] = [];
  let bytes = 0;
  const path = tmpSocket();
  const reader = new Reader(path, (b: Batch) => {
    for (const m of b) {
      bytes += m.length;
      if (m.length < 100) got.push(m.toString());
    }
  }, opts);
  readers.push(reader);
  await reader.start();
  const writer = new Writer(path);
  writers.push(writer);
  writer.start();
  await new Promise<void>((resolve) => writer.once('connect', () => resolve()));
  return { reader, writer, got, bytes: () => bytes };
}

describe('jsThreadPolling', () => {
  it("'light': reads light traffic on the JavaScript thread, bulk traffic on the IO thread, and hands back when quiet", async () => {
    const { reader, writer, got, bytes } = await pair({ jsThreadPolling: 'light' });
    // Light: one message, then wait for it, 200 times.
    for (let i = 0; i < 200; i++) {
      writer.write(`light ${i}`);
      await waitFor(() => got.length > i, 10_000, `message ${i}`);
    }
    const light = reader.metrics();
    expect(light.jsThreadReads).toBeGreaterThan(100);
    expect(light.handoffs).toBeGreaterThanOrEqual(1);

    // Bulk: 64 MiB as fast as the writer goes.
    const big = Buffer.alloc(64 * 1024, 7);
    const before = bytes();
    for (let i = 0; i < 1024; i++) {
      while (!writer.write(big)) await new Promise((r) => writer.once('drain', r));
    }
    await waitFor(() => bytes() - before >= 1024 * big.length, 30_000, 'bulk');
    const bulk = reader.metrics();
    const ioReads = bulk.readCalls - light.readCalls - (bulk.jsThreadReads - light.jsThreadReads);
    expect(ioReads).toBeGreaterThan(0);
    expect(bulk.handoffs).toBeGreaterThan(light.handoffs);

    // Quiet again: back on the JavaScript thread.
    const n0 = got.length;
    for (let i = 0; i < 100; i++) {
      writer.write(`again ${i}`);
      await waitFor(() => got.length > n0 + i, 10_000, `again ${i}`);
    }
    expect(reader.metrics().jsThreadReads).toBeGreaterThan(bulk.jsThreadReads);
    expect(got.slice(0, 3)).toEqual(['light 0', 'light 1', 'light 2']);
    expect(got.at(-1)).toBe('again 99');
    expect(got.length).toBe(300);
  }, 60_000);

  it('jsThreadPolling: false never reads on the JavaScript thread', async () => {
    const { reader, writer, got } = await pair({ jsThreadPolling: false });
    for (let i = 0; i < 50; i++) {
      writer.write(`m${i}`);
      await waitFor(() => got.length > i, 10_000, `message ${i}`);
    }
    const m = reader.metrics();
    expect(m.readCalls).toBeGreaterThan(0);
    expect(m.jsThreadReads).toBe(0);
    expect(m.handoffs).toBe(0);
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
  });

  it('a stop while the JavaScript thread polls delivers everything and removes the socket', async () => {
    const { reader, writer, got } = await pair();
    writer.write('before stop');
    await waitFor(() => got.length === 1, 10_000, 'first');
    await waitFor(() => reader.metrics().jsThreadReads > 0 || reader.metrics().handoffs > 0, 10_000, 'hand-over');
    for (let i = 0; i < 10; i++) writer.write(`tail ${i}`);
    await writer.stop();
    const res = await reader.stop({ timeoutMs: 5000 });
    expect(res.discarded).toBe(0);
    expect(got).toEqual(['before stop', ...Array.from({ length: 10 }, (_, i) => `tail ${i}`)]);
  });

  it("'always': bulk traffic stays on the JavaScript thread, in order and complete", async () => {
    const { reader, writer, got, bytes } = await pair({ jsThreadPolling: 'always' });
    writer.write('first');
    await waitFor(() => got.length === 1, 10_000, 'first');
    // The IO thread hands its loop over once idle (it may have read 'first' itself).
    await waitFor(() => reader.metrics().handoffs > 0 || reader.metrics().jsThreadReads > 0, 10_000, 'hand-over');
    const before = reader.metrics();
    const big = Buffer.alloc(64 * 1024, 7);
    const b0 = bytes();
    for (let i = 0; i < 1024; i++) {
      while (!writer.write(big)) await new Promise((r) => writer.once('drain', r));
    }
    writer.write('last');
    await waitFor(() => got.length === 2, 30_000, 'bulk');
    expect(bytes() - b0).toBe(1024 * big.length + 4);
    const after = reader.metrics();
    const reads = after.readCalls - before.readCalls;
    const jsReads = after.jsThreadReads - before.jsThreadReads;
    expect(reads).toBeGreaterThan(10);
    // The reads of the 64 MiB on the JavaScript thread ('light' makes almost
    // none there), but for take-overs by the IO thread's 50 ms watch when
    // this thread is descheduled on a loaded machine (the whole suite runs
    // in parallel): then it hands back at the next quiet moment.
    expect(jsReads, JSON.stringify({ reads, jsReads })).toBeGreaterThan(reads / 2);
    expect(got).toEqual(['first', 'last']);
  }, 60_000);

  it("default: 'always' when at most 2 CPUs are available (a child pinned to one CPU)", async () => {
    const script = `
      const { Reader, Writer } = require(${JSON.stringify(DIST)});
      const os = require('node:os');
      (async () => {
        let n = 0;
        const reader = new Reader(${JSON.stringify(tmpSocket())}, (b) => { n += b.length; });
        await reader.start();
        const writer = new Writer(reader.path).start();
        const until = async (f) => { while (!f()) await new Promise((r) => setTimeout(r, 2)); };
        // A light message first: the IO thread hands its loop over when idle.
        writer.write('hello');
        await until(() => n === 1 && (reader.metrics().handoffs > 0 || reader.metrics().jsThreadReads > 0));
        const m0 = reader.metrics();
        const big = Buffer.alloc(64 * 1024, 1);
        for (let i = 0; i < 1024; i++) while (!writer.write(big)) await new Promise((r) => writer.once('drain', r));
        await until(() => n === 1025);
        const m = reader.metrics();
        console.log(JSON.stringify({ cpus: os.availableParallelism(), reads: m.readCalls - m0.readCalls, js: m.jsThreadReads - m0.jsThreadReads }));
        await writer.stop();
        await reader.stop();
      })();`;
    const r = spawnSync('taskset', ['-c', '0', process.execPath, '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.cpus).toBe(1);
    expect(out.reads).toBeGreaterThan(10);
    expect(out.js, JSON.stringify(out)).toBeGreaterThan(out.reads / 2);
  }, 40_000);

  it('rejects an invalid jsThreadPolling: ERR_INVALID_ARG_TYPE for another type, ERR_INVALID_ARG_VALUE for another string', () => {
    expect(() => new Reader(tmpSocket(), () => {}, { jsThreadPolling: 1 as unknown as boolean })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('jsThreadPolling') }),
    );
    expect(() => new Reader(tmpSocket(), () => {}, { jsThreadPolling: 'yes' as unknown as boolean })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining("'light' or 'always'") }),
    );
  });
});
