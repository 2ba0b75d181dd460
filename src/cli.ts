#!/usr/bin/env node
/**
 * The `uds-ipc` command-line tool: `listen`, `send` and `bench`, built on the
 * public API only. Exit status: 0 success, 1 runtime error, 2 usage error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { isUtf8 } from 'node:buffer';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getSystemErrorName, parseArgs } from 'node:util';
import { DEFAULT_MAX_MESSAGE_SIZE, Reader, Writer, type Batch, type Connection } from './index';

const EXIT_OK = 0;
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

/** A command-line mistake: printed with a hint to --help, exit status 2. */
class UsageError extends Error {}

/** A runtime failure: printed as "uds-ipc <command>: <CODE>: <message>", exit status 1. */
class CliError extends Error {
  constructor(
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

// ─── help texts ─────────────────────────────────────────────────────────────

const MAIN_HELP = `Usage: uds-ipc <command> [options]

Framed message passing between processes over Unix domain sockets
(wire format: uvarint(length) + payload, compatible with Go uds-ipc).

Commands:
  listen <path>              listen on <path>, print every message received
  send <path> [message...]   send the arguments, or each line of stdin, as messages
  bench                      measure throughput between two processes
  help [command]             show the help of a command

Options:
  -h, --help                 show this help
      --version              print the version

<path> is a socket file path (at most 107 bytes of UTF-8) or @name for a
Linux abstract socket.

Exit status: 0 success, 1 runtime error (e.g. cannot connect), 2 usage error.
Run 'uds-ipc <command> --help' for the options of a command.
`;

const LISTEN_HELP = `Usage: uds-ipc listen <path> [options]

Starts a reader on <path> (a socket file, created with --mode, or @name for
an abstract socket) and prints every message it receives on stdout, one line
per message. Status lines go to stderr. SIGINT/SIGTERM stop it gracefully:
messages already received are printed, the socket file is removed, exit 0.

Options:
  -f, --format <fmt>   output format (default text):
                         text  the message as UTF-8; \\ \\n \\r \\t escaped as
                               such, other control characters as \\xHH (C0, DEL)
                               or \\uHHHH (C1, U+2028, U+2029), bytes that are
                               not valid UTF-8 as \\xHH
                         hex   lowercase hex of the bytes (empty message: empty line)
                         json  {"conn":id,"pid":n,"uid":n,"len":n,"encoding":e,"data":s}
                               with encoding "utf8" (data is the text) when the
                               message is valid UTF-8, else "base64"
  -n, --count <N>      exit 0 after printing N messages
  -m, --mode <octal>   permission bits of the socket file (default 0600)
  -q, --quiet          no status lines on stderr (errors are still printed)
  -h, --help           show this help

Exit status: 0 stopped by a signal, --count reached or stdout closed;
1 cannot listen (e.g. ERR_ADDRESS_IN_USE); 2 usage error.
`;

const SEND_HELP = `Usage: uds-ipc send <path> [options] [message...]

Connects to the reader at <path> and sends each argument as one message; with
no message arguments, sends each line of stdin as one message (the bytes
between newlines, unchanged; an empty line is an empty message; a last line
without a newline is sent too). Waits until every message has been accepted
by the socket, then exits 0. Put -- before messages that start with '-'.

Options:
  -f, --format <fmt>     how messages are given (default text):
                           text  as is (arguments as UTF-8, stdin lines as bytes)
                           hex   hex digits, whitespace ignored (00ff0a)
  -t, --timeout-ms <ms>  give up when no connection to a reader is up for this
                         long, at the start or after losing it (default 5000)
  -h, --help             show this help

Exit status: 0 all messages sent; 1 runtime error, e.g. ERR_CONNECT_FAILED
when no reader accepts the connection within --timeout-ms; 2 usage error.
`;

const BENCH_HELP = `Usage: uds-ipc bench [options]

Throughput between two processes: for each size, starts a reader process and
a writer process (this tool, run again) on a socket in a temp directory; the
writer sends N messages as fast as the reader takes them; the reader checks
that each arrives whole and in order. Prints one table row per size on stdout:
time is from the writer's first write to the reader's last message;
MB/s is 10^6 payload bytes per second. A progress line is shown on stderr when
it is a terminal.

Options:
  -s, --size <list>   comma-separated message sizes in bytes (default 64,1024,102400)
  -n, --count <N>     messages per size (default: scaled by size, about 1 s each)
  -h, --help          show this help

Exit status: 0 ok; 1 a run failed (lost or corrupted message, a process
failed); 2 usage error.
`;

const HELP: Record<string, string> = { listen: LISTEN_HELP, send: SEND_HELP, bench: BENCH_HELP };

// ─── small helpers ──────────────────────────────────────────────────────────

function out(s: string): void {
  process.stdout.write(s);
}

function err(s: string): void {
  process.stderr.write(s.endsWith('\n') ? s : s + '\n');
}

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** parseArgs, turning its errors (unknown option, missing value...) into usage errors. */
function parse<O extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
  cmd: string,
  args: string[],
  options: O,
): { values: { [K in keyof O]?: O[K]['type'] extends 'string' ? string : boolean }; positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true });
    return r as unknown as ReturnType<typeof parse<O>>;
  } catch (e) {
    // Node's messages may span lines; a usage error is one line.
    throw new UsageError(`${cmd}: ${(e as Error).message.replace(/\s*\n\s*/g, ' ')}`);
  }
}

