// Garbage collection and process lifetime, in child processes (--expose-gc):
// Readers and Writers dropped without stop(), many start/stop cycles, and a
// process leaving at every stage of a Reader/Writer's life.
// (test/lifecycle.test.ts covers graceful stop, workers, unref and
// process.exit mid-stream; this file does not repeat those.)
import { describe, it, expect, afterAll, afterEach } from 'vitest';
import { dirname, join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { tmpSocket, cleanupDirs, runNode, FIXTURES, type ChildResult } from './helpers';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
afterAll(() => cleanupDirs());

const MiB = 1024 * 1024;

function run(fixture: string, args: string[], timeoutMs: number, gc = true, env?: NodeJS.ProcessEnv): Promise<ChildResult> {
  const p = runNode(join(FIXTURES, fixture), args, { timeoutMs, env, execArgv: gc ? ['--expose-gc'] : [] });
  children.push(p.child);
  return p;
}

/** The child's last stdout line as JSON, after checking that it exited cleanly. */
function report(res: ChildResult): any {
  expect(res.stderr).toBe('');
  expect(res.signal).toBeNull();
  expect(res.code).toBe(0);
  const lines = res.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

type Counts = { threads: number; fds: number; arrayBuffers: number; rss?: number };
type DropReport = { scenario: string; base: Counts; dropped: Counts; after: Counts; collected: string[]; deliveredAfterGc?: number };

// ─── dropped without stop() ──────────────────────────────────────────────────

describe('Readers and Writers dropped without stop()', () => {
  async function drop(scenario: string): Promise<DropReport> {
    const dir = dirname(tmpSocket('x'));
    return report(await run('gc-drop.js', [dir, scenario], 20_000));
  }

  it('never started: both are collected by GC and the Writer’s queue memory is freed', async () => {
    const r = await drop('created');
    // (Today the Writer allocates its 16 MiB queue when constructed.)
    expect(r.collected).toEqual(['reader', 'writer']);
    expect(r.after.arrayBuffers - r.base.arrayBuffers).toBeLessThan(MiB);
    expect(r.after.threads).toBeLessThanOrEqual(r.base.threads);
    expect(r.after.fds).toBeLessThanOrEqual(r.base.fds);
  });

  it('started, used and stopped, then dropped: collected; threads, fds and queue memory back to the baseline', async () => {
    const r = await drop('stopped');
    expect(r.collected).toEqual(['reader', 'writer']);
    expect(r.after.threads).toBeLessThanOrEqual(r.base.threads);
    expect(r.after.fds).toBeLessThanOrEqual(r.base.fds);
    expect(r.after.arrayBuffers - r.base.arrayBuffers).toBeLessThan(MiB);
  });

  it('started, then unref()ed and dropped: survives GC and keeps delivering (like a net.Server), and the process still exits by itself', async () => {
    // Collecting a running Reader would silently stop a server the user
    // merely unref()ed; node:net keeps such handles alive until closed.
    const r = await drop('unref'); // report() checks: exit code 0, no signal, empty stderr
    expect(r.dropped.threads).toBeGreaterThan(r.base.threads); // the engines really ran
    expect(r.dropped.fds).toBeGreaterThan(r.base.fds);
    expect(r.deliveredAfterGc).toBe(1);
  });
});

// ─── many start/stop cycles ──────────────────────────────────────────────────

describe('1,000 start/stop cycles of a Reader+Writer pair (one message each)', () => {
  type CyclesReport = {
    cycles: number;
    delivered: number;
    ms: number;
    base: Counts;
    after: Counts;
    peakRss: number;
    made: number;
    collected: { reader: number; writer: number };
  };
  let result: Promise<CyclesReport> | undefined;
  // One child run shared by the tests below (each checks one property).
  const cycles = (): Promise<CyclesReport> =>
    (result ??= (async () => {
      const dir = dirname(tmpSocket('x'));
      // glibc raises its mmap threshold after a large block (a 512 KiB receive
      // slab, a Writer queue) is freed, then serves the next ones from the
      // heap, where freed memory is not given back: RSS would then depend on
      // GC timing rather than on leaks. A fixed threshold keeps them mmap()ed.
      const env = { MALLOC_MMAP_THRESHOLD_: String(128 * 1024) };
      // ~5 s normally; the generous limit is for instrumented runs (ASan: ~30 s).
      return report(await run('gc-cycles.js', [dir, '1000', '100'], 110_000, true, env)) as CyclesReport;
    })());

  it('every cycle delivers its message and stops cleanly', async () => {
    const r = await cycles();
    expect(r.cycles).toBe(1000);
    expect(r.delivered).toBe(1000);
  }, 120_000);

  it('no fd or thread accumulates', async () => {
    const r = await cycles();
    expect(r.after.threads).toBeLessThanOrEqual(r.base.threads);
    expect(r.after.fds).toBeLessThanOrEqual(r.base.fds);
  }, 120_000);

  it('RSS stays bounded (growth < 50 MiB after warm-up)', async () => {
    const r = await cycles();
    expect(r.after.rss! - r.base.rss!).toBeLessThan(50 * MiB);
    expect(r.peakRss - r.base.rss!).toBeLessThan(50 * MiB);
  }, 120_000);

  it('every stopped Reader and Writer is collected and their buffers freed (ArrayBuffer memory bounded)', async () => {
    const r = await cycles();
    // A few may still be referenced from the last cycles' closures. The
    // fixture's Writers use 256 KiB queues: 1,000 leaked would be 250 MiB.
    expect(r.collected.reader).toBeGreaterThanOrEqual(r.made - 5);
    expect(r.collected.writer).toBeGreaterThanOrEqual(r.made - 5);
    expect(r.after.arrayBuffers - r.base.arrayBuffers).toBeLessThan(64 * MiB);
  }, 120_000);
});

// ─── retained batches, left to the garbage collector ────────────────────────

describe('large batches retained by the handler, then dropped', () => {
  it('are freed by ordinary GC (no --expose-gc): 500 MiB through, the process grows by well under half of it', async () => {
    // Each batch region is an external ArrayBuffer viewing a receive slab:
    // V8 must know its size (process.memoryUsage().external) to collect it
    // in time, since nothing detaches a retained batch.
    const size = 256 * 1024;
    const count = 2000;
    const r = report(await run('gc-retained.js', [tmpSocket(), String(count), String(size)], 60_000, false));
    expect(r.received).toBe(count);
    expect(r.bytes).toBe(count * size);
    expect(r.peakExternal).toBeGreaterThan(size); // V8 counted them
    expect((r.peakRssKiB - r.baseRssKiB) * 1024).toBeLessThan(200 * MiB);
  }, 70_000);
});

// ─── leaving at every stage ──────────────────────────────────────────────────

describe('a process that leaves at any stage of a Reader/Writer lifecycle exits cleanly', () => {
  const stages = ['created', 'started', 'midstream', 'stopping', 'stopped'] as const;
  const cases = stages.flatMap((stage) => (['return', 'exit'] as const).map((how) => ({ stage, how })));

  it.each(cases)('$stage, then $how', async ({ stage, how }) => {
    const path = tmpSocket();
    const res = await run('gc-exit-stage.js', [path, stage, how], 15_000, false);
    expect(res.signal).toBeNull(); // not killed by the timeout, no crash
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(new RegExp(`^stage ${stage} reached, received \\d+\\n`));
    if (stage === 'stopping' && how === 'return') {
      // The pending stop()s finished before the process ended.
      expect(res.stdout).toMatch(/writer stopped \{"discarded":\d+\}\n/);
      expect(res.stdout).toContain('reader stopped discarded=0\n');
    }
  });
});
