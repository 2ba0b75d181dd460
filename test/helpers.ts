// Shared test helpers: temp socket paths, waiting, child processes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';

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
