// Smoke test of the benchmark harness (npm run bench): it starts, runs every
// implementation on a tiny N, and writes a well-formed JSON result. It checks
// no speed at all: benchmarks are never timed inside `npm test`.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers';

const dir = mkdtempSync(join(tmpdir(), 'uds-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const IMPLS = ['uds-visit', 'uds-buffer', 'net', 'raw'];
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
