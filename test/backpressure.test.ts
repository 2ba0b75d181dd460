// End-to-end backpressure across two processes: a slow async handler in the
// reader process must slow down a writer in another process (write() returns
// false) while the reader's memory stays bounded and nothing is lost or
// reordered.
import { describe, it, expect, afterEach, afterAll } from 'vitest';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { tmpSocket, cleanupDirs, waitFor, runNode, FIXTURES, type ChildResult } from './helpers';

const MiB = 1024 * 1024;
const children: ChildProcess[] = [];

function child(p: Promise<ChildResult> & { child: ChildProcess }): Promise<ChildResult> & { child: ChildProcess } {
  children.push(p.child);
  return p;
}

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => cleanupDirs());

async function readyLine(p: { child: ChildProcess }): Promise<string> {
  let out = '';
  p.child.stdout!.on('data', (d) => (out += d));
  await waitFor(() => /ready \d+\n/.test(out) || p.child.exitCode !== null, 15_000, 'reader child ready');
  const m = /ready (\d+)\n/.exec(out);
  if (!m) throw new Error(`reader child exited early (${p.child.exitCode})`);
  return m[1];
}

interface Run {
  reader: {
    received: number;
    outOfOrder: number;
    firstBad?: unknown;
    baseline: number;
    peak: number;
    rs: { discarded: number };
    handlerCalls: number;
    errors: string[];
    metrics: { received: number; bytesReceived: number; pauses: number; connections: number; discarded: number };
  };
  writer: {
    accepted: number;
    falses: number;
    drainWaitMs: number;
    stop: { discarded: number };
    errors: string[];
    metrics: { written: number; sent: number; dropped: number; failed: number; queueDepth: number };
  };
}

async function run(delayMs: number, durationMs: number, size: number, maxPendingBytes?: number): Promise<Run> {
  const path = tmpSocket();
  const args = [path, String(delayMs)];
  if (maxPendingBytes !== undefined) args.push(String(maxPendingBytes));
  const rp = child(runNode(join(FIXTURES, 'lc-bp-reader.js'), args, { timeoutMs: 60_000, execArgv: ['--expose-gc'] }));
  await readyLine(rp);
  const wp = child(runNode(join(FIXTURES, 'lc-bp-writer.js'), [path, String(durationMs), String(size)], { timeoutMs: 60_000 }));
  const [wr, rr] = await Promise.all([wp, rp]);
  expect(wr.stderr).toBe('');
  expect(wr.code).toBe(0);
  expect(rr.stderr).toBe('');
  expect(rr.code).toBe(0);
  const readerLines = rr.stdout.trim().split('\n');
  return { writer: JSON.parse(wr.stdout.trim()), reader: JSON.parse(readerLines[readerLines.length - 1]) };
}

describe('backpressure across processes', () => {
  it('slow async handler (5 ms/batch) vs. a writer streaming for 3 s: bounded reader RSS, no loss, no reordering, write() returns false', async () => {
    const size = 100;
    const { reader, writer } = await run(5, 3000, size);

    // The writer felt the backpressure.
    expect(writer.falses).toBeGreaterThan(0);
    expect(writer.drainWaitMs).toBeGreaterThan(0);
    expect(writer.errors).toEqual([]);
    // The writer delivered everything it accepted (graceful stop).
    expect(writer.stop.discarded).toBe(0);
    expect(writer.metrics.sent).toBe(writer.accepted);
    expect(writer.metrics.failed).toBe(0);
    expect(writer.metrics.written).toBe(writer.metrics.sent + writer.metrics.dropped + writer.metrics.failed + writer.metrics.queueDepth);

    // Nothing lost, nothing reordered.
    expect(reader.errors).toEqual([]);
    expect(reader.outOfOrder).toBe(0);
    expect(reader.firstBad).toBeUndefined();
    expect(reader.received).toBe(writer.accepted);
    expect(reader.metrics.bytesReceived).toBe(writer.accepted * size);
    expect(reader.rs.discarded).toBe(0);
    expect(reader.metrics.connections).toBe(1);

    // The reader stopped reading while the handler was behind.
    expect(reader.metrics.pauses).toBeGreaterThan(0);

    // Memory stayed bounded. Budget: maxPendingBytes (8 MiB) + retired 512 KiB
    // slabs waiting for GC (V8 collects external memory in ~64 MiB steps) +
    // slack. Measured on a 2-core box: 45..67 MiB. An unbounded reader would
    // hold most of the >100 MiB streamed.
    const growth = reader.peak - reader.baseline;
    expect(growth).toBeGreaterThan(0);
    expect(growth).toBeLessThan(96 * MiB);
    expect(reader.metrics.bytesReceived).toBeGreaterThan(growth);
  }, 80_000);

  it('large messages (64 KiB) with a small maxPendingBytes (1 MiB): still lossless and ordered, writer throttled', async () => {
    const size = 64 * 1024;
    const { reader, writer } = await run(5, 2000, size, 1 * MiB);
    expect(writer.falses).toBeGreaterThan(0);
    expect(writer.stop.discarded).toBe(0);
    expect(reader.errors).toEqual([]);
    expect(reader.outOfOrder).toBe(0);
    expect(reader.received).toBe(writer.accepted);
    expect(reader.metrics.bytesReceived).toBe(writer.accepted * size);
    expect(reader.metrics.pauses).toBeGreaterThan(0);
    const growth = reader.peak - reader.baseline;
    expect(growth).toBeLessThan(96 * MiB);
  }, 80_000);
});
