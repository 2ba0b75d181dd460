/**
 * The parent side of the benchmark protocol (./role.ts): runs one reader
 * process and one writer process on one socket and returns their results.
 * `uds-ipc bench` and bench/run.mjs (`npm run bench`) both run every case
 * through {@link runPair}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { RoleConfig } from './role';

/** One JSON line of a role process. */
export type RoleLine = Record<string, unknown>;

/** How to start a role process: an executable and its arguments. */
export type RoleCommand = [file: string, args: string[]];

/** The command of a uds-ipc role (./uds-ipc.ts) with this configuration. */
export function udsIpcRole(cfg: RoleConfig): RoleCommand {
  return [process.execPath, [join(__dirname, 'uds-ipc.js'), JSON.stringify(cfg)]];
}

export interface RoleExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A started role process: its JSON lines as they come, its stderr (when
 * piped), readiness and exit. Node roles get an IPC channel, unused but for
 * one thing: they exit when it closes, so they never outlive this process.
 */
export class RoleProcess {
  readonly child: ChildProcess;
  readonly lines: RoleLine[] = [];
  stderr = '';
  /** True once the process printed {"ready":true}; false if it exited first. */
  readonly ready: Promise<boolean>;
  readonly exited: Promise<RoleExit>;
  exit: RoleExit | undefined;
  /** Killed by kill(): whatever made the run kill it is the reason, not this exit. */
  killed = false;

  constructor(
    readonly name: 'reader' | 'writer',
    [file, args]: RoleCommand,
    options: { cwd?: string; stderr?: 'pipe' | 'inherit'; onLine?: (line: RoleLine) => void } = {},
  ) {
    const stdio: ('ignore' | 'pipe' | 'inherit' | 'ipc')[] = ['ignore', 'pipe', options.stderr ?? 'pipe'];
    if (file === process.execPath) stdio.push('ipc');
    this.child = spawn(file, args, { cwd: options.cwd, stdio });
    let onReady!: (ok: boolean) => void;
    this.ready = new Promise((resolve) => (onReady = resolve));
    let out = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      out += d;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const text = out.slice(0, nl).trim();
        out = out.slice(nl + 1);
        if (!text) continue;
        let line: RoleLine;
        try {
          line = JSON.parse(text) as RoleLine;
        } catch {
          this.stderr += `(stdout) ${text}\n`;
          continue;
        }
        this.lines.push(line);
        if (line.ready === true) onReady(true);
        options.onLine?.(line);
      }
    });
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.on('error', (e) => {
        this.stderr += String(e);
        this.exit ??= { code: -1, signal: null };
        onReady(false);
        resolve(this.exit);
      });
      this.child.on('close', (code, signal) => {
        this.exit ??= { code, signal };
        onReady(false);
        resolve(this.exit);
      });
    });
  }

  /** The line with `"role"`: what the process measured. */
  get result(): RoleLine | undefined {
    return this.lines.find((l) => l.role === this.name);
  }

  get running(): boolean {
    return this.exit === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(): void {
    if (!this.running) return;
    this.killed = true;
    this.child.kill('SIGKILL');
  }

  /** Exited non-zero or without a result, on its own. */
  get failed(): boolean {
    return !this.killed && (this.exit!.code !== 0 || this.result === undefined);
  }

  /** "reader exited 1: <stderr>" */
  describeExit(): string {
    const e = this.exit!;
    const err = this.stderr.trim();
    return `${this.name} exited ${e.signal ?? e.code}${err ? `: ${err}` : ''}`;
  }
}

export interface PairOptions {
  reader: RoleCommand;
  writer: RoleCommand;
  cwd?: string;
  /** 'pipe' (the default): each process's stderr goes into the failure message; 'inherit': it is shown as it comes. */
  stderr?: 'pipe' | 'inherit';
  /** Kill both and fail after this long (default: no limit). */
  timeoutMs?: number;
  /** The reader must be ready within this long (default: no limit but timeoutMs). */
  readyTimeoutMs?: number;
  /** Once one process has exited, the other must exit within this long (default 60 s). */
  lingerMs?: number;
  /** Every JSON line of either process, as it comes. */
  onLine?: (line: RoleLine, from: 'reader' | 'writer') => void;
  /** Aborting kills both processes at once. */
  signal?: AbortSignal;
}

