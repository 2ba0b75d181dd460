// The node:net baseline: the same framing (uvarint length + payload, as Go's
// binary.PutUvarint; see src/framing.ts) written the way a careful Node user
// would, with nothing but node:net. One role per process (started by run.mjs).
//
//   node bench/net-baseline.mjs '{"role":"reader","mode":"throughput","path":"/tmp/x.sock","size":64,"count":1000000}'
//   node bench/net-baseline.mjs '{"role":"writer","mode":"throughput","path":"/tmp/x.sock","size":64,"count":1000000}'
//   optional writer knobs: "chunk" (bytes, default 65536), "hwm" (writableHighWaterMark,
//   default 16384), "reuse" (1 = recycle chunks, default; 0 = a fresh Buffer per chunk)
//
// Writer: encodes frames back to back into ~64 KiB Buffers (a frame larger
// than that gets a chunk of its own size) and writes each chunk with
// socket.write(), awaiting 'drain' whenever it returns false. A chunk is
// reused once socket.write's callback says it was flushed (measured: this
// halves the writer's CPU against allocating a fresh 64 KiB Buffer per chunk).
// Latency mode: one socket.write() of one frame per message (nothing to batch
// at 1,000/s).
// Reader: parses every whole frame of each 'data' chunk in place and hands
// each message to the handler as a Buffer view (Buffer.from(arrayBuffer,
// offset, length): no copy, and cheaper than subarray()); a frame split across
// chunks is copied once, into a Buffer of its own size, when its last byte
// arrives.
import { once } from 'node:events';
import net from 'node:net';
// The measurement and the role protocol are uds-ipc's (src/bench/, built into dist/).
import { Arrivals, LatencyRecorder, cpuSince, expectedChecksum, paced, peakRssKiB, stamp } from '../dist/bench/measure.js';
import { fail, finish, ready, roleProcess } from '../dist/bench/role.js';

const cfg = roleProcess();
function cfg_num(k, d) { return cfg[k] ?? d; }
const CHUNK = cfg_num('chunk', 64 * 1024);
const MAX_MESSAGE_SIZE = 10 * 1024 * 1024; // as the uds-ipc Reader's default

const { role, mode = 'throughput', path, size, count } = cfg;

if (role === 'reader') await runReader();
else if (role === 'writer') await runWriter();
else fail(new Error(`unknown role ${role}`));

/**
 * Returns a 'data' listener that calls onMessage(view) for every whole frame,
 * then onChunkDone() once per chunk. Whole frames inside a chunk are handed
 * out in place (Buffer views, no copy); a frame split across chunks is copied
 * once, when its last byte has arrived, into a Buffer of its own size, and the
 * rest of that chunk is again parsed in place.
 */
function frameParser(onMessage, onChunkDone, onError) {
  let pending = []; // pieces of an incomplete frame
  let pendingLen = 0;
  let need = 0; // bytes the incomplete frame needs in all (0 = its header is incomplete)

  // Parses buf[pos..]: delivers whole frames, keeps the incomplete tail.
  const parse = (buf, pos) => {
    const end = buf.length;
    while (pos < end) {
      // uvarint length prefix; lengths up to MAX_MESSAGE_SIZE take at most 4 bytes, so 32-bit math is safe
      let len = 0;
      let shift = 0;
      let p = pos;
      let b = 0x80;
      while (p < end) {
        b = buf[p++];
        len |= (b & 0x7f) << shift;
        if (b < 0x80) break;
        shift += 7;
        if (shift > 28) return onError(new Error('invalid frame: length prefix too long'));
      }
      if (b >= 0x80) break; // header incomplete
      len >>>= 0;
      if (len > MAX_MESSAGE_SIZE) return onError(new Error(`message of ${len} bytes exceeds the limit`));
      if (end - p < len) {
        need = p - pos + len;
        break;
      }
      onMessage(Buffer.from(buf.buffer, buf.byteOffset + p, len));
      pos = p + len;
    }
    if (pos < end) {
      pending.push(pos === 0 ? buf : buf.subarray(pos));
      pendingLen = end - pos;
    }
    return true;
  };

  return (chunk) => {
    if (pendingLen === 0) {
      need = 0;
      if (parse(chunk, 0)) onChunkDone();
      return;
    }
    if (need === 0) {
      // The length prefix itself was split (rare): join and parse.
      const buf = Buffer.concat([...pending, chunk], pendingLen + chunk.length);
      pending = [];
      pendingLen = 0;
      if (parse(buf, 0)) onChunkDone();
      return;
    }
    if (pendingLen + chunk.length < need) {
      pending.push(chunk); // still incomplete: keep the piece, copy nothing yet
      pendingLen += chunk.length;
      return;
    }
    // This chunk completes the frame: copy it whole once, then go on in place.
    const frame = Buffer.allocUnsafe(need);
    let o = 0;
    for (const piece of pending) {
      frame.set(piece, o);
      o += piece.length;
    }
    const take = need - pendingLen;
    frame.set(take === chunk.length ? chunk : chunk.subarray(0, take), o);
    pending = [];
    pendingLen = 0;
    need = 0;
    if (parse(frame, 0) && parse(chunk, take)) onChunkDone();
  };
}

