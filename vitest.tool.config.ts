import { defineConfig } from 'vitest/config';
import base from './vitest.config';

// The tests that need systemd-socket-activate (Debian package "systemd"), which
// a fresh machine lacks: `npm run test:systemd`, run by .ci/run after npm test.
// The main config's settings with test/tool/ only (not mergeConfig: it would
// concatenate the include lists).
export default defineConfig({ ...base, test: { ...base.test, include: ['test/tool/**/*.test.ts'] } });