function positiveInt(cmd: string, name: string, s: string, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max) {
    throw new UsageError(`${cmd}: invalid value for ${name}: '${s}' (expected an integer from 1 to ${max})`);
  }
  return n;
}

function choice<T extends string>(cmd: string, name: string, s: string | undefined, allowed: readonly T[], def: T): T {
  if (s === undefined) return def;
  if (!(allowed as readonly string[]).includes(s)) {
    throw new UsageError(`${cmd}: invalid value for ${name}: '${s}' (expected ${allowed.join(', ')})`);
  }
  return s as T;
}

function onePath(cmd: string, positionals: string[]): string {
  if (positionals.length === 0) throw new UsageError(`${cmd}: missing <path>`);
  if (positionals.length > 1) throw new UsageError(`${cmd}: unexpected argument '${positionals[1]}'`);
  return positionals[0];
}

/**
 * Bad arguments found by the Reader/Writer constructors (an invalid or too long
 * path) are usage errors; anything else (e.g. ERR_ADDON_LOAD) is a runtime error.
 */
function constructing<T>(cmd: string, make: () => T): T {
  try {
    return make();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (e instanceof TypeError || e instanceof RangeError || code === 'ERR_PATH_TOO_LONG') {
      throw new UsageError(`${cmd}: ${typeof code === 'string' ? code + ': ' : ''}${(e as Error).message}`);
    }
    throw e;
  }
}

/** "connect failed: No such file or directory (ENOENT)" from an IpcError with errno. */
function describeError(e: unknown): string {
  const x = e as { message?: string; errno?: number; code?: string };
  let s = x?.message ?? String(e);
  if (typeof x?.errno === 'number' && x.errno > 0) {
    try {
      s += ` (${getSystemErrorName(-x.errno)})`;
    } catch {
      // unknown errno: leave it out
    }
  }
  return s;
}

/** Decodes hex digits (ASCII whitespace ignored); undefined if not valid hex. */
function fromHex(s: string): Buffer | undefined {
  const t = s.replace(/[ \t\r\n\f\v]+/g, '');
  if (t.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(t)) return undefined;
  return Buffer.from(t, 'hex');
}

// ─── text escaping ──────────────────────────────────────────────────────────

const HEX = '0123456789abcdef';

function hex2(b: number): string {
  return HEX[b >> 4] + HEX[b & 15];
}

