/** `uds-ipc send`: a Writer that sends its arguments, or each line of stdin. */
import { Writer } from '../index';
import { CliError, EXIT_OK, UsageError, choice, constructing, describeError, fromHex, out, parse, positiveInt } from './common';

export const SEND_HELP = `Usage: uds-ipc send <path> [options] [message...]

Connects to the reader at <path> and sends each argument as one message; with
no message arguments, sends each line of stdin as one message (the bytes
between newlines, unchanged; an empty line is an empty message; a last line
without a newline is sent too). Waits until every message has been accepted
by the socket, then exits 0. Put -- before messages that start with '-'.

Options:
  -f, --format <fmt>     how messages are given (default text):
                           text  as is (arguments as UTF-8, stdin lines as bytes)
                           hex   hex digits, whitespace ignored (00ff0a)
      --type <type>      socket type: stream (default) or seqpacket
  -t, --timeout-ms <ms>  give up when no connection to a reader is up for this
                         long, at the start or after losing it (default 5000)
  -h, --help             show this help

Exit status: 0 all messages sent; 1 runtime error, e.g. ERR_CONNECT_FAILED
when no reader accepts the connection within --timeout-ms; 2 usage error.
`;

export async function send(args: string[]): Promise<number> {
  const cmd = 'send';
  const { values, positionals } = parse(cmd, args, {
    format: { type: 'string', short: 'f' },
    'timeout-ms': { type: 'string', short: 't' },
    type: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    out(SEND_HELP);
    return EXIT_OK;
  }
  if (positionals.length === 0) throw new UsageError(`${cmd}: missing <path>`);
  const [path, ...texts] = positionals;
  const format = choice(cmd, '--format', values.format, ['text', 'hex'] as const, 'text');
  const type = choice(cmd, '--type', values.type, ['stream', 'seqpacket'] as const, 'stream');
  const timeoutMs = values['timeout-ms'] === undefined ? 5000 : positiveInt(cmd, '--timeout-ms', values['timeout-ms'], 2 ** 31 - 1);
  const messages: (string | Buffer)[] = texts.map((t, i) => {
    if (format === 'text') return t;
    const b = fromHex(t);
    if (!b) throw new UsageError(`${cmd}: message ${i + 1} is not valid hex: '${t.length > 40 ? t.slice(0, 40) + '…' : t}'`);
    return b;
  });

  const writer = constructing(cmd, () =>
    new Writer(path, {
      type,
      // Retry soon after a refused connect: a reader starting a moment later is found quickly.
      reconnect: { initialDelayMs: 50, maxDelayMs: 1000 },
    }),
  );
  const maxMessage = writer.maxMessageSize;

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
