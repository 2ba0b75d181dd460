// Socket types: stream, seqpacket and dgram through the public API, each next to its
// raw C++ limit, in one run, interleaved.
//
//   node bench/types.mjs [--count 1000000] [--runs 5] [--sizes 64,1024] [--no-readme]
//
// Per size and round, in this order: uds-ipc stream, uds-ipc seqpacket (the
// bench roles of src/bench/uds-ipc.ts, `uds-ipc bench`'s, two processes,
// default options but `type`), raw stream (native/bench/raw_limit.cc: one
// write(2) of 1 MiB of frames / read(2) of 1 MiB), raw seqpacket
// (native/bench/raw_packet.cc: sendmmsg/recvmmsg, 64 per call, two processes
// via fork; the better of its blocking and poll modes), and the same for
// dgram (a bound reader, one connected writer). msgs/s at the reader, first to last message; the median of the
// rounds and its spread. The raw binaries are built with CMake (Release) in
// build-bench/. Results go to bench/README.md between the bench:types
// markers (unless --no-readme). Needs `npm run build:ts` (npm run
// bench:types does it).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkArgs, replaceSection } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..');
const harness = await import(path.join(root, 'dist', 'bench', 'pair.js'));

checkArgs('usage: node bench/types.mjs [--count 1000000] [--runs 5] [--sizes 64,1024] [--no-readme]', ['--count', '--runs', '--sizes'], ['--no-readme']);

function arg(name, d) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : d;
}
const count = Number(arg('--count', '1000000'));
const runs = Number(arg('--runs', '5'));
const sizes = arg('--sizes', '64,1024').split(',').map(Number);
const log = (s) => process.stderr.write(`${s}\n`);

