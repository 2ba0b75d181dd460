#!/usr/bin/env node
/**
 * The `uds-ipc` command-line tool: `listen`, `send`, `bench` and `bridge` (./cli/),
 * built on the public API only. Exit status: 0 success, 1 runtime error,
 * 2 usage error.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bench, BENCH_HELP } from './cli/bench';
import { bridge, BRIDGE_HELP } from './cli/bridge';
import { CliError, EXIT_ERROR, EXIT_OK, EXIT_USAGE, UsageError, describeError, err, out } from './cli/common';
import { listen, LISTEN_HELP } from './cli/listen';
import { send, SEND_HELP } from './cli/send';

const MAIN_HELP = `Usage: uds-ipc <command> [options]

Framed message passing between processes over Unix domain sockets
(wire format: uvarint(length) + payload, compatible with Go uds-ipc).

Commands:
  listen <path>              listen on <path>, print every message received
  send <path> [message...]   send the arguments, or each line of stdin, as messages
  bench                      measure throughput between two processes
  bridge --nats <url> ...    carry messages between local sockets and NATS
                             (--listen <path> --publish <subject>,
                             --subscribe <subject> --connect <path>)
  help [command]             show the help of a command

Options:
  -h, --help                 show this help
      --version              print the version

<path> is a socket file path (at most 107 bytes of UTF-8) or @name for a
Linux abstract socket.

Exit status: 0 success, 1 runtime error (e.g. cannot connect), 2 usage error.
Run 'uds-ipc <command> --help' for the options of a command.
`;

const COMMANDS: Record<string, { run: (args: string[]) => Promise<number>; help: string }> = {
  listen: { run: listen, help: LISTEN_HELP },
  send: { run: send, help: SEND_HELP },
  bench: { run: bench, help: BENCH_HELP },
  bridge: { run: bridge, help: BRIDGE_HELP },
};

function version(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function command(name: string | undefined): (typeof COMMANDS)[string] | undefined {
  return name !== undefined && Object.prototype.hasOwnProperty.call(COMMANDS, name) ? COMMANDS[name] : undefined;
}

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
    else if (rest.length === 1 && command(rest[0])) out(command(rest[0])!.help);
    else throw new UsageError(`help: unknown command '${rest.join(' ')}'`);
    return EXIT_OK;
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'`);
  const cmd = command(first);
  if (!cmd) throw new UsageError(`unknown command '${first}'`);
  return cmd.run(rest);
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      const cmd = command(argv[0]) ? argv[0] : '';
      if (e instanceof UsageError) {
        err(`uds-ipc: ${e.message}`);
        err(`Try 'uds-ipc ${cmd ? cmd + ' ' : ''}--help'.`);
        process.exit(EXIT_USAGE);
      }
      const code = e instanceof CliError ? e.code : (e as { code?: unknown })?.code;
      const msg = (e instanceof CliError ? e.message : describeError(e)).replace(/\s*\n\s*/g, ' ');
      err(`uds-ipc${cmd ? ' ' + cmd : ''}: ${typeof code === 'string' ? code + ': ' : ''}${msg}`);
      process.exit(EXIT_ERROR);
    },
  );
}