export interface PairResult {
  reader: RoleLine;
  writer: RoleLine;
}

/** A run that failed; `problems` says why, one reason each. */
export class PairError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

/**
 * Starts the reader, once it is ready the writer, and waits for both to exit.
 * A process that fails (exits non-zero) stops the run: the other is killed a
 * second later. Resolves with both results; rejects with a {@link PairError}
 * if a process failed, timed out, printed no result, or the reader reports
 * wrong data (`checksumOk: false` or `bad > 0`).
 */
export async function runPair(o: PairOptions): Promise<PairResult> {
  const problems: string[] = [];
  const timers: NodeJS.Timeout[] = [];
  const after = (ms: number | undefined, f: () => void): void => {
    if (ms !== undefined && Number.isFinite(ms)) timers.push(setTimeout(f, ms));
  };
  const spawnOptions = (name: 'reader' | 'writer') => ({
    cwd: o.cwd,
    stderr: o.stderr,
    onLine: o.onLine && ((line: RoleLine) => o.onLine!(line, name)),
  });
  const reader = new RoleProcess('reader', o.reader, spawnOptions('reader'));
  let writer: RoleProcess | undefined;
  const killAll = (why: string): void => {
    if (!problems.includes(why)) problems.push(why);
    reader.kill();
    writer?.kill();
  };
  const onAbort = (): void => killAll('interrupted');
  if (o.signal?.aborted) onAbort();
  o.signal?.addEventListener('abort', onAbort);
  after(o.timeoutMs, () => killAll(`timed out after ${seconds(o.timeoutMs!)}`));
  try {
    let notReady: NodeJS.Timeout | undefined;
    if (o.readyTimeoutMs !== undefined) {
      notReady = setTimeout(() => killAll(`the reader was not ready within ${seconds(o.readyTimeoutMs!)}`), o.readyTimeoutMs);
    }
    const isReady = await reader.ready;
    clearTimeout(notReady);
    if (isReady && reader.running && problems.length === 0) {
      writer = new RoleProcess('writer', o.writer, spawnOptions('writer'));
      const w = writer;
      const lingerMs = o.lingerMs ?? 60_000;
      const onExit = (done: RoleProcess, other: RoleProcess) => (e: RoleExit) => {
        if (e.code !== 0) after(1000, () => other.kill());
        else after(lingerMs, () => killAll(`the ${other.name} did not exit within ${seconds(lingerMs)} of the ${done.name}`));
      };
      void w.exited.then(onExit(w, reader));
      void reader.exited.then(onExit(reader, w));
    }
    await reader.exited;
    if (writer) await writer.exited;
  } finally {
    for (const t of timers) clearTimeout(t);
    o.signal?.removeEventListener('abort', onAbort);
  }

  // A process killed by the run is explained by the problem that made it kill
  // it (a timeout, an interrupt, or the other process failing).
  const r = reader.result;
  const w = writer?.result;
  if (reader.failed) problems.push(reader.describeExit());
  if (!writer) {
    if (!reader.failed) problems.push('writer never started (the reader did not become ready)');
  } else if (writer.failed) problems.push(writer.describeExit());
  if (typeof r?.bad === 'number' && r.bad > 0) problems.push(`reader: ${r.bad} of ${r.msgs} messages wrong (lost, reordered or corrupted)`);
  else if (r?.checksumOk === false) problems.push('reader: checksum mismatch (messages lost, reordered or corrupted)');
  if (problems.length === 0 && (!r || !w)) problems.push('a process was killed before it printed its result');
  if (problems.length > 0) throw new PairError(problems);
  return { reader: r!, writer: w! };
}

function seconds(ms: number): string {
  return `${ms / 1000} s`;
}
