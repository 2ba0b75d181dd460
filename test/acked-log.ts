// Shared by the acked-delivery crash tests (acked-crash.test.ts,
// acked-writers.test.ts): the acked-reader.js child, its per-life logs, the
// checks of issue #21 on them, and a writer loop.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Writer } from '../src/index';
import { FIXTURES, Proc } from './helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const msg = require('./fixtures/acked-msg.js') as {
  HEADER: number;
  HOLD: number;
  sizes(n: number, seed: number, o?: { bigShare?: number; smallMin?: number; smallMax?: number; bigMin?: number; bigMax?: number }): number[];
  make(seq: number, len: number, flags?: number, into?: Buffer): Buffer;
  check(m: Uint8Array, seq: number): string;
};

export const READER = join(FIXTURES, 'acked-reader.js');

/** Rough bytes of one log line ("<32 hex> <seq> <0|1> <len> <0|1> <conn>\n"): turns "N entries" into a log size. */
export const BYTES_PER_ENTRY = 50;

/** acked-reader.js as a child, once it listens. */
export async function startReader(path: string, cfg: { log: string; options?: object; holdMarked?: boolean; releaseFile?: string }): Promise<Proc> {
  const p = new Proc(process.execPath, [READER, path, JSON.stringify(cfg)]);
  await p.line((l) => l.event === 'listening', 'the acked reader child listening', 30_000);
  return p;
}

/** Current size of a file (0 while it does not exist). */
export function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

export interface Entry {
  session: string;
  seq: number;
  redelivered: boolean;
  len: number;
  ok: boolean;
  conn: number;
}

/**
 * The entries of one reader life's log. A last line without its newline was
 * cut short by SIGKILL in the middle of the handler's write(2): that batch's
 * handler never returned, so it was not acknowledged; it is left out.
 */
export function readLog(file: string): { entries: Entry[]; torn: boolean } {
  const text = readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const last = lines.pop()!;
  const entries = lines.map((l) => {
    const f = l.split(' ');
    if (f.length !== 6) throw new Error(`${file}: malformed log line ${JSON.stringify(l)}`);
    return { session: f[0], seq: Number(f[1]), redelivered: f[2] === '1', len: Number(f[3]), ok: f[4] === '1', conn: Number(f[5]) };
  });
  return { entries, torn: last !== '' };
}

export interface Verdict {
  /** What is wrong (the first 20 problems); [] when every check of the issue holds. */
  problems: string[];
  /** Log entries over all lives. */
  total: number;
  /** Later copies: entries of a sequence that an earlier entry already had. */
  copies: number;
  /** First deliveries flagged redelivered (lost on an earlier connection, then re-sent). */
  firstRedelivered: number;
  /** Entries flagged redelivered. */
  redeliveredFlags: number;
}

/**
 * The checks of issue #21 on the logs of successive reader lives (in order):
 * - every sequence 1..n of every session is in the log at least once;
 * - the first deliveries of each session come in sequence order, none skipped;
 * - every later copy is of a sequence already delivered and is flagged redelivered;
 * - within one reader life no (session, seq) is delivered twice (the reader drops duplicates);
 * - every payload passed check() against batch.sequence(i), and has the length the writer used.
 * `sizes` maps each writer session to the sizes it wrote (sizes[k] = size of seq k + 1).
 */
export function verify(lives: Entry[][], sizes: Map<string, number[]>): Verdict {
  const problems: string[] = [];
  const add = (s: string) => {
    if (problems.length < 20) problems.push(s);
  };
  const highest = new Map<string, number>();
  const seenEver = new Map<string, Uint8Array>();
  for (const [s, z] of sizes) {
    highest.set(s, 0);
    seenEver.set(s, new Uint8Array(z.length + 1));
  }
  let total = 0;
  let copies = 0;
  let firstRedelivered = 0;
  let redeliveredFlags = 0;
  lives.forEach((entries, life) => {
    const seenThisLife = new Map<string, Set<number>>();
    for (const e of entries) {
      total++;
      if (e.redelivered) redeliveredFlags++;
      const z = sizes.get(e.session);
      const who = `life ${life}, session ${e.session.slice(0, 8)}, seq ${e.seq}`;
      if (!z) {
        add(`${who}: not a session of any writer of this test`);
        continue;
      }
      if (!(Number.isInteger(e.seq) && e.seq >= 1 && e.seq <= z.length)) {
        add(`${who}: not a sequence this writer used (1..${z.length})`);
        continue;
      }
      if (!e.ok) add(`${who}: the payload does not match batch.sequence() (see the child's 'bad' lines)`);
      if (e.len !== z[e.seq - 1]) add(`${who}: ${e.len} bytes, the writer wrote ${z[e.seq - 1]}`);
      let mine = seenThisLife.get(e.session);
      if (!mine) seenThisLife.set(e.session, (mine = new Set()));
      if (mine.has(e.seq)) add(`${who}: delivered twice within one reader life`);
      mine.add(e.seq);
      const ever = seenEver.get(e.session)!;
      const before = ever[e.seq] === 1;
      ever[e.seq] = 1;
      const h = highest.get(e.session)!;
      if (e.seq > h) {
        if (e.seq !== h + 1) add(`${who}: first delivered right after seq ${h}: seqs ${h + 1}..${e.seq - 1} skipped`);
        highest.set(e.session, e.seq);
        if (e.redelivered) firstRedelivered++;
      } else if (!before) {
        add(`${who}: first delivered after seq ${h} (out of order)`);
      } else {
        copies++;
        if (!e.redelivered) add(`${who}: delivered again (first delivered earlier) without redelivered(i) set`);
      }
    }
  });
  for (const [s, seen] of seenEver) {
    let missing = 0;
    let firstMissing = 0;
    for (let q = 1; q < seen.length; q++) {
      if (!seen[q]) {
        if (!missing) firstMissing = q;
        missing++;
      }
    }
    if (missing) add(`session ${s.slice(0, 8)}: ${missing} of ${seen.length - 1} sequences never in the log (the first: ${firstMissing})`);
  }
  return { problems, total, copies, firstRedelivered, redeliveredFlags };
}

/**
 * Writes messages 1..sizes.length (acked-msg.js format) to `w`: write(), and
 * send() of a copy when the window is full. `beforeEach(seq)` may return
 * flags for that message; `after(seq, flags)` runs once it was accepted and
 * may wait. Yields to the event loop every 256 messages.
 */
export async function pump(
  w: Writer,
  sizes: number[],
  hooks: { flags?: (seq: number) => number; after?: (seq: number, flags: number) => Promise<void> | void } = {},
): Promise<void> {
  const max = sizes.reduce((a, b) => Math.max(a, b), 0);
  const scratch = Buffer.allocUnsafe(max);
  for (let k = 0; k < sizes.length; k++) {
    const seq = k + 1;
    const flags = hooks.flags?.(seq) ?? 0;
    const m = msg.make(seq, sizes[k], flags, scratch);
    if (!w.write(m)) await w.send(Buffer.from(m));
    if (hooks.after) await hooks.after(seq, flags);
    if ((k & 255) === 255) await new Promise((r) => setImmediate(r));
  }
}

/** The bytes a list of sizes adds up to, in MB (for the summary lines). */
export function megabytes(sizes: number[]): string {
  return (sizes.reduce((a, b) => a + b, 0) / 1e6).toFixed(0);
}
