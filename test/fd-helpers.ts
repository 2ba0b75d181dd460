// Helpers shared by the file-descriptor tests (test/fds*.test.ts): descriptor
// counts of a process, files next to a test's socket, and the fd-reader.js
// fixture as a child with its metrics.
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { FIXTURES, Proc, waitFor, type Line } from './helpers';

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
