#!/usr/bin/env node
// The hash of the sources the addon is compiled from: every file under
// native/core/ and native/addon/ plus binding.gyp (paths and contents, in
// sorted order), sha256, first 32 hex digits. binding.gyp stamps it into every
// build (UDS_IPC_SOURCE_HASH, see build_stamp.cc) and scripts/check-prebuilds.mjs
// compares the stamp in each prebuilds/*/*.node with it at `npm pack`, so a
// prebuild built from other sources cannot be published.
//
// Usage: node native/addon/source_hash.cjs   (prints the hash; cwd-independent)
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');

function files(dir) {
  const out = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = dir + '/' + e.name;
    if (e.isDirectory()) out.push(...files(rel));
    else if (e.isFile()) out.push(rel);
  }
  return out;
}

function sourceHash() {
  const list = [...files('native/core'), ...files('native/addon'), 'binding.gyp'].sort();
  const h = crypto.createHash('sha256');
  for (const f of list) {
    h.update(f + '\0');
    h.update(fs.readFileSync(path.join(root, f)));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 32);
}

module.exports = { sourceHash };
if (require.main === module) process.stdout.write(sourceHash());
