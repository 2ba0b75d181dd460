// The documentation examples that need systemd-socket-activate (an
// `activate=` marker, see test/readme-examples.test.ts): exactly those, run
// with the real tool (Debian package "systemd"; .ci/run installs it) in
// `npm run test:systemd`. npm test runs all the others and checks that every
// example runs in one of the two suites.
import { beforeAll, expect } from 'vitest';
import { existsSync } from 'node:fs';
import { needsActivate, registerExampleTests } from '../examples';

const ACTIVATE = '/usr/bin/systemd-socket-activate';

beforeAll(() => {
  // The real tool is required. No skipping.
  expect(existsSync(ACTIVATE), `${ACTIVATE} must exist (apt-get install -y systemd)`).toBe(true);
});

registerExampleTests({ select: needsActivate, checks: false, activateTool: ACTIVATE });
