// Helpers shared by the benchmark's child processes (uds-ipc.mjs,
// net-baseline.mjs). Each child is started by run.mjs as
//   node bench/<impl>.mjs '<json config>'
// prints {"ready":true} when it is ready (readers: once listening), and one
// JSON result line at the end on stdout.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** The child's configuration: argv[2] as JSON. */
export function config() {
  const raw = process.argv[2];
  if (!raw) {
    process.stderr.write(`usage: node ${process.argv[1]} '{"role":"reader|writer","mode":"throughput|latency","path":"...","size":64,"count":1000}'\n`);
    process.exit(1);
  }
  return JSON.parse(raw);
}

/** Peak resident set size of this process in KiB (VmHWM), 0 if unknown. */
export function peakRssKiB() {
  try {
    const m = /^VmHWM:\s*(\d+)\s*kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {}
  return Math.round(process.resourceUsage().maxRSS);
}

/** CPU seconds (user, system) of the whole process, every thread, since `since`. */
export function cpuSince(since) {
  const u = process.cpuUsage(since);
  return { cpuUser: u.user / 1e6, cpuSystem: u.system / 1e6 };
}

/** Writes one JSON line to stdout (synchronous for pipes on Linux). */
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

export function ready() {
  emit({ ready: true });
}

/** Emits the final result and exits (stdout to a pipe is written synchronously). */
export function finish(obj) {
  emit(obj);
  process.exit(0);
}

/** Dies loudly: the orchestrator shows stderr. */
export function fail(err) {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exit(2);
}

/**
 * Tracks the receiver side of a throughput run: the time of the first and of
 * the last arrival. Throughput = what arrived after the first arrival over the
 * time between first and last (so process start-up and connection set-up are
 * never counted, and neither is the first batch, which had no measurable
 * duration).
 */
export class Arrivals {
  first = 0n;
  last = 0n;
  msgsAtFirst = 0;
  bytesAtFirst = 0;
  /** Call after handling a batch/chunk, with the running totals. */
  mark(msgs, bytes) {
    const now = process.hrtime.bigint();
    if (this.first === 0n) {
      this.first = now;
      this.msgsAtFirst = msgs;
      this.bytesAtFirst = bytes;
    }
    this.last = now;
  }
  result(msgs, bytes) {
    const seconds = Number(this.last - this.first) / 1e9;
    return {
      msgsAfterFirst: msgs - this.msgsAtFirst,
      bytesAfterFirst: bytes - this.bytesAtFirst,
      seconds,
      msgsPerSec: seconds > 0 ? (msgs - this.msgsAtFirst) / seconds : 0,
      bytesPerSec: seconds > 0 ? (bytes - this.bytesAtFirst) / seconds : 0,
    };
  }
}

/** Sum of the first payload byte over messages 0..count-1 when message i starts with (i & 0xff). */
export function expectedChecksum(count, size) {
  if (size === 0) return 0;
  const full = Math.floor(count / 256);
  const rest = count % 256;
  return full * ((255 * 256) / 2) + (rest * (rest - 1)) / 2;
}

/**
 * Latency samples: the writer stamps process.hrtime.bigint() (CLOCK_MONOTONIC,
 * shared by every process on the host) into bytes 0-7 of each 64-byte message
 * and its sequence number into bytes 8-11; the reader subtracts the stamp
 * from its own clock when the message reaches its handler.
 */
export class LatencyRecorder {
  constructor(total, warmup) {
    this.total = total;
    this.warmup = warmup;
    this.samples = new Float64Array(Math.max(0, total - warmup));
    this.n = 0;
    this.seen = 0;
    this.outOfOrder = 0;
    this.nextSeq = 0;
  }
  /** `now`: arrival (hrtime.bigint); `sentNs`: the stamp; `seq`: the sequence number. */
  add(now, sentNs, seq) {
    if (seq !== this.nextSeq) this.outOfOrder++;
    this.nextSeq = seq + 1;
    if (this.seen++ >= this.warmup) this.samples[this.n++] = Number(now - sentNs) / 1e3; // µs
  }
  get done() {
    return this.seen >= this.total;
  }
  result() {
    const s = this.samples.subarray(0, this.n).sort();
    const pct = (p) => (s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : 0);
    let sum = 0;
    for (let i = 0; i < s.length; i++) sum += s[i];
    return {
      received: this.seen,
      samples: s.length,
      warmup: this.warmup,
      outOfOrder: this.outOfOrder,
      p50us: pct(50),
      p90us: pct(90),
      p99us: pct(99),
      p999us: pct(99.9),
      maxUs: s.length ? s[s.length - 1] : 0,
      minUs: s.length ? s[0] : 0,
      meanUs: s.length ? sum / s.length : 0,
    };
  }
}

/**
 * Paces a latency writer: calls send(seq) `total` times at `rate` per second
 * (one message per timer tick, targets on a fixed schedule so that a late tick
 * does not shift the rest), then resolves. The message's stamp is taken right
 * before it is handed to the transport, so timer lateness never counts as
 * latency.
 */
export function paced(total, rate, send) {
  const intervalNs = 1e9 / rate;
  const start = process.hrtime.bigint();
  let i = 0;
  return new Promise((resolve, reject) => {
    const tick = () => {
      try {
        send(i);
      } catch (e) {
        reject(e);
        return;
      }
      i++;
      if (i >= total) {
        resolve(Number(process.hrtime.bigint() - start) / 1e9);
        return;
      }
      const elapsedNs = Number(process.hrtime.bigint() - start);
      const delayMs = (i * intervalNs - elapsedNs) / 1e6;
      setTimeout(tick, Math.max(0, delayMs));
    };
    tick();
  });
}

/** A 64-byte latency message: stamp (u64 LE) at 0, sequence (u32 LE) at 8. */
export function stamp(buf, seq) {
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeBigUInt64LE(process.hrtime.bigint(), 0);
  return buf;
}

/**
 * Replaces the part of `file` between the `start` and `end` markers (markers
 * included) with `start + body + end`, or appends it. bench/run.mjs rewrites
 * the rest of bench/README.md and keeps these sections.
 */
export function replaceSection(file, start, end, body) {
  const section = `${start}\n${body.trim()}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) text = text.slice(0, a) + section + text.slice(b + end.length);
  else text = `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}

/** The sections of `text` between start/end marker pairs (markers included), in order. */
export function keptSections(text, markers) {
  const out = [];
  for (const [start, end] of markers) {
    const a = text.indexOf(start);
    const b = text.indexOf(end);
    if (a >= 0 && b > a) out.push(text.slice(a, b + end.length));
  }
  return out;
}
