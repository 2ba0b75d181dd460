#!/usr/bin/env node
// npm run bench:rpc: request/response over a Unix socket, uds-ipc's RpcServer /
// RpcClient against @grpc/grpc-js (generic service, Buffer passthrough, on a
// `unix:` address) and a careful node:net request/response baseline
// (bench/rpc/net.mjs), as issue #18 asks.
//
// Every run is two processes (bench/rpc/role.mjs: a server and a client of
// one contender), one run at a time. Rounds are interleaved: round 1 runs every
// case of every contender, then round 2 ..., the contenders' order rotating
// from case to case and round to round, so that a slow minute of the machine
// hits them alike. Figures are medians over the rounds, with the spread
// (±half the min–max range); never the best run. `node bench/rpc.mjs --help`.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const ROLE = path.join(here, 'rpc', 'role.mjs');

// uds: RpcClient.call()'s callback form, as node:net and gRPC are called
// (bench/rpc/role.mjs's `call(body, cb)`); uds-promise: the same calls
// through the promise `client.call()` returns, what `await` costs.
const CONTENDERS = {
  uds: { label: 'uds-ipc RPC' },
  'uds-promise': { label: 'uds-ipc RPC (promise)' },
  net: { label: 'node:net' },
  grpc: { label: 'gRPC (grpc-js)' },
};

// The issue's bar for the node:net baseline and gRPC, 64 calls in flight, on
// the 2-core machine it was written on (calls/s).
const BAR = {
  net: { 64: 334_000, 1024: 252_000, 102400: 8_100 },
  grpc: { 1024: 6_300, 102400: 1_300 },
};

const HELP = `usage: node bench/rpc.mjs [options]

  --only uds,uds-promise,net,grpc
                             contenders (default: all four; uds and uds-promise need
                             the RPC layer built into dist/: \`npm run build:ts\`);
                             uds calls with RpcClient.call()'s callback form, as the
                             node:net and gRPC contenders are called, uds-promise
                             through the promise call() returns
  --sizes 64,1024,10240,102400
                             request (and echoed reply) body sizes in bytes
  --inflight 1,64            calls in flight (throughput cases)
  --rounds 3                 interleaved rounds (medians and spread over them)
  --duration 1.5             seconds measured per throughput run
  --warmup 0.5               seconds of calls before measuring, per run
  --latency-seconds 3        fixed-rate latency case per round (0 = skip it)
  --latency-rate 1000        calls per second in the latency case
  --latency-size 64          body size of the latency case
  --latency-warmup 300       calls not counted per latency run
  --latency-jit-warmup 0     back-to-back calls (one at a time) before a latency run's
                             paced calls, so that V8 has optimized each contender's
                             code; 0 (the default) measures the first seconds of a
                             process, as a service that was just started
  --no-throughput            only the latency case
  --quick                    smoke test (< 20 s): 1 round, sizes 64 and 102400,
                             0.25 s runs, 1 s of latency
  --json                     print the JSON result to stdout instead of the tables
  --out FILE                 where to write the JSON result (default
                             bench/results/rpc-<time>.json; not with --quick)
  --timeout 60               seconds before a run is killed and the bench fails
`;

