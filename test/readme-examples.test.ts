// Every JavaScript/TypeScript example of README.md is executed here, so that
// an example cannot silently rot.
//
// How it works
// ------------
// Each fenced block whose language is js, mjs, cjs, ts (or javascript,
// typescript) is an example. It runs as a program of its own: `node FILE` in a
// fresh temp directory whose node_modules/uds-ipc is a symlink to this
// repository, so `import ... from 'uds-ipc'` / `require('uds-ipc')` load the
// built package (dist/, built by `npm test`'s pretest) through its exports
// map, as a user's program would. A block runs as an ES module (.mjs) unless
// its language is cjs. TypeScript blocks are compiled with
// `ts.transpileModule` first, and are also type-checked against the package's
// declarations (dist/*.d.ts) in one tsc program.
//
// A run fails if the program throws, exits non-zero, is killed by a signal, or
// takes longer than RUN_TIMEOUT_MS; and, when the README shows its output, if
// stdout differs. Expected output is written either as comments in the block,
//     console.log(x); // prints: TEXT          (one line), or
//     // prints:                               (several: the comment lines
//     // LINE 1                                 that follow, up to the first
//     // LINE 2                                 line that is not a comment)
// or as a ```text block marked `<!-- example: group=G output=FILE -->`.
// stdout must then be exactly those lines; stderr is never checked (examples
// may console.warn) but is shown when a run fails.
//
// Socket paths: a string literal starting with /run/ or /tmp/ (e.g.
// '/run/myapp/ipc.sock') is moved into the example's temp directory
// ('<tmp>/run/myapp/ipc.sock'), so examples never touch the real /run or /tmp
// and never collide. Nothing else in the example text is changed, except by an
// explicit `replace=` marker.
//
// Markers: an HTML comment on the line(s) before a block (blank lines allowed),
// invisible on GitHub:
//   <!-- example -->                 a complete program (the default without a marker)
//   <!-- example: prelude=NAME -->   a fragment: PRELUDES[NAME] (below) provides
//        its context (`reader`, `writer`, `path`, `lines`, `handle()`, ...)
//        before it and cleans up after it. A fragment also gets the names it
//        uses from 'uds-ipc' imported (as the README says the fragments do).
//   replace=FROM:TO                  literal text replacement in the block
//        (used to serve the metrics example on port 0 instead of 9100)
//   after=NAME                       AFTER[NAME] runs after the block: checks
//        what the block set up (e.g. fetches the metrics it serves)
//   group=G file=NAME                several programs of one example (reader.mjs
//        and writer.mjs): all blocks of group G are written as the named files
//        and started in README order, at once. Each must exit 0 by itself,
//        except:
//   stop=SIGTERM                     a server: it gets this signal once every
//        other program of the group has exited and it has printed its
//        expected output, and must then exit 0.
//   activate=PATH#FDNAME send=TEXT   started by systemd-socket-activate (the
//        real tool) listening on PATH with --fdname=FDNAME, as the README's
//        systemd section says; the runner then sends TEXT to PATH with the
//        package's CLI (`uds-ipc send`), which starts the program.
//   group=G output=FILE              on a ```text block: FILE's expected stdout.
//
// No example is skipped: the first test checks that every JS/TS block was
// found and is run (or is a file of a group that runs), that every marker is
// understood, and that there are at least MIN_EXAMPLES of them.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import ts from 'typescript';
import { ROOT } from './helpers';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const MIN_EXAMPLES = 20;
const RUN_TIMEOUT_MS = 30_000;
const JS_LANGS = new Set(['js', 'mjs', 'cjs', 'ts', 'javascript', 'typescript']);
const ACTIVATE = '/usr/bin/systemd-socket-activate';
const PASS_ENV = ['UDS_IPC_ADDON_PATH', 'PREBUILDS_ONLY', 'LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS'];

// ─── preludes: the context of fragments ──────────────────────────────────────
//
// `code` runs before the block, `after` after it; `dts` declares for the type
// check what `code` defines. Every prelude gets `path` ('/run/myapp/ipc.sock',
// moved into the temp dir like any socket path) and the namespace `__uds` (the
// package) and `__once` (events.once); names starting with `__` are the
// prelude's own. `expect`: stdout lines the prelude itself causes.

