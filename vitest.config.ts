import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    // test/tool/ needs tools a fresh machine lacks (systemd-socket-activate):
    // vitest.tool.config.ts, `npm run test:systemd`.
    include: ['test/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Two cores: run files two at a time so timing-sensitive socket tests do
    // not starve each other.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