function parseArgs(argv) {
  const o = {
    only: Object.keys(CONTENDERS),
    sizes: [64, 1024, 10240, 102400],
    inflight: [1, 64],
    rounds: 3,
    duration: 1.5,
    warmup: 0.5,
    latencySeconds: 3,
    latencyRate: 1000,
    latencySize: 64,
    latencyWarmup: 300,
    latencyJitWarmup: 0,
    throughput: true,
    quick: false,
    json: false,
    out: undefined,
    timeout: 60,
  };
  const set = new Set();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const key = eq > 0 ? a.slice(0, eq) : a;
    const inline = eq > 0 ? a.slice(eq + 1) : undefined;
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
    const ints = () =>
      val()
        .split(',')
        .map((s) => {
          const n = Number(s.trim());
          if (!Number.isInteger(n) || n < 1 || n > 16 * 1024 * 1024) throw new Error(`${key}: bad value ${s}`);
          return n;
        });
    set.add(key);
    switch (key) {
      case '--only':
        o.only = val().split(',').map((s) => s.trim()).filter(Boolean);
        for (const k of o.only) if (!CONTENDERS[k]) throw new Error(`--only: unknown ${k} (known: ${Object.keys(CONTENDERS).join(', ')})`);
        break;
      case '--sizes':
        o.sizes = ints();
        break;
      case '--inflight':
        o.inflight = ints();
        break;
      case '--rounds':
        o.rounds = Math.max(1, Math.floor(num()));
        break;
      case '--duration':
        o.duration = Math.max(0.05, num());
        break;
      case '--warmup':
        o.warmup = num();
        break;
      case '--latency-seconds':
        o.latencySeconds = num();
        break;
      case '--latency-rate':
        o.latencyRate = Math.max(1, num());
        break;
      case '--latency-size':
        o.latencySize = Math.floor(num());
        break;
      case '--latency-warmup':
        o.latencyWarmup = Math.floor(num());
        break;
      case '--latency-jit-warmup':
        o.latencyJitWarmup = Math.max(0, Math.floor(num()));
        break;
      case '--no-throughput':
        o.throughput = false;
        break;
      case '--quick':
        o.quick = true;
        break;
      case '--json':
        o.json = true;
        break;
      case '--out':
        o.out = path.resolve(val());
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
    if (!set.has('--rounds')) o.rounds = 1;
    if (!set.has('--sizes')) o.sizes = [64, 102400];
    if (!set.has('--duration')) o.duration = 0.25;
    if (!set.has('--warmup')) o.warmup = 0.1;
    if (!set.has('--latency-seconds')) o.latencySeconds = 1;
    if (!set.has('--latency-warmup')) o.latencyWarmup = 100;
  }
  return o;
}

const log = (msg) => process.stderr.write(`${msg}\n`);

// ─── one run: a server process and a client process ─────────────────────────

function startRole(cfg) {
  const child = spawn(process.execPath, [ROLE, JSON.stringify(cfg)], { cwd: root, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, exited, stderr: () => stderr.trim() };
}

/** Runs one case of one contender; resolves with { client, server }. */
async function runOnce(impl, clientCfg, sockPath, timeoutS) {
  const what = `${impl} ${clientCfg.mode} size ${clientCfg.size}${clientCfg.inflight ? ` inflight ${clientCfg.inflight}` : ''}`;
  const server = startRole({ role: 'server', impl, path: sockPath, inflight: clientCfg.inflight });
  let client;
  let timer;
  const procs = () => [server, client].filter(Boolean);
  const failure = (why) => {
    for (const p of procs()) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    const errs = procs()
      .map((p, i) => (p.stderr() ? `${i === 0 ? 'server' : 'client'}: ${p.stderr()}` : ''))
      .filter(Boolean)
      .join('\n');
    return new Error(`${what}: ${why}${errs ? `\n${errs}` : ''}`);
  };
  try {
    return await new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(failure(`timed out after ${timeoutS} s`)), timeoutS * 1000);
      let serverResult;
      let clientResult;
      const maybeDone = () => {
        if (serverResult && clientResult) resolve({ client: clientResult, server: serverResult });
      };
      server.exited.then((e) => reject(failure(`server exited ${e.signal ?? e.code} before the run ended`)));
      server.child.on('message', (m) => {
        if (m.ready) {
          client = startRole({ role: 'client', impl, path: sockPath, ...clientCfg });
          client.child.on('message', (cm) => {
            if (cm.mark === 'start') server.child.send({ cmd: 'start' });
            else if (cm.mark === 'stop') server.child.send({ cmd: 'stop' });
            else if (cm.result) {
              clientResult = cm.result;
              maybeDone();
            }
          });
          client.exited.then((e) => {
            if (e.code !== 0 || !clientResult) reject(failure(`client exited ${e.signal ?? e.code}`));
          });
        } else if (m.result) {
          serverResult = m.result;
          maybeDone();
        }
      });
    });
  } finally {
    clearTimeout(timer);
    if (server.child.connected) server.child.send({ cmd: 'exit' });
    const t = setTimeout(() => {
      for (const p of procs()) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    }, 5000);
    await Promise.all(procs().map((p) => p.exited));
    clearTimeout(t);
  }
}

