#!/usr/bin/env node
// Instructions per RPC call on each side's main thread, counted by valgrind's
// callgrind: a measure of CPU work that does not move with this machine's
// load, unlike the timings of `npm run bench:rpc`. Needs valgrind (Debian:
// apt-get install valgrind); not part of CI.
//
//   node bench/rpc-callgrind.mjs [--only uds,net] [--sides server,client]
//                                [--calls 1000,5000] [--size 64] [--node-flags=...]
//
// For each contender and side, two runs: a client makes N calls one at a time
// (each waits for the previous reply) against a server, the measured side
// under `valgrind --tool=callgrind --separate-threads=yes`; the figure is
// (instructions of the side's main thread with N2 calls - with N1) / (N2 - N1),
// so start-up and the first N1 calls cancel out. Background threads (V8's
// compiler, the GC helpers, uds-ipc's IO threads) are not counted.
// The counts depend on when V8's background compiles finish (which code runs
// optimized, from which call on): repeated runs of the same code differed by
// up to 28 %; repeat a run before trusting a difference below that.
// --node-flags passes V8/Node flags to the measured process: --no-opt (no
// optimizing compiler) takes the background compiles out of the count, but
// it keeps Node's own JavaScript (node:net's streams) unoptimized too, which
// a real process optimizes within its first calls, so it overstates
// node:net's cost.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const IMPLS = { uds: './rpc/uds.mjs', net: './rpc/net.mjs' };
const SELF = fileURLToPath(import.meta.url);

function arg(name, def) {
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (eq !== undefined) return eq.slice(name.length + 3);
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

const [role] = process.argv.slice(2);
if (role === 'server' || role === 'client') await child(role);
else await main();

// A server or a client process (started by main()).
async function child(r) {
  const [, impl, sock, n, size] = process.argv.slice(2);
  const mod = await import(path.join(here, IMPLS[impl]));
  if (r === 'server') {
    await mod.startServer(sock, { calls: 0 }, undefined, { inflight: 64 });
    process.stdout.write('ready\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0)); // the parent closes stdin when done
    return;
  }
  const c = await mod.connect(sock);
  const body = Buffer.alloc(Number(size), 7);
  for (let k = 0; k < Number(n); k++) {
    await new Promise((resolve, reject) => c.call(body, (e, reply) => (e ? reject(e) : reply.length === body.length ? resolve() : reject(new Error('bad reply')))));
  }
  await c.close();
  process.exit(0);
}

// Instructions of the main thread (callgrind's "-01" file) of one run.
async function run(impl, side, n, size, dir, flags) {
  const sock = path.join(dir, `${impl}.${side}.${n}.sock`); // a fresh path: a node:net server leaves its socket file behind
  const out = path.join(dir, `cg.${impl}.${side}.${n}`);
  const vg = ['--tool=callgrind', '--separate-threads=yes', '--dump-instr=no', '-q', `--callgrind-out-file=${out}.%p`, process.execPath, ...flags];
  const cmd = (r) => [SELF, r, impl, sock, String(n), String(size)];
  const start = (r) => (side === r ? spawn('valgrind', [...vg, ...cmd(r)], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(process.execPath, cmd(r), { stdio: ['pipe', 'pipe', 'inherit'] }));
  const server = start('server');
  await new Promise((resolve, reject) => {
    server.stdout.once('data', resolve);
    server.once('exit', (code) => reject(new Error(`${impl} server exited (${code})`)));
  });
  const client = start('client');
  const code = await new Promise((resolve) => client.once('exit', resolve));
  server.stdin.end();
  await new Promise((resolve) => server.once('exit', resolve));
  if (code !== 0) throw new Error(`${impl} client exited with ${code}`);
  const base = path.basename(out);
  const f = readdirSync(dir).find((x) => x.startsWith(`${base}.`) && x.endsWith('-01'));
  if (!f) throw new Error(`no callgrind output for ${impl} ${side}`);
  const m = /^(?:summary|totals):\s+(\d+)/m.exec(readFileSync(path.join(dir, f), 'utf8'));
  for (const x of readdirSync(dir)) if (x.startsWith(`${base}.`)) rmSync(path.join(dir, x));
  return Number(m[1]);
}

async function main() {
  if (process.argv.includes('--help')) {
    process.stdout.write(readFileSync(SELF, 'utf8').split('\n').slice(1, 22).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
    return;
  }
  if (spawnSync('valgrind', ['--version']).status !== 0) {
    process.stderr.write('valgrind is not installed (Debian: apt-get install valgrind)\n');
    process.exit(2);
  }
  const only = arg('only', 'uds,net').split(',');
  const sides = arg('sides', 'server,client').split(',');
  const [n1, n2] = arg('calls', '1000,5000').split(',').map(Number);
  const size = Number(arg('size', '64'));
  const flags = arg('node-flags', '').split(' ').filter(Boolean);
  if (!(n2 > n1 && n1 >= 0)) throw new Error('--calls N1,N2 with N2 > N1');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rpc-callgrind-'));
  const rows = [];
  try {
    for (const side of sides) {
      for (const impl of only) {
        const a = await run(impl, side, n1, size, dir, flags);
        const b = await run(impl, side, n2, size, dir, flags);
        const per = (b - a) / (n2 - n1);
        rows.push({ impl, side, per });
        process.stderr.write(`${impl} ${side}: ${(per / 1000).toFixed(1)}k instructions per call\n`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const label = { uds: 'uds-ipc RPC', net: 'node:net' };
  console.log(`| side | ${only.map((i) => label[i] ?? i).join(' | ')} |`);
  console.log(`|---|${only.map(() => '---:').join('|')}|`);
  for (const side of sides) {
    console.log(`| ${side} | ${only.map((i) => `${(rows.find((r) => r.impl === i && r.side === side).per / 1000).toFixed(1)}k`).join(' | ')} |`);
  }
  const shown = flags.length ? ` --node-flags="${flags.join(' ')}"` : '';
  console.log(`\n- Command: \`node bench/rpc-callgrind.mjs --calls ${n1},${n2} --size ${size}${shown}\` (instructions of the measured side's main thread per call, calls ${n1} to ${n2}, one at a time)`);
}
