#!/usr/bin/env node
// npm run bench: uds-ipc against a careful node:net implementation of the same
// framing and against the raw C++ socket limit, in one invocation.
//
// Every case runs as two separate processes (a reader and a writer), one case
// at a time, never two at once. Runs of the implementations are interleaved
// (run 1 of each, then run 2 of each, ...) so that a change in background load
// hits them alike; medians are reported. See bench/README.md (written by this
// script) for the latest figures, and `node bench/run.mjs --help`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { keptSections } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
// The harness shared with `uds-ipc bench` (src/bench/pair.ts): runPair(), the
// uds-ipc roles. Loaded in main() once dist/ is known to be built.
let harness;

const IMPLS = {
  'uds-visit': { label: 'uds-ipc (visit)', uds: true, variant: 'visit' },
  'uds-buffer': { label: 'uds-ipc (Buffer)', uds: true, variant: 'buffer' },
  // Acknowledged delivery (docs/acked.md) on both ends, handler as uds-visit's.
  'uds-acked': { label: 'uds-ipc acked (visit)', uds: true, variant: 'visit', delivery: 'acked' },
  net: { label: 'node:net', script: 'net-baseline.mjs' },
  raw: { label: 'raw C++', native: true },
};

// Messages per run at scale 1, per payload size: about 1 s for node:net on a
// quiet 2-core machine (a slow case takes a few seconds). Throughput is a rate,
// so implementations need not send the same N: the faster ones send more
// (FACTOR), so that every run lasts about 1 s. A run of 0.4 s, as uds-ipc's
// were with node:net's counts, spends a tenth of it or more warming up (the
// JIT compiles and recompiles while the bytes flow, on the same 2 cores):
// 100 KiB, 3 runs each: 6336 MB/s with 20,000 messages, 7245 with 60,000.
const DEFAULT_COUNTS = { 64: 8_000_000, 1024: 2_000_000, 10240: 250_000, 102400: 20_000 };
const FACTOR = {
  'uds-visit': { 64: 2.5, 1024: 2, 10240: 2, 102400: 3 },
  'uds-buffer': { 64: 2, 1024: 2, 10240: 2, 102400: 3 },
  'uds-acked': { 64: 2, 1024: 2, 10240: 2, 102400: 3 },
  raw: { 64: 10, 1024: 5, 10240: 3, 102400: 4 },
};
const QUICK_SCALE = 0.005;

const HELP = `usage: node bench/run.mjs [options]

  --sizes 64,1024,10240,102400   payload sizes in bytes
  --impls uds-visit,uds-buffer,uds-acked,net,raw
                                 implementations (uds-visit: batch.visit(),
                                 uds-buffer: for..of Buffer per message)
  --runs 3                       runs per case (medians are reported)
  --scale 1                      multiplies the default message counts
                                 (${Object.entries(DEFAULT_COUNTS).map(([s, n]) => `${s} B: ${n}`).join(', ')};
${Object.entries(FACTOR)
  .map(([impl, f]) => `                                 ${impl}: ${Object.entries(f).map(([s, x]) => `${s} B ×${x}`).join(', ')}`)
  .join('\n')})
  --count N                      messages per run, for every size
  --latency-seconds 10           latency case length (0 = skip it)
  --latency-rate 1000            latency case messages per second
  --latency-warmup 100           latency messages not counted per round (connection warm-up)
  --latency-rounds 5             latency: interleaved rounds per implementation (percentiles: median over rounds)
  --quick                        smoke test: tiny counts, 1 run, 1 s latency,
                                 does not rewrite bench/README.md
  --out FILE                     JSON result path (default bench/results/<time>.json)
  --readme / --no-readme         (re)write bench/README.md (default: yes, unless --quick)
  --raw-bin FILE                 raw_limit binary (default build-bench/native/bench/raw_limit,
                                 built with cmake when missing or stale)
  --timeout 180                  seconds before a run is killed and the bench fails
  --render FILE                  only print the tables of a saved JSON result and
                                 rewrite bench/README.md from it (no measuring)
`;