async function runReader() {
  let msgs = 0;
  let bytes = 0;
  let sum = 0;
  let done = false;
  let cpu0;
  const arrivals = new Arrivals();
  const lat = mode === 'latency' ? new LatencyRecorder(count, cfg.warmup ?? 0) : undefined;
  let now = 0n;

  // The handler: same work as the uds-ipc reader's.
  const onMessage = lat
    ? (msg) => lat.add(now, msg.readBigUInt64LE(0), msg.readUInt32LE(8))
    : (msg) => {
        sum += msg[0];
        bytes += msg.length;
        msgs++;
      };

  const server = net.createServer((socket) => {
    const onData = frameParser(
      onMessage,
      () => {
        if (lat) {
          if (lat.done) end(socket);
          return;
        }
        arrivals.mark(msgs, bytes);
        if (msgs >= count) end(socket);
      },
      (err) => {
        process.stderr.write(`${err.message}\n`);
        socket.destroy();
      },
    );
    socket.on('data', lat ? (chunk) => ((now = process.hrtime.bigint()), onData(chunk)) : onData);
    socket.on('error', (e) => process.stderr.write(`socket error: ${e.message}\n`));
  });

  function end(socket) {
    if (done) return;
    done = true;
    const cpu = cpuSince(cpu0);
    const base = { role, impl: 'net', mode, size, count, ...cpu, peakRssKiB: peakRssKiB(), pid: process.pid };
    socket.destroy();
    server.close();
    if (lat) finish({ ...base, ...lat.result() });
    else finish({ ...base, msgs, bytes, ...arrivals.result(msgs, bytes), checksumOk: sum === expectedChecksum(count, size) });
  }

  server.listen(path);
  await once(server, 'listening');
  cpu0 = process.cpuUsage();
  ready();
}

function varint(buf, pos, n) {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

async function runWriter() {
  const socket = net.createConnection({ path, writableHighWaterMark: cfg_num('hwm', 16 * 1024) });
  let allWritten = false;
  // Once everything is written the reader may close first: that is not a failure.
  socket.on('error', (e) => (allWritten && (e.code === 'EPIPE' || e.code === 'ECONNRESET') ? undefined : fail(e)));
  await once(socket, 'connect');
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let writes = 0;
  let drains = 0;
  let seconds;

  if (mode === 'latency') {
    const msg = Buffer.alloc(size);
    seconds = await paced(count, cfg.rate, (seq) => {
      stamp(msg, seq);
      const frame = Buffer.allocUnsafe(msg.length + 10);
      const p = varint(frame, 0, msg.length);
      frame.set(msg, p);
      socket.write(frame.subarray(0, p + msg.length));
      writes++;
    });
  } else {
    const msg = Buffer.alloc(size, 0x5a);
    const chunkSize = Math.max(CHUNK, size + 10);
    // Chunks come back through socket.write's callback once flushed, and are reused.
    const reuse = cfg_num('reuse', 1) === 1;
    const free = [];
    const getChunk = () => free.pop() ?? Buffer.allocUnsafe(chunkSize);
    let buf = getChunk();
    let used = 0;
    for (let i = 0; i < count; i++) {
      if (size) msg[0] = i & 0xff;
      const len = msg.length;
      const total = len + (len < 0x80 ? 1 : len < 0x4000 ? 2 : len < 0x200000 ? 3 : 4);
      if (used + total > chunkSize) {
        writes++;
        const chunk = buf;
        const ok = reuse
          ? socket.write(used === chunkSize ? chunk : chunk.subarray(0, used), () => free.push(chunk))
          : socket.write(used === chunkSize ? chunk : chunk.subarray(0, used));
        buf = reuse ? getChunk() : Buffer.allocUnsafe(chunkSize);
        used = 0;
        if (!ok) {
          drains++;
          await once(socket, 'drain');
        }
      }
      used = varint(buf, used, len);
      buf.set(msg, used);
      used += len;
    }
    if (used > 0) {
      writes++;
      socket.write(buf.subarray(0, used));
    }
  }
  allWritten = true;
  socket.end();
  await Promise.race([once(socket, 'finish'), once(socket, 'close')]); // everything handed to the kernel
  if (seconds === undefined) seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSince(cpu0);
  finish({ role, impl: 'net', mode, size, count, seconds, ...cpu, peakRssKiB: peakRssKiB(), writes, drains, pid: process.pid });
}
