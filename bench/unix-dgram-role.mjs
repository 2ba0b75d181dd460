// The `unix-dgram` npm package (the usual choice for Unix datagram sockets
// in Node today; a dev dependency of the benchmarks only), used carefully,
// as a baseline for uds-ipc's `type: 'dgram'` in bench/types.mjs. One role
// per process:
//
//   node bench/unix-dgram-role.mjs '{"role":"reader","path":"/tmp/x.sock","size":64,"count":1000000}'
//   node bench/unix-dgram-role.mjs '{"role":"writer","path":"/tmp/x.sock","size":64,"count":1000000}'
//
// Reader: binds `path`; its message listener (one call per datagram, the
// package's only way) counts and touches each message. Writer: connect()s to
// `path` (so that a full reader queue is reported as 'congestion' instead of
// dropping), sends one datagram per message, and on congestion waits for
// 'writable' and sends the same message again: nothing is lost.
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Arrivals, cpuSince, expectedChecksum, peakRssKiB } from '../dist/bench/measure.js';
import { fail, finish, ready, roleProcess } from '../dist/bench/role.js';

const cfg = roleProcess();
const { role, path, size, count } = cfg;
const unix = createRequire(import.meta.url)('unix-dgram');

if (role === 'reader') await runReader();
else if (role === 'writer') await runWriter();
else fail(new Error(`unknown role ${role}`));

async function runReader() {
  let msgs = 0;
  let bytes = 0;
  let sum = 0;
  let cpu0;
  const arrivals = new Arrivals();
  const sock = unix.createSocket('unix_dgram', (buf) => {
    sum += buf.length > 0 ? buf[0] : 0;
    bytes += buf.length;
    msgs++;
    arrivals.mark(msgs, bytes);
    if (msgs === count) {
      const cpu = cpuSince(cpu0);
      sock.close();
      finish({
        role, impl: 'unix-dgram', size, count, ...cpu, peakRssKiB: peakRssKiB(), pid: process.pid,
        msgs, bytes, ...arrivals.result(msgs, bytes), checksumOk: sum === expectedChecksum(count, size),
      });
    }
  });
  sock.on('error', fail);
  const listening = once(sock, 'listening'); // emitted inside bind() (the package's events are synchronous)
  sock.bind(path);
  await listening;
  cpu0 = process.cpuUsage();
  ready();
}

async function runWriter() {
  const sock = unix.createSocket('unix_dgram');
  let fatal;
  sock.on('error', (e) => (fatal ??= e));
  sock.on('congestion', () => {}); // reported through the send callback below
  const connected = once(sock, 'connect'); // emitted inside connect()
  sock.connect(path);
  await connected;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const msg = Buffer.alloc(size, 0x5a);
  let congestions = 0;
  let congested = false;
  const onSent = (e) => {
    if (e) congested = true; // 'congestion': the reader's queue is full; the message was not sent
  };
  for (let i = 0; i < count; i++) {
    if (size) msg[0] = i & 0xff;
    congested = false;
    sock.send(msg, onSent);
    if (fatal) fail(fatal);
    if (congested) {
      // 'writable' comes from the event loop once the reader's queue has room.
      congestions++;
      await once(sock, 'writable');
      i--;
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSince(cpu0);
  sock.close();
  finish({ role, impl: 'unix-dgram', size, count, seconds, ...cpu, peakRssKiB: peakRssKiB(), congestions, pid: process.pid });
}
