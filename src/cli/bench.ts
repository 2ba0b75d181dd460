/**
 * `uds-ipc bench`: throughput between two processes, one size at a time, with
 * the harness of `npm run bench` (../bench/): the uds-ipc reader and writer
 * roles, run by runPair().
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PairError, runPair, udsIpcRole, type RoleLine } from '../bench/pair';
import type { RoleConfig } from '../bench/role';
import { CliError, EXIT_ERROR, EXIT_OK, UsageError, err, out, parse, positiveInt } from './common';

export 
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

export async function bench(args: string[]): Promise<number> {
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

  const interrupt = new AbortController();
  const dirs = new Set<string>();
  const cleanup = (): void => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (tty) process.stderr.write('\r\x1b[K');
    err(`uds-ipc ${cmd}: interrupted (${sig})`);
    interrupt.abort(); // kills the reader and the writer
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
      const label = sizeLabel(size);
      // Every message is checked (length, 4-byte sequence number); the time
      // runs from the writer's first write to the reader's last message.
      const cfg = { mode: 'throughput', path: join(dir, 'bench.sock'), size, count, check: 'each', stamps: true } as const;
      const onLine = (line: RoleLine): void => {
        if (typeof line.progress !== 'number') return;
        const n = line.progress;
        process.stderr.write(`\r\x1b[K${label}: ${n} / ${count} messages (${Math.floor((n / count) * 100)}%)`);
      };
      if (tty) process.stderr.write(`\r\x1b[K${label}: starting`);
      let reader: RoleLine;
      let writer: RoleLine;
      try {
        ({ reader, writer } = await runPair({
          reader: udsIpcRole({ role: 'reader', ...cfg, progressMs: tty ? 200 : undefined } satisfies RoleConfig),
          writer: udsIpcRole({ role: 'writer', ...cfg } satisfies RoleConfig),
          stderr: 'inherit',
          readyTimeoutMs: 30_000,
          lingerMs: 60_000,
          onLine: tty ? onLine : undefined,
          signal: interrupt.signal,
        }));
      } catch (e) {
        throw e instanceof PairError ? new CliError(undefined, `${label}: ${e.message}`) : e;
      } finally {
        rmSync(dir, { recursive: true, force: true });
        dirs.delete(dir);
      }
      if (tty) process.stderr.write('\r\x1b[K');
      if (reader.msgs !== count) throw new CliError(undefined, `${label}: the reader got ${reader.msgs} of ${count} messages`);
      const seconds = Math.max(((reader.endNs as number) - (writer.startNs as number)) / 1e9, 1e-6);
      out(
        row([
          label,
          String(count),
          String(Math.round(count / seconds)),
          ((count * size) / seconds / 1e6).toFixed(1),
          seconds < 0.1 ? seconds.toPrecision(3) : seconds.toFixed(3), // never "0.000" for a tiny run
        ]),
      );
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
