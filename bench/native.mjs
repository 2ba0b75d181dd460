#!/usr/bin/env node
// npm run bench:native: builds the C++ microbenchmarks of the core with CMake
// (Release, in build-bench/), runs native/bench/bench_core, and records its
// table in bench/README.md (between the bench:native markers; bench/run.mjs
// keeps that section when it rewrites the file).
//
//   node bench/native.mjs [--no-readme] [bench_core options: --runs N --quick --seconds S --only ...]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { replaceSection } from './common.mjs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const buildDir = path.join(root, 'build-bench');
const README = path.join(here, 'README.md');
const START = '<!-- bench:native:start -->';
const END = '<!-- bench:native:end -->';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) {
    process.stderr.write(`${cmd} ${args.join(' ')} failed (${r.error ?? `exit ${r.status}`})\n`);
    process.exit(1);
  }
}

async function main() {
  const argv = process.argv.slice(2);
  const noReadme = argv.includes('--no-readme');
  const args = argv.filter((a) => a !== '--no-readme');
  const quick = args.includes('--quick');

  if (!existsSync(path.join(buildDir, 'CMakeCache.txt'))) {
    run('cmake', ['-S', root, '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release']);
  }
  run('cmake', ['--build', buildDir, '--target', 'bench_core', 'raw_limit', '--parallel', String(Math.min(4, os.cpus().length))]);

  const loadBefore = os.loadavg();
  const bin = path.join(buildDir, 'native', 'bench', 'bench_core');
  const child = spawn(bin, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    out += d;
    process.stdout.write(d);
  });
  const code = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)));
  if (code !== 0) process.exit(code);
  const loadAfter = os.loadavg();

  if (noReadme || quick) return;
  let cpuModel = 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].trim() ?? cpuModel;
  } catch {}
  replaceSection(
    README,
    START,
    END,
    `## C++ core microbenchmarks (\`npm run bench:native\`)

_Written by \`node bench/native.mjs\`; the rest of this file by \`bench/run.mjs\`._

\`\`\`
${out.trim()}
\`\`\`

- Command: \`${['node', 'bench/native.mjs', ...argv].join(' ')}\` (builds \`build-bench/\` with CMake, Release, then runs \`build-bench/native/bench/bench_core\`)
- Date: ${new Date().toISOString()}
- Machine: ${cpuModel}, ${os.cpus().length} cores, ${os.type()} ${os.release()}; compiler flags: CMake Release (-O3)
- Load average before / after: ${loadBefore.map((x) => x.toFixed(2)).join(' ')} / ${loadAfter.map((x) => x.toFixed(2)).join(' ')}

Engine = WriterEngine → Unix socket → ReaderEngine in one process: a producer
thread appends frames to the ring and publishes the tail exactly as
\`Writer.write()\` does (same 16 MiB ring, 10,000-write limit and 'drain'
target), a consumer thread takes batches, touches every message and acks;
raw = the raw-limit writer and reader (\`native/bench/raw_io.h\`) as two
threads of the same process, measured in the same run. CPU is the whole
process per million messages. eng/raw is the ratio of the medians, then each
run's own ratio (engine and raw run in turn), sorted. The producer
(\`native/bench/producer.cc\`) is compiled without SLP vectorization: GCC's
vectorized per-message counters made it, not the engine, the limit at 64 B
(see "Where the time goes").`,
  );
  process.stderr.write('bench/README.md updated (bench:native section).\n');
}

main().catch((e) => {
  process.stderr.write(`${e?.stack ?? e}\n`);
  process.exit(1);
});
