// The node:net request/response baseline of `npm run bench:rpc`: what a
// careful Node user writes with nothing but node:net, used as the bar uds-ipc's
// RPC layer must beat (issue #18). One socket per client; many calls in flight,
// replies matched by id.
//
// Wire: frames as the library's (uvarint length + payload, src/framing.ts);
// payload = uvarint(id) + body. The client picks the id (a small integer
// reused once its call completed); the server echoes it with the reply body.
//
// Writing (both sides): every frame of a tick goes into one 64 KiB chunk
// (frames larger than BIG keep their body out of the chunk: only the header
// is copied, the body is written by reference); the chunk (or the parts of
// the tick, corked) is written once, on process.nextTick. Chunks are reused
// once socket.write's callback says they were handed to the kernel.
// Reading (both sides): an incremental parser hands every whole frame inside a
// 'data' chunk out in place (a Buffer view, no copy); a frame split across
// chunks is copied once into a Buffer of its own size when its last byte
// arrives.
import net from 'node:net';

const CHUNK = 64 * 1024;
const BIG = 8 * 1024; // bodies from this size are written by reference, not copied
const MAX_FRAME = 64 * 1024 * 1024;

const vlen = (n) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);

function putVarint(buf, pos, n) {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

/** Per-tick batched frame output of one socket. */
class FrameOut {
  constructor(socket) {
    this.socket = socket;
    this.free = [];
    this.buf = Buffer.allocUnsafe(CHUNK);
    this.pos = 0;
    this.start = 0; // bytes of buf before this are already in parts
    this.parts = []; // the tick's buffers, in order
    this.chunks = []; // chunks the tick filled before the current one
    this.scheduled = false;
    this.flushNow = () => this.flush();
  }

  /** Queues frame [uvarint(len) uvarint(id) body]; sent on nextTick with the tick's others. */
  frame(id, body) {
    const blen = body.length;
    const len = vlen(id) + blen;
    const hlen = vlen(len) + len - blen;
    if (blen >= BIG) {
      if (this.pos + hlen > this.buf.length) this.nextChunk();
      let p = putVarint(this.buf, this.pos, len);
      this.pos = putVarint(this.buf, p, id);
      this.parts.push(this.buf.subarray(this.start, this.pos), body);
      this.start = this.pos;
    } else {
      if (this.pos + hlen + blen > this.buf.length) this.nextChunk();
      const buf = this.buf;
      let p = putVarint(buf, this.pos, len);
      p = putVarint(buf, p, id);
      if (blen <= 64) for (let i = 0; i < blen; i++) buf[p + i] = body[i];
      else buf.set(body, p);
      this.pos = p + blen;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      process.nextTick(this.flushNow);
    }
  }

  nextChunk() {
    if (this.pos > this.start) this.parts.push(this.buf.subarray(this.start, this.pos));
    this.chunks.push(this.buf);
    this.buf = this.free.pop() ?? Buffer.allocUnsafe(CHUNK);
    this.pos = this.start = 0;
  }

  flush() {
    this.scheduled = false;
    const s = this.socket;
    if (s.destroyed) return;
    const parts = this.parts;
    if (this.pos > this.start) {
      const last = this.buf.subarray(this.start, this.pos);
      if (parts.length === 0) {
        // The common case: one chunk holds the whole tick.
        const chunk = this.buf;
        s.write(last, () => this.free.push(chunk));
        this.buf = this.free.pop() ?? Buffer.allocUnsafe(CHUNK);
        this.pos = this.start = 0;
        return;
      }
      parts.push(last);
    }
    if (parts.length === 0) return;
    const chunks = this.chunks;
    if (this.pos > 0) chunks.push(this.buf);
    this.chunks = [];
    this.parts = [];
    if (this.pos > 0) {
      this.buf = this.free.pop() ?? Buffer.allocUnsafe(CHUNK);
      this.pos = this.start = 0;
    }
    s.cork();
    for (let i = 0; i < parts.length - 1; i++) s.write(parts[i]);
    s.write(parts[parts.length - 1], () => {
      for (const c of chunks) this.free.push(c);
    });
    s.uncork();
  }
}

/**
 * A 'data' listener: onFrame(buf, start, end) for every whole frame payload.
 * node:net never reuses a chunk it handed out, so views of buf stay valid.
 */
function frameParser(onFrame, onError) {
  let pending = [];
  let pendingLen = 0;
  let need = 0; // total bytes of the incomplete frame (0 = its header is incomplete)

  const parse = (buf, pos) => {
    const end = buf.length;
    while (pos < end) {
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
      if (len > MAX_FRAME) return onError(new Error(`frame of ${len} bytes exceeds the limit`));
      if (end - p < len) {
        need = p - pos + len;
        break;
      }
      onFrame(buf, p, p + len);
      pos = p + len;
    }
    if (pos < end) {
      pending.push(pos === 0 ? buf : buf.subarray(pos));
      pendingLen = end - pos;
    }
  };

  return (chunk) => {
    if (pendingLen === 0) {
      need = 0;
      parse(chunk, 0);
      return;
    }
    if (need === 0) {
      const buf = Buffer.concat([...pending, chunk], pendingLen + chunk.length);
      pending = [];
      pendingLen = 0;
      parse(buf, 0);
      return;
    }
    if (pendingLen + chunk.length < need) {
      pending.push(chunk);
      pendingLen += chunk.length;
      return;
    }
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
    parse(frame, 0);
    if (take < chunk.length) parse(chunk, take);
  };
}

/** Reads the uvarint id at buf[p]; returns it and leaves the body offset in idEnd. */
let idEnd = 0;
function readId(buf, p, end) {
  let b = buf[p++];
  if (b < 0x80) {
    idEnd = p;
    return b;
  }
  let id = b & 0x7f;
  let shift = 7;
  while (p < end) {
    b = buf[p++];
    id |= (b & 0x7f) << shift;
    if (b < 0x80) break;
    shift += 7;
  }
  idEnd = p;
  return id >>> 0;
}

/**
 * Starts the echo server. `handler(body: Buffer) → Buffer` (the bench's is the
 * echo); `stats.calls` counts the calls served.
 */
export async function startServer(path, stats, handler = (body) => body) {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const out = new FrameOut(socket);
    socket.on(
      'data',
      frameParser(
        (buf, p, end) => {
          const id = readId(buf, p, end);
          const body = Buffer.from(buf.buffer, buf.byteOffset + idEnd, end - idEnd);
          stats.calls++;
          out.frame(id, handler(body));
        },
        (err) => {
          process.stderr.write(`net server: ${err.message}\n`);
          socket.destroy();
        },
      ),
    );
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, resolve);
  });
  return {
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects a client: `call(body, cb(err, reply))`, replies matched by id. */
export async function connect(path) {
  const socket = net.createConnection({ path });
  await new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.once('connect', resolve);
  });
  const out = new FrameOut(socket);
  const cbs = []; // by id
  const freeIds = [];
  let closing = false;
  const failAll = (err) => {
    for (let i = 0; i < cbs.length; i++) {
      const cb = cbs[i];
      if (cb) {
        cbs[i] = undefined;
        cb(err);
      }
    }
  };
  socket.on('error', (e) => failAll(e));
  socket.on('close', () => failAll(new Error(closing ? 'client closed' : 'connection lost')));
  socket.on(
    'data',
    frameParser(
      (buf, p, end) => {
        const id = readId(buf, p, end);
        const cb = cbs[id];
        if (cb === undefined) return; // not ours (late or bogus): ignore
        cbs[id] = undefined;
        freeIds.push(id);
        cb(null, Buffer.from(buf.buffer, buf.byteOffset + idEnd, end - idEnd));
      },
      (err) => socket.destroy(err),
    ),
  );
  return {
    call(body, cb) {
      const id = freeIds.length > 0 ? freeIds.pop() : cbs.length;
      cbs[id] = cb;
      out.frame(id, body);
    },
    close() {
      closing = true;
      return new Promise((resolve) => {
        socket.once('close', resolve);
        socket.end();
      });
    },
  };
}
