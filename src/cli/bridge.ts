/** `uds-ipc bridge`: carries messages between local sockets and NATS (uds-ipc/nats). */
import { Bridge, readBridgeConfig, type BridgeConfig, type BridgeOptions, type BridgeRoute } from '../nats/index';
import { CliError, EXIT_ERROR, EXIT_OK, UsageError, constructing, describeError, err, out, parse, positiveInt } from './common';

export const BRIDGE_HELP = `Usage: uds-ipc bridge --nats <url> [--listen <path> --publish <subject>]
                      [--subscribe <subject> --connect <path>] [options]
       uds-ipc bridge --config <file> [--nats <url>] [connection options]

Bridges local uds-ipc sockets and NATS, one direction or both in one process:
  --listen <path> --publish <subject>
      a reader on <path>: every message local writers send is published to
      <subject> (a literal subject, no wildcards)
  --subscribe <subject> --connect <path>
      every message on <subject> (wildcards allowed) is written to the
      reader listening on <path>
Message bodies are unchanged; NATS headers Uds-Ipc-Host, Uds-Ipc-Pid and
Uds-Ipc-Uid name the local writer. Without --jetstream: core NATS, at most
once (a full local writer drops, counted). With --jetstream: at least once,
end to end (the local peers must use delivery 'acked'); duplicates possible.
SIGINT/SIGTERM stop it gracefully (what was received is delivered, up to 5 s).

Options:
      --config <file>      a JSON file with any number of routes of both kinds,
                           the JetStream options and the connection options
                           (docs/nats.md); not combined with --listen,
                           --publish, --subscribe, --connect, --durable,
                           --jetstream, --replicas or --ack-wait. --nats and
                           the other connection options below override the
                           file's values.
      --nats <url>         NATS server URL(s), comma-separated (required
                           unless the --config file has "servers"),
                           e.g. nats://127.0.0.1:4222
      --jetstream <stream> JetStream mode; the stream is created (file
                           storage) when it does not exist
      --replicas <n>       replicas of a stream the bridge creates (default 1)
      --durable <name>     durable consumer name of the --subscribe route
                           (default: derived from stream, subject and path)
      --ack-wait <ms>      ack_wait of a durable consumer the bridge creates:
                           how soon JetStream redelivers what a bridge that
                           died held (default 30000)
      --token <token>      NATS token authentication (or UDS_IPC_NATS_TOKEN)
      --user <user>        NATS user (with --password)
      --password <pass>    NATS password (or UDS_IPC_NATS_PASSWORD)
      --creds <file>       NATS credentials file (JWT + nkey seed)
      --tls-ca <file>      CA certificate(s) of the server, PEM; enables TLS

Secrets: a flag's value is visible to other users of the host (ps,
/proc/PID/cmdline). Prefer --creds, or the environment variables
UDS_IPC_NATS_TOKEN and UDS_IPC_NATS_PASSWORD, which the flags override
(and which override a --config file's "token" and "password").
  -q, --quiet              no status lines on stderr (errors are still printed)
  -h, --help               show this help

Exit status: 0 stopped by a signal; 1 runtime error (e.g. ERR_NATS: cannot
connect; ERR_STREAM_MISMATCH; ERR_ADDRESS_IN_USE); 2 usage error (also a
--config file that cannot be read, is not JSON, or has an unknown key, a value
of the wrong type or a missing one: ERR_INVALID_ARG_VALUE, ERR_INVALID_ARG_TYPE
or ERR_OUT_OF_RANGE, with the file's path).
`;