// ─── statistics ─────────────────────────────────────────────────────────────

function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Per-side figures of one run, per call. */
function perCall(side) {
  const calls = side.calls;
  return {
    cpuUsPerCall: calls > 0 ? ((side.cpuUser + side.cpuSystem) / calls) * 1e6 : NaN,
    scavengesPer100k: calls > 0 ? (side.gc.scavenges * 1e5) / calls : NaN,
    markCompactsPer100k: calls > 0 ? (side.gc.markCompacts * 1e5) / calls : NaN,
    peakRssMiB: side.peakRssKiB / 1024,
  };
}

function summarizeThroughput(runs) {
  const rates = runs.map((r) => r.client.callsPerSec);
  const med = median(rates);
  const sides = {};
  for (const side of ['client', 'server']) {
    const pc = runs.map((r) => perCall(r[side]));
    sides[side] = {
      cpuUsPerCall: median(pc.map((x) => x.cpuUsPerCall)),
      scavengesPer100k: median(pc.map((x) => x.scavengesPer100k)),
      markCompactsPer100k: median(pc.map((x) => x.markCompactsPer100k)),
      peakRssMiB: median(pc.map((x) => x.peakRssMiB)),
    };
  }
  return {
    rounds: runs.length,
    callsPerSec: med,
    callsPerSecMin: Math.min(...rates),
    callsPerSecMax: Math.max(...rates),
    spreadPct: med > 0 ? ((Math.max(...rates) - Math.min(...rates)) / 2 / med) * 100 : NaN,
    perRound: rates,
    calls: median(runs.map((r) => r.client.calls)),
    client: sides.client,
    server: sides.server,
  };
}

function summarizeLatency(runs) {
  const med = (f) => median(runs.map(f));
  const p50s = runs.map((r) => r.client.p50us);
  const sum = (f) => runs.reduce((a, r) => a + f(r), 0);
  return {
    rounds: runs.length,
    samples: sum((r) => r.client.samples),
    achievedRate: med((r) => r.client.achievedRate),
    p50us: med((r) => r.client.p50us),
    p50usMin: Math.min(...p50s),
    p50usMax: Math.max(...p50s),
    p90us: med((r) => r.client.p90us),
    p99us: med((r) => r.client.p99us),
    p999us: med((r) => r.client.p999us),
    maxUs: Math.max(...runs.map((r) => r.client.maxUs)),
    perRound: runs.map((r) => ({ p50us: r.client.p50us, p99us: r.client.p99us })),
    client: { cpuUsPerCall: med((r) => perCall(r.client).cpuUsPerCall), peakRssMiB: med((r) => perCall(r.client).peakRssMiB) },
    server: { cpuUsPerCall: med((r) => perCall(r.server).cpuUsPerCall), peakRssMiB: med((r) => perCall(r.server).peakRssMiB) },
  };
}

// ─── tables ─────────────────────────────────────────────────────────────────

