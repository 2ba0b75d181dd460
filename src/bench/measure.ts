/**
 * What a benchmark role process measures about itself: arrival times, latency
 * samples, CPU, peak memory, and the message contents it checks. Used by the
 * uds-ipc roles (./uds-ipc.ts, behind `uds-ipc bench` and bench/run.mjs) and
 * by bench/net-baseline.mjs, so every implementation is measured the same way.
 */
import { readFileSync } from 'node:fs';

/** Peak resident set size of this process in KiB (VmHWM), 0 if unknown. */
export function peakRssKiB(): number {
  try {
    const m = /^VmHWM:\s*(\d+)\s*kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux, or /proc not mounted: fall back below
  }
  return Math.round(process.resourceUsage().maxRSS);
}

/** CPU seconds (user, system) of the whole process, every thread, since `since`. */
export function cpuSince(since?: NodeJS.CpuUsage): { cpuUser: number; cpuSystem: number } {
  const u = process.cpuUsage(since);
  return { cpuUser: u.user / 1e6, cpuSystem: u.system / 1e6 };
}

/** What {@link Arrivals.result} reports. */
export interface ArrivalsResult {
  msgsAfterFirst: number;
  bytesAfterFirst: number;
  seconds: number;
  msgsPerSec: number;
  bytesPerSec: number;
}

/**
 * Tracks the receiver side of a throughput run: the time of the first and of
 * the last arrival (process.hrtime.bigint(), CLOCK_MONOTONIC: comparable
 * between the processes of one host). Throughput = what arrived after the
 * first arrival over the time between first and last (so process start-up and
 * connection set-up are never counted, and neither is the first batch, which
 * had no measurable duration).
 */
export class Arrivals {
  first = 0n;
  last = 0n;
  msgsAtFirst = 0;
  bytesAtFirst = 0;

  /** Call after handling a batch/chunk, with the running totals. */
  mark(msgs: number, bytes: number): void {
    const now = process.hrtime.bigint();
    if (this.first === 0n) {
      this.first = now;
      this.msgsAtFirst = msgs;
      this.bytesAtFirst = bytes;
    }
    this.last = now;
  }

  result(msgs: number, bytes: number): ArrivalsResult {
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
export function expectedChecksum(count: number, size: number): number {
  if (size === 0) return 0;
  const full = Math.floor(count / 256);
  const rest = count % 256;
  return full * ((255 * 256) / 2) + (rest * (rest - 1)) / 2;
}

/**
 * Message `i` of a throughput run carries `i` (little-endian) in its first
 * `seqBytes` bytes (at most 4, never more than the message). The bench's
 * writers stamp one byte (the first byte is `i & 0xff`, summed by the
 * readers); `check: 'each'` stamps four.
 */
export function stampSequence(msg: Uint8Array, i: number, seqBytes: number): void {
  for (let k = 0; k < seqBytes; k++) msg[k] = (i >>> (8 * k)) & 0xff;
}

/** True if bytes[start..end) is message `i` of `size` bytes stamped by {@link stampSequence}. */
export function isMessage(bytes: Uint8Array, start: number, end: number, i: number, size: number, seqBytes: number): boolean {
  if (end - start !== size) return false;
  for (let k = 0; k < seqBytes; k++) if (bytes[start + k] !== ((i >>> (8 * k)) & 0xff)) return false;
  return true;
}

/** What {@link LatencyRecorder.result} reports (µs). */
export interface LatencyResult {
  received: number;
  samples: number;
  warmup: number;
  outOfOrder: number;
  p50us: number;
  p90us: number;
  p99us: number;
  p999us: number;
  maxUs: number;
  minUs: number;
  meanUs: number;
}

/**
 * Latency samples: the writer stamps process.hrtime.bigint() (CLOCK_MONOTONIC,
 * shared by every process on the host) into bytes 0-7 of each 64-byte message
 * and its sequence number into bytes 8-11 ({@link stamp}); the reader
 * subtracts the stamp from its own clock when the message reaches its handler.
 */
export class LatencyRecorder {
  readonly samples: Float64Array;
  n = 0;
  seen = 0;
  outOfOrder = 0;
  nextSeq = 0;

  constructor(
    readonly total: number,
    readonly warmup: number,
  ) {
    this.samples = new Float64Array(Math.max(0, total - warmup));
  }

  /** `now`: arrival (hrtime.bigint); `sentNs`: the stamp; `seq`: the sequence number. */
  add(now: bigint, sentNs: bigint, seq: number): void {
    if (seq !== this.nextSeq) this.outOfOrder++;
    this.nextSeq = seq + 1;
    if (this.seen++ >= this.warmup) this.samples[this.n++] = Number(now - sentNs) / 1e3; // µs
  }

  get done(): boolean {
    return this.seen >= this.total;
  }

  result(): LatencyResult {
    const s = this.samples.subarray(0, this.n).sort();
    const pct = (p: number): number => (s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : 0);
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
 * does not shift the rest), then resolves with the seconds it took. The
 * message's stamp is taken right before it is handed to the transport, so
 * timer lateness never counts as latency.
 */
export function paced(total: number, rate: number, send: (seq: number) => void): Promise<number> {
  const intervalNs = 1e9 / rate;
  const start = process.hrtime.bigint();
  let i = 0;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
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
export function stamp(buf: Buffer, seq: number): Buffer {
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeBigUInt64LE(process.hrtime.bigint(), 0);
  return buf;
}
