// The documentation examples and links: the machinery behind
// test/readme-examples.test.ts (`npm test`) and
// test/tool/readme-examples-activate.test.ts (`npm run test:systemd`). How the
// examples run and what the markers mean is explained at the top of
// test/readme-examples.test.ts.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { ROOT } from './helpers';

/** The generated API reference (`npm run docs`): not ours to check, and git-ignored. */
const GENERATED = join(ROOT, 'docs', 'api');

/** The Markdown files whose examples run and whose links are checked, relative to ROOT. */
function docFiles(): string[] {
  const out = ['README.md'];
  const walk = (dir: string): void => {
    if (dir === GENERATED || !existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.md')) out.push(relative(ROOT, p));
    }
  };
  walk(join(ROOT, 'docs'));
  // Written by the benchmark scripts, but linked from these pages: its links
  // are checked too (it has no JS/TS examples).
  out.push('bench/README.md');
  return out;
}

const DOCS = docFiles().map((file) => ({ file, text: readFileSync(join(ROOT, file), 'utf8') }));
const MIN_EXAMPLES = 20;
const RUN_TIMEOUT_MS = 30_000;
const JS_LANGS = new Set(['js', 'mjs', 'cjs', 'ts', 'javascript', 'typescript']);
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

// ─── page parsing ────────────────────────────────────────────────────────────

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
  needs?: string;
}

interface Block {
  /** The page, relative to the repository root. */
  file: string;
  lang: string;
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  marker: Marker | undefined;
}

/** `file:line` of a block, for messages and test titles. */
function at(b: { file: string; line: number }): string {
  return `${b.file}:${b.line}`;
}

const MARKER_KEYS = ['prelude', 'group', 'file', 'stop', 'activate', 'send', 'output', 'replace', 'after', 'needs'];
/** Values of the `needs=` marker: a program the example needs, which its own suite provides. */
const NEEDS = ['nats-server'];