/** Length of the valid UTF-8 sequence at b[i] (a non-ASCII lead byte), or 0. */
function utf8Length(b: Uint8Array, i: number, n: number): number {
  const c = b[i];
  const cont = (j: number, lo = 0x80, hi = 0xbf): boolean => j < n && b[j] >= lo && b[j] <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const lo = c === 0xe0 ? 0xa0 : 0x80;
    const hi = c === 0xed ? 0x9f : 0xbf; // no UTF-16 surrogates
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const lo = c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xf4 ? 0x8f : 0xbf; // at most U+10FFFF
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/**
 * One message as one line of text: UTF-8, with `\` `\n` `\r` `\t` escaped as
 * such, other C0 controls and DEL as `\xHH`, C1 controls and U+2028/U+2029 as
 * `\uHHHH`, and each byte that is not part of valid UTF-8 as `\xHH` (always
 * 80-ff, so never confused with an escaped control character).
 */
export function escapeText(b: Buffer): string {
  let s = '';
  let run = 0; // start of the bytes not yet appended, all needing no escape
  const n = b.length;
  let i = 0;
  while (i < n) {
    const c = b[i];
    if (c >= 0x20 && c < 0x7f && c !== 0x5c) {
      i++;
      continue;
    }
    let len = 0;
    let esc: string;
    if (c < 0x80) {
      esc = c === 0x5c ? '\\\\' : c === 0x0a ? '\\n' : c === 0x0d ? '\\r' : c === 0x09 ? '\\t' : '\\x' + hex2(c);
      len = 1;
    } else {
      len = utf8Length(b, i, n);
      if (len === 0) {
        esc = '\\x' + hex2(c);
        len = 1;
      } else if (len === 2 && c === 0xc2 && b[i + 1] <= 0x9f) {
        esc = '\\u00' + hex2(b[i + 1]); // C1 control U+0080..U+009F (C2 80..C2 9F)
      } else if (len === 3 && c === 0xe2 && b[i + 1] === 0x80 && (b[i + 2] === 0xa8 || b[i + 2] === 0xa9)) {
        esc = b[i + 2] === 0xa8 ? '\\u2028' : '\\u2029';
      } else {
        i += len; // printable: part of the run
        continue;
      }
    }
    if (i > run) s += b.toString('utf8', run, i);
    s += esc;
    i += len;
    run = i;
  }
  if (run === 0) return b.toString('utf8');
  if (run < n) s += b.toString('utf8', run, n);
  return s;
}

type Format = 'text' | 'hex' | 'json';

function formatMessage(format: Format, msg: Buffer, conn: Connection): string {
  if (format === 'hex') return msg.toString('hex');
  if (format === 'text') return escapeText(msg);
  const utf8 = isUtf8(msg);
  return JSON.stringify({
    conn: conn.id,
    pid: conn.pid,
    uid: conn.uid,
    len: msg.length,
    encoding: utf8 ? 'utf8' : 'base64',
    data: msg.toString(utf8 ? 'utf8' : 'base64'),
  });
}

// ─── listen ─────────────────────────────────────────────────────────────────

async function listen(args: string[]): Promise<number> {
  const cmd = 'listen';
  const { values, positionals } = parse(cmd, args, {
    format: { type: 'string', short: 'f' },
    count: { type: 'string', short: 'n' },
    mode: { type: 'string', short: 'm' },
    quiet: { type: 'boolean', short: 'q' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    out(LISTEN_HELP);
    return EXIT_OK;
  }
  const path = onePath(cmd, positionals);
  const format = choice<Format>(cmd, '--format', values.format, ['text', 'hex', 'json'], 'text');
  const count = values.count === undefined ? Infinity : positiveInt(cmd, '--count', values.count);
  let mode: number | undefined;
  if (values.mode !== undefined) {
    const m = /^(?:0o|0)?([0-7]{1,3})$/i.exec(values.mode);
    if (!m) throw new UsageError(`${cmd}: invalid value for --mode: '${values.mode}' (expected octal permission bits, e.g. 0600)`);
    mode = parseInt(m[1], 8);
    if (path.startsWith('@')) throw new UsageError(`${cmd}: --mode does not apply to an abstract socket (${path}): it has no file`);
  }
  const quiet = values.quiet === true;
  const stdout = process.stdout;

  let printed = 0;
  let done = false; // no more output (count reached, stopping, or stdout gone)
  let exitCode = EXIT_OK;
  let stopping: Promise<void> | undefined;
  let drainWaiters: (() => void)[] = [];
  const releaseDrain = (): void => {
    const w = drainWaiters;
    drainWaiters = [];
    for (const f of w) f();
  };
  stdout.on('drain', releaseDrain);

  const handler = (batch: Batch): void | Promise<void> => {
    if (done) return;
    const n = Math.min(batch.length, count - printed);
    let s = '';
    for (let i = 0; i < n; i++) s += formatMessage(format, batch.at(i)!, batch.connection) + '\n';
    printed += n;
    const room = stdout.write(s);
    if (printed >= count) {
      void shutdown(EXIT_OK);
      return;
    }
    // stdout is behind: hold back the next batch (and so, in the end, the writers).
    if (!room) return new Promise<void>((resolve) => drainWaiters.push(resolve));
  };

  const reader = constructing(cmd, () =>
    new Reader(path, handler, {
      mode,
      onError: (e, context, connection) => {
        const conn = connection as Connection | undefined;
        const who = conn ? ` (connection ${conn.id}, pid ${conn.pid})` : '';
        err(`uds-ipc ${cmd}: warning: ${context}${who}: ${(e as { code?: string }).code ?? 'ERROR'}: ${e.message}`);
      },
    }),
  );

  let started = false;
  let signalled = false;
  let stopped!: () => void;
  const finished = new Promise<void>((resolve) => (stopped = resolve));
  // Stops the reader (it delivers what it already received, then removes the socket file).
  function shutdown(code: number): Promise<void> {
    if (stopping) return stopping;
    done = true;
    exitCode = code;
    releaseDrain();
    stopping = reader.stop({ timeoutMs: 5000 }).then(stopped, stopped);
    return stopping;
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled && stopping) {
      err(`uds-ipc ${cmd}: ${sig} again: exiting without waiting for the reader to stop`);
      process.exit(EXIT_ERROR);
    }
    signalled = true;
    if (started) void shutdown(EXIT_OK);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  stdout.on('error', (e: NodeJS.ErrnoException) => {
    done = true;
    if (e.code !== 'EPIPE') err(`uds-ipc ${cmd}: cannot write to stdout: ${e.message}`);
    void shutdown(e.code === 'EPIPE' ? EXIT_OK : EXIT_ERROR);
  });

  try {
    await reader.start();
  } catch (e) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    const code = (e as { code?: string }).code;
    throw new CliError(code, describeError(e));
  }
  started = true;
  if (!quiet) err(`uds-ipc ${cmd}: listening on ${path} (format ${format})`);
  if (signalled) void shutdown(EXIT_OK);

  await finished;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (!quiet) err(`uds-ipc ${cmd}: stopped after ${printed} message${printed === 1 ? '' : 's'}`);
  return exitCode;
}

// ─── send ───────────────────────────────────────────────────────────────────

async function send(args: string[]): Promise<number> {
  const cmd = 'send';
  const { values, positionals } = parse(cmd, args, {
    format: { type: 'string', short: 'f' },
    'timeout-ms': { type: 'string', short: 't' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    out(SEND_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new UsageError(`${cmd}: missing <path>`);
  const [path, ...texts] = positionals;
  const format = choice(cmd, '--format', values.format, ['text', 'hex'] as const, 'text');
  const timeoutMs = values['timeout-ms'] === undefined ? 5000 : positiveInt(cmd, '--timeout-ms', values['timeout-ms'], 2 ** 31 - 1);
  const messages: (string | Buffer)[] = texts.map((t, i) => {
    if (format === 'text') return t;
    const b = fromHex(t);
    if (!b) throw new UsageError(`${cmd}: message ${i + 1} is not valid hex: '${t.length > 40 ? t.slice(0, 40) + '…' : t}'`);
    return b;
  });

  const writer = constructing(cmd, () =>
    new Writer(path, {
      // Retry soon after a refused connect: a reader starting a moment later is found quickly.
      reconnect: { initialDelayMs: 50, maxDelayMs: 1000 },
    }),
  );
  const maxMessage = DEFAULT_MAX_MESSAGE_SIZE;

  // Rejects when sending cannot go on: no connection for timeoutMs, or a fatal writer error.
  let fail!: (e: CliError) => void;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failed.catch(() => undefined);
  let lastError: unknown;
  let timer: NodeJS.Timeout | undefined;
  let ending = false;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const prefix = `cannot connect to ${path}: `;
      let why = lastError === undefined ? '' : describeError(lastError);
      if (why.startsWith(prefix)) why = why.slice(prefix.length);
      fail(new CliError('ERR_CONNECT_FAILED', `cannot connect to ${path} within ${timeoutMs} ms${why ? ': ' + why : ''}`));
    }, timeoutMs);
  };
  writer.on('connect', () => {
    clearTimeout(timer);
    timer = undefined;
  });
  writer.on('disconnect', (reason?: unknown) => {
    if (reason !== undefined) lastError = reason;
    if (!ending) arm();
  });
  writer.on('reconnecting', (info: { error: unknown }) => {
    lastError = info.error;
  });
  writer.on('error', (e: Error & { code?: string }) => {
    fail(new CliError(e.code, describeError(e)));
  });

  const waitDrain = (): Promise<unknown> =>
    Promise.race([new Promise<void>((resolve) => writer.once('drain', () => resolve())), failed]);
  const put = async (m: string | Buffer): Promise<void> => {
    while (!writer.write(m)) await waitDrain();
  };

  const produce = async (): Promise<void> => {
    if (messages.length > 0) {
      for (const m of messages) if (!writer.write(m)) await put(m);
      return;
    }
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let line = 0;
    // Queues one line; a promise only when the queue is full (awaiting for every
    // line would hand each one to the socket separately).
    const emit = (bytes: Buffer): Promise<void> | undefined => {
      line++;
      let m: Buffer | undefined = bytes;
      if (format === 'hex') {
        m = fromHex(bytes.toString('latin1'));
        if (!m) throw new CliError(undefined, `line ${line} of stdin is not valid hex`);
      }
      return writer.write(m) ? undefined : put(m);
    };
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        if (nl < 0) break;
        let p: Promise<void> | undefined;
        if (pendingBytes === 0) p = emit(chunk.subarray(start, nl));
        else {
          pending.push(chunk.subarray(start, nl));
          const whole = Buffer.concat(pending);
          pending = [];
          pendingBytes = 0;
          p = emit(whole);
        }
        if (p) await p;
        start = nl + 1;
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start));
        pendingBytes += chunk.length - start;
        // A line longer than any message can be: fail now rather than buffer it all.
        if (pendingBytes > (format === 'hex' ? 2 * maxMessage + 1024 : maxMessage)) {
          throw new CliError(
            'ERR_MESSAGE_TOO_LARGE',
            `line ${line + 1} of stdin is longer than the largest message (${maxMessage} bytes)`,
          );
        }
      }
    }
    if (pendingBytes > 0) await emit(Buffer.concat(pending));
  };

  writer.start();
  arm();
  const producing = produce();
  producing.catch(() => undefined); // raced below; a late failure after giving up is moot
  try {
    await Promise.race([producing, failed]);
    await Promise.race([writer.flush(), failed]);
  } catch (e) {
    ending = true;
    clearTimeout(timer);
    const { discarded } = await writer.stop({ timeoutMs: 0 });
    const code = e instanceof CliError ? e.code : (e as { code?: string }).code;
    const unsent = discarded > 0 ? ` (${discarded} message${discarded === 1 ? '' : 's'} not sent)` : '';
    throw new CliError(code, `${e instanceof CliError ? e.message : describeError(e)}${unsent}`);
  }
  ending = true;
  clearTimeout(timer);
  const { discarded } = await writer.stop({ timeoutMs });
  if (discarded > 0) {
    throw new CliError(undefined, `${discarded} message${discarded === 1 ? '' : 's'} could not be sent within ${timeoutMs} ms`);
  }
  return EXIT_OK;
}

