/**
 * uds-ipc through its public API, one role per process: the reader and the
 * writer that `uds-ipc bench` and bench/run.mjs (`npm run bench`) start
 * (./pair.ts, {@link udsIpcRole}).
 *
 *     node dist/bench/uds-ipc.js '{"role":"reader","mode":"throughput","variant":"visit","path":"/tmp/x.sock","size":64,"count":1000000}'
 *     node dist/bench/uds-ipc.js '{"role":"writer","mode":"throughput","path":"/tmp/x.sock","size":64,"count":1000000}'
 *     ... "mode":"latency","rate":1000,"count":10000,"warmup":100
 *
 * Writer: connects (ERR_CONNECT_FAILED after 10 s), then write() in a loop;
 * when it returns false (queue full, message not taken) awaits 'drain' and
 * writes the same message again; then awaits stop(). A fatal writer error
 * fails the role. Reader: the handler touches every message and counts until
 * `count` arrived (variants and checks: {@link RoleConfig}); any error the
 * Reader reports fails the role after its result. Both use default options,
 * except a maxMessageSize large enough for `size`.
 */
import { once } from 'node:events';
import { DEFAULT_MAX_MESSAGE_SIZE, Reader, Writer, type Batch } from '../index';
import { Arrivals, LatencyRecorder, cpuSince, expectedChecksum, isMessage, paced, peakRssKiB, stamp, stampSequence } from './measure';
import { fail, finish, ready, emit, roleProcess, type RoleConfig } from './role';

/** How long the writer waits for its first connection. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Bytes of the sequence number each message carries (see stampSequence()). */
function sequenceBytes(cfg: RoleConfig): number {
  return Math.min(cfg.size, cfg.check === 'each' ? 4 : 1);
}

function maxMessageSize(cfg: RoleConfig): number {
  return Math.max(cfg.size, DEFAULT_MAX_MESSAGE_SIZE);
}

export async function runReader(cfg: RoleConfig): Promise<void> {
  const { role, mode = 'throughput', size, count } = cfg;
  const seqBytes = sequenceBytes(cfg);
  const each = cfg.check === 'each';
  let msgs = 0;
  let bytes = 0;
  let sum = 0;
  let bad = 0;
  let errors = 0;
  let done = false;
  let cpu0: NodeJS.CpuUsage | undefined;
  let ticker: NodeJS.Timeout | undefined;
  const arrivals = new Arrivals();
  const lat = mode === 'latency' ? new LatencyRecorder(count, cfg.warmup ?? 0) : undefined;

  // The per-message handler work, defined once: no closure per batch.
  const onVisit = each
    ? (b: Uint8Array, start: number, end: number): void => {
        if (!isMessage(b, start, end, msgs, size, seqBytes)) bad++;
        msgs++;
      }
    : (b: Uint8Array, start: number): void => {
        sum += b[start];
        msgs++;
      };
  const onMessage = each
    ? (msg: Buffer): void => {
        if (!isMessage(msg, 0, msg.length, msgs, size, seqBytes)) bad++;
        msgs++;
      }
    : (msg: Buffer): void => {
        sum += msg[0];
        msgs++;
      };

  let handler: (batch: Batch) => void;
  if (lat) {
    handler = (batch) => {
      const now = process.hrtime.bigint();
      for (const msg of batch) lat.add(now, msg.readBigUInt64LE(0), msg.readUInt32LE(8));
      if (lat.done) end();
    };
  } else if (cfg.variant === 'buffer') {
    handler = (batch) => {
      for (const msg of batch) onMessage(msg);
      bytes += batch.byteLength;
      arrivals.mark(msgs, bytes);
      if (msgs >= count) end();
    };
  } else {
    handler = (batch) => {
      batch.visit(onVisit);
      bytes += batch.byteLength;
      arrivals.mark(msgs, bytes);
      if (msgs >= count) end();
    };
  }

  const reader = new Reader(cfg.path, handler, {
    type: cfg.type ?? 'stream',
    delivery: cfg.delivery ?? 'at-most-once',
    maxMessageSize: maxMessageSize(cfg),
    onError: (e, context) => {
      errors++;
      process.stderr.write(`reader error (${context}): ${(e as { code?: string }).code ?? ''} ${e.message}\n`);
    },
  });

  function end(): void {
    if (done) return;
    done = true;
    clearInterval(ticker);
    const cpu = cpuSince(cpu0);
    const rss = peakRssKiB();
    const m = reader.metrics();
    const base = {
      role,
      impl: 'uds-ipc',
      variant: lat ? 'buffer' : (cfg.variant ?? 'visit'),
      mode,
      size,
      count,
      ...cpu,
      peakRssKiB: rss,
      pid: process.pid,
    };
    const extra = { batches: m.batches, readCalls: m.readCalls, pauses: m.pauses };
    // Stop after measuring (the writer has stopped or is stopping).
    setImmediate(() => {
      void reader
        .stop({ timeoutMs: 5000 })
        .catch(() => undefined)
        .then(() => {
          const code = errors > 0 ? 1 : 0;
          if (lat) finish({ ...base, ...lat.result(), ...extra }, code);
          const checked = each ? { checksumOk: bad === 0, bad } : { checksumOk: sum === expectedChecksum(count, size) };
          const stamps = cfg.stamps ? { endNs: Number(arrivals.last) } : {};
          finish({ ...base, msgs, bytes, ...arrivals.result(msgs, bytes), ...checked, ...extra, ...stamps }, code);
        });
    });
  }

  await reader.start();
  cpu0 = process.cpuUsage();
  ready();
  if (cfg.progressMs) ticker = setInterval(() => emit({ progress: msgs }), cfg.progressMs);
}

