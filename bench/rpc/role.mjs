// One process of a `npm run bench:rpc` run: the server or the client of one
// contender (./net.mjs, ./grpc.mjs, ./uds.mjs), started by ../rpc.mjs with a
// JSON configuration and an IPC channel to it:
//
//   node bench/rpc/role.mjs '{"role":"server","impl":"net","path":"/tmp/x.sock"}'
//   node bench/rpc/role.mjs '{"role":"client","impl":"net","path":"/tmp/x.sock","mode":"throughput",
//                             "size":64,"inflight":64,"warmupMs":500,"durationMs":1500}'
//   node bench/rpc/role.mjs '{"role":"client", ..., "mode":"latency","size":64,"rate":1000,"count":3000,"warmup":200}'
//
// Messages (process.send) to the parent: server {ready}, then on the parent's
// {cmd:'start'} / {cmd:'stop'} it opens / closes its measuring window and
// answers {result}; {cmd:'exit'} closes it. The client connects, warms up,
// sends {mark:'start'}, measures, sends {mark:'stop'}, lets its calls in
// flight finish, and sends {result}. Each side measures its own window: CPU
// (process.cpuUsage, every thread), garbage collections (PerformanceObserver
// 'gc', by start time inside the window, scavenge / mark-compact by
// entry.detail.kind), calls; peak RSS (VmHWM) is the whole process's.
import { readFileSync } from 'node:fs';
import { constants, performance, PerformanceObserver } from 'node:perf_hooks';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const IMPLS = { net: './net.mjs', grpc: './grpc.mjs', uds: './uds.mjs', 'uds-promise': './uds.mjs' };

/** Sends a message to the parent; resolves once it was handed over (so exiting after it loses nothing). */
function send(msg) {
  return new Promise((resolve) => process.send(msg, () => resolve()));
}

function die(err) {
  process.stderr.write(`rpc bench ${cfg.impl ?? '?'} ${cfg.role ?? '?'}: ${err?.stack ?? err}\n`);
  process.exit(1);
}
process.on('uncaughtException', die);
process.on('unhandledRejection', die);
if (!process.send) die(new Error('must be started by bench/rpc.mjs (needs an IPC channel)'));
process.on('disconnect', () => process.exit(1)); // never outlive the run

function peakRssKiB() {
  try {
    const m = /^VmHWM:\s*(\d+)\s*kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {}
  return Math.round(process.resourceUsage().maxRSS);
}

/** CPU, GCs and a call count over a window [start(), stop()]. */
class Window {
  constructor(countCalls) {
    this.countCalls = countCalls;
    this.entries = [];
    this.obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) this.entries.push({ t: e.startTime, kind: e.detail?.kind ?? e.kind });
    });
    this.obs.observe({ entryTypes: ['gc'] });
  }

  start() {
    this.t0 = performance.now();
    this.ns0 = process.hrtime.bigint();
    this.cpu0 = process.cpuUsage();
    this.calls0 = this.countCalls();
  }

  stop() {
    this.t1 = performance.now();
    this.seconds = Number(process.hrtime.bigint() - this.ns0) / 1e9;
    this.cpu = process.cpuUsage(this.cpu0);
    this.calls = this.countCalls() - this.calls0;
  }

  /** The window's figures, once the GC entries of the window had time to arrive. */
  async result() {
    await new Promise((r) => setTimeout(r, 30)); // observer entries are delivered as a later task
    this.obs.disconnect();
    const gc = { scavenges: 0, markCompacts: 0, other: 0 };
    for (const e of this.entries) {
      if (e.t < this.t0 || e.t > this.t1) continue;
      if (e.kind === constants.NODE_PERFORMANCE_GC_MINOR) gc.scavenges++;
      else if (e.kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.markCompacts++;
      else gc.other++;
    }
    return {
      calls: this.calls,
      seconds: this.seconds,
      cpuUser: this.cpu.user / 1e6,
      cpuSystem: this.cpu.system / 1e6,
      gc,
      peakRssKiB: peakRssKiB(),
    };
  }
}

const impl = await import(IMPLS[cfg.impl] ?? die(new Error(`unknown impl ${cfg.impl}`)));

if (cfg.role === 'server') await server();
else if (cfg.role === 'client') await client();
else die(new Error(`unknown role ${cfg.role}`));

async function server() {
  const stats = { calls: 0 };
  const win = new Window(() => stats.calls);
  const srv = await impl.startServer(cfg.path, stats, undefined, { inflight: cfg.inflight });
  process.on('message', async (m) => {
    if (m.cmd === 'start') win.start();
    else if (m.cmd === 'stop') {
      win.stop();
      send({ result: { role: 'server', impl: cfg.impl, ...(await win.result()), totalCalls: stats.calls } });
    } else if (m.cmd === 'exit') {
      await Promise.race([srv.close(), new Promise((r) => setTimeout(r, 2000).unref())]);
      process.exit(0);
    }
  });
  send({ ready: true });
}