interface Prelude {
  doc: string;
  code: string;
  after: string;
  dts: string;
  expect?: string[];
}

// Checks, after the block and the stops, that the Reader got every message the
// Writer says the kernel accepted.
const CHECK_DELIVERED = `
if (__received !== writer.metrics().sent) {
  throw new Error(\`prelude check: the reader received \${__received} messages, the writer sent \${writer.metrics().sent}\`);
}`;

const PRELUDES: Record<string, Prelude> = {
  'idle-reader': {
    doc: '`reader`: a Reader with a no-op handler, not started; stopped afterwards.',
    code: `const reader = new __uds.Reader(path, () => {});`,
    after: `await reader.stop();`,
    dts: `declare const reader: import('uds-ipc').Reader;`,
  },
  'reader-sigint': {
    doc: '`reader`: a started Reader. Afterwards the process sends itself SIGINT (the Ctrl-C the example handles) and waits for the Reader\'s \'close\'.',
    code: `const reader = new __uds.Reader(path, () => {});\nawait reader.start();`,
    after: `process.kill(process.pid, 'SIGINT');\nawait __once(reader, 'close');`,
    dts: `declare const reader: import('uds-ipc').Reader;`,
  },
  pair: {
    doc: '`reader` (started, counts what it receives) and `writer` (started, connected to it); afterwards both are stopped and every message sent must have been received.',
    code: `let __received = 0;
const reader = new __uds.Reader(path, (batch) => { __received += batch.length; });
await reader.start();
const writer = new __uds.Writer(path).start();`,
    after: `await writer.stop();\nawait reader.stop();${CHECK_DELIVERED}`,
    dts: `declare const reader: import('uds-ipc').Reader;\ndeclare const writer: import('uds-ipc').Writer;`,
  },
  writer: {
    doc: '`writer` (started) with a Reader behind it, `lines` (20,000 strings: more than the default queue holds, so write() does return false) and `events` (1,000 objects); afterwards everything is stopped and every message sent must have been received.',
    code: `let __received = 0;
const __reader = new __uds.Reader(path, (batch) => { __received += batch.length; });
await __reader.start();
const writer = new __uds.Writer(path).start();
const lines = Array.from({ length: 20_000 }, (_, i) => \`line \${i}\`);
const events = Array.from({ length: 1000 }, (_, i) => ({ id: i, type: 'tick' }));`,
    after: `await writer.stop();\nawait __reader.stop();${CHECK_DELIVERED}`,
    dts: `declare const writer: import('uds-ipc').Writer;\ndeclare const lines: string[];\ndeclare const events: { id: number; type: string }[];`,
  },
  iterate: {
    doc: '`handle(msg)` prints the message; a Writer sends three messages to `path`, and the third one handled stops the example\'s `reader` (gracefully), which ends its `for await` loop.',
    code: `let __handled = 0;
async function handle(msg) {
  console.log(msg.toString());
  if (++__handled === 3) void reader.stop();
}
const __writer = new __uds.Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 50 } }).start();
for (const m of ['one', 'two', 'three']) __writer.write(m);`,
    after: `await __writer.stop();`,
    dts: `declare function handle(msg: Buffer): Promise<void>;`,
    expect: ['one', 'two', 'three'],
  },
};

const AFTER: Record<string, { doc: string; code: string }> = {
  'fetch-metrics': {
    doc: 'fetches the metrics the example serves on `server`, checks the content type and both prefixes, closes the server.',
    code: `if (!server.listening) await __once(server, 'listening');
{
  const res = await fetch(\`http://127.0.0.1:\${server.address().port}/metrics\`);
  const body = await res.text();
  if (res.status !== 200) throw new Error(\`status \${res.status}\`);
  if (res.headers.get('content-type') !== __uds.PROMETHEUS_CONTENT_TYPE) throw new Error(\`content-type \${res.headers.get('content-type')}\`);
  for (const want of ['myapp_ipc_reader_messages_received_total{socket="main"} ', 'uds_ipc_writer_connected ']) {
    if (!body.includes(want)) throw new Error(\`metrics without \${want}:\\n\${body}\`);
  }
}
server.close();`,
  },
};

