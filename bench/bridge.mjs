#!/usr/bin/env node
// npm run bench:bridge: 1 KiB messages local Writer → bridge → NATS → bridge →
// local Reader, against a plain NATS client publisher/subscriber pair on the
// same server that sends the same headers. Needs nats-server (Debian package
// "nats-server") and the NATS clients (devDependencies). Results go to
// bench/README.md between the bench:bridge markers (unless --no-readme).
//
//   node bench/bridge.mjs [--count 100000] [--js-count 20000] [--size 1024] [--runs 3] [--no-readme]
//
// Processes: this one (the local Writer and Reader; the plain pair's two
// connections), one `uds-ipc bridge` process carrying both directions, and
// nats-server: three processes on the machine's cores.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { replaceSection } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const require = createRequire(import.meta.url);
const { Reader, Writer } = require('../dist/index.js');
const { connect, headers } = require('@nats-io/transport-node');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}
const COUNT = arg('--count', 100_000);
const JS_COUNT = arg('--js-count', 20_000);
const SIZE = arg('--size', 1024);
const RUNS = arg('--runs', 3);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function startNats(dir) {
  const port = await freePort();
  const proc = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', path.join(dir, 'js')], { stdio: 'ignore' });
  for (;;) {
    const ok = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) break;
    await sleep(20);
  }
  return { url: `nats://127.0.0.1:${port}`, proc };
}

const body = Buffer.alloc(SIZE, 7);

/** Plain pair: one connection publishes (flush every 1000), one subscribes. msgs/s first publish → last receive. */
async function plain(url, round) {
  const sub = await connect({ servers: url });
  const pub = await connect({ servers: url });
  const subject = `bench.plain.${round}`;
  let n = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  sub.subscribe(subject, { callback: () => ++n === COUNT && done(performance.now()) });
  await sub.flush();
  const h = headers();
  h.set('Uds-Ipc-Host', os.hostname());
  h.set('Uds-Ipc-Pid', String(process.pid));
  h.set('Uds-Ipc-Uid', String(process.getuid()));
  const t0 = performance.now();
  for (let i = 0; i < COUNT; i++) {
    pub.publish(subject, body, { headers: h });
    if (i % 1000 === 999) await pub.flush();
  }
  const t1 = await finished;
  await sub.close();
  await pub.close();
  return (COUNT / (t1 - t0)) * 1000;
}

