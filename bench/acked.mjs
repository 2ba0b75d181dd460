// Acked delivery (issue #21) vs the default (at-most-once) mode: msgs/s of
// one writer process and one reader process through the public API, at
// 64 B, 1 KiB and 100 KiB, interleaved rounds.
//
//   node bench/acked.mjs [--runs 5] [--sizes 64,1024,102400] [--count <n for every size>]
//                        [--readme]      (also write the table into bench/README.md, bench:acked markers)
//
// Per round and size: the default mode and the acked mode, in alternating
// order (a round starts with the mode the previous one ended with), each a
// fresh pair of processes on a fresh socket. The roles are this file run as
// `node bench/acked.mjs --role '<json>'` and speak the bench protocol of
// src/bench/role.ts, run by src/bench/pair.ts runPair() like the other benches:
//   writer: Writer({ delivery }), write() in a loop, on false await 'drain'
//           and write the same message again; then (acked) acknowledged(),
//           then stop(). Its time: first write to acknowledged()/stop().
//   reader: Reader({ delivery }), batch.visit() summing the first byte of each
//           message (message i starts with i & 0xff, checked at the end); msgs/s
//           from the first to the last arrival (src/bench/measure.ts Arrivals).
// Reported: msgs/s at the reader (median of the rounds, min–max), the acked /
// default ratio of the medians against the issue's targets (>= 0.70 at 1 KiB
// and above, >= 0.50 at 64 B), and where the cost goes: CPU (user+system, all
// threads) per message in each process, the reader's batches, the writer's
// sendmsg calls, and the writer's wall time until everything was acknowledged.
// Needs `npm run build:ts` (dist/).
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const self = fileURLToPath(import.meta.url);
const require = createRequire(import.meta.url);
const dist = (p) => require(path.join(root, 'dist', p));

function arg(name, d) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : d;
}

const DEFAULT_COUNTS = { 64: 1_000_000, 1024: 500_000, 102400: 20_000 };

// ---------------------------------------------------------------- roles

async function reader(cfg) {
  const { Reader } = dist('index.js');
  const { Arrivals, cpuSince, expectedChecksum, peakRssKiB } = dist('bench/measure.js');
  const { ready, finish, fail } = dist('bench/role.js');
  const { size, count } = cfg;
  let msgs = 0;
  let bytes = 0;
  let sum = 0;
  let errors = 0;
  let done = false;
  let cpu0;
  const arrivals = new Arrivals();
  const onVisit = (b, start) => {
    sum += b[start];
    msgs++;
  };
  const r = new Reader(
    cfg.path,
    (batch) => {
      batch.visit(onVisit);
      bytes += batch.byteLength;
      arrivals.mark(msgs, bytes);
      if (msgs >= count && !done) {
        done = true;
        const cpu = cpuSince(cpu0);
        // Stop once this batch was released (acked mode: after its ack went out).
        setImmediate(async () => {
          await r.stop({ timeoutMs: 30_000 }).catch(() => undefined);
          const m = r.metrics();
          finish(
            {
              role: 'reader',
              delivery: cfg.delivery,
              size,
              count,
              msgs,
              ...arrivals.result(msgs, bytes),
              checksumOk: sum === expectedChecksum(count, size),
              ...cpu,
              peakRssKiB: peakRssKiB(),
              batches: m.batches,
              readCalls: m.readCalls,
              pauses: m.pauses,
              acked: m.acked ?? 0,
            },
            errors > 0 ? 1 : 0,
          );
        });
      }
    },
    {
      delivery: cfg.delivery,
      maxMessageSize: Math.max(size, 10 * 1024 * 1024),
      onError: (e, context) => {
        errors++;
        process.stderr.write(`reader error (${context}): ${e.code ?? ''} ${e.message}\n`);
      },
    },
  );
  await r.start().catch(fail);
  cpu0 = process.cpuUsage();
  ready();
}

