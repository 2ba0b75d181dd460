// Shared test helpers: temp socket paths, waiting, child processes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, afterEach } from 'vitest';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A seeded pseudo-random generator (mulberry32): same seed, same numbers. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Reconnect options for tests: retry fast. */
export const FAST = { initialDelayMs: 5, maxDelayMs: 20 };

type Stoppable = { stop: (o?: { timeoutMs?: number }) => Promise<unknown> };

/**
 * Registers per-file cleanup (every tracked Reader/Writer stopped after each
 * test, temp dirs removed after the file) and returns `track(x)`.
 */
export function useTracking(timeoutMs = 200): <T extends Stoppable>(x: T) => T {
  const live: Stoppable[] = [];
  afterEach(async () => {
    for (const x of live.splice(0)) await x.stop({ timeoutMs }).catch(() => {});
  });
  afterAll(() => cleanupDirs());
  return (x) => {
    live.push(x);
    return x;
  };
}

/** Awaits `p`, failing with a clear message after `ms` instead of hanging the file. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

/** withTimeout() with the description first and a 20 s default. */
export const within = <T>(p: Promise<T>, what: string, ms = 20_000): Promise<T> => withTimeout(p, ms, what);

const dirs: string[] = [];

/** A fresh socket path in a new temp directory (removed by cleanupDirs). */
export function tmpSocket(name = 's.sock'): string {
  const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-'));
  dirs.push(dir);
  return join(dir, name);
}

export function cleanupDirs(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** Polls `cond` every few ms until it is true or `timeoutMs` passes (then throws). */
export async function waitFor(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const ROOT = join(__dirname, '..');
export const DIST = join(ROOT, 'dist', 'index.js');
export const FIXTURES = join(__dirname, 'fixtures');

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node script args...` and collects its output; kills it after timeoutMs. */
export function runNode(script: string, args: string[] = [], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; execArgv?: string[] } = {}): Promise<ChildResult> & { child: ChildProcess } {
  const child = spawn(process.execPath, [...(opts.execArgv ?? []), script, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  const p = new Promise<ChildResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  }) as Promise<ChildResult> & { child: ChildProcess };
  p.child = child;
  return p;
}

const children: Proc[] = [];

/** Kills every Proc started since the last call (for afterEach). */
export function killChildren(): void {
  for (const p of children.splice(0)) p.kill();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Line = Record<string, any>;

/** A child process whose stdout is parsed as JSON lines (other lines kept as {event:'raw'}); killChildren() ends them all. */
export class Proc {
  readonly child: ChildProcess;
  readonly lines: Line[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  constructor(cmd: string, args: string[], env?: NodeJS.ProcessEnv) {
    this.child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(this);
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const s = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.lines.push(JSON.parse(s) as Line);
        } catch {
          this.lines.push({ event: 'raw', text: s });
        }
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  find(pred: (l: Line) => boolean): Line | undefined {
    return this.lines.find(pred);
  }

  all(pred: (l: Line) => boolean): Line[] {
    return this.lines.filter(pred);
  }

  async line(pred: (l: Line) => boolean, what: string, timeoutMs = 10_000): Promise<Line> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const l = this.find(pred);
      if (l) return l;
      if (this.exit || Date.now() > end) {
        await sleep(20);
        const l2 = this.find(pred);
        if (l2) return l2;
        throw new Error(
          `${this.exit ? 'child exited ' + JSON.stringify(this.exit) : 'timed out'} before ${what}; ` +
            `stdout: ${JSON.stringify(this.lines)} stderr: ${this.stderr}`,
        );
      }
      await sleep(5);
    }
  }

  async stderrMatch(re: RegExp, what: string, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!re.test(this.stderr)) {
      if (this.exit || Date.now() > end) throw new Error(`no ${what} (${re}); stderr: ${this.stderr}`);
      await sleep(5);
    }
  }

  async done(timeoutMs = 10_000): Promise<void> {
    const t = setTimeout(() => this.kill(), timeoutMs);
    await this.exited;
    clearTimeout(t);
  }

  kill(sig: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}