/** Writer → bridge process → NATS → same bridge process → Reader. */
async function bridged(url, dir, round, jetstream) {
  const N = jetstream ? JS_COUNT : COUNT;
  const inPath = path.join(dir, `in-${round}-${jetstream}.sock`);
  const appPath = path.join(dir, `app-${round}-${jetstream}.sock`);
  const subject = `bench.${jetstream ? 'js' : 'core'}.${round}`;
  const delivery = jetstream ? { delivery: 'acked' } : {};
  let n = 0;
  let last = 0;
  const reader = new Reader(appPath, (b) => {
    n += b.length;
    last = performance.now();
  }, delivery);
  await reader.start();
  const args = [path.join(root, 'dist', 'cli.js'), 'bridge', '--nats', url, '--listen', inPath, '--publish', subject, '--subscribe', subject, '--connect', appPath];
  if (jetstream) args.push('--jetstream', `BENCH_${round}`);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  while (!stderr.includes('ready')) {
    if (child.exitCode !== null) throw new Error(stderr);
    await sleep(20);
  }
  while (reader.metrics().activeConnections === 0) await sleep(10);
  const writer = new Writer(inPath, delivery).start();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) if (!writer.write(body)) await writer.send(body);
  // Core mode may drop (at most once): stop waiting once nothing came for 2 s.
  let seen = -1;
  let since = performance.now();
  while (n < N) {
    if (n !== seen) (seen = n), (since = performance.now());
    else if (performance.now() - since > 2000) break;
    await sleep(5);
  }
  const rate = (n / (last - t0)) * 1000;
  await writer.stop({ timeoutMs: 1000 });
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  const m = /received (\d+), published (\d+), written (\d+), acked (\d+), dropped (\d+)/.exec(stderr);
  await reader.stop();
  return { rate, received: n, N, dropped: m ? Number(m[5]) : NaN };
}

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'uds-ipc-bench-bridge-'));
  const srv = await startNats(dir);
  const res = { plain: [], core: [], js: [], coreLost: 0, jsLost: 0 };
  try {
    for (let r = 0; r < RUNS; r++) {
      res.plain.push(await plain(srv.url, r));
      const c = await bridged(srv.url, dir, r, false);
      res.core.push(c.rate);
      res.coreLost += c.N - c.received;
      const j = await bridged(srv.url, dir, r, true);
      res.js.push(j.rate);
      res.jsLost += j.N - j.received;
      console.error(`round ${r + 1}/${RUNS}: plain ${Math.round(res.plain[r])}, core ${Math.round(c.rate)} (${c.received}/${c.N}), jetstream ${Math.round(j.rate)} (${j.received}/${j.N})`);
    }
  } finally {
    srv.proc.kill('SIGTERM');
    await new Promise((r) => srv.proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
  const fmt = (x) => Math.round(x).toLocaleString('en-US');
  const spread = (a) => `${fmt(Math.min(...a))}–${fmt(Math.max(...a))}`;
  const p = median(res.plain);
  const body = [
    '## NATS bridge (`npm run bench:bridge`)',
    '',
    `_Written by \`node bench/bridge.mjs --count ${COUNT} --js-count ${JS_COUNT} --size ${SIZE} --runs ${RUNS}\` (\`npm run bench:bridge\`), ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)} at the end, nats-server on loopback._`,
    '',
    `${SIZE} B messages, msgs/s from the first write (publish) to the last message received, the median of ${RUNS} interleaved rounds (min–max).`,
    'Plain pair: two connections of one process, a publisher (same three headers, a flush every 1,000) and a subscriber.',
    'Bridge: this process\'s uds-ipc Writer → one `uds-ipc bridge` process (both routes) → NATS → the same bridge process → this process\'s Reader;',
    'three processes (bench, bridge, nats-server) share the cores, as do the plain pair\'s two (bench, nats-server).',
    '',
    '| path | messages | msgs/s | of plain |',
    '|---|---|---|---|',
    `| plain NATS pub/sub | ${fmt(COUNT)} | ${fmt(p)} (${spread(res.plain)}) | 1.00 |`,
    `| bridge, core mode | ${fmt(COUNT)} | ${fmt(median(res.core))} (${spread(res.core)}) | ${(median(res.core) / p).toFixed(2)} |`,
    `| bridge, JetStream (R1, file) | ${fmt(JS_COUNT)} | ${fmt(median(res.js))} (${spread(res.js)}) | ${(median(res.js) / p).toFixed(2)} |`,
    '',
    `Messages not received: core ${res.coreLost} (at most once: a full local Writer drops), JetStream ${res.jsLost}.`,
    '',
    median(res.core) / p >= 0.8
      ? `The issue's target for core mode, 0.80 of the plain pair, is met in this run (${(median(res.core) / p).toFixed(2)}).`
      : `The issue's target for core mode is 0.80 of the plain pair; in this run it is not met (${(median(res.core) / p).toFixed(2)}).`,
    'The bridge path runs two Node processes where the plain pair runs one, and the bridge process does a publisher\'s and a',
    'subscriber\'s work plus two local sockets. A `--cpu-prof` of the bridge process (core mode, 200k messages, 2026-12-06,',
    '115k msgs/s): garbage collection 13 %, socket writes 11 %, the local Writer\'s ring 9 %, nats.js encoding and packing of',
    'protocol lines and headers about 15 %, idle 12 %. Since then the bridge encodes a local connection\'s headers once, not',
    'per publish (about 8 % of the bridge process in a profile; 1.10–1.19× core-mode msgs/s in interleaved old/new runs).',
    'JetStream mode costs what the stream costs: every message is stored (file, R1) and acknowledged, and acknowledged',
    'again on the way out; publishes go through one reply inbox with up to 1,024 in flight (the client\'s `js.publish()`,',
    'one request per message, measured half as fast here).',
  ].join('\n');
  console.log(body);
  if (!process.argv.includes('--no-readme')) {
    replaceSection(path.join(here, 'README.md'), '<!-- bench:bridge:start -->', '<!-- bench:bridge:end -->', body);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