// ─── README parsing ──────────────────────────────────────────────────────────

interface Marker {
  prelude?: string;
  group?: string;
  file?: string;
  stop?: NodeJS.Signals;
  activate?: { path: string; fdname: string };
  send?: string;
  output?: string;
  replace?: [string, string];
  after?: string;
}

interface Block {
  lang: string;
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  marker: Marker | undefined;
}

const MARKER_KEYS = ['prelude', 'group', 'file', 'stop', 'activate', 'send', 'output', 'replace', 'after'];

function parseMarker(text: string, line: number, errors: string[]): Marker {
  const m: Marker = {};
  for (const tok of text.split(/\s+/).filter(Boolean)) {
    const eq = tok.indexOf('=');
    const key = eq < 0 ? tok : tok.slice(0, eq);
    const value = eq < 0 ? '' : tok.slice(eq + 1);
    if (!MARKER_KEYS.includes(key) || value === '') {
      errors.push(`README.md:${line}: bad marker item "${tok}"`);
      continue;
    }
    if (key === 'stop') m.stop = value as NodeJS.Signals;
    else if (key === 'replace') {
      const i = value.indexOf(':');
      m.replace = [value.slice(0, i), value.slice(i + 1)];
    } else if (key === 'activate') {
      const [path, fdname] = value.split('#');
      m.activate = { path, fdname };
    } else (m as Record<string, string>)[key] = value;
  }
  return m;
}