function nonEmptyEnv(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

export async function bridge(args: string[]): Promise<number> {
  const cmd = 'bridge';
  const { values, positionals } = parse(cmd, args, {
    config: { type: 'string' },
    nats: { type: 'string' },
    listen: { type: 'string' },
    publish: { type: 'string' },
    subscribe: { type: 'string' },
    connect: { type: 'string' },
    jetstream: { type: 'string' },
    replicas: { type: 'string' },
    durable: { type: 'string' },
    'ack-wait': { type: 'string' },
    token: { type: 'string' },
    user: { type: 'string' },
    password: { type: 'string' },
    creds: { type: 'string' },
    'tls-ca': { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    out(BRIDGE_HELP);
    return EXIT_OK;
  }
  if (positionals.length) throw new UsageError(`${cmd}: unexpected argument '${positionals[0]}'`);
  const quiet = values.quiet === true;
  const onError: BridgeOptions['onError'] = (e, context) => err(`uds-ipc ${cmd}: warning: ${context}: ${(e as { code?: string }).code ?? 'ERROR'}: ${e.message}`);
  let options: BridgeOptions;
  const configFile = values.config;
  if (configFile !== undefined) {
    // The file holds the routes and the JetStream options: no merging of routes.
    const clash = (['listen', 'publish', 'subscribe', 'connect', 'durable', 'jetstream', 'replicas', 'ack-wait'] as const).filter((k) => values[k] !== undefined);
    if (clash.length) {
      throw new UsageError(`${cmd}: --config ${configFile} holds the routes and the JetStream options: ${clash.map((k) => '--' + k).join(', ')} cannot be combined with it (put ${clash.length > 1 ? 'them' : 'it'} in the file)`);
    }
    let config: BridgeConfig;
    try {
      config = readBridgeConfig(configFile);
    } catch (e) {
      throw usage(cmd, e);
    }
    if (config.servers === undefined && values.nats === undefined) throw new UsageError(`${cmd}: missing --nats <url> ("servers" is not in ${configFile})`);
    options = { ...config, servers: config.servers ?? [], onError };
  } else {
    if (values.nats === undefined) throw new UsageError(`${cmd}: missing --nats <url>`);
    if ((values.listen === undefined) !== (values.publish === undefined)) throw new UsageError(`${cmd}: --listen and --publish go together`);
    if ((values.subscribe === undefined) !== (values.connect === undefined)) throw new UsageError(`${cmd}: --subscribe and --connect go together`);
    if (values.listen === undefined && values.subscribe === undefined) {
      throw new UsageError(`${cmd}: nothing to bridge: give --listen <path> --publish <subject>, --subscribe <subject> --connect <path>, both, or --config <file>`);
    }
    if (values.jetstream === undefined && (values.replicas !== undefined || values.durable !== undefined || values['ack-wait'] !== undefined)) {
      throw new UsageError(`${cmd}: --replicas, --durable and --ack-wait need --jetstream`);
    }
    if (values.durable !== undefined && values.subscribe === undefined) throw new UsageError(`${cmd}: --durable needs --subscribe`);
    const routes: BridgeRoute[] = [];
    if (values.listen !== undefined) routes.push({ listen: values.listen, publish: values.publish! });
    if (values.subscribe !== undefined) routes.push({ subscribe: values.subscribe, connect: values.connect!, ...(values.durable ? { durable: values.durable } : {}) });
    options = { servers: [], routes, onError };
    if (values.jetstream !== undefined) {
      options.jetstream = { stream: values.jetstream };
      if (values.replicas !== undefined) options.jetstream.replicas = positiveInt(cmd, '--replicas', values.replicas, 5);
      if (values['ack-wait'] !== undefined) {
        const ms = positiveInt(cmd, '--ack-wait', values['ack-wait'], 3_600_000);
        if (ms < 1000) throw new UsageError(`${cmd}: invalid value for --ack-wait: '${values['ack-wait']}' (expected an integer from 1000 to 3600000)`);
        options.jetstream.ackWaitMs = ms;
      }
    }
  }
  // Connection: flags, then (secrets) the environment, then the --config file.
  if (values.nats !== undefined) options.servers = values.nats.split(',').map((s) => s.trim());
  const token = values.token ?? nonEmptyEnv('UDS_IPC_NATS_TOKEN');
  const password = values.password ?? nonEmptyEnv('UDS_IPC_NATS_PASSWORD');
  if (token !== undefined) options.token = token;
  if (values.user !== undefined) options.user = values.user;
  if (password !== undefined) options.password = password;
  if (values.creds !== undefined) options.credsFile = values.creds;
  if (values['tls-ca'] !== undefined) options.tlsCaFile = values['tls-ca'];
  const routes = options.routes;
  // The values (subjects, paths, names, ranges) are checked here: a mistake in the file names the file.
  const b = constructing(cmd, () => {
    try {
      return new Bridge(options);
    } catch (e) {
      if (configFile !== undefined && e instanceof Error) e.message = `${configFile}: ${e.message}`;
      throw e;
    }
  });

  let signalled = false;
  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const finished = new Promise<void>((resolve) => (stopped = resolve));
  let started = false;
  const shutdown = (): void => {
    if (!stopping) stopping = b.stop({ timeoutMs: 5000 }).then(stopped, stopped);
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled && stopping) {
      err(`uds-ipc ${cmd}: ${sig} again: exiting without waiting for the bridge to stop`);
      process.exit(EXIT_ERROR);
    }
    signalled = true;
    if (started) shutdown();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await b.start();
  } catch (e) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    throw new CliError((e as { code?: string }).code, describeError(e));
  }
  started = true;
  if (!quiet) {
    const mode = options.jetstream !== undefined ? `JetStream stream ${options.jetstream.stream}` : 'core NATS, at most once';
    for (const r of routes) {
      if ('listen' in r) err(`uds-ipc ${cmd}: ${r.listen} -> ${r.publish as string} (${mode})`);
      else err(`uds-ipc ${cmd}: ${r.subscribe} -> ${r.connect} (${mode})`);
    }
    err(`uds-ipc ${cmd}: ready (NATS max_payload ${b.maxPayload} bytes)`);
  }
  if (signalled) shutdown();
  await finished;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (!quiet) {
    const m = b.metrics();
    err(`uds-ipc ${cmd}: stopped: received ${m.received}, published ${m.published}, written ${m.written}, acked ${m.acked}, dropped ${m.dropped}`);
  }
  return EXIT_OK;
}

/** A TypeError/RangeError with a code (a --config file's mistake) as a usage error; anything else as it is. */
function usage(cmd: string, e: unknown): unknown {
  if (!(e instanceof TypeError || e instanceof RangeError)) return e;
  const code = (e as { code?: unknown }).code;
  return new UsageError(`${cmd}: ${typeof code === 'string' ? code + ': ' : ''}${e.message}`);
}