// ─── bench ──────────────────────────────────────────────────────────────────

/** Wall-clock milliseconds with sub-ms resolution, comparable between processes of one host. */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** About one second's worth of messages of this size (2 significant digits). */
function defaultCount(size: number): number {
  const n = 1 / (0.15e-6 + size / 1.6e9);
  const p = 10 ** Math.max(0, Math.floor(Math.log10(n)) - 1);
  return Math.min(5_000_000, Math.max(100, Math.round(n / p) * p));
}

function sizeLabel(size: number): string {
  if (size >= 1024 * 1024 && size % (1024 * 1024) === 0) return `${size / (1024 * 1024)} MiB`;
  if (size >= 1024 && size % 1024 === 0) return `${size / 1024} KiB`;
  return `${size} B`;
}

type BenchMsg = { type: string; [k: string]: number | string | boolean };

/** A bench child process (this script again), talking over an IPC channel. */
class BenchChild {
  readonly child: ChildProcess;
  readonly messages: BenchMsg[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  onMessage: ((m: BenchMsg) => void) | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [__filename, ...args], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.child.on('message', (m: BenchMsg) => {
      this.messages.push(m);
      this.onMessage?.(m);
      this.#wake();
    });
    this.child.on('exit', (code, signal) => {
      this.exit = { code, signal };
      this.#wake();
    });
    this.child.on('error', () => {
      this.exit ??= { code: null, signal: null };
      this.#wake();
    });
  }

