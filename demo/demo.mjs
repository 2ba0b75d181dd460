// npm start: a Reader in this process, a Writer in a child process, 1,000,000
// messages of 64 bytes over a socket in a temp dir; checks every message
// arrived, in order, and prints the throughput.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Reader } from '../dist/index.mjs';

const COUNT = Number(process.env.DEMO_COUNT ?? 1_000_000);
const SIZE = 64;
const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-demo-'));
const socketPath = join(dir, 'demo.sock');
const tty = process.stdout.isTTY;

let received = 0;
let outOfOrder = 0;
let firstAt = 0n;
let lastAt = 0n;

const reader = new Reader(
  socketPath,
  (batch) => {
    if (firstAt === 0n) firstAt = process.hrtime.bigint();
    // Zero-allocation visit: each message starts with its 32-bit sequence number.
    batch.visit((bytes, start, end) => {
      const seq = (bytes[start] | (bytes[start + 1] << 8) | (bytes[start + 2] << 16) | (bytes[start + 3] << 24)) >>> 0;
      if (seq !== received || end - start !== SIZE) outOfOrder++;
      received++;
    });
    lastAt = process.hrtime.bigint();
  },
  { onError: (err, context) => console.error(`reader ${context} error:`, err.message) },
);
await reader.start();

const child = fork(join(fileURLToPath(import.meta.url), '..', 'demo-writer.mjs'), [socketPath, String(COUNT), String(SIZE)], {
  stdio: 'inherit',
});

let lastPrinted = -1;
const progress = setInterval(() => {
  const pct = Math.floor((received / COUNT) * 100);
  if (tty) process.stdout.write(`\rreceived ${received.toLocaleString()} / ${COUNT.toLocaleString()} (${pct}%)   `);
  else if (pct >= lastPrinted + 25) {
    lastPrinted = pct - (pct % 25);
    console.log(`received ${received} / ${COUNT} (${pct}%)`);
  }
}, 100);

const [code] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
const deadline = Date.now() + 10_000;
while (received < COUNT && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
clearInterval(progress);
if (tty) process.stdout.write('\n');
await reader.stop();
rmSync(dir, { recursive: true, force: true });

const seconds = Number(lastAt - firstAt) / 1e9 || 1e-9;
const ok = code === 0 && received === COUNT && outOfOrder === 0;
console.log(
  `${ok ? 'OK' : 'FAILED'}: ${received.toLocaleString()} of ${COUNT.toLocaleString()} messages of ${SIZE} B received in order` +
    (outOfOrder ? ` (${outOfOrder} out of order)` : ''),
);
console.log(
  `${(received / seconds / 1e6).toFixed(2)} M messages/s, ${((received * SIZE) / seconds / 1e6).toFixed(1)} MB/s (first to last message at the reader)`,
);
process.exitCode = ok ? 0 : 1;
