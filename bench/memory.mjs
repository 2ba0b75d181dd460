#!/usr/bin/env node
// npm run bench:memory: what uds-ipc holds in memory under pressure, in two
// processes, and how it was measured.
//
// 1. Slow reader. A Writer streams 100-byte messages as fast as send() lets
//    it for --seconds (default 10); the Reader's async handler sleeps
//    --handler-us (default 110 µs) per message: about 100 times what a write()
//    of 100 B costs the writer (~1 µs with its sendmsg share). The reader
//    samples its RSS every 20 ms: growth = peak - RSS once listening.
//    The writer reports its own growth the same way, against the bytes its
//    queue may hold (maxBufferedBytes).
// 2. Allocation per message. 64-byte messages at full speed, the handler
//    visiting every message with batch.visit(); both processes count the
//    garbage collections (PerformanceObserver 'gc') from the first to the
//    last message. A few scavenges per million messages mean nothing is
//    allocated per message (one small object per message would be ~1,000).
//
//   node bench/memory.mjs [--seconds S] [--handler-us U] [--max-pending BYTES] [--gc-count N] [--out FILE] [--no-readme] [--quick]
// --max-pending: the slow reader's maxPendingBytes (default: the Reader's).
// Results: stdout, bench/results/memory-<date>.json and the bench:memory
// section of bench/README.md.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { constants, performance, PerformanceObserver } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { replaceSection } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const MiB = 1024 * 1024;
const START = '<!-- bench:memory:start -->';
const END = '<!-- bench:memory:end -->';

function rss() {
  return process.memoryUsage.rss();
}

// Samples RSS every 20 ms; returns { baseline, peak() }.
function rssSampler() {
  const baseline = rss();
  let peak = baseline;
  const t = setInterval(() => {
    peak = Math.max(peak, rss());
  }, 20);
  t.unref();
  return {
    baseline,
    peak: () => {
      clearInterval(t);
      return Math.max(peak, rss());
    },
  };
}

// Counts garbage collections between start() and stop() (by their start
// time: the observer delivers entries later, as a task).
function gcCounter() {
  const entries = [];
  const obs = new PerformanceObserver((list) => entries.push(...list.getEntries()));
  obs.observe({ entryTypes: ['gc'] });
  let t0 = Infinity;
  return {
    start: () => {
      if (t0 === Infinity) t0 = performance.now();
    },
    stop: async () => {
      const t1 = performance.now();
      await sleep(50); // let pending entries arrive
      obs.disconnect();
      const counts = { minor: 0, major: 0, other: 0 };
      for (const e of entries) {
        if (e.startTime < t0 || e.startTime > t1) continue;
        const kind = e.detail?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MINOR) counts.minor++;
        else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
        else counts.other++;
      }
      return counts;
    },
  };
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function child(cfg) {
  const { Reader, Writer } = await import(path.join(root, 'dist', 'index.mjs'));
  if (cfg.role === 'reader') {
    let received = 0;
    const gc = gcCounter();
    const visit = () => {};
    const handler =
      cfg.case === 'slow'
        ? async (batch) => {
            received += batch.length;
            await sleep((batch.length * cfg.handlerUs) / 1000);
          }
        : (batch) => {
            if (received === 0) gc.start();
            batch.visit(visit);
            received += batch.length;
            if (received >= cfg.count) finish();
          };
    const reader = new Reader(cfg.path, handler, cfg.maxPending ? { maxPendingBytes: cfg.maxPending } : {});
    await reader.start();
    const mem = rssSampler();
    out({ ready: true });
    let done = false;
    const finish = async () => {
      if (done) return;
      done = true;
      const peak = mem.peak();
      const gcs = await gc.stop();
      out({ role: 'reader', received, baseline: mem.baseline, peak, gcs, metrics: reader.metrics() });
      reader.stop({ timeoutMs: 0 }).then(() => process.exit(0));
    };
    if (cfg.case === 'slow') process.once('SIGTERM', finish);
    return;
  }
  const writer = new Writer(cfg.path);
  const mem = rssSampler();
  const gc = gcCounter();
  writer.start();
  const msg = Buffer.alloc(cfg.size, 0x5a);
  let sent = 0;
  if (cfg.case === 'slow') {
    const until = Date.now() + cfg.seconds * 1000;
    while (Date.now() < until) {
      for (let i = 0; i < 1000; i++) await writer.send(msg);
      sent += 1000;
    }
    out({ role: 'writer', sent, baseline: mem.baseline, peak: mem.peak(), maxBufferedBytes: 16 * MiB });
    await writer.stop({ timeoutMs: 0 });
    process.exit(0);
  }
  gc.start();
  for (; sent < cfg.count; sent++) {
    while (!writer.write(msg)) await new Promise((r) => writer.once('drain', r));
  }
  await writer.flush();
  const gcs = await gc.stop();
  out({ role: 'writer', sent, gcs, baseline: mem.baseline, peak: mem.peak() });
  await writer.stop();
  process.exit(0);
}

