// Smoke test of the benchmark harness (src/bench/, behind npm run bench and
// uds-ipc bench): it starts, runs every implementation on a tiny N, writes a
// well-formed JSON result, and fails a run that goes wrong. It checks no
// speed at all: benchmarks are never timed inside `npm test`.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as Pair from '../src/bench/pair';
import { ROOT } from './helpers';

// The built harness (as the CLI and bench/run.mjs use it): its roles are dist/bench/*.js.
const { PairError, runPair, udsIpcRole } = require(join(ROOT, 'dist', 'bench', 'pair.js')) as typeof Pair;

const dir = mkdtempSync(join(tmpdir(), 'uds-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const IMPLS = ['uds-visit', 'uds-buffer', 'uds-acked', 'net', 'raw'];
const SIZES = [64, 1024];

describe('bench/run.mjs --quick', () => {
  it('runs every implementation on a tiny N and writes its JSON result', () => {
    const out = join(dir, 'result.json');
    const r = spawnSync(
      process.execPath,
      [
        'bench/run.mjs',
        '--quick',
        '--sizes',
        SIZES.join(','),
        '--runs',
        '1',
        '--latency-seconds',
        '1',
        '--out',
        out,
        '--no-readme',
      ],
      // The first run may build the raw C++ limit with cmake (a few seconds).
      { cwd: ROOT, encoding: 'utf8', timeout: 110_000 },
    );
    expect(r.error, String(r.error)).toBeUndefined();
    expect(r.status, `exit ${r.status}\n${r.stderr}`).toBe(0);
    expect(existsSync(out)).toBe(true);

    const result = JSON.parse(readFileSync(out, 'utf8'));
    expect(result.machine.node).toBe(process.version);
    expect(result.runs).toHaveLength(SIZES.length * IMPLS.length);
    for (const run of result.runs) {
      expect(run.reader.msgs ?? run.reader.count).toBe(run.count);
      expect(run.reader.checksumOk).toBe(true);
      expect(run.writer.role).toBe('writer');
    }
    for (const size of SIZES) {
      for (const impl of IMPLS) {
        const s = result.summary[size]?.[impl];
        expect(s, `summary for ${impl} at ${size} B`).toBeDefined();
        expect(s.msgsPerSec).toBeGreaterThan(0);
        expect(s.bytesPerSec).toBeGreaterThan(0);
        expect(s.readerPeakRssMiB).toBeGreaterThan(0);
        expect(s.writerPeakRssMiB).toBeGreaterThan(0);
        expect(Number.isFinite(s.readerCpuPerMillion)).toBe(true);
      }
      expect(result.ratios[size].visitOverNet).toBeGreaterThan(0);
      expect(result.ratios[size].visitOverRaw).toBeGreaterThan(0);
    }
    for (const impl of ['uds-ipc', 'net']) {
      const l = result.latency[impl];
      expect(l, `latency for ${impl}`).toBeDefined();
      expect(l.samples).toBeGreaterThan(0);
      expect(l.p50us).toBeGreaterThan(0);
      expect(l.p999us).toBeGreaterThanOrEqual(l.p99us);
      expect(l.p99us).toBeGreaterThanOrEqual(l.p50us);
    }
    // The table went to stdout.
    expect(r.stdout).toContain('uds-ipc (visit) / node:net');
    expect(r.stdout).toContain('p99.9');
  }, 120_000);
});

describe('bench/memory.mjs --quick', () => {
  it('runs the slow-reader and GC-count cases on a tiny N and writes its JSON result', () => {
    const out = join(dir, 'memory.json');
    const r = spawnSync(
      process.execPath,
      // A small maxPendingBytes: the reader pauses within the second even on a
      // loaded machine (with the default 8 MiB the writer must first get
      // ~16 MiB out, which two busy cores sometimes do not allow).
      ['bench/memory.mjs', '--quick', '--seconds', '1', '--max-pending', String(256 * 1024), '--gc-count', '20000', '--out', out],
      { cwd: ROOT, encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.error, String(r.error)).toBeUndefined();
    expect(r.status, `exit ${r.status}\n${r.stderr}`).toBe(0);
    const result = JSON.parse(readFileSync(out, 'utf8'));
    const slow = result.slowReader;
    expect(slow.reader.received).toBeGreaterThan(0);
    expect(slow.reader.metrics.pauses).toBeGreaterThan(0); // the handler really was the bottleneck
    expect(slow.writer.sent).toBeGreaterThan(slow.reader.received);
    for (const side of [slow.reader, slow.writer]) expect(side.peak).toBeGreaterThanOrEqual(side.baseline);
    expect(result.gc.reader.received).toBe(20000);
    expect(result.gc.writer.sent).toBe(20000);
    for (const side of [result.gc.reader, result.gc.writer]) {
      expect(Number.isInteger(side.gcs.minor)).toBe(true);
      expect(Number.isInteger(side.gcs.major)).toBe(true);
    }
    expect(r.stdout).toContain('reader RSS growth');
    expect(r.stdout).toContain('scavenges');
  }, 60_000);
});

describe('runPair (dist/bench/pair.js)', () => {
  const sock = (name: string): string => join(dir, `${name}.sock`);
  const failure = async (p: Promise<unknown>): Promise<string[]> => {
    const e = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(PairError);
    return (e as Pair.PairError).problems;
  };

  it('runs the uds-ipc reader and writer with every message checked and both clock stamps', async () => {
    const cfg = { path: sock('each'), size: 5, count: 3000, check: 'each', stamps: true } as const;
    const { reader, writer } = await runPair({ reader: udsIpcRole({ role: 'reader', ...cfg }), writer: udsIpcRole({ role: 'writer', ...cfg }) });
    expect(reader).toMatchObject({ role: 'reader', msgs: 3000, bytes: 15000, bad: 0, checksumOk: true });
    expect(writer).toMatchObject({ role: 'writer', sent: 3000, discarded: 0 });
    expect(reader.endNs as number).toBeGreaterThan(writer.startNs as number);
  });

  it('fails the run when the messages are not the ones the reader checks for', async () => {
    // The writer stamps 1 sequence byte (check 'sum'), the reader checks 4.
    const cfg = { path: sock('mismatch'), size: 64, count: 1000 };
    const problems = await failure(
      runPair({ reader: udsIpcRole({ role: 'reader', ...cfg, check: 'each' }), writer: udsIpcRole({ role: 'writer', ...cfg }) }),
    );
    expect(problems).toEqual([expect.stringMatching(/^reader: \d+ of 1000 messages wrong/)]);
  });

  it('a process that fails fails the run with its stderr, and the other is killed', async () => {
    const cfg = { path: sock('fail'), size: 64, count: 1000 };
    const problems = await failure(
      runPair({
        reader: udsIpcRole({ role: 'reader', ...cfg }),
        writer: [process.execPath, ['-e', 'console.error("no luck"); process.exit(3)']],
      }),
    );
    // runPair returned, so the reader (which would wait for its messages forever) was killed.
    expect(problems).toEqual(['writer exited 3: no luck']);
  });

  it('a reader that is not ready in time is killed, and no writer starts', async () => {
    const problems = await failure(
      runPair({
        reader: [process.execPath, ['-e', 'setTimeout(() => {}, 60_000)']],
        writer: [process.execPath, ['-e', 'process.exit(0)']],
        readyTimeoutMs: 300,
      }),
    );
    expect(problems).toEqual(['the reader was not ready within 0.3 s', 'writer never started (the reader did not become ready)']);
  });
});