async function writer(cfg) {
  const { Writer } = dist('index.js');
  const { cpuSince, peakRssKiB, stampSequence } = dist('bench/measure.js');
  const { finish } = dist('bench/role.js');
  const { size, count } = cfg;
  const w = new Writer(cfg.path, { delivery: cfg.delivery, maxMessageSize: Math.max(size, 10 * 1024 * 1024) });
  let fatal;
  w.on('error', (e) => {
    // A handshake mismatch would be a fatal misconfiguration here.
    fatal ??= e;
  });
  w.start();
  await once(w, 'connect');
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const msg = Buffer.alloc(size, 0x5a);
  let refused = 0;
  for (let i = 0; i < count; i++) {
    if (size > 0) stampSequence(msg, i, 1);
    while (!w.write(msg)) {
      refused++;
      if (fatal) throw fatal;
      await once(w, 'drain');
    }
  }
  if (cfg.delivery === 'acked') await w.acknowledged();
  const { discarded } = await w.stop({ timeoutMs: 120_000 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (fatal) throw fatal;
  const m = w.metrics();
  finish(
    {
      role: 'writer',
      delivery: cfg.delivery,
      size,
      count,
      seconds,
      ...cpuSince(cpu0),
      peakRssKiB: peakRssKiB(),
      refused,
      discarded,
      sendCalls: m.sendCalls,
      acked: m.acked ?? 0,
      resent: m.resent ?? 0,
    },
    discarded > 0 ? 1 : 0,
  );
}

if (process.argv[2] === '--role') {
  const { readConfig, fail } = dist('bench/role.js');
  const cfg = { ...readConfig(process.argv[3]), delivery: JSON.parse(process.argv[3]).delivery ?? 'at-most-once' };
  if (process.channel) {
    process.on('disconnect', () => process.exit(1));
    process.channel.unref();
  }
  process.on('unhandledRejection', fail);
  (cfg.role === 'reader' ? reader(cfg) : writer(cfg)).catch(fail);
} else {
  await main();
}

// ---------------------------------------------------------------- parent

async function main() {
  const { checkArgs } = await import('./common.mjs');
  checkArgs('usage: node bench/acked.mjs [--runs 5] [--sizes 64,1024,102400] [--count <n for every size>] [--readme]', ['--runs', '--sizes', '--count'], ['--readme']);
  const { runPair } = dist('bench/pair.js');
  const runs = Number(arg('--runs', '5'));
  const sizes = arg('--sizes', '64,1024,102400').split(',').map(Number);
  const countArg = arg('--count', undefined);
  const countFor = (size) => (countArg ? Number(countArg) : (DEFAULT_COUNTS[size] ?? Math.max(10_000, Math.round(1e8 / Math.max(size, 64)))));
  const log = (s) => process.stderr.write(`${s}\n`);
  const modes = ['at-most-once', 'acked'];
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'uds-acked-bench-'));
  const results = {}; // size -> mode -> [{ reader, writer }]
  let n = 0;
  try {
    for (let k = 0; k < runs; k++) {
      for (const size of sizes) {
        results[size] ??= { 'at-most-once': [], acked: [] };
        const order = (k + sizes.indexOf(size)) % 2 === 0 ? modes : [...modes].reverse();
        for (const delivery of order) {
          const cfg = { path: path.join(tmp, `${n++}.sock`), size, count: countFor(size), mode: 'throughput', delivery };
          const role = (r) => [process.execPath, [self, '--role', JSON.stringify({ ...cfg, role: r })]];
          const res = await runPair({ reader: role('reader'), writer: role('writer'), cwd: root, timeoutMs: 300_000 });
          results[size][delivery].push(res);
        }
        const r = results[size];
        log(
          `round ${k + 1}/${runs} size ${size}: ` +
            modes.map((d) => `${d} ${fmt(r[d][k].reader.msgsPerSec)} msgs/s`).join(', ') +
            ` (ratio ${(r.acked[k].reader.msgsPerSec / r['at-most-once'][k].reader.msgsPerSec).toFixed(2)})`,
        );
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const rows = [];
  const costRows = [];
  for (const size of sizes) {
    const r = results[size];
    const med = (d, f) => median(r[d].map(f));
    const rate = (d) => med(d, (x) => x.reader.msgsPerSec);
    const spread = (d) => `${fmt(Math.min(...r[d].map((x) => x.reader.msgsPerSec)))}–${fmt(Math.max(...r[d].map((x) => x.reader.msgsPerSec)))}`;
    const ratio = rate('acked') / rate('at-most-once');
    const target = size >= 1024 ? 0.7 : 0.5;
    const roundRatios = r.acked.map((x, i) => x.reader.msgsPerSec / r['at-most-once'][i].reader.msgsPerSec);
    rows.push(
      `| ${label(size)} | ${fmt(rate('at-most-once'))} (${spread('at-most-once')}) | ${fmt(rate('acked'))} (${spread('acked')}) | ` +
        `${ratio.toFixed(2)} (${Math.min(...roundRatios).toFixed(2)}–${Math.max(...roundRatios).toFixed(2)}) | ≥ ${target.toFixed(2)} ${ratio >= target ? 'met' : 'NOT met'} |`,
    );
    for (const d of modes) {
      const count = r[d][0].reader.count;
      const ns = (f) => ((med(d, f) / count) * 1e9).toFixed(0);
      costRows.push(
        `| ${label(size)} | ${d} | ${ns((x) => x.writer.cpuUser + x.writer.cpuSystem)} | ${ns((x) => x.reader.cpuUser + x.reader.cpuSystem)} | ` +
          `${fmt(med(d, (x) => x.reader.batches))} | ${fmt(med(d, (x) => x.writer.sendCalls))} | ${fmt(med(d, (x) => x.writer.refused))} | ${med(d, (x) => x.writer.seconds).toFixed(2)} |`,
      );
    }
  }
  const counts = sizes.map((s) => `${label(s)}: ${fmt(countFor(s))}`).join(', ');
  const body = [
    '## Acked delivery vs the default mode',
    '',
    `_Written by \`node bench/acked.mjs --runs ${runs} --sizes ${sizes.join(',')}${countArg ? ` --count ${countArg}` : ''}\`, ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)} at the end._`,
    '',
    `msgs/s at the reader (first to last arrival), one writer process and one reader process, default options but \`delivery\`; messages per run: ${counts}.`,
    `The median of ${runs} interleaved rounds (min–max); ratio = acked / default of the medians (min–max of the per-round ratios). Targets from issue #21.`,
    '',
    '| size | at-most-once | acked | ratio | target |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    'Where the cost goes (medians): CPU per message of each process (user + system, all threads), the',
    "reader's batches, the writer's sendmsg calls, write() refusals (window or queue full), and the writer's",
    'time from its first write to stop() (acked: to acknowledged(), i.e. until the last ack came back).',
    '',
    '| size | mode | writer CPU ns/msg | reader CPU ns/msg | reader batches | writer sendmsg | refused | writer s |',
    '|---|---|---|---|---|---|---|---|',
    ...costRows,
  ].join('\n');
  console.log(body);
  if (process.argv.includes('--readme')) {
    const { replaceSection } = await import('./common.mjs');
    replaceSection(path.join(here, 'README.md'), '<!-- bench:acked:start -->', '<!-- bench:acked:end -->', body);
  }
}

function median(xs) {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function fmt(x) {
  return Math.round(x).toLocaleString('en-US');
}

function label(size) {
  return size >= 1024 && size % 1024 === 0 ? `${size / 1024} KiB` : `${size} B`;
}