function parseArgs(argv) {
  const o = {
    sizes: [64, 1024, 10240, 102400],
    impls: Object.keys(IMPLS),
    runs: 3,
    scale: 1,
    count: undefined,
    latencySeconds: 10,
    latencyRate: 1000,
    latencyWarmup: 100,
    latencyRounds: 5,
    quick: false,
    out: undefined,
    readme: undefined,
    rawBin: undefined,
    timeout: 180,
    render: undefined,
  };
  const set = { runs: false, latencySeconds: false, scale: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [key, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${key} needs a value`);
      return v;
    };
    const num = () => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < 0) throw new Error(`${key}: not a number >= 0`);
      return v;
    };
    switch (key) {
      case '--sizes':
        o.sizes = val().split(',').map((s) => {
          const n = Number(s.trim());
          if (!Number.isInteger(n) || n < 1 || n > 10 * 1024 * 1024) throw new Error(`--sizes: bad size ${s}`);
          return n;
        });
        break;
      case '--impls':
        o.impls = val().split(',').map((s) => s.trim());
        for (const k of o.impls) if (!IMPLS[k]) throw new Error(`--impls: unknown ${k} (known: ${Object.keys(IMPLS).join(', ')})`);
        break;
      case '--runs':
        o.runs = Math.max(1, Math.floor(num()));
        set.runs = true;
        break;
      case '--scale':
        o.scale = num();
        set.scale = true;
        break;
      case '--count':
        o.count = Math.max(1, Math.floor(num()));
        break;
      case '--latency-seconds':
        o.latencySeconds = num();
        set.latencySeconds = true;
        break;
      case '--latency-rate':
        o.latencyRate = Math.max(1, num());
        break;
      case '--latency-rounds':
        o.latencyRounds = Math.max(1, Math.floor(num()));
        break;
      case '--latency-warmup':
        o.latencyWarmup = Math.floor(num());
        break;
      case '--quick':
        o.quick = true;
        break;
      case '--out':
        o.out = path.resolve(val());
        break;
      case '--readme':
        o.readme = true;
        break;
      case '--no-readme':
        o.readme = false;
        break;
      case '--raw-bin':
        o.rawBin = path.resolve(val());
        break;
      case '--render':
        o.render = path.resolve(val());
        break;
      case '--timeout':
        o.timeout = Math.max(1, num());
        break;
      case '--help':
      case '-h':
        process.stdout.write(HELP);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}\n\n${HELP}`);
    }
  }
  if (o.quick) {
    if (!set.runs) o.runs = 1;
    if (!set.latencySeconds) o.latencySeconds = 1;
    if (!set.scale) o.scale = QUICK_SCALE;
    o.latencyWarmup = Math.min(o.latencyWarmup, 10);
  }
  if (o.readme === undefined) o.readme = !o.quick;
  return o;
}

function countFor(o, size, impl) {
  if (o.count !== undefined) return o.count;
  let base = DEFAULT_COUNTS[size] ?? Math.max(1000, Math.round(512e6 / (size + 512)));
  base *= FACTOR[impl]?.[size] ?? (impl === 'net' ? 1 : 2);
  return Math.max(o.quick ? 200 : 1000, Math.round(base * o.scale));
}

// ─── the raw C++ limit ──────────────────────────────────────────────────────