  #wake(): void {
    for (const f of [...this.#waiters]) f();
  }

  /** Resolves with the first message of this type; rejects if the process exits first or after timeoutMs. */
  wait(type: string, what: string, timeoutMs = 0): Promise<BenchMsg> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const check = (): void => {
        const m = this.messages.find((x) => x.type === type);
        if (m || this.exit) {
          this.#waiters.delete(check);
          clearTimeout(timer);
          if (m) resolve(m);
          else reject(new CliError(undefined, `the ${what} process exited (${this.exit!.signal ?? 'code ' + this.exit!.code})`));
        }
      };
      this.#waiters.add(check);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.#waiters.delete(check);
          reject(new CliError(undefined, `the ${what} process did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      check();
    });
  }

  exited(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.kill(), timeoutMs);
      const check = (): void => {
        if (!this.exit) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(this.exit);
      };
      this.#waiters.add(check);
      check();
    });
  }

  kill(): void {
    if (!this.exit) this.child.kill('SIGKILL');
  }
}

/** Awaits p, failing with `what` after ms. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError(undefined, `${what} within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function bench(args: string[]): Promise<number> {
  const cmd = 'bench';
  const { values, positionals } = parse(cmd, args, {
    size: { type: 'string', short: 's' },
    count: { type: 'string', short: 'n' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    out(BENCH_HELP);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`${cmd}: unexpected argument '${positionals[0]}'`);
  const sizes = (values.size ?? '64,1024,102400')
    .split(',')
    .map((s) => positiveInt(cmd, '--size', s.trim(), 64 * 1024 * 1024));
  const fixedCount = values.count === undefined ? undefined : positiveInt(cmd, '--count', values.count, 2 ** 31 - 1);
  const tty = process.stderr.isTTY === true;

  const children = new Set<BenchChild>();
  const dirs = new Set<string>();
  const cleanup = (): void => {
    for (const c of children) c.kill();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (tty) process.stderr.write('\r\x1b[K');
    err(`uds-ipc ${cmd}: interrupted (${sig})`);
    cleanup();
    process.exit(EXIT_ERROR);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const cols = ['size', 'messages', 'msgs/s', 'MB/s', 'seconds'];
  const widths = [9, 10, 11, 9, 8];
  const row = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i])).join('  ') + '\n';
  out(row(cols));
  try {
    for (const size of sizes) {
      const count = fixedCount ?? defaultCount(size);
      const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-bench-'));
      dirs.add(dir);
      const sock = join(dir, 'bench.sock');
      const label = sizeLabel(size);
      const reader = new BenchChild(['__bench-reader', sock, String(size), String(count), tty ? '1' : '0']);
      children.add(reader);
      let writer: BenchChild | undefined;
      try {
        if (tty) {
          reader.onMessage = (m) => {
            if (m.type === 'progress') {
              const n = m.n as number;
              process.stderr.write(`\r\x1b[K${label}: ${n} / ${count} messages (${Math.floor((n / count) * 100)}%)`);
            }
          };
          process.stderr.write(`\r\x1b[K${label}: starting`);
        }
        await reader.wait('ready', 'reader', 30_000);
        writer = new BenchChild(['__bench-writer', sock, String(size), String(count)]);
        children.add(writer);
        // Whichever process fails first fails the run (a dead reader would leave the writer waiting);
        // once one is done, the other has a minute to be done too.
        const readerDone = reader.wait('done', 'reader');
        const writerDone = writer.wait('done', 'writer');
        readerDone.catch(() => undefined);
        writerDone.catch(() => undefined);
        await Promise.race([readerDone, writerDone]);
        const [r, w] = await within(Promise.all([readerDone, writerDone]), 60_000, `${label}: the reader and writer did not both finish`);
        const [re, we] = await Promise.all([reader.exited(10_000), writer.exited(10_000)]);
        if (tty) process.stderr.write('\r\x1b[K');
        if (r.received !== count || (r.bad as number) > 0) {
          throw new CliError(undefined, `${label}: the reader got ${r.received} of ${count} messages, ${r.bad} of them wrong`);
        }
        if (re.code !== 0 || we.code !== 0) {
          throw new CliError(undefined, `${label}: a process failed (reader exit ${re.signal ?? re.code}, writer exit ${we.signal ?? we.code})`);
        }
        const seconds = Math.max(((r.end as number) - (w.start as number)) / 1000, 1e-6);
        out(
          row([
            label,
            String(count),
            String(Math.round(count / seconds)),
            ((count * size) / seconds / 1e6).toFixed(1),
            seconds < 0.1 ? seconds.toPrecision(3) : seconds.toFixed(3), // never "0.000" for a tiny run
          ]),
        );
      } finally {
        reader.kill();
        writer?.kill();
        children.delete(reader);
        if (writer) children.delete(writer);
        rmSync(dir, { recursive: true, force: true });
        dirs.delete(dir);
      }
    }
  } catch (e) {
    if (tty) process.stderr.write('\r\x1b[K');
    throw e;
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return EXIT_OK;
}

// Hidden subcommands run by `bench` (over an IPC channel, never by hand).

function ipcChild(cmd: string): (m: BenchMsg) => Promise<void> {
  if (typeof process.send !== 'function') throw new UsageError(`${cmd} is internal to 'uds-ipc bench'`);
  // If the bench process goes away, so do we.
  process.on('disconnect', () => process.exit(EXIT_ERROR));
  process.channel?.unref();
  return (m) =>
    new Promise<void>((resolve, reject) => {
      process.send!(m, undefined, undefined, (e: Error | null) => (e ? reject(e) : resolve()));
    });
}

function benchArgs(cmd: string, args: string[]): { path: string; size: number; count: number; flag: boolean } {
  if (args.length < 3) throw new UsageError(`${cmd}: expected <path> <size> <count>`);
  return {
    path: args[0],
    size: positiveInt(cmd, 'size', args[1]),
    count: positiveInt(cmd, 'count', args[2]),
    flag: args[3] === '1',
  };
}

async function benchReader(args: string[]): Promise<number> {
  const cmd = '__bench-reader';
  const post = ipcChild(cmd);
  const { path, size, count, flag: progress } = benchArgs(cmd, args);
  const seqBytes = Math.min(4, size);
  let n = 0;
  let bad = 0;
  let errors = 0;
  let end = 0;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const reader = new Reader(
    path,
    (batch) => {
      batch.visit((bytes, start, stop) => {
        // Message i carries i (little-endian) in its first bytes.
        let ok = stop - start === size;
        for (let k = 0; k < seqBytes && ok; k++) ok = bytes[start + k] === ((n >>> (8 * k)) & 0xff);
        if (!ok) bad++;
        n++;
      });
      if (n >= count && end === 0) {
        end = nowMs();
        finish();
      }
    },
    {
      maxMessageSize: Math.max(size, DEFAULT_MAX_MESSAGE_SIZE),
      onError: (e, context) => {
        errors++;
        err(`uds-ipc bench reader: ${context}: ${(e as { code?: string }).code}: ${e.message}`);
      },
    },
  );
  await reader.start();
  await post({ type: 'ready' });
  const ticker = progress ? setInterval(() => void post({ type: 'progress', n }).catch(() => undefined), 200) : undefined;
  await finished;
  clearInterval(ticker);
  await reader.stop({ timeoutMs: 5000 });
  await post({ type: 'done', end, received: n, bad, errors });
  return errors > 0 ? EXIT_ERROR : EXIT_OK;
}

async function benchWriter(args: string[]): Promise<number> {
  const cmd = '__bench-writer';
  const post = ipcChild(cmd);
  const { path, size, count } = benchArgs(cmd, args);
  const writer = new Writer(path, {
    maxMessageSize: Math.max(size, DEFAULT_MAX_MESSAGE_SIZE),
    reconnect: { initialDelayMs: 20, maxDelayMs: 500 },
  });
  const st: { fatal?: Error & { code?: string } } = {};
  const fatal = (): (Error & { code?: string }) | undefined => st.fatal;
  let onFatal: () => void = () => undefined;
  const fatalSeen = new Promise<void>((resolve) => (onFatal = resolve));
  writer.on('error', (e: Error & { code?: string }) => {
    st.fatal ??= e;
    onFatal();
  });
  writer.start();
  const connected = await Promise.race([
    new Promise<boolean>((resolve) => writer.once('connect', () => resolve(true))),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000).unref()),
  ]);
  const f0 = fatal();
  if (!connected || f0) {
    await writer.stop({ timeoutMs: 0 });
    throw new CliError(f0?.code ?? 'ERR_CONNECT_FAILED', `cannot connect to ${path}${f0 ? ': ' + f0.message : ''}`);
  }
  const msg = Buffer.alloc(size, 0x61);
  const seqBytes = Math.min(4, size);
  const start = nowMs();
  for (let i = 0; i < count; ) {
    for (let k = 0; k < seqBytes; k++) msg[k] = (i >>> (8 * k)) & 0xff;
    if (writer.write(msg)) i++;
    else await Promise.race([new Promise<void>((resolve) => writer.once('drain', () => resolve())), fatalSeen]);
    if (fatal()) break;
  }
  await writer.flush().catch(() => undefined);
  const { discarded } = await writer.stop({ timeoutMs: 30_000 });
  const f1 = fatal();
  if (f1) throw new CliError(f1.code, f1.message);
  await post({ type: 'done', start, sent: writer.metrics().sent, discarded });
  return discarded > 0 ? EXIT_ERROR : EXIT_OK;
}

// ─── main ───────────────────────────────────────────────────────────────────

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  listen,
  send,
  bench,
  '__bench-reader': benchReader,
  '__bench-writer': benchWriter,
};

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) throw new UsageError('missing command');
  if (first === '-h' || first === '--help') {
    out(MAIN_HELP);
    return EXIT_OK;
  }
  if (first === '--version') {
    out(version() + '\n');
    return EXIT_OK;
  }
  if (first === 'help') {
    if (rest.length === 0) out(MAIN_HELP);
    else if (rest.length === 1 && HELP[rest[0]]) out(HELP[rest[0]]);
    else throw new UsageError(`help: unknown command '${rest.join(' ')}'`);
    return EXIT_OK;
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'`);
  const run = COMMANDS[first];
  if (!run) throw new UsageError(`unknown command '${first}'`);
  return run(rest);
}

function commandName(argv: string[]): string {
  const c = argv[0];
  return c !== undefined && Object.prototype.hasOwnProperty.call(COMMANDS, c) ? c : '';
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      const cmd = commandName(argv);
      if (e instanceof UsageError) {
        err(`uds-ipc: ${e.message}`);
        err(`Try 'uds-ipc ${cmd && !cmd.startsWith('__') ? cmd + ' ' : ''}--help'.`);
        process.exit(EXIT_USAGE);
      }
      const code = e instanceof CliError ? e.code : (e as { code?: unknown })?.code;
      const msg = (e instanceof CliError ? e.message : describeError(e)).replace(/\s*\n\s*/g, ' ');
      err(`uds-ipc${cmd ? ' ' + cmd : ''}: ${typeof code === 'string' ? code + ': ' : ''}${msg}`);
      process.exit(EXIT_ERROR);
    },
  );
}