function parseMarker(text: string, where: string, errors: string[]): Marker {
  const m: Marker = {};
  for (const tok of text.split(/\s+/).filter(Boolean)) {
    const eq = tok.indexOf('=');
    const key = eq < 0 ? tok : tok.slice(0, eq);
    const value = eq < 0 ? '' : tok.slice(eq + 1);
    if (!MARKER_KEYS.includes(key) || value === '') {
      errors.push(`${where}: bad marker item "${tok}"`);
      continue;
    }
    if (key === 'needs' && !NEEDS.includes(value)) {
      errors.push(`${where}: unknown needs=${value} (known: ${NEEDS.join(', ')})`);
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

function parsePage(file: string, text: string, blocks: Block[], errors: string[]): void {
  const lines = text.split('\n');
  let pending: { marker: Marker; line: number } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    const mk = /^<!--\s*example(?::(.*?))?\s*-->\s*$/.exec(l);
    if (mk) {
      if (pending) errors.push(`${file}:${pending.line}: marker not followed by a code block`);
      pending = { marker: parseMarker(mk[1] ?? '', `${file}:${i + 1}`, errors), line: i + 1 };
      continue;
    }
    if (/^<!--\s*example/.test(l)) errors.push(`${file}:${i + 1}: unparsable marker: ${l}`);
    const fence = /^(`{3,})\s*([\w-]*)\s*$/.exec(l);
    if (fence) {
      const close = fence[1];
      const start = i;
      const body: string[] = [];
      for (i++; i < lines.length && lines[i].trim() !== close; i++) body.push(lines[i]);
      blocks.push({ file, lang: fence[2].toLowerCase(), code: body.join('\n') + '\n', line: start + 1, marker: pending?.marker });
      pending = undefined;
      continue;
    }
    if (pending && l.trim() !== '') {
      errors.push(`${file}:${pending.line}: marker not followed by a code block`);
      pending = undefined;
    }
  }
  if (pending) errors.push(`${file}:${pending.line}: marker not followed by a code block`);
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

export type Example = Single | Group;

/**
 * Whether an example needs systemd-socket-activate (a group with an
 * `activate=` file). Those run in the tool suite (`npm run test:systemd`,
 * test/tool/readme-examples-activate.test.ts), all others in `npm test`.
 */
export function needsActivate(ex: Example): boolean {
  return ex.kind === 'group' && ex.files.some((f) => f.block.marker?.activate !== undefined);
}

/**
 * Whether an example needs a NATS server (a `needs=nats-server` marker): it
 * runs in `npm run test:nats` (test/nats/readme-examples-nats.test.ts), which
 * starts one and gives its URL as NATS_URL.
 */
export function needsNats(ex: Example): boolean {
  const blocks = ex.kind === 'single' ? [ex.block] : ex.files.map((f) => f.block);
  return blocks.some((b) => b.marker?.needs === 'nats-server');
}

const blocks: Block[] = [];
const parseErrors: string[] = [];
for (const { file, text } of DOCS) parsePage(file, text, blocks, parseErrors);
const jsBlocks = blocks.filter((b) => JS_LANGS.has(b.lang));
const examples: Example[] = [];
const groups = new Map<string, Group>();
for (const b of blocks) {
  const m = b.marker;
  if (m?.group) {
    // Groups are per page: two pages may both have a group "usage".
    const key = `${b.file}#${m.group}`;
    let g = groups.get(key);
    if (!g) {
      g = { kind: 'group', name: m.group, files: [], title: `group "${m.group}" (${at(b)})` };
      groups.set(key, g);
      examples.push(g);
    }
    if (m.output) {
      const f = g.files.find((x) => x.name === m.output);
      if (!f) parseErrors.push(`${at(b)}: output=${m.output} names no earlier file of group ${m.group}`);
      else f.expected = b.code.replace(/\n$/, '').split('\n');
    } else if (m.file && JS_LANGS.has(b.lang)) {
      const p = printsOf(b.code);
      g.files.push({ block: b, name: m.file, expected: p.length ? p : undefined });
    } else {
      parseErrors.push(`${at(b)}: a group block needs file= (on a JS/TS block) or output= (on a text block)`);
    }
  } else if (JS_LANGS.has(b.lang)) {
    examples.push({ kind: 'single', block: b, title: `${at(b)} (${b.lang}${m?.prelude ? `, prelude ${m.prelude}` : ''})` });
  } else if (m) {
    parseErrors.push(`${at(b)}: marker on a ${b.lang || 'plain'} block that is not part of a group`);
  }
  if (m?.prelude && !PRELUDES[m.prelude]) parseErrors.push(`${at(b)}: unknown prelude ${m.prelude}`);
  if (m?.after && !AFTER[m.after]) parseErrors.push(`${at(b)}: unknown after= ${m.after}`);
  if (m?.prelude && m.group) parseErrors.push(`${at(b)}: group files are complete programs (no prelude)`);
  if (m?.replace && !b.code.includes(m.replace[0])) parseErrors.push(`${at(b)}: replace=${m.replace.join(':')} matches nothing`);
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
    `// ── ${at(b)}`,
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
    fileName: `example-${b.line}.ts`,
  });
  const diags = out.diagnostics ?? [];
  if (diags.length) throw new Error(`${at(b)}: does not compile: ${diags.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ')}`);
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

async function runGroup(g: Group, activateTool: string | undefined): Promise<void> {
  const dir = workDir();
  const procs: { f: GroupFile; p: Started }[] = [];
  for (const f of g.files) {
    const file = join(dir, f.name);
    writeFileSync(file, relocate(compile(f.block, f.block.code), dir));
    const a = f.block.marker!.activate;
    if (a) {
      if (activateTool === undefined) throw new Error(`${g.title}: activate= needs systemd-socket-activate, which this suite does not provide`);
      const sock = relocate(`'${a.path}'`, dir).slice(1, -1);
      mkdirSync(join(sock, '..'), { recursive: true });
      // systemd-socket-activate passes on only TERM, PATH, USER and HOME (and
      // -E variables): keep the variables that choose or instrument the addon
      // (PREBUILDS_ONLY=1 npm test, npm run test:asan-addon).
      const keep = PASS_ENV.filter((v) => process.env[v] !== undefined).flatMap((v) => ['-E', v]);
      const p = start(activateTool, ['-l', sock, `--fdname=${a.fdname}`, ...keep, process.execPath, file], dir);
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
  const whereOf = new Map<string, string>();
  for (const [i, ex] of singles.entries()) {
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
    const file = join(dir, `example-${i}.ts`);
    writeFileSync(file, `${src}\nexport {};\n`);
    files.push(file);
    whereOf.set(file, at(b));
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
    const where = d.file ? `the block at ${whereOf.get(d.file.fileName) ?? d.file.fileName}` : 'tsc';
    const pos = d.file && d.start !== undefined ? ` (example line ${d.file.getLineAndCharacterOfPosition(d.start).line + 1})` : '';
    return `${where}${pos}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
  });
}

// ─── links: relative files and GitHub heading anchors ────────────────────────

function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** A page's text outside fenced code blocks (each fenced line blanked, so line numbers stay). */
function prose(text: string): string[] {
  let fence: string | undefined;
  return text.split('\n').map((l) => {
    const f = /^\s*(`{3,}|~{3,})/.exec(l);
    if (fence) {
      if (f && f[1][0] === fence[0] && f[1].length >= fence.length) fence = undefined;
      return '';
    }
    if (f) {
      fence = f[1];
      return '';
    }
    return l;
  });
}

/** The anchors of a page's headings, as GitHub makes them (a repeated one gets -1, -2, ...). */
function anchorsOf(text: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  for (const l of prose(text)) {
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(l);
    if (!h) continue;
    const base = slug(h[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

interface Link {
  /** `file:line` of the link. */
  where: string;
  /** The page the link is on, relative to ROOT. */
  file: string;
  target: string;
}

/** The Markdown links `[text](target)` of a page, outside code. */
function linksOf(file: string, text: string): Link[] {
  const out: Link[] = [];
  prose(text).forEach((l, i) => {
    const line = l.replace(/`[^`]*`/g, '``'); // a link's text may be code; a code span holds no link
    for (const m of line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ where: `${file}:${i + 1}`, file, target: m[1] });
  });
  return out;
}

const LINKS = DOCS.flatMap(({ file, text }) => linksOf(file, text));

/** What is wrong with a link, or undefined. External links (a scheme) are not checked. */
function brokenLink(link: Link): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(link.target)) return undefined;
  const hash = link.target.indexOf('#');
  const path = hash < 0 ? link.target : link.target.slice(0, hash);
  const anchor = hash < 0 ? undefined : decodeURIComponent(link.target.slice(hash + 1));
  const abs = path === '' ? join(ROOT, link.file) : resolve(ROOT, dirname(link.file), decodeURIComponent(path));
  const rel = relative(ROOT, abs);
  if (rel.startsWith('..')) return `${link.where}: ${link.target} points outside the repository`;
  if (abs === GENERATED || abs.startsWith(GENERATED + '/')) {
    return `${link.where}: ${link.target} points into the generated API reference (git-ignored: name \`npm run docs\` instead)`;
  }
  if (!existsSync(abs)) return `${link.where}: ${link.target}: no such file (${rel})`;
  if (anchor === undefined) return undefined;
  if (statSync(abs).isDirectory() || !abs.endsWith('.md')) return `${link.where}: ${link.target}: a #fragment on something that is not a Markdown page`;
  if (!anchorsOf(readFileSync(abs, 'utf8')).has(anchor)) return `${link.where}: ${link.target}: ${rel} has no heading #${anchor}`;
  return undefined;
}

// ─── tests ───────────────────────────────────────────────────────────────────

export interface ExampleSuite {
  /** The examples this suite runs (the others run in the other suite). */
  select: (ex: Example) => boolean;
  /**
   * Also the checks of the whole documentation (markers; that every example
   * runs here or, if it needs systemd-socket-activate, in the tool suite; type
   * check; links; errors.md): in `npm test` only.
   */
  checks: boolean;
  /** The systemd-socket-activate binary, for `activate=` examples; none in `npm test`. */
  activateTool?: string;
}

/**
 * Registers the documentation tests for one suite. `npm test`
 * (test/readme-examples.test.ts) runs every example but those needing
 * systemd-socket-activate, plus the checks; `npm run test:systemd`
 * (test/tool/readme-examples-activate.test.ts) runs exactly those.
 */
export function registerExampleTests(suite: ExampleSuite): void {
  const selected = examples.filter(suite.select);

  beforeAll(() => {
    // The built package, as the examples load it.
    const pkg = createRequire(join(ROOT, 'package.json'))(join(ROOT, 'dist', 'index.js')) as object;
    exportNames = Object.keys(pkg).filter((n) => n !== 'default' && n !== '__esModule');
    expect(exportNames).toContain('Reader');
  });

  afterAll(() => {
    for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  describe('documentation examples and links', () => {
    it('selects at least one example to run here', () => {
      expect(selected.length).toBeGreaterThan(0);
    });

    if (suite.checks) {
      it('finds every JS/TS example, understands every marker, and runs them all (here, in npm run test:systemd or in npm run test:nats)', () => {
        expect(parseErrors).toEqual([]);
        expect(jsBlocks.length).toBeGreaterThanOrEqual(MIN_EXAMPLES);
        // Every JS/TS block is an example that runs, or a file of a group that runs.
        const covered = new Set<Block>();
        for (const ex of examples) {
          if (ex.kind === 'single') covered.add(ex.block);
          else for (const f of ex.files) covered.add(f.block);
        }
        expect(jsBlocks.filter((b) => !covered.has(b)).map(at)).toEqual([]);
        for (const ex of examples) if (ex.kind === 'group') expect(ex.files.length, ex.title).toBeGreaterThan(0);
        // Every example runs in exactly one of the two suites: here (`select`),
        // or in the tool suite, which runs exactly those needing
        // systemd-socket-activate; and there is at least one of those.
        // (Or, with needs=nats-server, in npm run test:nats.)
        expect(examples.filter((ex) => suite.select(ex) === (needsActivate(ex) || needsNats(ex))).map((ex) => ex.title)).toEqual([]);
        expect(examples.filter(needsActivate).length).toBeGreaterThan(0);
        expect(examples.filter(needsNats).length).toBeGreaterThan(0);
      });

      it('every TypeScript example type-checks against the package declarations', () => {
        const singles = examples.filter((e): e is Single => e.kind === 'single' && (e.block.lang === 'ts' || e.block.lang === 'typescript'));
        expect(singles.length).toBeGreaterThanOrEqual(10);
        expect(typeCheck(singles)).toEqual([]);
      }, 120_000);

      it('every relative link of README.md and docs/ names a file, and every #fragment a heading of its page', () => {
        expect(LINKS.length).toBeGreaterThan(50);
        expect(LINKS.map(brokenLink).filter((x) => x !== undefined)).toEqual([]);
      });

      it('docs/README.md (the index) links every page of docs/, and README.md links the index', () => {
        const index = 'docs/README.md';
        const linked = new Set(
          LINKS.filter((l) => l.file === index && !/^[a-z][a-z0-9+.-]*:/i.test(l.target)).map((l) =>
            relative(ROOT, resolve(ROOT, 'docs', l.target.split('#')[0])),
          ),
        );
        const pages = DOCS.map((d) => d.file).filter((f) => f.startsWith('docs/') && f !== index);
        expect(pages.filter((f) => !linked.has(f))).toEqual([]);
        expect(LINKS.some((l) => l.file === 'README.md' && l.target.split('#')[0] === 'docs/README.md')).toBe(true);
      });

      it('docs/errors.md has a row for every error code the package defines', () => {
        const { ErrorCodes } = createRequire(join(ROOT, 'package.json'))(join(ROOT, 'dist', 'index.js')) as { ErrorCodes: Record<string, string> };
        const text = DOCS.find((d) => d.file === 'docs/errors.md')!.text;
        // A row starts with the code(s) it explains: | `ERR_X` | or | `ERR_A` / `ERR_B` | ...
        const documented = new Set(
          text
            .split('\n')
            .filter((l) => l.startsWith('| `'))
            .flatMap((l) => [...l.split('|')[1].matchAll(/`([A-Z_]+)`/g)].map((m) => m[1])),
        );
        const codes = [...Object.values(ErrorCodes), 'ABORT_ERR', 'ERR_INVALID_ARG_TYPE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_VALUE'];
        expect(codes.filter((c) => !documented.has(c))).toEqual([]);
      });
    }

    for (const ex of selected) {
      it(`runs ${ex.title}`, async () => {
        if (ex.kind === 'single') await runSingle(ex);
        else await runGroup(ex, suite.activateTool);
      }, RUN_TIMEOUT_MS * 3);
    }
  });
}