// A child of this script as a role process of the shared harness (src/bench/pair.ts).
function runChild(cfg) {
  const role = new harness.RoleProcess(cfg.role, [process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(cfg)]], {
    cwd: root,
    stderr: 'inherit',
  });
  const what = `${cfg.role} (${cfg.case})`;
  const ready = role.ready.then((ok) => {
    if (!ok) throw new Error(`${what} exited before it was ready`);
  });
  ready.catch(() => undefined); // awaited for readers only
  const done = role.exited.then((e) => {
    if (e.code !== 0 || !role.result) throw new Error(`${what} exited ${e.signal ?? e.code}`);
    return role.result;
  });
  return { p: role.child, ready, done };
}

const mib = (b) => (b / MiB).toFixed(1);

let harness;

async function main() {
  harness = await import(path.join(root, 'dist', 'bench', 'pair.js'));
  const argv = process.argv.slice(2);
  const opt = (name, def) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : def;
  };
  const quick = argv.includes('--quick');
  const seconds = opt('--seconds', quick ? 1 : 10);
  const handlerUs = opt('--handler-us', 110);
  const maxPending = opt('--max-pending', undefined);
  const gcCount = opt('--gc-count', quick ? 200_000 : 4_000_000);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'uds-bench-mem-'));
  try {
    // 1. Slow reader.
    const sockA = path.join(dir, 'slow.sock');
    const r1 = runChild({ role: 'reader', case: 'slow', path: sockA, handlerUs, maxPending });
    await r1.ready;
    const w1 = await runChild({ role: 'writer', case: 'slow', path: sockA, size: 100, seconds }).done;
    r1.p.kill('SIGTERM');
    const rd1 = await r1.done;
    // 2. GCs over a 64 B stream.
    const sockB = path.join(dir, 'gc.sock');
    const r2 = runChild({ role: 'reader', case: 'gc', path: sockB, count: gcCount });
    await r2.ready;
    const [w2, rd2] = await Promise.all([runChild({ role: 'writer', case: 'gc', path: sockB, size: 64, count: gcCount }).done, r2.done]);

    const result = {
      command: ['node', 'bench/memory.mjs', ...argv].join(' '),
      date: new Date().toISOString(),
      node: process.version,
      cores: os.cpus().length,
      slowReader: { seconds, handlerUs, maxPendingBytes: maxPending, messageBytes: 100, writer: w1, reader: rd1 },
      gc: { messages: gcCount, messageBytes: 64, writer: w2, reader: rd2 },
    };
    const lines = [
      `Slow reader (${seconds} s, 100 B messages, handler sleeping ${handlerUs} µs per message):`,
      `  reader RSS growth ${mib(rd1.peak - rd1.baseline)} MiB (peak ${mib(rd1.peak)} MiB; ${rd1.received} messages handled, ${rd1.metrics.pauses} pauses)`,
      `  writer RSS growth ${mib(w1.peak - w1.baseline)} MiB (peak ${mib(w1.peak)} MiB; queue limit ${mib(w1.maxBufferedBytes)} MiB; ${w1.sent} messages sent)`,
      `Garbage collections over ${gcCount} messages of 64 B (batch.visit()):`,
      `  reader ${rd2.gcs.minor} scavenges, ${rd2.gcs.major} mark-compacts; writer ${w2.gcs.minor} scavenges, ${w2.gcs.major} mark-compacts`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    const outIdx = argv.indexOf('--out');
    const file =
      outIdx >= 0 ? path.resolve(argv[outIdx + 1]) : path.join(here, 'results', `memory-${result.date.replace(/[:.]/g, '-')}.json`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(`JSON: ${path.relative(root, file)}\n`);
    if (argv.includes('--no-readme') || quick) return;
    replaceSection(
      path.join(here, 'README.md'),
      START,
      END,
      `## Memory (\`npm run bench:memory\`)

_Written by \`node bench/memory.mjs\`._

\`\`\`
${lines.join('\n')}
\`\`\`

- Command: \`${result.command}\`; ${result.date}; Node ${result.node}, ${result.cores} cores
- RSS is sampled every 20 ms in each process; growth is the peak minus the
  RSS once listening (reader) or once constructed (writer, ring allocated
  but not yet touched).
- Garbage collections are counted with \`PerformanceObserver\` ('gc' entries)
  from the first to the last message in each process.`,
    );
    process.stderr.write('bench/README.md updated (bench:memory section).\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2]?.startsWith('{')) child(JSON.parse(process.argv[2])).catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(2);
});
else main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
