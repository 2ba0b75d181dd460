// Writes dist/index.mjs and dist/nats/index.mjs: ES module facades over the
// CommonJS build, so that `import { Reader } from 'uds-ipc'` and
// `require('uds-ipc')` share one instance of the library (one addon load, one
// class identity); the same for the subpath export `uds-ipc/nats`.
const fs = require('node:fs');
const path = require('node:path');

const dist = path.join(__dirname, '..', 'dist');
for (const rel of ['index', 'nats/index']) {
  const cjs = require(path.join(dist, rel + '.js'));
  const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule');
  const base = path.basename(rel);
  const body =
    `import cjs from './${base}.js';\n` +
    names.map((n) => `export const ${n} = cjs.${n};`).join('\n') +
    '\nexport default cjs;\n';
  fs.writeFileSync(path.join(dist, rel + '.mjs'), body);
}