function parseReadme(text: string): { blocks: Block[]; errors: string[] } {
  const lines = text.split('\n');
  const blocks: Block[] = [];
  const errors: string[] = [];
  let pending: { marker: Marker; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    const mk = /^<!--\s*example(?::(.*?))?\s*-->\s*$/.exec(l);
    if (mk) {
      if (pending) errors.push(`README.md:${pending.line}: marker not followed by a code block`);
      pending = { marker: parseMarker(mk[1] ?? '', i + 1, errors), line: i + 1 };
      continue;
    }
    if (/^<!--\s*example/.test(l)) errors.push(`README.md:${i + 1}: unparsable marker: ${l}`);
    const fence = /^(`{3,})\s*([\w-]*)\s*$/.exec(l);
    if (fence) {
      const close = fence[1];
      const start = i;
      const body: string[] = [];
      for (i++; i < lines.length && lines[i].trim() !== close; i++) body.push(lines[i]);
      blocks.push({ lang: fence[2].toLowerCase(), code: body.join('\n') + '\n', line: start + 1, marker: pending?.marker });
      pending = undefined;
      continue;
    }
    if (pending && l.trim() !== '') {
      errors.push(`README.md:${pending.line}: marker not followed by a code block`);
      pending = undefined;
    }
  }
  return { blocks, errors };
}

/** The `// prints:` lines of a block, in order. */
function printsOf(code: string): string[] {
  const out: string[] = [];
  const lines = code.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /\/\/ prints:(.*)$/.exec(lines[i]);
    if (!m) continue;
    if (m[1].trim() !== '') out.push(m[1].trim());
    else {
      for (i++; i < lines.length && /^\s*\/\/ ?/.test(lines[i]); i++) out.push(lines[i].replace(/^\s*\/\/ ?/, ''));
      i--;
    }
  }
  return out;
}

// ─── examples ────────────────────────────────────────────────────────────────

interface Single {
  kind: 'single';
  block: Block;
  title: string;
}

interface GroupFile {
  block: Block;
  name: string;
  expected: string[] | undefined;
}

interface Group {
  kind: 'group';
  name: string;
  files: GroupFile[];
  title: string;
}

type Example = Single | Group;

const { blocks, errors: parseErrors } = parseReadme(README);
const jsBlocks = blocks.filter((b) => JS_LANGS.has(b.lang));
const examples: Example[] = [];
const groups = new Map<string, Group>();
for (const b of blocks) {
  const m = b.marker;
  if (m?.group) {
    let g = groups.get(m.group);
    if (!g) {
      g = { kind: 'group', name: m.group, files: [], title: `group "${m.group}" (README.md:${b.line})` };
      groups.set(m.group, g);
      examples.push(g);
    }
    if (m.output) {
      const f = g.files.find((x) => x.name === m.output);
      if (!f) parseErrors.push(`README.md:${b.line}: output=${m.output} names no earlier file of group ${m.group}`);
      else f.expected = b.code.replace(/\n$/, '').split('\n');
    } else if (m.file && JS_LANGS.has(b.lang)) {
      const p = printsOf(b.code);
      g.files.push({ block: b, name: m.file, expected: p.length ? p : undefined });
    } else {
      parseErrors.push(`README.md:${b.line}: a group block needs file= (on a JS/TS block) or output= (on a text block)`);
    }
  } else if (JS_LANGS.has(b.lang)) {
    examples.push({ kind: 'single', block: b, title: `README.md:${b.line} (${b.lang}${m?.prelude ? `, prelude ${m.prelude}` : ''})` });
  } else if (m) {
    parseErrors.push(`README.md:${b.line}: marker on a ${b.lang || 'plain'} block that is not part of a group`);
  }
  if (m?.prelude && !PRELUDES[m.prelude]) parseErrors.push(`README.md:${b.line}: unknown prelude ${m.prelude}`);
  if (m?.after && !AFTER[m.after]) parseErrors.push(`README.md:${b.line}: unknown after= ${m.after}`);
  if (m?.prelude && m.group) parseErrors.push(`README.md:${b.line}: group files are complete programs (no prelude)`);
  if (m?.replace && !b.code.includes(m.replace[0])) parseErrors.push(`README.md:${b.line}: replace=${m.replace.join(':')} matches nothing`);
}

// Names the package exports at run time (for the fragments' automatic imports).
let exportNames: string[] = [];

function isModule(b: Block): boolean {
  return b.lang !== 'cjs';
}

/** The names a fragment uses from 'uds-ipc' without importing them. */
function autoImports(code: string): string[] {
  const imported = new Set<string>();
  for (const m of code.matchAll(/import\s*\{([^}]*)\}\s*from\s*['"]uds-ipc['"]/g)) {
    for (const n of m[1].split(',')) imported.add(n.trim().replace(/^type\s+/, '').split(/\s+as\s+/).pop()!.trim());
  }
  return exportNames.filter((n) => !imported.has(n) && new RegExp(`\\b${n}\\b`).test(code));
}

function blockSource(b: Block): string {
  const m = b.marker;
  let code = b.code;
  if (m?.replace) code = code.split(m.replace[0]).join(m.replace[1]);
  if (!m?.prelude) return code;
  const p = PRELUDES[m.prelude];
  const names = autoImports(code);
  return [
    names.length ? `import { ${names.join(', ')} } from 'uds-ipc';` : '',
    `import * as __uds from 'uds-ipc';`,
    `import { once as __once } from 'node:events';`,
    `const path = '/run/myapp/ipc.sock';`,
    `// ── prelude ${m.prelude}`,
    p.code,
    `// ── README.md:${b.line}`,
    code,
    m.after ? `// ── after=${m.after}\n${AFTER[m.after].code}` : '',
    `// ── prelude ${m.prelude} (after)`,
    p.after,
    '',
  ].join('\n');
}

/** Moves '/run/...' and '/tmp/...' string literals into `dir`. */
function relocate(code: string, dir: string): string {
  return code.replace(/(['"`])\/(run|tmp)\//g, (_, q: string, top: string) => `${q}${dir}/${top}/`);
}

function compile(b: Block, source: string): string {
  if (b.lang !== 'ts' && b.lang !== 'typescript') return source;
  const out = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    reportDiagnostics: true,
    fileName: `readme-${b.line}.ts`,
  });
  const diags = out.diagnostics ?? [];
  if (diags.length) throw new Error(`README.md:${b.line}: does not compile: ${diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ')}`);
  return out.outputText;
}

// ─── running ─────────────────────────────────────────────────────────────────

const tmpDirs: string[] = [];

/** A fresh directory where `uds-ipc` resolves to this repository. */
function workDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-readme-'));
  tmpDirs.push(dir);
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'uds-ipc'), 'dir');
  return dir;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

interface Started {
  child: ReturnType<typeof spawn>;
  done: Promise<Run>;
  stdout: () => string;
  stderr: () => string;
}

function start(cmd: string, args: string[], cwd: string): Started {
  const child = spawn(cmd, args, { cwd, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, RUN_TIMEOUT_MS);
  const done = new Promise<Run>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
  return { child, done, stdout: () => stdout, stderr: () => stderr };
}

function lines(s: string): string[] {
  return s === '' ? [] : s.replace(/\n$/, '').split('\n');
}

function describeRun(what: string, r: Run): string {
  return `${what}: ${r.timedOut ? `still running after ${RUN_TIMEOUT_MS} ms, killed` : `exit code ${r.code}, signal ${r.signal}`}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function expectClean(what: string, r: Run, expected: string[] | undefined): void {
  expect(r.timedOut, describeRun(what, r)).toBe(false);
  expect({ code: r.code, signal: r.signal }, describeRun(what, r)).toEqual({ code: 0, signal: null });
  if (expected) expect(lines(r.stdout), describeRun(what, r)).toEqual(expected);
}

async function until(cond: () => boolean, what: string, proc: Started): Promise<void> {
  const end = Date.now() + RUN_TIMEOUT_MS;
  while (!cond()) {
    if (Date.now() > end || proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`gave up waiting for ${what}\n--- stdout\n${proc.stdout()}--- stderr\n${proc.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function runSingle(ex: Single): Promise<void> {
  const b = ex.block;
  const dir = workDir();
  const file = join(dir, `example-${b.line}.${isModule(b) ? 'mjs' : 'cjs'}`);
  writeFileSync(file, relocate(compile(b, blockSource(b)), dir));
  const p = start(process.execPath, [file], dir);
  const prints = printsOf(b.code);
  const fromPrelude = b.marker?.prelude ? PRELUDES[b.marker.prelude].expect : undefined;
  const expected = fromPrelude || prints.length ? [...(fromPrelude ?? []), ...prints] : undefined;
  expectClean(ex.title, await p.done, expected);
}

async function runGroup(g: Group): Promise<void> {
  const dir = workDir();
  const procs: { f: GroupFile; p: Started }[] = [];
  for (const f of g.files) {
    const file = join(dir, f.name);
    writeFileSync(file, relocate(compile(f.block, f.block.code), dir));
    const a = f.block.marker!.activate;
    if (a) {
      const sock = relocate(`'${a.path}'`, dir).slice(1, -1);
      mkdirSync(join(sock, '..'), { recursive: true });
      // systemd-socket-activate passes on only TERM, PATH, USER and HOME (and
      // -E variables): keep the variables that choose or instrument the addon
      // (PREBUILDS_ONLY=1 npm test, npm run test:asan-addon).
      const keep = PASS_ENV.filter((v) => process.env[v] !== undefined).flatMap((v) => ['-E', v]);
      const p = start(ACTIVATE, ['-l', sock, `--fdname=${a.fdname}`, ...keep, process.execPath, file], dir);
      await until(() => p.stderr().includes(`Listening on ${sock}`), `${f.name}: systemd-socket-activate listening`, p);
      procs.push({ f, p });
      const text = f.block.marker!.send;
      if (text !== undefined) {
        const send = start(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'send', sock, text], dir);
        expectClean(`uds-ipc send ${sock} ${text}`, await send.done, undefined);
      }
    } else {
      procs.push({ f, p: start(process.execPath, [file], dir) });
    }
  }
  const servers = procs.filter((x) => x.f.block.marker!.stop);
  for (const { f, p } of procs) {
    if (f.block.marker!.stop) continue;
    expectClean(`${g.title}: ${f.name}`, await p.done, f.expected);
  }
  for (const { f, p } of servers) {
    const want = f.expected?.length ?? 0;
    await until(() => lines(p.stdout()).length >= want, `${f.name} to print ${want} lines`, p);
    p.child.kill(f.block.marker!.stop!);
    expectClean(`${g.title}: ${f.name} (after ${f.block.marker!.stop})`, await p.done, f.expected);
  }
}

// ─── type check ──────────────────────────────────────────────────────────────

function typeCheck(singles: Single[]): string[] {
  const dir = workDir();
  const files: string[] = [];
  const lineOf = new Map<string, number>();
  for (const ex of singles) {
    const b = ex.block;
    const m = b.marker;
    let code = b.code;
    if (m?.replace) code = code.split(m.replace[0]).join(m.replace[1]);
    let src = code;
    if (m?.prelude) {
      const names = autoImports(code);
      src = [
        names.length ? `import { ${names.join(', ')} } from 'uds-ipc';` : '',
        `declare const path: string;`,
        PRELUDES[m.prelude].dts,
        code,
      ].join('\n');
    }
    const file = join(dir, `readme-${b.line}.ts`);
    writeFileSync(file, `${src}\nexport {};\n`);
    files.push(file);
    lineOf.set(file, b.line);
  }
  const program = ts.createProgram(files, {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    typeRoots: [join(ROOT, 'node_modules', '@types')],
    skipLibCheck: true,
  });
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const where = d.file ? `README.md block at line ${lineOf.get(d.file.fileName) ?? d.file.fileName}` : 'tsc';
    const pos = d.file && d.start !== undefined ? ` (example line ${d.file.getLineAndCharacterOfPosition(d.start).line + 1})` : '';
    return `${where}${pos}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

// ─── GitHub heading anchors, for the links of the table of contents ─────────

function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

// ─── tests ───────────────────────────────────────────────────────────────────

beforeAll(() => {
  // The built package, as the examples load it.
  const pkg = createRequire(join(ROOT, 'package.json'))(join(ROOT, 'dist', 'index.js')) as object;
  exportNames = Object.keys(pkg).filter((n) => n !== 'default' && n !== '__esModule');
  expect(exportNames).toContain('Reader');
});

afterAll(() => {
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('README examples', () => {
  it('finds every JS/TS example, understands every marker, and runs them all', () => {
    expect(parseErrors).toEqual([]);
    expect(jsBlocks.length).toBeGreaterThanOrEqual(MIN_EXAMPLES);
    // Every JS/TS block is an example that runs, or a file of a group that runs.
    const covered = new Set<Block>();
    for (const ex of examples) {
      if (ex.kind === 'single') covered.add(ex.block);
      else for (const f of ex.files) covered.add(f.block);
    }
    expect(jsBlocks.filter((b) => !covered.has(b)).map((b) => b.line)).toEqual([]);
    for (const ex of examples) if (ex.kind === 'group') expect(ex.files.length, ex.title).toBeGreaterThan(0);
  });

  it('every TypeScript example type-checks against the package declarations', () => {
    const singles = examples.filter((e): e is Single => e.kind === 'single' && (e.block.lang === 'ts' || e.block.lang === 'typescript'));
    expect(singles.length).toBeGreaterThanOrEqual(10);
    expect(typeCheck(singles)).toEqual([]);
  }, 120_000);

  it('every link to a heading of the README points to one', () => {
    const anchors = new Set<string>();
    let inFence = false;
    for (const l of README.split('\n')) {
      if (/^```/.test(l)) inFence = !inFence;
      const h = !inFence && /^#{1,6}\s+(.*)$/.exec(l);
      if (h) anchors.add(slug(h[1]));
    }
    const links = [...README.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]);
    expect(links.length).toBeGreaterThan(10);
    expect(links.filter((a) => !anchors.has(a))).toEqual([]);
  });

  for (const ex of examples) {
    it(`runs ${ex.title}`, async () => {
      if (ex.kind === 'single') await runSingle(ex);
      else await runGroup(ex);
    }, RUN_TIMEOUT_MS * 3);
  }
});
