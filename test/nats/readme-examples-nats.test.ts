// The documentation examples that need a NATS server (a `needs=nats-server`
// marker, see test/readme-examples.test.ts): exactly those, against a
// nats-server this suite starts (its URL in NATS_URL, which the examples
// read). npm test runs the others and checks that every example runs in one
// of the suites.
import { afterAll, beforeAll } from 'vitest';
import { needsNats, registerExampleTests } from '../examples';
import { startNats, stopAllNats } from './server';

beforeAll(async () => {
  process.env.NATS_URL = (await startNats()).url;
});
afterAll(async () => {
  delete process.env.NATS_URL;
  await stopAllNats();
});

registerExampleTests({ select: needsNats, checks: false });
