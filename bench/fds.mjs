// File-descriptor passing: messages with one descriptor each, two processes.
//
//   node bench/fds.mjs [--count 100000] [--runs 5] [--no-readme]
//
// The writer (this process) opens one file and writes `count` messages of
// 16 bytes, each with that file's descriptor (the Writer dups it per message
// and closes each dup once its message is sent); the reader (a child
// process, acceptFds) takes every descriptor, checks it is open (fstat) and
// closes it. Reported per run: msgs/s at the reader (first to last message),
// and the entries of /proc/<pid>/fd of both processes: the writer's once
// connected and after the last message is handled; the reader's once
// listening and after the writer's connection closed. Both must be back
// where they started. With --runs N: the median and the spread.
// Results go to bench/README.md between the bench:fds markers (unless
// --no-readme). Needs `npm run build:ts` first (npm run bench:fds does it).
import { fork } from 'node:child_process';
import { fstatSync, closeSync, openSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkArgs, replaceSection } from './common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { Reader, Writer } = await import(path.join(here, '..', 'dist', 'index.js'));

const fdCount = () => readdirSync('/proc/self/fd').length;

async function readerRole(sock, count) {
  let n = 0;
  let first = 0;
  let bad = 0;
  const reader = new Reader(
    sock,
    (batch) => {
      if (first === 0) first = performance.now();
      for (let i = 0; i < batch.length; i++) {
        const fds = batch.takeFds(i);
        if (fds.length !== 1) bad++;
        for (const fd of fds) {
          try {
            fstatSync(fd);
          } catch {
            bad++;
          }
          closeSync(fd);
        }
        n++;
      }
      if (n === count) {
        const ms = performance.now() - first;
        process.send({ done: true, ms, bad });
      }
    },
    { acceptFds: true },
  );
  await reader.start();
  process.send({ ready: true, fds: fdCount() });
  process.on('message', async (m) => {
    if (m === 'count') {
      // The writer has stopped: once its connection is closed here, every
      // descriptor this process received must be closed too.
      while (reader.metrics().activeConnections !== 0) await new Promise((r) => setTimeout(r, 5));
      process.send({ counted: true, fds: fdCount(), unclaimed: reader.metrics().fdsClosedUnclaimed });
    }
    if (m === 'stop') {
      await reader.stop();
      process.exit(0);
    }
  });
}

async function once1(child, pred) {
  for (;;) {
    const [m] = await once(child, 'message');
    if (pred(m)) return m;
  }
}

async function run(count) {
  const dir = mkdtempSync(path.join(tmpdir(), 'uds-ipc-fds-'));
  const sock = path.join(dir, 's.sock');
  const child = fork(fileURLToPath(import.meta.url), ['--role', 'reader', sock, String(count)]);
  try {
    const ready = await once1(child, (m) => m.ready);
    const file = openSync(fileURLToPath(import.meta.url), 'r');
    const writer = new Writer(sock).start();
    await once(writer, 'connect');
    const writerBefore = fdCount();
    const msg = Buffer.alloc(16, 7);
    for (let i = 0; i < count; i++) {
      while (!writer.write(msg, { fds: [file] })) await once(writer, 'drain');
    }
    await writer.flush();
    const done = await once1(child, (m) => m.done);
    const writerAfter = fdCount();
    const sent = writer.metrics().fdsSent;
    await writer.stop();
    closeSync(file);
    child.send('count');
    const counted = await once1(child, (m) => m.counted);
    child.send('stop');
    await once(child, 'exit');
    return {
      msgsPerSec: count / (done.ms / 1000),
      bad: done.bad,
      sent,
      readerBefore: ready.fds,
      readerAfter: counted.fds,
      writerBefore,
      writerAfter,
      unclaimed: counted.unclaimed,
    };
  } finally {
    child.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--role') return readerRole(args[2], Number(args[3]));
  checkArgs('usage: node bench/fds.mjs [--count 100000] [--runs 5] [--no-readme]', ['--count', '--runs'], ['--no-readme']);
  const opt = (name, d) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : d;
  };
  const count = opt('--count', 100_000);
  const runs = opt('--runs', 5);
  const results = [];
  for (let r = 0; r < runs; r++) {
    const x = await run(count);
    results.push(x);
    console.error(
      `run ${r + 1}/${runs}: ${Math.round(x.msgsPerSec)} msgs/s; fds reader ${x.readerBefore} -> ${x.readerAfter}, writer ${x.writerBefore} -> ${x.writerAfter}; descriptors sent ${x.sent}, bad ${x.bad}`,
    );
    if (x.bad !== 0 || x.sent !== count || x.readerAfter !== x.readerBefore || x.writerAfter !== x.writerBefore) {
      console.error('FAILED: a descriptor was lost, leaked or not sent once per message');
      process.exitCode = 1;
    }
  }
  const rates = results.map((x) => x.msgsPerSec);
  const body = [
    '## File-descriptor passing',
    '',
    `_Written by \`node bench/fds.mjs --count ${count} --runs ${runs}\` (\`npm run bench:fds\`), ${new Date().toISOString().slice(0, 10)}._`,
    '',
    `Two processes; the writer sends ${count.toLocaleString('en-US')} messages of 16 bytes, each with one`,
    'descriptor (`write(msg, { fds: [file] })`: the Writer dups it, sends it with',
    'SCM_RIGHTS and closes the dup once sent); the reader (`acceptFds: true`) takes',
    'each one (`batch.takeFds(i)`), `fstat`s and closes it.',
    '',
    '| run | msgs/s | reader fds before → after | writer fds before → after |',
    '|---|---|---|---|',
    ...results.map(
      (x, i) =>
        `| ${i + 1} | ${Math.round(x.msgsPerSec).toLocaleString('en-US')} | ${x.readerBefore} → ${x.readerAfter} | ${x.writerBefore} → ${x.writerAfter} |`,
    ),
    '',
    `Median ${Math.round(median(rates)).toLocaleString('en-US')} msgs/s (min ${Math.round(Math.min(...rates)).toLocaleString('en-US')}, max ${Math.round(Math.max(...rates)).toLocaleString('en-US')}).`,
    'Both processes end with the descriptor count they started with.',
  ].join('\n');
  console.log(body);
  if (!args.includes('--no-readme')) {
    replaceSection(path.join(here, 'README.md'), '<!-- bench:fds:start -->', '<!-- bench:fds:end -->', body);
  }
}

await main();