function fmtRate(v) {
  if (!Number.isFinite(v)) return '–';
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)} k`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return v.toFixed(0);
}
const fmt = (v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const fmtRatio = (v) => (Number.isFinite(v) ? `${v.toFixed(v >= 10 ? 0 : 2)}×` : '–');
const sizeLabel = (s) => (s >= 1024 && s % 1024 === 0 ? `${s / 1024} KiB` : `${s} B`);
const fmtGc = (s) => `${fmt(s.scavengesPer100k, s.scavengesPer100k < 10 ? 1 : 0)} / ${fmt(s.markCompactsPer100k, 1)}`;

/** A markdown table; the first `left` columns are left-aligned, the others right-aligned. */
function mdTable(header, rows, left = 3) {
  const out = [`| ${header.join(' | ')} |`, `| ${header.map((_, i) => (i < left ? ':--' : '--:')).join(' | ')} |`];
  for (const r of rows) out.push(`| ${r.join(' | ')} |`);
  return out.join('\n');
}

function tables(result) {
  const o = result.options;
  const parts = [];
  const t = result.throughput;
  if (Object.keys(t).length) {
    const rows = [];
    for (const inflight of o.inflight) {
      for (const size of o.sizes) {
        for (const impl of o.only) {
          const s = t[`${size}/${inflight}`]?.[impl];
          if (!s) continue;
          rows.push([
            sizeLabel(size),
            String(inflight),
            CONTENDERS[impl].label,
            fmtRate(s.callsPerSec),
            `±${fmt(s.spreadPct, 0)}%`,
            `${fmtRate(s.callsPerSecMin)}–${fmtRate(s.callsPerSecMax)}`,
            fmt(s.client.cpuUsPerCall, 2),
            fmt(s.server.cpuUsPerCall, 2),
            fmtGc(s.client),
            fmtGc(s.server),
            fmt(s.client.peakRssMiB, 0),
            fmt(s.server.peakRssMiB, 0),
          ]);
        }
      }
    }
    parts.push(
      mdTable(
        [
          'body',
          'in flight',
          'contender',
          'calls/s',
          'spread',
          'min–max',
          'client CPU µs/call',
          'server CPU µs/call',
          'client GCs /100k calls (scav. / m-c)',
          'server GCs /100k calls (scav. / m-c)',
          'client peak RSS MiB',
          'server peak RSS MiB',
        ],
        rows,
      ),
    );
    const pairs = [
      ['uds', 'net'],
      ['uds-promise', 'net'],
      ['uds', 'grpc'],
      ['net', 'grpc'],
    ].filter(([a, b]) => o.only.includes(a) && o.only.includes(b));
    if (pairs.length) {
      const rrows = [];
      for (const inflight of o.inflight) {
        for (const size of o.sizes) {
          const c = t[`${size}/${inflight}`];
          if (!c) continue;
          rrows.push([sizeLabel(size), String(inflight), ...pairs.map(([a, b]) => fmtRatio(c[a]?.callsPerSec / c[b]?.callsPerSec))]);
        }
      }
      parts.push(
        mdTable(['body', 'in flight', ...pairs.map(([a, b]) => `${CONTENDERS[a].label} / ${CONTENDERS[b].label}`)], rrows, 2),
      );
    }
  }
  const l = result.latency;
  if (Object.keys(l).length) {
    const rows = [];
    for (const impl of o.only) {
      const s = l[impl];
      if (!s) continue;
      rows.push([
        `${sizeLabel(o.latencySize)} at ${o.latencyRate}/s`,
        '1',
        CONTENDERS[impl].label,
        String(s.samples),
        fmt(s.achievedRate, 0),
        fmt(s.p50us, 1),
        `${fmt(s.p50usMin, 1)}–${fmt(s.p50usMax, 1)}`,
        fmt(s.p90us, 1),
        fmt(s.p99us, 1),
        fmt(s.maxUs, 0),
        fmt(s.client.cpuUsPerCall, 1),
        fmt(s.server.cpuUsPerCall, 1),
      ]);
    }
    parts.push(
      mdTable(
        ['latency', 'in flight', 'contender', 'samples', 'calls/s', 'p50 µs', 'p50 range µs', 'p90 µs', 'p99 µs', 'max µs', 'client CPU µs/call', 'server CPU µs/call'],
        rows,
      ),
    );
  }
  const checks = barChecks(result);
  if (checks.length) {
    if (o.quick) checks.unshift('(--quick: runs too short to judge the bar or the margins; a smoke test only)');
    parts.push(checks.map((c) => `- ${c}`).join('\n'));
  }
  return parts;
}

/** The issue's bar (node:net, gRPC) and margins (uds-ipc), as far as this run measured them. */
function barChecks(result) {
  const out = [];
  const t = result.throughput;
  const at = (impl, size, inflight = 64) => t[`${size}/${inflight}`]?.[impl]?.callsPerSec;
  for (const [impl, bars] of Object.entries(BAR)) {
    for (const [size, bar] of Object.entries(bars)) {
      const v = at(impl, size);
      if (v === undefined) continue;
      const ok = impl === 'net' ? v >= bar : true;
      out.push(
        `${CONTENDERS[impl].label}, ${sizeLabel(Number(size))}, 64 in flight: ${fmtRate(v)} calls/s; issue's figure ${fmtRate(bar)} (${fmtRatio(v / bar)})${impl === 'net' ? (ok ? ' — bar reached' : ' — BELOW the bar') : ''}`,
      );
    }
  }
  for (const uds of ['uds', 'uds-promise']) {
    for (const inflight of result.options.inflight) {
      for (const size of result.options.sizes) {
        const u = at(uds, size, inflight);
        if (u === undefined) continue;
        const n = at('net', size, inflight);
        const g = at('grpc', size, inflight);
        const need = [];
        if (n !== undefined) {
          if (size <= 1024 && inflight === 64) need.push(`≥ 1.5× node:net: ${fmtRatio(u / n)} ${u >= 1.5 * n ? 'met' : 'NOT met'}`);
          else need.push(`≥ node:net: ${fmtRatio(u / n)} ${u >= n ? 'met' : 'NOT met'}`);
        }
        if (g !== undefined && size >= 102400 && inflight === 64) need.push(`≥ 10× gRPC: ${fmtRatio(u / g)} ${u >= 10 * g ? 'met' : 'NOT met'}`);
        if (need.length) out.push(`${CONTENDERS[uds].label}, ${sizeLabel(size)}, ${inflight} in flight: ${need.join('; ')}`);
      }
    }
  }
  const l = result.latency;
  for (const uds of ['uds', 'uds-promise']) {
    const u = l[uds];
    if (!u) continue;
    const need = [];
    if (l.grpc) need.push(`≤ 0.5× gRPC: ${fmtRatio(u.p50us / l.grpc.p50us)} ${u.p50us <= 0.5 * l.grpc.p50us ? 'met' : 'NOT met'}`);
    if (l.net) need.push(`≤ node:net: ${fmtRatio(u.p50us / l.net.p50us)} ${u.p50us <= l.net.p50us ? 'met' : 'NOT met'}`);
    if (need.length) out.push(`${CONTENDERS[uds].label} latency p50: ${need.join('; ')}`);
  }
  return out;
}

