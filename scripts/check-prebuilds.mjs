#!/usr/bin/env node
// The stale-binary guard, run by `prepack` (so by `npm pack` and `npm
// publish`): every prebuilds/*/*.node must carry the source hash of the
// current native/core, native/addon and binding.gyp (stamped at build time,
// see native/addon/build_stamp.cc and source_hash.cjs), and both
// prebuilds/linux-x64 and prebuilds/linux-arm64 must be there. Otherwise it
// fails: run `npm run prebuild` again. The stamp is read from the file, so it
// works for the arm64 binary on an x64 host.
//
// Usage: node scripts/check-prebuilds.mjs
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { sourceHash } = createRequire(import.meta.url)(path.join(root, 'native/addon/source_hash.cjs'));
const want = sourceHash();
const marker = 'uds-ipc-source-hash:';
const required = ['linux-x64', 'linux-arm64'];

const problems = [];
const dir = path.join(root, 'prebuilds');
const tuples = fs.existsSync(dir) ? fs.readdirSync(dir).filter((d) => fs.statSync(path.join(dir, d)).isDirectory()) : [];
for (const t of required) if (!tuples.includes(t)) problems.push(`prebuilds/${t}/ is missing`);
let count = 0;
for (const t of tuples) {
  for (const f of fs.readdirSync(path.join(dir, t)).filter((n) => n.endsWith('.node'))) {
    count++;
    const rel = `prebuilds/${t}/${f}`;
    const buf = fs.readFileSync(path.join(dir, t, f));
    const at = buf.indexOf(marker);
    if (at < 0) {
      problems.push(`${rel} has no source hash stamp`);
      continue;
    }
    const got = buf.subarray(at + marker.length, at + marker.length + 64).toString('latin1').match(/^[0-9a-z]*/)[0];
    if (got !== want) problems.push(`${rel} was built from other sources (stamp ${got}, current sources ${want})`);
  }
}
if (count === 0) problems.push('no prebuilds/*/*.node at all');

if (problems.length) {
  console.error(
    `check-prebuilds: refusing to pack:\n  - ${problems.join('\n  - ')}\n` +
      '  Run `npm run prebuild` (it builds linux-x64 and linux-arm64 from the current sources).',
  );
  process.exit(1);
}
console.log(`check-prebuilds: ${count} prebuilds, all built from the current sources (${want})`);
