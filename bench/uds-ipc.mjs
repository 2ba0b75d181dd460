// uds-ipc through its public API, one role per process (started by run.mjs).
//
//   node bench/uds-ipc.mjs '{"role":"reader","mode":"throughput","variant":"visit","path":"/tmp/x.sock","size":64,"count":1000000}'
//   node bench/uds-ipc.mjs '{"role":"writer","mode":"throughput","path":"/tmp/x.sock","size":64,"count":1000000}'
//   ... "mode":"latency","rate":1000,"count":10000,"warmup":100
//
// Writer: write() in a loop; when it returns false (queue full, message not
// taken) await 'drain' and write the same message again; then await stop().
// Reader: the handler touches every message (reads its first byte) and counts
// until `count` arrived. Variants: "visit" = batch.visit((bytes, start, end) =>
// ...), no object per message; "buffer" = for (const msg of batch), one Buffer
// view per message.
import { once } from 'node:events';
import { Reader, Writer } from '../dist/index.mjs';
import { Arrivals, LatencyRecorder, config, cpuSince, expectedChecksum, fail, finish, paced, peakRssKiB, ready, stamp } from './common.mjs';

const cfg = config();
const { role, mode = 'throughput', path, size, count } = cfg;
process.on('unhandledRejection', fail);

if (role === 'reader') await runReader();
else if (role === 'writer') await runWriter();
else fail(new Error(`unknown role ${role}`));

async function runReader() {
  let msgs = 0;
  let bytes = 0;
  let sum = 0;
  let done = false;
  let cpu0;
  const arrivals = new Arrivals();
  const lat = mode === 'latency' ? new LatencyRecorder(count, cfg.warmup ?? 0) : undefined;

  // The per-message handler work, defined once: no closure per batch.
  const onVisit = (b, start, end) => {
    sum += b[start];
    msgs++;
  };
  const onMessage = (msg) => {
    sum += msg[0];
    msgs++;
  };

  let handler;
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

  const reader = new Reader(path, handler);
  reader.on('error', (e) => process.stderr.write(`reader error: ${e.code ?? ''} ${e.message}\n`));

  function end() {
    if (done) return;
    done = true;
    const cpu = cpuSince(cpu0);
    const rss = peakRssKiB();
    const m = reader.metrics();
    const base = { role, impl: 'uds-ipc', variant: lat ? 'buffer' : (cfg.variant ?? 'visit'), mode, size, count, ...cpu, peakRssKiB: rss, pid: process.pid };
    const extra = { batches: m.batches, readCalls: m.readCalls, pauses: m.pauses };
    // Stop after measuring (the writer has stopped or is stopping).
    setImmediate(async () => {
      await reader.stop({ timeoutMs: 2000 }).catch(() => {});
      if (lat) finish({ ...base, ...lat.result(), ...extra });
      else finish({ ...base, msgs, bytes, ...arrivals.result(msgs, bytes), checksumOk: sum === expectedChecksum(count, size), ...extra });
    });
  }

  await reader.start();
  cpu0 = process.cpuUsage();
  ready();
}

async function runWriter() {
  const writer = new Writer(path);
  writer.on('error', (e) => process.stderr.write(`writer error: ${e.code ?? ''} ${e.message}\n`));
  writer.start();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let refused = 0;
  let seconds;
  if (mode === 'latency') {
    const msg = Buffer.alloc(size);
    seconds = await paced(count, cfg.rate, (seq) => {
      if (!writer.write(stamp(msg, seq))) throw new Error('latency writer: write() returned false');
    });
  } else {
    const msg = Buffer.alloc(size, 0x5a);
    for (let i = 0; i < count; i++) {
      if (size) msg[0] = i & 0xff;
      while (!writer.write(msg)) {
        refused++;
        await once(writer, 'drain');
      }
    }
  }
  const { discarded } = await writer.stop({ timeoutMs: 120_000 });
  if (seconds === undefined) seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSince(cpu0);
  const m = writer.metrics();
  finish({
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
  });
}
