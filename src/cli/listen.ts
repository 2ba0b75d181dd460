/** `uds-ipc listen`: a Reader that prints every message it receives. */
import { Reader, type Batch, type Connection } from '../index';
import { CliError, EXIT_ERROR, EXIT_OK, UsageError, choice, constructing, describeError, err, onePath, out, parse, positiveInt } from './common';
import { formatMessage, type Format } from './text';

export const LISTEN_HELP = `Usage: uds-ipc listen <path> [options]

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
      --type <type>    socket type: stream (default) or seqpacket
  -q, --quiet          no status lines on stderr (errors are still printed)
  -h, --help           show this help

Exit status: 0 stopped by a signal, --count reached or stdout closed;
1 cannot listen (e.g. ERR_ADDRESS_IN_USE); 2 usage error.
`;

export async function listen(args: string[]): Promise<number> {
  const cmd = 'listen';
  const { values, positionals } = parse(cmd, args, {
    format: { type: 'string', short: 'f' },
    count: { type: 'string', short: 'n' },
    mode: { type: 'string', short: 'm' },
    type: { type: 'string' },
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
  const type = choice(cmd, '--type', values.type, ['stream', 'seqpacket'] as const, 'stream');
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
      type,
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
