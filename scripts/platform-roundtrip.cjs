// Run by scripts/test-platforms.sh inside another system (a Debian 11 chroot,
// or an arm64 Node under qemu-user): loads the staged package (its dist/ and
// the prebuild node-gyp-build picks), sends COUNT messages of 0..199 bytes
// from a Writer to a Reader over a Unix socket in os.tmpdir(), checks every
// one (order, length, content) and prints one JSON line: the architecture,
// the C library actually running, the addon file that is mapped, and the rate.
//
// Usage: node platform-roundtrip.cjs PACKAGE_DIR [COUNT=100000]
'use strict';
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const pkg = path.resolve(process.argv[2]);
const count = Number(process.argv[3] || 100_000);
const { Reader, Writer } = require(path.join(pkg, 'dist', 'index.js'));

function message(i) {
  const b = Buffer.alloc(i % 200);
  for (let k = 0; k < b.length; k++) b[k] = (i * 31 + k * 7) & 0xff;
  if (b.length >= 4) b.writeUInt32LE(i, 0);
  return b;
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uds-ipc-platform-'));
  const sock = path.join(dir, 's.sock');
  let got = 0;
  let bad = null;
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const reader = new Reader(sock, (batch) => {
    for (const m of batch) {
      if (!bad && !message(got).equals(m)) bad = `message ${got}: ${m.length} bytes ${m.subarray(0, 8).toString('hex')}`;
      got++;
    }
    if (got >= count) resolveDone();
  });
  const timer = setTimeout(() => {
    console.error(`platform-roundtrip: only ${got} of ${count} messages within 180 s`);
    process.exit(1);
  }, 180_000);
  await reader.start();
  const writer = new Writer(sock);
  writer.start();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const m = message(i);
    if (!writer.write(m)) await writer.send(m);
  }
  await writer.flush();
  await done;
  clearTimeout(timer);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await writer.stop();
  const { discarded } = await reader.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  assert.strictEqual(bad, null, bad);
  assert.strictEqual(got, count);
  assert.strictEqual(discarded, 0);

  let mapped = null;
  try {
    mapped = fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' ')).find((f) => f.endsWith('.node')) ?? null;
  } catch {
    // no /proc: say so
  }
  const resolved = require(path.join(pkg, 'node_modules', 'node-gyp-build')).resolve(pkg);
  console.log(JSON.stringify({
    arch: process.arch,
    node: process.version,
    glibcRuntime: process.report.getReport().header.glibcVersionRuntime,
    addon: path.relative(pkg, resolved),
    mapped,
    messages: got,
    ms: Math.round(ms),
    perSecond: Math.round(got / (ms / 1000)),
  }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
