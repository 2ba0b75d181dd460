// Shared test helpers: temp socket paths, waiting, child processes, and a
// copy of the package that children run as another user can load.
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { createRequire } from 'node:module';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, afterEach } from 'vitest';
import { binding } from '../src/binding';

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

/** The error fn throws, or (if it returns a promise) the one it rejects with; fails when there is none. */
export async function errorOf(fn: () => unknown): Promise<Error & { code?: string }> {
  let r: unknown;
  try {
    r = fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  if (r && typeof (r as Promise<unknown>).then === 'function') {
    try {
      await r;
    } catch (e) {
      return e as Error & { code?: string };
    }
  }
  throw new Error('expected an error, got none');
}

/** The error fn throws synchronously; fails when there is none. */
export function syncError(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a synchronous throw, got none');
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

/** Polls `cond` every `everyMs` ms until it is true or `timeoutMs` passes (then throws). */
export async function waitFor(cond: () => boolean, timeoutMs = 10_000, what = 'condition', everyMs = 5): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Waits until `read()` has returned the same value (Object.is) for `quietMs`
 * in a row. Only for a state no API reports, where "nothing moves any more"
 * is the definition: e.g. a writer's IO thread blocked on a full socket whose
 * reader is paused (the kernel's socket buffers cannot be observed). A
 * starved thread can look steady for a while, so keep `quietMs` well above a
 * scheduling delay (100 ms or more).
 */
export async function steady<T>(read: () => T, quietMs: number, timeoutMs = 20_000, what = 'a steady value'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let value = read();
  let since = Date.now();
  for (;;) {
    await new Promise((r) => setTimeout(r, 5));
    const now = read();
    if (!Object.is(now, value)) {
      value = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) {
      return value;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (still changing: ${String(value)})`);
  }
}

interface WriterLike {
  on(event: 'connect' | 'disconnect', listener: () => void): unknown;
  metrics(): { connects: number; sent: number; sendCalls: number; queueDepth: number };
  write(data: string | Uint8Array): boolean;
  flush(): Promise<void>;
}

/**
 * Counts a Writer's 'connect' and 'disconnect' events (call it before start()).
 * `allEnded()` is true once every connection the writer made has ended and
 * the writer's IO thread has said so: each 'connect' matched by a
 * 'disconnect', and no connect it counted still on its way to this thread.
 *
 * That is the point from which `metrics().sent` is final for those
 * connections. The IO thread counts a frame as sent only after its sendmsg()
 * returns, so while a connection is up the count can trail what the reader
 * already got by the frames of one send call; it emits 'disconnect' after it
 * handled the last send on that connection. (Frames sent from the JavaScript
 * thread are counted before write()/flush() return.)
 */
export function watchConnections(w: WriterLike): { connects: () => number; disconnects: () => number; allEnded: () => boolean } {
  let connects = 0;
  let disconnects = 0;
  w.on('connect', () => connects++);
  w.on('disconnect', () => disconnects++);
  return {
    connects: () => connects,
    disconnects: () => disconnects,
    allEnded: () => connects > 0 && disconnects === connects && w.metrics().connects === connects,
  };
}

/**
 * Writes `msg` until one write() is sent inside the call itself (sendCalls
 * goes up by one and nothing stays queued before write() returns). The
 * Writer sends from the calling thread only while its IO thread sleeps
 * (connected, nothing in flight), and it leaves it asleep: so afterwards the
 * first write() of a task is sent inline again. Each try that the IO thread
 * sent instead is flushed before the next. Returns how many were written.
 */
export async function writeUntilSentInline(w: WriterLike, msg: string, timeoutMs = 20_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  for (let n = 1; ; n++) {
    // A new task: write() publishes at once only as the first write of one.
    await new Promise((r) => setImmediate(r));
    const calls = w.metrics().sendCalls;
    w.write(msg);
    const m = w.metrics();
    if (m.sendCalls === calls + 1 && m.queueDepth === 0) return n;
    await w.flush();
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for a write() sent inline (${n} tries)`);
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

/**
 * A copy of what a child run as ANOTHER USER needs to `require()` the package,
 * in a directory that every user can enter and read. See readableCopy().
 */
export interface ReadableCopy {
  /** The copy's package root: <tmp>/uds-ipc-readable-XXXXXX (dirs 0755, files 0644, owned by this process's user). */
  root: string;
  /** <root>/dist/index.js */
  dist: string;
  /** <root>/test/fixtures: all of test/fixtures, so their `require('../../dist/index.js')` finds the copy's dist/. */
  fixtures: string;
  /** The addon file this process loaded (in the checkout, or wherever UDS_IPC_* pointed). */
  loadedAddon: string;
  /** Its copy, at the same path relative to the package root, so node-gyp-build in the child finds it. */
  addon: string;
  /**
   * Environment overrides for the children (merge over process.env; undefined
   * = unset): UDS_IPC_PREBUILD and UDS_IPC_ADDON_PATH are cleared, or
   * UDS_IPC_ADDON_PATH names the copied addon when the loaded one lay outside
   * the package root. PREBUILDS_ONLY is inherited unchanged.
   */
  env: NodeJS.ProcessEnv;
  /** Deletes the copy (idempotent); a later readableCopy() makes a fresh one. */
  remove(): void;
}

let readable: ReadableCopy | undefined;

/** The paths of the shared objects named *.node mapped into this process (from /proc/self/maps). */
function mappedAddons(): string[] {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\/.*?)(?: \(deleted\))?$/.exec(line);
    if (m && m[1].endsWith('.node')) out.add(m[1]);
  }
  return [...out];
}

/** Every directory from `dir` up to / must be searchable (x) by other users. */
function searchableByOthers(dir: string): boolean {
  for (let d = resolve(dir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (dirname(d) === d) return true;
  }
}

/** chmod -R: directories 0755, files 0644 (the source may be a umask-077 clone with 0600/0700). */
function makeWorldReadable(p: string): void {
  if (statSync(p).isDirectory()) {
    chmodSync(p, 0o755);
    for (const e of readdirSync(p)) makeWorldReadable(join(p, e));
  } else {
    chmodSync(p, 0o644);
  }
}

/**
 * Tests that run a child as another user (`setpriv --reuid 65534 node
 * fixture.js`) must not load the package from the checkout: a checkout under
 * a directory other users cannot enter (a clone in a 0700 home or temp
 * directory) gives the child "Cannot find module". readableCopy() copies what
 * such a child needs into a fresh directory under os.tmpdir() (or /tmp when
 * that is not searchable by everyone), made 0755 all the way down:
 *
 *   <root>/package.json                 (node-gyp-build reads the name from it)
 *   <root>/dist/                        (the compiled TypeScript, as built now)
 *   <root>/test/fixtures/               (all fixture scripts)
 *   <root>/node_modules/node-gyp-build/ (dist/binding.js requires it)
 *   <root>/<addon>                      the .node file THIS process loaded, at the same
 *                                       relative path (build/Release/uds_ipc.node, or
 *                                       prebuilds/<platform>-<arch>/<file> under
 *                                       PREBUILDS_ONLY=1), and nothing else, so the
 *                                       child's node-gyp-build picks exactly that one.
 *
 * It loads the addon here first (via src/binding), so an addon that does not
 * load fails here with ERR_ADDON_LOAD. One copy per test file (each file runs
 * in its own process): repeated calls return the same copy until remove().
 * Run children with `copy.env` merged over process.env (asUser() does).
 *
 * Usage:
 *   let copy: ReadableCopy;
 *   beforeAll(() => { copy = readableCopy(); assertCanRunAs(65534, copy); });
 *   afterAll(() => copy?.remove());
 *   ... asUser(65534, copy, 'sec-writer.js', [path, '{}']) ...
 */
export function readableCopy(): ReadableCopy {
  if (readable) return readable;

  // What this process loaded: the same rules as src/binding.ts, confirmed
  // against the files actually mapped (a rebuild since then shows up as
  // "(deleted)" there, and the path is what counts).
  binding();
  const explicit = process.env.UDS_IPC_ADDON_PATH;
  const pkgRoot = process.env.UDS_IPC_PREBUILD ? resolve(process.env.UDS_IPC_PREBUILD) : ROOT;
  const req = createRequire(join(ROOT, 'package.json'));
  const expected = explicit ? resolve(explicit) : (req('node-gyp-build') as { resolve(dir: string): string }).resolve(ROOT);
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const mapped = mappedAddons();
  let loaded: string;
  if (mapped.includes(real(expected))) {
    loaded = expected;
  } else {
    const ours = mapped.filter((m) => /^uds[-_]ipc\b/.test(basename(m)));
    if (ours.length !== 1) {
      throw new Error(
        `readableCopy(): cannot tell which addon this process loaded: expected ${expected}, ` +
          `mapped .node files: ${mapped.join(', ') || 'none'}`,
      );
    }
    loaded = ours[0];
  }

  const bases = [tmpdir(), '/tmp'].filter((b, i, a) => a.indexOf(b) === i);
  const base = bases.find((b) => {
    try {
      return searchableByOthers(b);
    } catch {
      return false;
    }
  });
  if (!base) {
    throw new Error(`readableCopy(): none of ${bases.join(', ')} can be entered by other users (each directory up to / needs o+x)`);
  }
  const root = mkdtempSync(join(base, 'uds-ipc-readable-'));
  try {
    cpSync(join(ROOT, 'package.json'), join(root, 'package.json'));
    cpSync(join(ROOT, 'dist'), join(root, 'dist'), { recursive: true });
    cpSync(FIXTURES, join(root, 'test', 'fixtures'), { recursive: true });
    const ngb = dirname(req.resolve('node-gyp-build/package.json'));
    cpSync(ngb, join(root, 'node_modules', 'node-gyp-build'), { recursive: true });

    const rel = relative(real(pkgRoot), real(loaded));
    const inside = !explicit && rel !== '' && !rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel);
    const addon = inside ? join(root, rel) : join(root, 'addon', basename(loaded));
    mkdirSync(dirname(addon), { recursive: true });
    cpSync(loaded, addon);
    makeWorldReadable(root);

    const env: NodeJS.ProcessEnv = { UDS_IPC_PREBUILD: undefined, UDS_IPC_ADDON_PATH: inside ? undefined : addon };
    readable = {
      root,
      dist: join(root, 'dist', 'index.js'),
      fixtures: join(root, 'test', 'fixtures'),
      loadedAddon: loaded,
      addon,
      env,
      remove() {
        rmSync(root, { recursive: true, force: true });
        if (readable?.root === root) readable = undefined;
      },
    };
    return readable;
  } catch (e) {
    rmSync(root, { recursive: true, force: true });
    throw e;
  }
}

/** `setpriv` arguments that run the rest of the command as uid:gid `uid` with no supplementary groups. */
function setprivArgs(uid: number): string[] {
  return ['--reuid', String(uid), '--regid', String(uid), '--clear-groups'];
}

/** Runs `node <copy.fixtures>/<fixture> args...` as uid:gid `uid` (setpriv, no supplementary groups). */
export function asUser(uid: number, copy: ReadableCopy, fixture: string, args: string[]): Proc {
  return new Proc('setpriv', [...setprivArgs(uid), process.execPath, join(copy.fixtures, fixture), ...args], copy.env);
}

/**
 * For a beforeAll: throws an Error naming what is missing when children
 * cannot be run as `uid` with asUser(): not root, no setpriv, `uid` cannot run
 * node, or cannot load the package from `copy`. Never skips: a test file that
 * needs another user fails loudly where that is impossible.
 */
export function assertCanRunAs(uid: number, copy: ReadableCopy): void {
  if (process.getuid!() !== 0) {
    throw new Error(`these tests must run as root (they switch to uid ${uid} with setpriv); running as uid ${process.getuid!()}`);
  }
  const run = (args: string[]) =>
    spawnSync('setpriv', [...setprivArgs(uid), process.execPath, ...args], {
      encoding: 'utf8',
      env: { ...process.env, ...copy.env },
      timeout: 30_000,
    });
  const why = (r: ReturnType<typeof run>) =>
    r.error ? String(r.error) : `exit ${r.status ?? r.signal}; stdout: ${r.stdout.trim()} stderr: ${r.stderr.trim().split('\n').slice(0, 8).join(' | ')}`;
  const who = run(['-e', 'process.stdout.write(process.getuid() + ":" + process.getgid())']);
  if ((who.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    throw new Error('setpriv (util-linux) is not installed or not on PATH; these tests need it to run children as another user');
  }
  if (who.status !== 0 || who.stdout !== `${uid}:${uid}`) {
    throw new Error(`uid ${uid} is not usable: \`setpriv ${setprivArgs(uid).join(' ')} ${process.execPath}\` failed (${why(who)})`);
  }
  // Load the package and its addon the way the fixtures do, and report which
  // .node file got mapped: it must be the copy's, not the checkout's.
  const script = [
    `const pkg = require(${JSON.stringify(copy.dist)});`,
    `require(${JSON.stringify(join(copy.root, 'dist', 'binding.js'))}).binding();`,
    `const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');`,
    `const addons = [...new Set(maps.split('\\n').map((l) => l.slice(l.indexOf('/'))).filter((f) => f.startsWith('/') && f.endsWith('.node')))];`,
    `process.stdout.write(JSON.stringify({ Reader: typeof pkg.Reader, addons }));`,
  ].join('\n');
  const probe = run(['-e', script]);
  let got: { Reader?: string; addons?: string[] } = {};
  try {
    got = JSON.parse(probe.stdout) as typeof got;
  } catch {
    // reported below
  }
  if (probe.status !== 0 || got.Reader !== 'function') {
    throw new Error(`uid ${uid} cannot load the package from the readable copy ${copy.dist} (addon ${copy.addon}): ${why(probe)}`);
  }
  if (got.addons?.length !== 1 || got.addons[0] !== realpathSync(copy.addon)) {
    throw new Error(`uid ${uid} loaded ${JSON.stringify(got.addons)} instead of the copied addon ${copy.addon}`);
  }
}

/** python3 (NOTIFY_SOCKET listeners and peers written in Python). */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** A python datagram listener printing each datagram as a JSON string line; "@name" is abstract. */
export async function notifyListener(address: string): Promise<Proc> {
  const code = [
    'import json, socket, sys',
    'a = sys.argv[1]',
    "a = '\\0' + a[1:] if a.startswith('@') else a",
    's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
    's.bind(a)',
    "print(json.dumps({'event': 'bound'}), flush=True)",
    'while True:',
    "    print(json.dumps({'event': 'dgram', 'data': s.recv(4096).decode()}), flush=True)",
  ].join('\n');
  const p = new Proc(PYTHON, ['-c', code, address]);
  await p.line((l) => l.event === 'bound', 'the notify listener bound');
  return p;
}
