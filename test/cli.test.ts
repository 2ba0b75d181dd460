// The command-line tool (dist/cli.js, built by `pretest`): listen, send and
// bench as child processes, their output formats, exit codes and cleanup.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writer } from '../src';
import { cleanupDirs, ROOT, tmpSocket, waitFor } from './helpers';

const CLI = join(ROOT, 'dist', 'cli.js');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

const procs: Cli[] = [];

/** `node dist/cli.js args...`; stdin gets `input` then EOF, or stays open with `input: 'open'`. */
class Cli {
  readonly child: ChildProcess;
  out = Buffer.alloc(0);
  err = '';
  readonly result: Promise<Result>;

  constructor(args: string[], input: string | Buffer | 'open' = '') {
    const t0 = Date.now();
    this.child = spawn(process.execPath, [CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    procs.push(this);
    this.child.stdout!.on('data', (d: Buffer) => (this.out = Buffer.concat([this.out, d])));
    this.child.stderr!.on('data', (d: Buffer) => (this.err += d.toString()));
    this.child.stdin!.on('error', () => undefined); // the tool may exit without reading stdin
    if (input !== 'open') this.child.stdin!.end(input);
    // A hung tool fails its test (exit code null) instead of hanging the file.
    const guard = setTimeout(() => this.kill('SIGKILL'), 30_000);
    this.result = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        clearTimeout(guard);
        resolve({ code, signal, stdout: this.out.toString(), stderr: this.err, ms: Date.now() - t0 });
      });
    });
  }

  get stdout(): string {
    return this.out.toString();
  }

  /** Lines of stdout so far (complete lines only). */
  lines(): string[] {
    const s = this.stdout;
    return s.slice(0, s.lastIndexOf('\n') + 1).split('\n').slice(0, -1);
  }

  async stderrHas(re: RegExp, what: string): Promise<void> {
    await waitFor(() => re.test(this.err) || this.child.exitCode !== null, 15_000, what);
    if (!re.test(this.err)) throw new Error(`exited (${this.child.exitCode}) before ${what}; stderr: ${this.err}`);
  }

  async linesAtLeast(n: number): Promise<string[]> {
    await waitFor(() => this.lines().length >= n || this.child.exitCode !== null, 15_000, `${n} lines on stdout`);
    return this.lines();
  }

  kill(sig: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(sig);
  }
}

function run(args: string[], input?: string | Buffer): Promise<Result> {
  return new Cli(args, input).result;
}

/** Starts `listen` and waits until it accepts connections (its status line, or with --quiet its socket file). */
async function listen(path: string, ...args: string[]): Promise<Cli> {
  const p = new Cli(['listen', path, ...args]);
  if (args.includes('--quiet')) {
    await waitFor(() => existsSync(path) || p.child.exitCode !== null, 15_000, 'the socket file');
    expect(p.child.exitCode, p.err).toBe(null);
  } else {
    await p.stderrHas(/listening on/, 'the "listening on" status line');
  }
  return p;
}

async function ok(p: Promise<Result>): Promise<Result> {
  const r = await p;
  expect(r.code, `exit ${r.code} ${r.signal ?? ''}; stderr: ${r.stderr}`).toBe(0);
  return r;
}

afterEach(() => {
  for (const p of procs.splice(0)) p.kill();
});
afterAll(() => cleanupDirs());