// ─── machine ────────────────────────────────────────────────────────────────

function machine() {
  let cpuModel = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1].trim();
  } catch {}
  return {
    cpuModel,
    cores: os.cpus().length,
    memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    kernel: `${os.type()} ${os.release()}`,
    arch: process.arch,
    node: process.version,
  };
}

function grpcVersion() {
  try {
    return JSON.parse(readFileSync(path.join(root, 'node_modules', '@grpc', 'grpc-js', 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

// ─── main ───────────────────────────────────────────────────────────────────

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    log(e.message);
    process.exit(2);
  }
  if (o.only.includes('uds') || o.only.includes('uds-promise')) {
    const { loadRpc } = await import('./rpc/uds.mjs');
    const pkg = await loadRpc();
    if (pkg instanceof Error) {
      log(`uds-ipc contender unavailable: ${pkg.message}.\nRun the other contenders with --only grpc,net.`);
      process.exit(1);
    }
  }
  if (o.only.includes('grpc') && !grpcVersion()) {
    log('@grpc/grpc-js is not installed (a dev dependency): run `npm ci`, or leave grpc out with --only.');
    process.exit(1);
  }

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'uds-rpc-bench-'));
  let seq = 0;
  const sock = (tag) => path.join(tmp, `${tag}-${seq++}.sock`);
  const result = {
    command: ['node', 'bench/rpc.mjs', ...process.argv.slice(2)].join(' '),
    date: new Date().toISOString(),
    machine: machine(),
    grpcJs: grpcVersion(),
    loadBefore: os.loadavg(),
    options: o,
    runs: [],
    throughput: {},
    latency: {},
  };
  const cases = [];
  if (o.throughput) for (const inflight of o.inflight) for (const size of o.sizes) cases.push({ size, inflight });
  const t0 = Date.now();
  log(
    `rpc bench: ${o.only.join(', ')}; ${cases.length} throughput case(s), ${o.rounds} round(s) of ${o.warmup} s + ${o.duration} s; latency ${o.latencySeconds} s per round; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
  );
  const rotate = (list, k) => list.map((_, i) => list[(i + k) % list.length]);
  const got = {};
  const lat = {};
  try {
    for (let round = 0; round < o.rounds; round++) {
      for (const [ci, c] of cases.entries()) {
        for (const impl of rotate(o.only, round + ci)) {
          const cfg = { mode: 'throughput', size: c.size, inflight: c.inflight, warmupMs: o.warmup * 1000, durationMs: o.duration * 1000 };
          const r = await runOnce(impl, cfg, sock(impl), o.timeout + o.warmup + o.duration);
          if (r.client.bad > 0) throw new Error(`${impl} size ${c.size}: ${r.client.bad} replies had the wrong length or content`);
          const key = `${c.size}/${c.inflight}`;
          ((got[key] ??= {})[impl] ??= []).push(r);
          result.runs.push({ mode: 'throughput', impl, round: round + 1, ...c, client: r.client, server: r.server });
          log(
            `  round ${round + 1} ${sizeLabel(c.size).padStart(7)} ×${String(c.inflight).padEnd(3)} ${CONTENDERS[impl].label.padEnd(21)} ${fmtRate(r.client.callsPerSec).padStart(7)} calls/s  client ${fmt(perCall(r.client).cpuUsPerCall, 2)} µs/call, server ${fmt(perCall(r.server).cpuUsPerCall, 2)} µs/call`,
          );
        }
      }
      if (o.latencySeconds > 0) {
        const count = Math.max(2, Math.round(o.latencySeconds * o.latencyRate)) + o.latencyWarmup;
        for (const impl of rotate(o.only, round)) {
          const cfg = { mode: 'latency', size: o.latencySize, rate: o.latencyRate, count, warmup: o.latencyWarmup, jitWarmup: o.latencyJitWarmup };
          const r = await runOnce(impl, cfg, sock(`lat-${impl}`), o.timeout + count / o.latencyRate + o.latencyJitWarmup / 500);
          if (r.client.bad > 0) throw new Error(`${impl} latency: ${r.client.bad} replies had the wrong length`);
          (lat[impl] ??= []).push(r);
          result.runs.push({ mode: 'latency', impl, round: round + 1, client: r.client, server: r.server });
          log(`  round ${round + 1} latency ${CONTENDERS[impl].label.padEnd(21)} p50 ${fmt(r.client.p50us, 1)} µs, p99 ${fmt(r.client.p99us, 1)} µs (${r.client.samples} samples)`);
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  for (const [key, byImpl] of Object.entries(got)) {
    result.throughput[key] = {};
    for (const [impl, runs] of Object.entries(byImpl)) result.throughput[key][impl] = summarizeThroughput(runs);
  }
  for (const [impl, runs] of Object.entries(lat)) result.latency[impl] = summarizeLatency(runs);
  result.loadAfter = os.loadavg();
  result.wallSeconds = (Date.now() - t0) / 1000;

  const outFile = o.out ?? (o.quick ? undefined : path.join(here, 'results', `rpc-${result.date.replace(/[:.]/g, '-')}.json`));
  if (outFile) {
    o.out = outFile;
    mkdirSync(path.dirname(outFile), { recursive: true });
    writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
    log(`JSON: ${path.relative(process.cwd(), outFile)}`);
  }
  if (o.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }
  const m = result.machine;
  process.stdout.write(
    `${tables(result).join('\n\n')}\n\n` +
      `- Command: \`${result.command}\` (${result.wallSeconds.toFixed(0)} s)\n` +
      `- Machine: ${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, ${m.kernel}; Node.js ${m.node}; @grpc/grpc-js ${result.grpcJs ?? '–'}\n` +
      `- Load average before / after: ${result.loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${result.loadAfter.map((x) => x.toFixed(2)).join(' ')}\n` +
      `- ${o.rounds} interleaved round(s); each figure is the median over the rounds; spread = ±half the min–max range of calls/s over the rounds (min–max: the slowest and fastest round); runs of ${o.warmup} s warm-up + ${o.duration} s measured\n`,
  );
}

main().catch((e) => {
  log(e?.stack ?? String(e));
  process.exit(1);
});