export async function runWriter(cfg: RoleConfig): Promise<void> {
  const { role, mode = 'throughput', size, count } = cfg;
  const writer = new Writer(cfg.path, {
    type: cfg.type ?? 'stream',
    delivery: cfg.delivery ?? 'at-most-once',
    maxMessageSize: maxMessageSize(cfg),
  });
  let fatal: Error | undefined;
  writer.on('error', (e: Error) => {
    fatal ??= e;
  });
  writer.start();
  await connected(writer, cfg.path);

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let refused = 0;
  let seconds: number | undefined;
  if (mode === 'latency') {
    const msg = Buffer.alloc(size);
    seconds = await paced(count, cfg.rate!, (seq) => {
      if (!writer.write(stamp(msg, seq))) throw new Error('latency writer: write() returned false');
    });
  } else {
    const msg = Buffer.alloc(size, 0x5a);
    const seqBytes = sequenceBytes(cfg);
    for (let i = 0; i < count; i++) {
      stampSequence(msg, i, seqBytes);
      while (!writer.write(msg)) {
        refused++;
        if (fatal) throw fatal;
        await once(writer, 'drain'); // rejects on a writer 'error' meanwhile
      }
    }
  }
  const { discarded } = await writer.stop({ timeoutMs: 120_000 });
  if (fatal) throw fatal;
  if (seconds === undefined) seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSince(cpu0);
  const m = writer.metrics();
  finish(
    {
      role,
      impl: 'uds-ipc',
      mode,
      size,
      count,
      seconds,
      ...cpu,
      peakRssKiB: peakRssKiB(),
      refused,
      discarded,
      sendCalls: m.sendCalls,
      sent: m.sent,
      pid: process.pid,
      ...(cfg.stamps ? { startNs: Number(t0) } : {}),
    },
    discarded > 0 ? 1 : 0,
  );
}

/** Resolves on the writer's first 'connect'; rejects on a writer error or after CONNECT_TIMEOUT_MS. */
async function connected(writer: Writer, path: string): Promise<void> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), CONNECT_TIMEOUT_MS);
  try {
    await once(writer, 'connect', { signal: ac.signal });
  } catch (e) {
    await writer.stop({ timeoutMs: 0 }).catch(() => undefined);
    if (ac.signal.aborted) {
      throw Object.assign(new Error(`cannot connect to ${path} within ${CONNECT_TIMEOUT_MS} ms`), { code: 'ERR_CONNECT_FAILED' });
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the role its configuration (argv[2]) names. */
export async function main(): Promise<void> {
  const cfg = roleProcess();
  await (cfg.role === 'reader' ? runReader(cfg) : runWriter(cfg));
}

if (require.main === module) main().catch(fail);