function ensureRawBinary(o) {
  if (o.rawBin) {
    if (!existsSync(o.rawBin)) throw new Error(`--raw-bin ${o.rawBin} does not exist`);
    return o.rawBin;
  }
  const buildDir = path.join(root, 'build-bench');
  const bin = path.join(buildDir, 'native', 'bench', 'raw_limit');
  const sources = ['raw_limit.cc', 'raw_io.h', 'CMakeLists.txt'].map((f) => path.join(root, 'native', 'bench', f));
  const stale = !existsSync(bin) || sources.some((s) => existsSync(s) && statSync(s).mtimeMs > statSync(bin).mtimeMs);
  if (stale) {
    log(`building raw_limit (cmake, Release) in ${path.relative(root, buildDir)}/ ...`);
    const steps = [
      ['cmake', ['-S', root, '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release']],
      ['cmake', ['--build', buildDir, '--target', 'raw_limit']],
    ];
    for (const [cmd, args] of steps) {
      const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
      if (r.status !== 0) {
        throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.error ?? ''}${r.stdout ?? ''}${r.stderr ?? ''}`);
      }
    }
  }
  return bin;
}

// ─── running one case ───────────────────────────────────────────────────────

function log(msg) {
  process.stderr.write(`${msg}\n`);
}

/** How to start one role of `impl`. uds-ipc's roles are the ones `uds-ipc bench` runs. */
function commandFor(impl, role, params, rawBin) {
  const def = IMPLS[impl];
  if (def.native) {
    return [rawBin, [role, '--path', params.path, '--count', String(params.count), '--size', String(params.size)]];
  }
  const cfg = { role, ...params };
  if (def.variant) cfg.variant = def.variant;
  if (def.delivery) cfg.delivery = def.delivery;
  if (def.uds) return harness.udsIpcRole(cfg);
  return [process.execPath, [path.join(here, def.script), JSON.stringify(cfg)]];
}

/** One reader + writer pair. Resolves with { reader, writer } results. */
async function runPair(impl, params, rawBin, timeoutS) {
  try {
    return await harness.runPair({
      reader: commandFor(impl, 'reader', params, rawBin),
      writer: commandFor(impl, 'writer', params, rawBin),
      cwd: root,
      timeoutMs: timeoutS * 1000,
    });
  } catch (e) {
    if (e instanceof harness.PairError) throw new Error(`${impl} ${params.mode} size ${params.size}: ${e.message}`);
    throw e;
  }
}

// ─── statistics and tables ──────────────────────────────────────────────────

function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function summarize(runs) {
  const count = runs[0].count;
  const M = count / 1e6;
  const pick = (f) => runs.map(f);
  const mps = pick((r) => r.reader.msgsPerSec);
  return {
    runs: runs.length,
    count,
    msgsPerSec: median(mps),
    msgsPerSecMin: Math.min(...mps),
    msgsPerSecMax: Math.max(...mps),
    bytesPerSec: median(pick((r) => r.reader.bytesPerSec)),
    seconds: median(pick((r) => r.reader.seconds)),
    writerCpuPerMillion: median(pick((r) => (r.writer.cpuUser + r.writer.cpuSystem) / M)),
    readerCpuPerMillion: median(pick((r) => (r.reader.cpuUser + r.reader.cpuSystem) / M)),
    writerPeakRssMiB: median(pick((r) => r.writer.peakRssKiB / 1024)),
    readerPeakRssMiB: median(pick((r) => r.reader.peakRssKiB / 1024)),
  };
}

function fmtRate(v) {
  if (!Number.isFinite(v)) return '–';
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return v.toFixed(0);
}
const fmt = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const fmtRatio = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');
const sizeLabel = (s) => (s >= 1024 && s % 1024 === 0 ? `${s / 1024} KiB` : `${s} B`);

function mdTable(header, rows, align) {
  const a = align ?? header.map((_, i) => (i === 0 ? 'l' : 'r'));
  const out = [`| ${header.join(' | ')} |`, `| ${a.map((x) => (x === 'l' ? ':--' : '--:')).join(' | ')} |`];
  for (const r of rows) out.push(`| ${r.join(' | ')} |`);
  return out.join('\n');
}

function tables(result) {
  const { summary, ratios, latency } = result;
  const parts = [];
  const rows = [];
  for (const size of result.options.sizes) {
    for (const impl of result.options.impls) {
      const s = summary[size]?.[impl];
      if (!s) continue;
      const spread = s.msgsPerSec > 0 ? ((s.msgsPerSecMax - s.msgsPerSecMin) / s.msgsPerSec) * 100 : NaN;
      rows.push([
        sizeLabel(Number(size)),
        IMPLS[impl].label,
        fmtRate(s.msgsPerSec),
        fmt(s.bytesPerSec / 1e6, 0),
        `±${fmt(spread / 2, 0)}%`,
        fmt(s.writerCpuPerMillion, 3),
        fmt(s.readerCpuPerMillion, 3),
        fmt(s.writerPeakRssMiB, 1),
        fmt(s.readerPeakRssMiB, 1),
        String(s.count),
      ]);
    }
  }
  parts.push(
    mdTable(
      ['size', 'implementation', 'msgs/s', 'MB/s', 'spread', 'writer CPU s/M msgs', 'reader CPU s/M msgs', 'writer peak RSS MiB', 'reader peak RSS MiB', 'N'],
      rows,
    ),
  );
  const rrows = [];
  for (const size of result.options.sizes) {
    const r = ratios[size];
    if (!r) continue;
    rrows.push([
      sizeLabel(Number(size)),
      fmtRatio(r.visitOverNet),
      fmtRatio(r.bufferOverNet),
      fmtRatio(r.visitOverRaw),
      fmtRatio(r.bufferOverRaw),
      fmtRatio(r.netOverRaw),
      fmtRatio(r.ackedOverVisit),
    ]);
  }
  if (rrows.length) {
    parts.push(
      mdTable(
        ['size', 'uds-ipc (visit) / node:net', 'uds-ipc (Buffer) / node:net', 'uds-ipc (visit) / raw', 'uds-ipc (Buffer) / raw', 'node:net / raw', 'acked / uds-ipc (visit)'],
        rrows,
      ),
    );
  }
  if (latency && Object.keys(latency).length) {
    const lrows = [];
    for (const [impl, l] of Object.entries(latency)) {
      lrows.push([
        impl === 'net' ? 'node:net' : impl,
        String(l.samples),
        fmt(l.achievedRate, 0),
        fmt(l.p50us, 1),
        fmt(l.p90us, 1),
        fmt(l.p99us, 1),
        fmt(l.p999us, 1),
        fmt(l.maxUs, 1),
        fmt(l.writerCpuSeconds, 3),
        fmt(l.readerCpuSeconds, 3),
      ]);
    }
    parts.push(
      mdTable(['latency (64 B)', 'samples', 'msgs/s', 'p50 µs', 'p90 µs', 'p99 µs', 'p99.9 µs', 'max µs', 'writer CPU s', 'reader CPU s'], lrows),
    );
  }
  return parts;
}

function showPath(p, from = process.cwd()) {
  const rel = path.relative(from, p);
  return rel.startsWith('..') ? p : rel;
}

function machine() {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1].trim();
  } catch {}
  let memGiB;
  try {
    const m = /^MemTotal:\s*(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) memGiB = Number(m[1]) / 1048576;
  } catch {}
  const sysctl = (name) => {
    try {
      return Number(readFileSync(`/proc/sys/net/core/${name}`, 'utf8').trim());
    } catch {
      return undefined;
    }
  };
  return {
    cpuModel,
    wmemDefault: sysctl('wmem_default'),
    wmemMax: sysctl('wmem_max'),
    cores: os.cpus().length,
    availableParallelism: os.availableParallelism?.() ?? os.cpus().length,
    memGiB: memGiB !== undefined ? Number(memGiB.toFixed(1)) : undefined,
    kernel: `${os.type()} ${os.release()}`,
    arch: process.arch,
    node: process.version,
    hostname: os.hostname(),
  };
}

function gitDescribe() {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  const d = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return `${r.stdout.trim()}${d.stdout?.trim() ? ' (with uncommitted changes)' : ''}`;
}

function readme(result, parts) {
  const m = result.machine;
  const lat = result.options.latencySeconds > 0;
  return `# Benchmarks

_This file is written by \`node bench/run.mjs\` (\`npm run bench\`); edit the generator, not the file._

One command measures, in one invocation and one case at a time (never two at
once), each implementation as **two separate processes**, a writer and a
reader, on one Unix domain socket (SOCK_STREAM) with the uds-ipc framing
(\`uvarint(length) payload\`, Go-compatible):

- **uds-ipc (visit)**: the public API ([\`src/bench/uds-ipc.ts\`](../src/bench/uds-ipc.ts),
  the same roles \`uds-ipc bench\` runs). The writer calls \`writer.write(msg)\` in a
  loop; when it returns \`false\` (queue full, message not taken) it awaits
  \`once(writer, 'drain')\` and writes the same message again; then
  \`await writer.stop()\`. The reader's handler runs
  \`batch.visit((bytes, start, end) => { sum += bytes[start]; n++ })\`: no object
  per message.
- **uds-ipc (Buffer)**: the same, with \`for (const msg of batch) { sum += msg[0]; n++ }\`:
  one \`Buffer\` view per message.
- **node:net**: [\`bench/net-baseline.mjs\`](net-baseline.mjs), what a careful user
  writes with \`node:net\`: the writer encodes frames into ~64 KiB Buffers and
  writes each with \`socket.write\`, awaiting \`'drain'\` when it returns false; the
  reader parses every whole frame of each chunk in place and hands each message
  to the same handler as a \`Buffer\` view (a frame split across chunks is copied
  once when complete).
- **raw C++**: [\`native/bench/raw_limit.cc\`](../native/bench/raw_limit.cc), no
  Node: a writer process packs frames into a 1 MiB buffer and \`write(2)\`s it
  (SO_SNDBUF raised to 4 MiB, as the uds-ipc Writer does by default); a reader
  process \`read(2)\`s 1 MiB at a time and parses every frame, touching each
  payload's first byte. Two processes (spawned like the others), not threads.

node:net has no way to set SO_SNDBUF, so it runs with the kernel default
(net.core.wmem_default = ${m.wmemDefault ?? '?'} bytes here; wmem_max = ${m.wmemMax ?? '?'}).
Every process runs with default options; uds-ipc with its defaults (16 MiB
writer queue, 10,000 queued writes, 4 MiB SO_SNDBUF, 512 KiB reader slabs).

Message \`i\` starts with byte \`i & 0xff\`; every reader checks the sum of first
bytes, so a lost, reordered or corrupted message fails the run.

**Metrics.** msgs/s and MB/s (10⁶ payload bytes/s) are measured at the
receiver from the first to the last message (messages after the first arrival
over the time between first and last arrival). CPU is user + system seconds of
the whole process (every thread), reader from listening to the last message,
writer from connect to \`stop()\`/\`end()\` done, per million messages. Peak RSS is
VmHWM of each process. Each figure is the median of ${result.options.runs} run(s); runs of
the implementations are interleaved; "spread" is ±half the min–max range of
msgs/s over the runs. Ratios are of medians in this run (msgs/s; the MB/s ratio
is the same since the payloads are equal).${
    lat
      ? `

**Latency.** The writer sends ${result.options.latencyRate} 64-byte messages per second for
${result.options.latencySeconds} s, each carrying \`process.hrtime.bigint()\` (CLOCK_MONOTONIC,
shared by both processes) taken just before \`write()\`; the reader's handler
subtracts it from its own clock. The time is split into ${result.options.latencyRounds ?? 1} rounds per
implementation, interleaved with alternating order; each percentile is the
median over the rounds, "max" the largest of all. The first
${result.options.latencyWarmup} messages of each round are not counted.
uds-ipc uses default options and iterates Buffers; node:net does one
\`socket.write\` per message. Messages are paced by timers, one per tick and
never in bursts; Node timers have 1 ms granularity and fire late under load,
so the achieved rate (the msgs/s column) is somewhat below the target.`
      : ''
  }

## Latest results

${parts.join('\n\n')}

- Command: \`${result.command}\`
- Date: ${result.date}
- Machine: ${m.cpuModel}, ${m.cores} cores${m.memGiB ? `, ${m.memGiB} GiB RAM` : ''}, ${m.kernel} (${m.arch})
- Node.js: ${m.node}${result.git ? `\n- Source: ${result.git}` : ''}
- Load average before / after: ${result.loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${result.loadAfter.map((x) => x.toFixed(2)).join(' ')}
- Raw JSON: \`${showPath(result.outFile, root)}\` (not committed)

Only ratios within one run mean much: on a shared 2-core machine, figures move
by ±25 % between runs.

## Where the time goes (measured 2026-12-04/05; edit in bench/run.mjs)

- **Run length.** Every implementation sends enough messages for about 1 s
  per run. With node:net's counts uds-ipc's runs lasted 0.4 s, a tenth of
  which went on warming up: the JIT compiles and recompiles on the same two
  cores while the bytes flow. 100 KiB, 3 runs each: 6336 MB/s with 20,000
  messages, 7245 MB/s with 60,000.
- **Positions past 2^31.** The Writer kept its ring positions and counts as
  u32 numbers. Past 2^31, after 2 GiB, a u32 is a heap number in V8, not a
  small integer: the Writer's shape changed and \`write()\` and everything
  optimized with it was deoptimized and compiled again (\`--trace-deopt\`:
  "wrong map"), within the first second at 10 KiB. They are int32 now, as the
  shared control block holds them: 10 KiB, 4 alternating pairs, 5984 →
  6862 MB/s, writer 1.81 → 1.40 µs per message. The Reader's counters moved
  to a \`Float64Array\` for the same reason (\`bytesReceived\` passing 2^31
  deoptimized its batch loop).
- **Writer, publish size.** Each publish of the ring's tail costs a
  \`sendmsg\` and wakes the reader. Publishing every 16 KiB (an earlier
  default) moved 1 KiB messages at half the rate of every 1 MiB (now). The
  first message of a burst still goes out at once. 256 KiB and 4 MiB chunks
  measured the same as 1 MiB at 100 KiB.
- **Writer, a full queue at 64 B.** 10,000 queued writes (the default
  \`maxBufferedWrites\`) fill the queue long before a 1 MiB publish chunk,
  so every 10,000th \`write()\` used to be refused and the bench's writer
  waited for \`'drain'\` (800 refusals per 8 M messages). A write that finds
  the queue full now publishes first (the direct send empties it) and looks
  again: 5–7 refusals, writer 73 → 56 ns per message, +30 % at 64 B.
- **Writer, per message.** \`write()\` is about 20 ns at 64 B. Optimized
  code looked \`ring.set\` up through a generic \`LoadIC\` on every call
  (\`--print-opt-code\`); calling \`TypedArray.prototype.set\` through a
  constant calls the builtin directly (writer 42 → 39 ns per message). At
  64 B the writer's JavaScript thread is still the busiest thread (it also
  does the \`sendmsg\` while the IO thread idles); handing the sends to the
  IO thread measured no faster, because both cores are busy. The bench's
  writer sets the first byte of its message just before \`write()\` copies
  it, a store-forwarding stall inside \`memmove\` that raw C++ avoids by
  patching the byte after its copy (node:net's writer pays it too).
- **Writer, the ring's working set.** A direct send that empties the ring
  now rewinds it (past its first MiB, in rings of 2 MiB or more), so a
  writer that keeps up reuses the start of its 16 MiB ring instead of
  cycling through all of it: writer peak RSS at 64 B 67 → 54 MiB,
  \`bench:memory\` writer growth 17–19 → 7 MiB, throughput +6 % at 100 KiB
  and +4 to +10 % at 64 B (alternating A/B runs). While the reader lags, the
  IO thread sends and the ring is still walked end to end. In the scenario
  of \`test/writer-queue.test.ts\` ("a writer that keeps up reuses the start
  of its queue"), sending 512 MiB through a 256 MiB queue in flushed bursts
  grew RSS by ~16 MiB instead of ~258 MiB (recorded 2026-12-05, commit f808ab5).
- **Writer, sent counters.** A direct send that empties the ring sets head
  and the sent count from the frame and payload counts the JavaScript side
  passes it, instead of walking every frame header it sent: at 64 B that
  walk was ~7 % of the writer's JavaScript thread (recorded 2026-12-04, commit
  d5ab265).
- **Writer, large payloads.** Sending a large message straight from the
  caller's buffer (\`sendmsg\` of header + payload, no copy into the ring,
  the rest queued on a partial write) was built and measured: no gain at
  100 KiB or 1 MiB (18.0 vs 18.2 µs per 100 KiB message of writer CPU),
  since one \`sendmsg\` per message costs what the copy saved. Not kept.
- **Reader, memory per batch.** Two allocations per batch showed in
  \`perf\` at 64 B as page faults and are gone: the IO thread's fresh
  offsets vector (14 % of that thread; now recycled through a pool) and the
  JavaScript copy of the table, left to the garbage collector (~15 % of the
  JavaScript thread; now released with the batch). Reader CPU per message
  at 64 B: 47 → 30 ns. (Skipping the copy's zero-fill with
  \`napi_create_buffer\` gained nothing and cost ~2.5 µs per batch in the
  latency case: it builds a Buffer object.)
- **Reader, threads.** Four busy threads (two per process) on two cores
  switch about 6,000 times a second each at 100 KiB; on at most 2 CPUs the
  reader now keeps reading on its JavaScript thread under load too
  (\`jsThreadPolling\` \`'always'\`), which spares a wake-up and a
  threadsafe-function call per batch: reader CPU per message −5 to −13 %,
  throughput +3 to +10 % at every size (A/B over 4–5 alternating runs of
  each, with the uds-ipc benchmark roles, now \`src/bench/uds-ipc.ts\`).
- **Reader, large payloads.** At 100 KiB all of the reader's CPU is its
  JavaScript thread (\`/proc/self/task\`: 144 of 144 ticks), ~85 % of it in
  \`read(2)\` and ~11 % in JavaScript and N-API per batch (an external
  \`ArrayBuffer\` per batch over 16 KiB and its detach; batches up to
  16 KiB are copied instead). Two alternating slabs keep the copy's
  destination warm; 1–2 MiB slabs and 384 KiB–1 MiB reads measured within
  noise. Raw C++'s own reader varies from 8.3 to 15.5 µs per 100 KiB message
  between runs of the same configuration, so the ratio to raw swings with
  it.
- **Latency.** A message wakes one thread (the JavaScript thread polls the
  reader's epoll set through a \`uv_poll\`) and costs the same syscalls as
  with node:net: with one connection the poll reads it directly instead of
  first asking the set (\`strace\`: 2 \`epoll_pwait\` and 1 \`recvmsg\` per
  message). Timestamps of every step (a \`sched_switch\`/\`sched_wakeup\`
  trace with \`perf record -k CLOCK_MONOTONIC\`, beside clock stamps in the
  poller and in JavaScript; 2026-12-07) put the reader's time from being
  switched in to its handler at about 12 µs against node:net's 9–11 µs:
  about 3 µs in the kernel and libuv before the poll callback, 2.5–3 µs in
  the engine's round (\`recvmsg\` included), and the rest crossing into
  JavaScript. Until this change a one-message batch also spent about 5 µs
  in \`take()\` before the handler: the elements of a fresh item array,
  set one N-API call each (about 2.4 µs in all on this cold path), and a
  new \`ArrayBuffer\` for the bytes (about 1.3 µs). Now a lone small batch
  crosses as its \`ArrayBuffer\` alone (its other slots in a
  \`Float64Array\` shared once), the poller passes it along with the call
  into JavaScript, a spare buffer of the last batch's size is made while
  the thread is idle, and with nothing else waiting the batch goes to the
  handler without the item list. In 9 interleaved rounds of a separate
  harness the p50 median went from 36.7–37.0 µs to 31.1–32.1 µs, node:net's
  being 29–32 µs. Each round of this case starts a new pair of processes
  (about 1,100 messages), so most JavaScript on the path runs before V8
  optimizes it and every call on it counts. The table above is the
  bench's own statistic: in its 9 rounds uds-ipc's p50 was lower than
  node:net's in 4 (the issue asks for 6), and the median of the rounds'
  p50s was 30.3 against 29.3 µs (the first run of this change, before the
  direct way to the handler: 1 of 9, 33.7 against 29.5 µs). On a 2-core
  machine the two processes share a CPU (wake-affine) for about 98 % of the
  messages, so the reader also waits for the writer to go to sleep after
  its send (11–15 µs for either library). p99 and p99.9 are lower than
  node:net's in these runs. The millisecond tail (p99.9) comes from
  V8, not from the socket: a \`sched_switch\` trace (\`perf record -e
  sched:*\`) of a 4–5 ms outlier shows the reader's JavaScript thread,
  woken on the writer's CPU, preempted there by its own process's
  compiler thread (a TurboFan job: \`#pump\` with the bench's handler
  inlined takes ~20 ms to compile) and left waiting for it while the other
  CPU idled; the messages of those milliseconds then arrive together.
  node:net's reader has more such events, each shorter (its compile jobs
  are smaller).
- **Allocations.** \`npm run bench:memory\` counts GCs with a
  \`PerformanceObserver\`: over 4,000,000 messages of 64 B, 1 scavenge in
  the reader and 1–2 in the writer. Nothing is allocated per message; a few
  objects per batch (thousands of messages).
- **Engine to engine (C++)** at 64 B: 77–101 % of raw over 12 runs, median
  86 % (was 56–83 %, median 65 %). The limit was \`bench_core\`'s producer,
  the C++ stand-in for \`write()\`, not the engine: GCC 12 vectorized its
  four per-message counters (tail, frames, payload, unpublished) into one
  SSE register, spilled it around each \`memcpy\` call and read it back
  lane by lane. In a loop writing to \`/dev/null\`, 7.7 ns per message
  against 3.3 ns without SLP vectorization (raw's writer: 2.5 ns); with
  the engine's sends and raw's reader, a plain copy of that loop ran as
  slowly as the producer, while raw's loop over a 16 MiB ring with the
  same publishing ran as fast as raw. \`producer.cc\` is now compiled
  with \`-fno-tree-slp-vectorize\` and keeps its positions in locals.
  6 alternating pairs: median 71 → 86 %. (An earlier "counters in
  registers" attempt still had the vectorized counters, so it measured
  the same; the V8-compiled \`write()\` has no such code.) Now the
  consumer thread is the busier one (\`perf\`: the engine's consumer
  3,212 samples against raw's reader 2,416 per 40 M messages), mostly
  \`FrameAssembler::parse\` and the pass over the offsets; writing the
  table through a pointer instead of \`push_back\` measured no faster.
  Each frame's position depends on the previous length byte (a chain of
  dependent loads); guessing it from a repeated size (a predicted branch
  instead of the load) parsed 64 B frames ~10 % faster in the
  FrameAssembler benchmark but random sizes 25–45 % slower: not kept.
  1 KiB: 67–99 %, 100 KiB: 92–120 %.

## Running

    npm run bench                                  # everything (a few minutes)
    npm run bench -- --sizes 64,1024 --runs 5      # a subset, more runs
    npm run bench -- --impls uds-visit,net --latency-seconds 0
    npm run bench -- --quick                       # smoke test: tiny N, no README
    node bench/run.mjs --help

\`uds-ipc bench\`, the command-line tool's quick check of a machine
([docs/cli.md](../docs/cli.md)), measures throughput between two processes
without the baselines. With its defaults it printed, on 2026-11-23 (commit
444dffd; machine not recorded):

\`\`\`
     size    messages       msgs/s       MB/s   seconds
     64 B     5000000      7108241      454.9     0.703
    1 KiB     1300000      1172033     1200.2     1.109
  100 KiB       16000        13513     1383.7     1.184
\`\`\`

\`npm run bench:native\` runs the C++ microbenchmarks of the core
([\`native/bench/bench_core.cc\`](../native/bench/bench_core.cc)): varint,
FrameAssembler, SpscQueue, and WriterEngine → Unix socket → ReaderEngine next
to the raw limit in the same process. \`npm run bench:memory\`
([\`bench/memory.mjs\`](memory.mjs)) measures RSS under a slow reader and
counts GCs.

Every case runs through [\`src/bench/\`](../src/bench/) (built into \`dist/bench/\`):
\`pair.ts\` starts a reader process, once it prints \`{"ready":true}\` a writer
process, and collects the JSON line each prints last; \`role.ts\` is that
protocol's child side, \`measure.ts\` what the roles measure, \`uds-ipc.ts\`
uds-ipc's reader and writer (node:net's are [\`net-baseline.mjs\`](net-baseline.mjs),
raw C++'s \`raw_limit\`). The command-line tool's \`uds-ipc bench\` runs the same
uds-ipc roles through the same \`runPair()\`, one size at a time, with every
message's length and sequence number checked and the time taken from the
writer's first write to the reader's last message.
`;
}

// ─── main ───────────────────────────────────────────────────────────────────

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    log(e.message);
    process.exit(1);
  }
  if (o.render) {
    const result = JSON.parse(readFileSync(o.render, 'utf8'));
    result.outFile = o.render;
    const parts = tables(result);
    process.stdout.write(`${parts.join('\n\n')}\n`);
    writeReadme({ readme: o.readme }, result, parts);
    return;
  }
  const pairJs = path.join(root, 'dist', 'bench', 'pair.js');
  if (!existsSync(pairJs)) {
    log('dist/bench/pair.js is missing: run `npm run build:ts` first (and build the addon).');
    process.exit(1);
  }
  harness = await import(pairJs);
  const rawBin = o.impls.includes('raw') ? ensureRawBinary(o) : undefined;

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'uds-bench-'));
  let seq = 0;
  const sock = (tag) => path.join(tmp, `${tag}-${seq++}.sock`);
  const command = ['node', 'bench/run.mjs', ...process.argv.slice(2)].join(' ');
  const result = {
    command,
    date: new Date().toISOString(),
    machine: machine(),
    git: gitDescribe(),
    loadBefore: os.loadavg(),
    options: { ...o, readme: undefined },
    runs: [],
    summary: {},
    ratios: {},
    latency: {},
  };
  log(`uds-ipc bench: sizes ${o.sizes.join(', ')}; ${o.impls.join(', ')}; ${o.runs} run(s) each; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  try {
    for (const size of o.sizes) {
      const perImpl = Object.fromEntries(o.impls.map((i) => [i, []]));
      for (let run = 1; run <= o.runs; run++) {
        for (const impl of o.impls) {
          const params = { mode: 'throughput', path: sock(impl), size, count: countFor(o, size, impl) };
          const t0 = Date.now();
          const { reader, writer } = await runPair(impl, params, rawBin, o.timeout);
          const rec = { impl, size, run, count: params.count, reader, writer };
          perImpl[impl].push(rec);
          result.runs.push(rec);
          log(
            `  ${sizeLabel(size).padStart(7)} ${IMPLS[impl].label.padEnd(17)} run ${run}: ${fmtRate(reader.msgsPerSec).padStart(9)} msgs/s ${fmt(reader.bytesPerSec / 1e6, 0).padStart(6)} MB/s  (${((Date.now() - t0) / 1000).toFixed(1)} s wall)`,
          );
        }
      }
      result.summary[size] = {};
      for (const impl of o.impls) result.summary[size][impl] = summarize(perImpl[impl]);
      const s = result.summary[size];
      const ratio = (a, b) => (s[a] && s[b] && s[b].msgsPerSec > 0 ? s[a].msgsPerSec / s[b].msgsPerSec : undefined);
      result.ratios[size] = {
        visitOverNet: ratio('uds-visit', 'net'),
        bufferOverNet: ratio('uds-buffer', 'net'),
        visitOverRaw: ratio('uds-visit', 'raw'),
        bufferOverRaw: ratio('uds-buffer', 'raw'),
        netOverRaw: ratio('net', 'raw'),
        ackedOverVisit: ratio('uds-acked', 'uds-visit'),
      };
    }

    if (o.latencySeconds > 0) {
      const total = Math.max(1, Math.round(o.latencySeconds * o.latencyRate));
      const warmup = Math.min(o.latencyWarmup, Math.floor(total / 2));
      const latImpls = [];
      if (o.impls.some((i) => i.startsWith('uds'))) latImpls.push('uds-buffer');
      if (o.impls.includes('net')) latImpls.push('net');
      // Interleaved rounds (the order alternates), as the throughput runs
      // are: a slow minute of the machine then hits both implementations.
      // Each percentile is the median over the rounds.
      const rounds = Math.max(1, Math.min(o.latencyRounds, Math.floor(total / 2)));
      const perRound = Math.max(1, Math.round(total / rounds));
      const perWarmup = Math.min(o.latencyWarmup, Math.floor(perRound / 2));
      const got = {};
      for (let r = 0; r < rounds; r++) {
        for (const impl of r % 2 === 0 ? latImpls : [...latImpls].reverse()) {
          const params = { mode: 'latency', path: sock(`lat-${impl}-${r}`), size: 64, count: perRound, rate: o.latencyRate, warmup: perWarmup };
          const { reader, writer } = await runPair(impl, params, rawBin, o.timeout + o.latencySeconds);
          const key = impl === 'uds-buffer' ? 'uds-ipc' : impl;
          (got[key] ??= []).push({ reader, writer });
          log(`  latency ${key.padEnd(8)} round ${r + 1}: p50 ${fmt(reader.p50us, 1)} µs, p99 ${fmt(reader.p99us, 1)} µs, p99.9 ${fmt(reader.p999us, 1)} µs (${reader.samples} samples)`);
        }
      }
      for (const [key, runs] of Object.entries(got)) {
        const med = (f) => median(runs.map(f));
        const sum = (f) => runs.reduce((a, x) => a + f(x), 0);
        result.latency[key] = {
          samples: sum((x) => x.reader.samples),
          p50us: med((x) => x.reader.p50us),
          p90us: med((x) => x.reader.p90us),
          p99us: med((x) => x.reader.p99us),
          p999us: med((x) => x.reader.p999us),
          maxUs: Math.max(...runs.map((x) => x.reader.maxUs)),
          achievedRate: sum((x) => x.reader.samples + perWarmup) / sum((x) => x.writer.seconds),
          writerCpuSeconds: sum((x) => x.writer.cpuUser + x.writer.cpuSystem),
          readerCpuSeconds: sum((x) => x.reader.cpuUser + x.reader.cpuSystem),
          writerPeakRssKiB: Math.max(...runs.map((x) => x.writer.peakRssKiB)),
          rounds: runs.map((x) => ({ p50us: x.reader.p50us, p99us: x.reader.p99us, p999us: x.reader.p999us, samples: x.reader.samples })),
        };
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  result.loadAfter = os.loadavg();

  const parts = tables(result);

  const stamp = result.date.replace(/[:.]/g, '-');
  result.outFile = o.out ?? path.join(here, 'results', `${stamp}.json`);
  mkdirSync(path.dirname(result.outFile), { recursive: true });
  writeFileSync(result.outFile, JSON.stringify(result, null, 2) + '\n');

  const m = result.machine;
  process.stdout.write(
    `\n${parts.join('\n\n')}\n\n${m.cpuModel}, ${m.cores} cores, Node ${m.node}; load ${result.loadBefore.map((x) => x.toFixed(2)).join(' ')} -> ${result.loadAfter
      .map((x) => x.toFixed(2))
      .join(' ')}\nJSON: ${showPath(result.outFile)}\n`,
  );
  if (result.loadBefore[0] > m.cores * 0.5 || result.loadAfter[0] > m.cores * 0.75) {
    log('note: the machine was busy during this run (load average above); figures are noisy.');
  }
  writeReadme(o, result, parts);
}

function writeReadme(o, result, parts) {
  if (o.readme) {
    // Keep the sections bench/native.mjs and bench/memory.mjs maintain.
    const file = path.join(here, 'README.md');
    const kept = keptSections(existsSync(file) ? readFileSync(file, 'utf8') : '', [
      ['<!-- bench:native:start -->', '<!-- bench:native:end -->'],
      ['<!-- bench:memory:start -->', '<!-- bench:memory:end -->'],
      ['<!-- bench:rpc:start -->', '<!-- bench:rpc:end -->'],
      ['<!-- bench:fds:start -->', '<!-- bench:fds:end -->'],
      ['<!-- bench:types:start -->', '<!-- bench:types:end -->'],
      ['<!-- bench:acked:start -->', '<!-- bench:acked:end -->'],
      ['<!-- bench:bridge:start -->', '<!-- bench:bridge:end -->'],
    ]);
    writeFileSync(file, [readme(result, parts).trimEnd(), ...kept].join('\n\n') + '\n');
    log('bench/README.md updated.');
  }
}

main().catch((e) => {
  log(e?.stack ?? String(e));
  process.exit(1);
});
