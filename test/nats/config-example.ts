// The configuration file example of docs/nats.md, for the tests that check it
// (test/nats-unit.test.ts without a server, test/nats/config.test.ts with one).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers';

/** The first json block of the section "Routes from a configuration file" of docs/nats.md. */
export function docsConfigExample(): string {
  const doc = readFileSync(join(ROOT, 'docs', 'nats.md'), 'utf8');
  const at = doc.indexOf('\n## Routes from a configuration file');
  if (at < 0) throw new Error('no section "Routes from a configuration file" in docs/nats.md');
  const m = /```json\n([\s\S]*?)```/.exec(doc.slice(at));
  if (!m) throw new Error('no json block in the section "Routes from a configuration file" of docs/nats.md');
  return m[1];
}
