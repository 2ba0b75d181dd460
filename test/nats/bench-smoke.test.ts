// Smoke test of `npm run bench:bridge` (bench/bridge.mjs): it starts its own
// nats-server, runs every path (the plain pair, two bridges, one bridge,
// JetStream) on a tiny N, and prints its table. It checks no speed at all:
// benchmarks are never timed inside a test.
import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from '../helpers';

describe('bench/bridge.mjs', () => {
  it('runs every path on a tiny N, loses nothing, and prints the table with the CPU share of each process', () => {
    const r = spawnSync(
      process.execPath,
      ['bench/bridge.mjs', '--runs', '1', '--count', '3000', '--js-count', '300', '--warmup', '500', '--js-warmup', '50', '--no-readme'],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = r.stdout;
    for (const row of ['| plain NATS pub/sub | 3,000 |', '| two bridges, core mode | 3,000 |', '| one bridge (both routes), core mode | 3,000 |', '| two bridges, JetStream (R1, file) | 300 |']) {
      expect(out).toContain(row);
    }
    // Nothing was lost on the way (core mode drops only when a local Writer is full: not at this size).
    expect(out).toMatch(/Messages not received: core 0 .*JetStream 0\./);
    // The CPU table names every process of each path with a share.
    expect(out).toMatch(/\| two bridges \| bench \(Writer \+ Reader\) \d+ %, subscribing bridge \d+ %, publishing bridge \d+ %, nats-server \d+ % \| \d+ % \|/);
    expect(out).toMatch(/\| plain \| bench \(publisher \+ subscriber\) \d+ %, nats-server \d+ % \| \d+ % \|/);
    // Every round reports each path.
    expect(r.stderr).toMatch(/round 1\/1: plain \d+, split \d+, one \d+, js \d+/);
  });
});