function build() {
  const dir = path.join(root, 'build-bench');
  for (const [cmd, args] of [
    ['cmake', ['-S', root, '-B', dir, '-DCMAKE_BUILD_TYPE=Release']],
    ['cmake', ['--build', dir, '--target', 'raw_limit', 'raw_packet']],
  ]) {
    const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`);
  }
  return { rawLimit: path.join(dir, 'native', 'bench', 'raw_limit'), rawPacket: path.join(dir, 'native', 'bench', 'raw_packet') };
}

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

async function udsRun(type, size, tmp, k) {
  const p = path.join(tmp, `${type}-${size}-${k}.sock`);
  const cfg = { path: p, size, count, mode: 'throughput', type };
  const r = await harness.runPair({
    reader: harness.udsIpcRole({ role: 'reader', ...cfg }),
    writer: harness.udsIpcRole({ role: 'writer', ...cfg }),
    cwd: root,
    timeoutMs: 300_000,
  });
  return r.reader.msgsPerSec;
}

// The `unix-dgram` npm package (bench/unix-dgram-role.mjs), as a user would
// use it for datagrams today; undefined when it is not installed.
async function unixDgramRun(size, tmp, k) {
  const p = path.join(tmp, `unix-dgram-${size}-${k}.sock`);
  const args = (role) => [process.execPath, [path.join(here, 'unix-dgram-role.mjs'), JSON.stringify({ role, path: p, size, count })]];
  const r = await harness.runPair({ reader: args('reader'), writer: args('writer'), cwd: root, timeoutMs: 300_000 });
  return r.reader.msgsPerSec;
}

function haveUnixDgram() {
  try {
    createRequire(import.meta.url).resolve('unix-dgram');
    return true;
  } catch {
    return false;
  }
}

async function rawStreamRun(bin, size, tmp, k) {
  const p = path.join(tmp, `raw-${size}-${k}.sock`);
  const args = (role) => [bin, [role, '--path', p, '--count', String(count), '--size', String(size)]];
  const r = await harness.runPair({ reader: args('reader'), writer: args('writer'), cwd: root, timeoutMs: 300_000 });
  return r.reader.msgsPerSec;
}

// The raw limit of a packet type: the better of raw_packet's blocking and
// poll modes (which one wins depends on the type and the load).
function rawPacketRun(bin, size, type = 'seqpacket') {
  return Math.max(rawPacketMode(bin, size, type, 'block'), rawPacketMode(bin, size, type, 'poll'));
}

function rawPacketMode(bin, size, type, mode) {
  const r = spawnSync(bin, ['--type', type, '--mode', mode, '--size', String(size), '--count', String(count), '--runs', '1'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`raw_packet failed: ${r.stderr}`);
  const line = r.stdout.split('\n').find((l) => l.includes('"run":'));
  return JSON.parse(line).msgsPerSec;
}

function readQlen() {
  try {
    return readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

const bins = build();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'uds-types-'));
const withUnixDgram = haveUnixDgram();
if (!withUnixDgram) log('unix-dgram is not installed (npm ci installs it as a dev dependency): its column stays empty');
const cases = ['uds-ipc stream', 'uds-ipc seqpacket', 'uds-ipc dgram', 'raw stream', 'raw seqpacket', 'raw dgram', ...(withUnixDgram ? ['unix-dgram'] : [])];
const results = {}; // size -> case -> rates
try {
  for (const size of sizes) {
    results[size] = Object.fromEntries(cases.map((c) => [c, []]));
    for (let k = 0; k < runs; k++) {
      const r = results[size];
      r['uds-ipc stream'].push(await udsRun('stream', size, tmp, k));
      r['uds-ipc seqpacket'].push(await udsRun('seqpacket', size, tmp, k));
      r['uds-ipc dgram'].push(await udsRun('dgram', size, tmp, k));
      r['raw stream'].push(await rawStreamRun(bins.rawLimit, size, tmp, k));
      r['raw seqpacket'].push(rawPacketRun(bins.rawPacket, size));
      r['raw dgram'].push(rawPacketRun(bins.rawPacket, size, 'dgram'));
      if (withUnixDgram) r['unix-dgram'].push(await unixDgramRun(size, tmp, k));
      log(`size ${size} round ${k + 1}/${runs}: ${cases.map((c) => `${c} ${Math.round(r[c][k]).toLocaleString('en-US')}`).join(', ')}`);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const fmt = (x) => Math.round(x).toLocaleString('en-US');
const rows = [];
for (const size of sizes) {
  const r = results[size];
  const m = Object.fromEntries(cases.map((c) => [c, median(r[c])]));
  const spread = (c) => `${fmt(Math.min(...r[c]))}–${fmt(Math.max(...r[c]))}`;
  for (const t of ['stream', 'seqpacket', 'dgram']) {
    const u = m[`uds-ipc ${t}`];
    const raw = m[`raw ${t}`];
    const ud = t === 'dgram' && withUnixDgram ? `${fmt(m['unix-dgram'])} (${spread('unix-dgram')}) | ${(u / m['unix-dgram']).toFixed(2)}` : '– | –';
    rows.push(`| ${t} | ${size} B | ${fmt(u)} (${spread(`uds-ipc ${t}`)}) | ${fmt(raw)} (${spread(`raw ${t}`)}) | ${(u / raw).toFixed(2)} | ${ud} |`);
  }
}
const body = [
  '## Socket types: stream, seqpacket and dgram',
  '',
  `_Written by \`node bench/types.mjs --count ${count} --runs ${runs} --sizes ${sizes.join(',')}\` (\`npm run bench:types\`), ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)} at the end._`,
  '',
  `msgs/s at the reader, ${count.toLocaleString('en-US')} messages per run, the median of ${runs} interleaved rounds (min–max). uds-ipc:`,
  'the public API (`type` set, default options otherwise), two processes. Raw: no library; stream is',
  '`native/bench/raw_limit.cc` (1 MiB `write`/`read`), seqpacket and dgram are `native/bench/raw_packet.cc`',
  `(\`sendmmsg\`/\`recvmmsg\`, 64 per call; per round the better of its blocking and poll modes). dgram: a bound reader, one connected writer;`,
  `net.unix.max_dgram_qlen is ${readQlen()} here (the reader's queue holds that many datagrams, plus one).`,
  '',
  'unix-dgram: the `unix-dgram` npm package (bench/unix-dgram-role.mjs: one datagram per `send()`, waiting for',
  "'writable' on congestion; one listener call per datagram), the usual choice for Unix datagrams in Node.",
  '',
  '| type | size | uds-ipc | raw | uds-ipc / raw | unix-dgram | uds-ipc / unix-dgram |',
  '|---|---|---|---|---|---|---|',
  ...rows,
].join('\n');
console.log(body);
if (!process.argv.includes('--no-readme')) {
  replaceSection(path.join(here, 'README.md'), '<!-- bench:types:start -->', '<!-- bench:types:end -->', body);
}