describe('help, version and usage errors', () => {
  it('--help and -h print the commands and exit codes on stdout, exit 0', async () => {
    const [long, short] = await Promise.all([ok(run(['--help'])), ok(run(['-h']))]);
    expect(long.stdout).toBe(short.stdout);
    expect(long.stdout).toMatch(/^Usage: uds-ipc <command>/);
    for (const c of ['listen <path>', 'send <path>', 'bench', 'bridge --nats <url>']) expect(long.stdout).toContain(c);
    expect(long.stdout).toMatch(/0 success, 1 runtime error.*2 usage error/s);
    expect(long.stderr).toBe('');
  });

  it('every subcommand has its own --help (also as `help <command>`)', async () => {
    for (const cmd of ['listen', 'send', 'bench', 'bridge']) {
      const [a, b, c] = await Promise.all([ok(run([cmd, '--help'])), ok(run([cmd, '-h'])), ok(run(['help', cmd]))]);
      expect(a.stdout).toMatch(new RegExp(`^Usage: uds-ipc ${cmd}`));
      expect(b.stdout).toBe(a.stdout);
      expect(c.stdout).toBe(a.stdout);
    }
    const listenHelp = (await run(['listen', '--help'])).stdout;
    for (const opt of ['--format', '--count', '--mode', 'text', 'hex', 'json']) expect(listenHelp).toContain(opt);
    expect((await run(['send', '--help'])).stdout).toContain('--timeout-ms');
    expect((await run(['bench', '--help'])).stdout).toMatch(/--size[\s\S]*--count/);
  });

  it('--version prints the package version', async () => {
    const r = await ok(run(['--version']));
    expect(r.stdout).toBe(`${VERSION}\n`);
  });

  it('usage errors exit 2 with a one-line reason and a hint on stderr, nothing on stdout', async () => {
    const sock = tmpSocket();
    const cases: [string[], RegExp][] = [
      [[], /missing command/],
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['--frobnicate'], /unknown option '--frobnicate'/],
      [['help', 'frobnicate'], /unknown command/],
      [['listen'], /listen: missing <path>/],
      [['listen', sock, 'extra'], /unexpected argument 'extra'/],
      [['listen', sock, '--bogus'], /Unknown option '--bogus'/],
      [['listen', sock, '--format', 'xml'], /invalid value for --format: 'xml'/],
      [['listen', sock, '--count', '0'], /invalid value for --count: '0'/],
      [['listen', sock, '--count', 'ten'], /invalid value for --count: 'ten'/],
      [['listen', sock, '--count'], /argument missing/],
      [['listen', sock, '--mode', '0999'], /invalid value for --mode/],
      [['listen', '@cli-test-abstract', '--mode', '0600'], /--mode does not apply to an abstract socket/],
      [['listen', '/tmp/' + 'x'.repeat(200)], /ERR_PATH_TOO_LONG/],
      [['send'], /send: missing <path>/],
      [['send', sock, '--timeout-ms', '-5'], /timeout-ms/],
      [['send', sock, '--format', 'json', 'x'], /invalid value for --format: 'json'/],
      [['send', sock, '--format', 'hex', '0g'], /message 1 is not valid hex/],
      [['bench', '--size', '64,big'], /invalid value for --size: 'big'/],
      [['bench', '--count', '-1'], /count/],
      [['bench', 'extra'], /unexpected argument 'extra'/],
      // bridge: every mistake found before anything connects (no NATS server needed)
      [['bridge', '--listen', sock, '--publish', 'a'], /bridge: missing --nats <url>/],
      [['bridge', '--nats', 'nats://127.0.0.1:1'], /nothing to bridge/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--listen', sock], /--listen and --publish go together/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--subscribe', 'a'], /--subscribe and --connect go together/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--listen', sock, '--publish', 'a.*'], /ERR_INVALID_ARG_VALUE: .*not a subject one can publish to/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--subscribe', 'a..b', '--connect', sock], /not a valid subject/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--listen', sock, '--publish', 'a', '--replicas', '3'], /--replicas, --durable and --ack-wait need --jetstream/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--jetstream', 'S', '--listen', sock, '--publish', 'a', '--replicas', '9'], /invalid value for --replicas/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--user', 'u', '--listen', sock, '--publish', 'a'], /"user" and "password" options go together/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', '--jetstream', 'a.b', '--listen', sock, '--publish', 'a'], /Invalid stream name/],
      [['bridge', '--nats', 'nats://127.0.0.1:1', 'extra'], /unexpected argument 'extra'/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    results.forEach((r, i) => {
      const [args, re] = cases[i];
      const what = `uds-ipc ${args.join(' ')} → exit ${r.code}, stderr: ${r.stderr}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(re);
      expect(r.stderr, what).toMatch(/^uds-ipc: .*\nTry 'uds-ipc (\w+ )?--help'\.\n$/);
      expect(r.stdout, what).toBe('');
    });
    expect(existsSync(sock)).toBe(false);
  });
});

describe('listen + send', () => {
  it('text format: one line per message, newlines and control characters escaped', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'text', '--count', '8');
    const messages = ['hello', 'two\nlines', 'tab\there\r', 'back\\slash', 'héllo €', '\u0001\u007f', '', '\u0085\u2028'];
    await ok(run(['send', sock, ...messages]));
    const r = await ok(l.result);
    expect(r.stdout).toBe(
      ['hello', 'two\\nlines', 'tab\\there\\r', 'back\\\\slash', 'héllo €', '\\x01\\x7f', '', '\\u0085\\u2028', ''].join('\n'),
    );
    expect(r.stderr).toMatch(/stopped after 8 messages/);
    expect(existsSync(sock)).toBe(false);
  });

  it('text format shows bytes that are not UTF-8 as \\xHH', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--count', '1');
    // invalid lead byte, ASCII, truncated 3-byte sequence, a valid 4-byte one, an overlong '/'.
    const bytes = Buffer.from([0xff, 0x41, 0xe2, 0x82, 0x42, 0xf0, 0x9f, 0x98, 0x80, 0xc0, 0xaf]);
    await ok(run(['send', sock], Buffer.concat([bytes, Buffer.from('\n')])));
    const r = await ok(l.result);
    expect(r.stdout).toBe('\\xffA\\xe2\\x82B😀\\xc0\\xaf\n');
  });

  it('hex format: lowercase hex of binary messages, including one with a newline', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'hex', '--count', '4');
    const binary = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0x0d]);
    await ok(run(['send', sock], Buffer.concat([binary, Buffer.from('\nx\n')])));
    await ok(run(['send', sock, 'a\nb', '']));
    const r = await ok(l.result);
    expect(r.stdout).toBe('00fffe80410d\n78\n610a62\n\n');
  });

  it('json format: one object per line with the sender pid, UTF-8 as text, anything else as base64', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'json', '--count', '3');
    const sender = new Cli(['send', sock, 'say "hi"\nthere', 'é']);
    await ok(sender.result);
    const binary = new Cli(['send', sock, '--format', 'hex', 'c328 00ff']);
    await ok(binary.result);
    const r = await ok(l.result);
    const lines = r.stdout.trimEnd().split('\n').map((s) => JSON.parse(s));
    expect(lines).toHaveLength(3);
    expect(lines[0]).toEqual({ conn: expect.any(Number), pid: sender.child.pid, uid: process.getuid!(), len: 14, encoding: 'utf8', data: 'say "hi"\nthere' });
    expect(lines[1]).toMatchObject({ conn: lines[0].conn, pid: sender.child.pid, len: 2, encoding: 'utf8', data: 'é' });
    expect(lines[2]).toMatchObject({ pid: binary.child.pid, len: 4, encoding: 'base64' });
    expect(lines[2].conn).not.toBe(lines[0].conn);
    expect(Buffer.from(lines[2].data, 'base64')).toEqual(Buffer.from([0xc3, 0x28, 0x00, 0xff]));
  });

  it('send reads stdin: one message per line, empty lines included, last line without newline too', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'hex');
    await ok(run(['send', sock], 'a\n\nb\r\nlast'));
    const lines = await l.linesAtLeast(4);
    // Nothing more arrives: stop the listener and compare everything it printed.
    l.kill('SIGTERM');
    const r = await ok(l.result);
    expect(lines.slice(0, 4)).toEqual(['61', '', '620d', '6c617374']);
    expect(r.stdout).toBe('61\n\n620d\n6c617374\n');
  });

  it('send --format hex reads hex lines from stdin (whitespace ignored)', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'hex', '--count', '2');
    await ok(run(['send', sock, '--format', 'hex'], '00 01 ff\nDEADbeef\n'));
    expect((await ok(l.result)).stdout).toBe('0001ff\ndeadbeef\n');
  });

  it('many stdin lines arrive complete and in order', async () => {
    const sock = tmpSocket();
    const n = 20_000;
    const input = Array.from({ length: n }, (_, i) => `line ${i}`).join('\n') + '\n';
    const l = await listen(sock, '--count', String(n), '--quiet');
    await ok(run(['send', sock], input));
    const r = await ok(l.result);
    expect(r.stdout).toBe(input);
    expect(r.stderr).toBe('');
  });

  it('works with abstract socket names', async () => {
    const name = `@uds-ipc-cli-test-${process.pid}-${Date.now()}`;
    const l = await listen(name, '--count', '1');
    await ok(run(['send', name, 'over an abstract socket']));
    expect((await ok(l.result)).stdout).toBe('over an abstract socket\n');
  });

  it('messages from the library Writer show up in listen (same wire format)', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--format', 'hex', '--count', '2');
    const w = new Writer(sock);
    w.start();
    w.write(Buffer.from([1, 2, 3]));
    w.write('z'.repeat(200)); // two-byte length prefix
    await w.stop({ timeoutMs: 5000 });
    expect((await ok(l.result)).stdout).toBe('010203\n' + '7a'.repeat(200) + '\n');
  });

  it('send waits for a reader that starts within --timeout-ms', async () => {
    const sock = tmpSocket();
    const s = new Cli(['send', sock, '--timeout-ms', '20000', 'early bird']);
    await new Promise((r) => setTimeout(r, 300));
    expect(s.child.exitCode).toBe(null); // still trying to connect
    const l = await listen(sock, '--count', '1');
    await ok(s.result);
    expect((await ok(l.result)).stdout).toBe('early bird\n');
  });
});

describe('send without a reader', () => {
  it('exits 1 with ERR_CONNECT_FAILED in one line on stderr after --timeout-ms', async () => {
    const sock = tmpSocket();
    const r = await run(['send', sock, '--timeout-ms', '300', 'hello']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^uds-ipc send: ERR_CONNECT_FAILED: cannot connect to .* within 300 ms: .*ENOENT.*\n$/);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
    expect(r.ms).toBeLessThan(20_000); // bounded: gives up instead of retrying forever
  });

  it('gives up with the default timeout too, even with stdin still open', async () => {
    const dir = dirname(tmpSocket());
    const notSocket = join(dir, 'plain-file');
    writeFileSync(notSocket, 'not a socket');
    const p = new Cli(['send', notSocket], 'open');
    p.child.stdin!.write('a line\n');
    const r = await p.result;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ERR_CONNECT_FAILED: cannot connect to .* within 5000 ms: .*ECONNREFUSED/);
    expect(r.ms).toBeLessThan(25_000);
    expect(readFileSync(notSocket, 'utf8')).toBe('not a socket');
  });
});

describe('listen lifecycle', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)('stops cleanly on %s: exit 0, socket file removed', async (sig) => {
    const sock = tmpSocket();
    const l = await listen(sock);
    const st = statSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    await ok(run(['send', sock, 'before the signal']));
    await l.linesAtLeast(1);
    l.kill(sig);
    const r = await l.result;
    expect(r.code).toBe(0);
    expect(r.signal).toBe(null);
    expect(r.stdout).toBe('before the signal\n');
    expect(r.stderr).toMatch(/stopped after 1 message\n/);
    expect(existsSync(sock)).toBe(false);
  });

  it('--mode sets the socket file permissions', async () => {
    const sock = tmpSocket();
    const l = await listen(sock, '--mode', '0640');
    expect(statSync(sock).mode & 0o777).toBe(0o640);
    l.kill('SIGTERM');
    expect((await l.result).code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('exits 0 and removes the socket when stdout is closed (e.g. | head -1)', async () => {
    const sock = tmpSocket();
    const l = await listen(sock);
    l.child.stdout!.destroy();
    await ok(run(['send', sock, 'nobody reads this']));
    const r = await l.result;
    expect(r.code).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('exits 1 with the error code when it cannot listen', async () => {
    const sock = tmpSocket();
    writeFileSync(sock, 'precious');
    const r = await run(['listen', sock]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^uds-ipc listen: ERR_NOT_A_SOCKET: /);
    expect(readFileSync(sock, 'utf8')).toBe('precious');

    const sock2 = tmpSocket();
    const l = await listen(sock2);
    const r2 = await run(['listen', sock2]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/^uds-ipc listen: ERR_ADDRESS_IN_USE: /);
    expect(l.child.exitCode).toBe(null); // the first one is untouched
    expect(statSync(sock2).isSocket()).toBe(true);
  });
});

describe('bench', () => {
  it('runs a tiny two-process benchmark per size and prints a table (no progress when stderr is piped)', async () => {
    const r = await ok(run(['bench', '--count', '300', '--size', '16,1024']));
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0].trim().split(/\s+/)).toEqual(['size', 'messages', 'msgs/s', 'MB/s', 'seconds']);
    expect(lines).toHaveLength(3);
    const rows = lines.slice(1).map((l) => l.trim().split(/\s{2,}/));
    expect(rows.map((c) => c[0])).toEqual(['16 B', '1 KiB']);
    for (const [, messages, rate, mbs, seconds] of rows) {
      expect(messages).toBe('300');
      expect(Number(rate)).toBeGreaterThan(0);
      expect(Number(mbs)).toBeGreaterThanOrEqual(0);
      expect(Number(seconds)).toBeGreaterThan(0);
    }
    expect(r.stderr).toBe('');
  });
});
