import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Two cores: run files two at a time so timing-sensitive socket tests do
    // not starve each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
