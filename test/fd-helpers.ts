// Helpers shared by the file-descriptor tests (test/fds*.test.ts): descriptor
// counts of a process, files next to a test's socket, and the fd-reader.js
// fixture as a child with its metrics.
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { expect, it } from 'vitest';
import { binding } from '../src/binding';
import { FIXTURES, Proc, waitFor, type Line } from './helpers';

/**
 * Whether this kernel refuses descriptors sent to a socket that asks it to
 * (SO_PASSRIGHTS, Linux 6.16). A Reader without acceptFds (and every dgram
 * Reader) asks: a sender's sendmsg with descriptors then fails with EPERM and
 * nothing of that message arrives. On older kernels they arrive, and the
 * Reader closes them (fdsRefused) and the connection (ERR_UNEXPECTED_FDS).
 */
export const KERNEL_REFUSES_FDS = binding().kernelRefusesFds();

/**
 * `it` where the kernel refuses descriptors as KERNEL_REFUSES_FDS says
 * (`refuses`: true for Linux 6.16+, false for older), else nothing: the
 * behaviour of a Reader without acceptFds differs between the two, and each
 * machine runs the test of its own kernel (not registered, not skipped, on
 * the other).
 */
export function itOnKernel(refuses: boolean): typeof it | ((name: string, fn: () => Promise<void>, timeout?: number) => void) {
  return refuses === KERNEL_REFUSES_FDS ? it : () => {};
}

/** Entries of /proc/<pid>/fd (for 'self': this process, the directory being read included). */
export function fdCount(pid: number | 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * Descriptors of this process that refer to `file` (/proc/self/fd links): in
 * this process other descriptors come and go (the test runner's), these only
 * by what the test and the library do.
 */
export function fdsOnFile(file: string): number {
  const real = fs.realpathSync(file);
  let n = 0;
  for (const e of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${e}`) === real) n++;
    } catch {
      // the directory's own descriptor, closed by now
    }
  }
  return n;
}

/** A file named `name` with `content`, in the directory of the socket `path`. */
export function fileNear(path: string, name: string, content: string | Buffer): string {
  const f = join(dirname(path), name);
  fs.writeFileSync(f, content);
  return f;
}

/** fd-reader.js as a child, once it is listening. */
export async function readerChild(path: string, cfg: object): Promise<Proc> {
  const p = new Proc(process.execPath, [join(FIXTURES, 'fd-reader.js'), path, JSON.stringify(cfg)]);
  await p.line((l) => l.event === 'listening', 'the fd-reader child listening');
  return p;
}

/** Asks a fixture for its metrics (SIGUSR2) and returns the next 'metrics' line. */
export async function metricsOf(p: Proc): Promise<Line> {
  const before = p.all((l) => l.event === 'metrics').length;
  p.child.kill('SIGUSR2');
  await waitFor(() => p.all((l) => l.event === 'metrics').length > before || !!p.exit, 10_000, 'a metrics line');
  const m = p.all((l) => l.event === 'metrics')[before];
  if (!m) throw new Error(`no metrics: child exited ${JSON.stringify(p.exit)}; stderr: ${p.stderr}`);
  return m;
}

/**
 * The smallest of three readings of /proc/<pid>/fd a few ms apart: a Writer's
 * connect attempt holds a socket for a moment (socket(), connect() failing,
 * close()), which is not a descriptor the library keeps.
 */
export async function restingFdCount(pid: number): Promise<number> {
  let n = fdCount(pid);
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 3));
    n = Math.min(n, fdCount(pid));
  }
  return n;
}

/** Waits until /proc/<pid>/fd has `n` entries (resting), then asserts it. */
export async function expectFdsBackTo(pid: number, n: number, who: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let now = await restingFdCount(pid);
  while (now !== n && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    now = await restingFdCount(pid);
  }
  expect(now, `${who}: descriptors in /proc/${pid}/fd`).toBe(n);
}

/** A uvarint (LEB128) length prefix, built by hand (raw peers). */
export function uvarint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}

/** A whole frame built by hand: uvarint(length) + payload. */
export function frame(payload: string | Buffer): Buffer {
  const p = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return Buffer.concat([uvarint(p.length), p]);
}

/** Polls metricsOf() until `pred(line)` holds (or the deadline passes: then returns the last, for the assertion to show). */
export async function metricsUntil(p: Proc, pred: (line: Line) => boolean, timeoutMs = 10_000): Promise<Line> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const m = await metricsOf(p);
    if (pred(m) || Date.now() > end) return m;
    await new Promise((r) => setTimeout(r, 20));
  }
}
