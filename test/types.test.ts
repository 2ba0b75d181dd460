// Compiles the type-level tests in test/types/ with tsc: typed events, the
// AbortSignal options, iteration, streams and metricsText, including lines
// that must NOT compile (@ts-expect-error).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './helpers';

describe('public types', () => {
  it('test/types/*.test-d.ts compile cleanly with tsc', () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'test', 'types', 'tsconfig.json')], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 150_000);
});