async function client() {
  const c = await impl.connect(cfg.path, { promise: cfg.impl === 'uds-promise' });
  const size = cfg.size;
  if (cfg.mode === 'latency') return latency(c, size);

  // Throughput: `inflight` calls outstanding at all times, each slot with its
  // own body (a transport may hold a request's buffer until it is sent), the
  // first byte stamped per call and checked in the reply.
  const inflight = cfg.inflight;
  let calls = 0;
  let bad = 0;
  let errors = 0;
  let firstError;
  let running = true;
  let outstanding = 0;
  let onIdle;
  const win = new Window(() => calls);
  const slots = [];
  for (let k = 0; k < inflight; k++) {
    const body = Buffer.alloc(size, 0x5a);
    const slot = { body, stamp: 0, done: null };
    slot.done = (err, reply) => {
      outstanding--;
      if (err) {
        errors++;
        firstError ??= err;
        running = false;
      } else {
        if (reply.length !== size || (size > 0 && reply[0] !== slot.stamp)) bad++;
        calls++;
      }
      if (running) issue(slot);
      else if (outstanding === 0 && onIdle) onIdle();
    };
    slots.push(slot);
  }
  let seq = 0;
  const issue = (slot) => {
    const s = seq++ & 0xff;
    slot.stamp = s;
    if (size > 0) slot.body[0] = s;
    outstanding++;
    c.call(slot.body, slot.done);
  };
  for (const slot of slots) issue(slot);
  await new Promise((r) => setTimeout(r, cfg.warmupMs));
  send({ mark: 'start' });
  win.start();
  await new Promise((r) => setTimeout(r, cfg.durationMs));
  win.stop();
  send({ mark: 'stop' });
  running = false;
  if (outstanding > 0) await new Promise((r) => (onIdle = r));
  const w = await win.result();
  await c.close();
  if (firstError) die(firstError);
  await send({
    result: {
      role: 'client',
      impl: cfg.impl,
      ...w,
      callsPerSec: w.calls / w.seconds,
      totalCalls: calls,
      bad,
      errors,
    },
  });
  process.exit(0);
}

/**
 * Latency: one call every 1/rate s (timer-paced on a fixed schedule, so a
 * late tick does not shift the rest; a call never waits for the previous one),
 * time from just before call() to its callback. The first `warmup` calls are
 * not counted. `jitWarmup` calls, one at a time and not paced, come first.
 */
async function latency(c, size) {
  const { rate, count, warmup } = cfg;
  const jitBody = Buffer.alloc(size, 0x5a);
  for (let k = 0; k < (cfg.jitWarmup ?? 0); k++) {
    await new Promise((resolve, reject) => c.call(jitBody, (err) => (err ? reject(err) : resolve())));
  }
  const samples = new Float64Array(count);
  let got = 0;
  let bad = 0;
  let firstError;
  const body = Buffer.alloc(size, 0x5a);
  const intervalNs = 1e9 / rate;
  let t0;
  let startedWin = false;
  const win = new Window(() => got);
  await new Promise((resolve) => {
    let i = 0;
    const tick = () => {
      if (i === warmup && !startedWin) {
        startedWin = true;
        send({ mark: 'start' });
        win.start();
      }
      const k = i++;
      const sent = process.hrtime.bigint();
      c.call(body, (err, reply) => {
        const now = process.hrtime.bigint();
        if (err) firstError ??= err;
        else if (reply.length !== size) bad++;
        samples[k] = Number(now - sent) / 1e3;
        if (++got === count) resolve();
      });
      if (i < count) {
        const delayMs = (i * intervalNs - Number(process.hrtime.bigint() - t0)) / 1e6;
        setTimeout(tick, Math.max(0, delayMs));
      }
    };
    t0 = process.hrtime.bigint();
    tick();
  });
  win.stop();
  send({ mark: 'stop' });
  const w = await win.result();
  await c.close();
  if (firstError) die(firstError);
  const s = samples.subarray(warmup).sort();
  const pct = (p) => (s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN);
  await send({
    result: {
      role: 'client',
      impl: cfg.impl,
      ...w,
      samples: s.length,
      achievedRate: (count - warmup) / w.seconds,
      p50us: pct(50),
      p90us: pct(90),
      p99us: pct(99),
      p999us: pct(99.9),
      maxUs: s[s.length - 1],
      bad,
    },
  });
  process.exit(0);
}
