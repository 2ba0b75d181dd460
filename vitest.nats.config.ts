import { defineConfig } from 'vitest/config';
import base from './vitest.config';

// The NATS bridge tests (test/nats/), which need nats-server (Debian package
// "nats-server"), which a fresh machine lacks: `npm run test:nats`, run by
// .ci/run after installing it. The main config's settings with test/nats/
// only, one file at a time (each starts its own servers and bridges).
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: ['test/nats/**/*.test.ts'],
    testTimeout: 120_000,
    poolOptions: { forks: { maxForks: 1, minForks: 1 } },
  },
});
