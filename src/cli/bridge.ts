/** `uds-ipc bridge`: carries messages between local sockets and NATS (uds-ipc/nats). */
import { Bridge, type BridgeOptions, type BridgeRoute } from '../nats/index';
import { CliError, EXIT_ERROR, EXIT_OK, UsageError, constructing, describeError, err, out, parse, positiveInt } from './common';

export const BRIDGE_HELP = `Usage: uds-ipc bridge --nats <url> [--listen <path> --publish <subject>]
                      [--subscribe <subject> --connect <path>] [options]

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
      --nats <url>         NATS server URL(s), comma-separated (required),
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
UDS_IPC_NATS_TOKEN and UDS_IPC_NATS_PASSWORD, which the flags override.
  -q, --quiet              no status lines on stderr (errors are still printed)
  -h, --help               show this help

Exit status: 0 stopped by a signal; 1 runtime error (e.g. ERR_NATS: cannot
connect; ERR_STREAM_MISMATCH; ERR_ADDRESS_IN_USE); 2 usage error.
`;

function nonEmptyEnv(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

export async function bridge(args: string[]): Promise<number> {
  const cmd = 'bridge';
  const { values, positionals } = parse(cmd, args, {
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
  if (values.nats === undefined) throw new UsageError(`${cmd}: missing --nats <url>`);
  if ((values.listen === undefined) !== (values.publish === undefined)) throw new UsageError(`${cmd}: --listen and --publish go together`);
  if ((values.subscribe === undefined) !== (values.connect === undefined)) throw new UsageError(`${cmd}: --subscribe and --connect go together`);
  if (values.listen === undefined && values.subscribe === undefined) {
    throw new UsageError(`${cmd}: nothing to bridge: give --listen <path> --publish <subject>, --subscribe <subject> --connect <path>, or both`);
  }
  if (values.jetstream === undefined && (values.replicas !== undefined || values.durable !== undefined || values['ack-wait'] !== undefined)) {
    throw new UsageError(`${cmd}: --replicas, --durable and --ack-wait need --jetstream`);
  }
  if (values.durable !== undefined && values.subscribe === undefined) throw new UsageError(`${cmd}: --durable needs --subscribe`);
  const routes: BridgeRoute[] = [];
  if (values.listen !== undefined) routes.push({ listen: values.listen, publish: values.publish! });
  if (values.subscribe !== undefined) routes.push({ subscribe: values.subscribe, connect: values.connect!, ...(values.durable ? { durable: values.durable } : {}) });
  const quiet = values.quiet === true;
  const options: BridgeOptions = {
    servers: values.nats.split(',').map((s) => s.trim()),
    routes,
    onError: (e, context) => err(`uds-ipc ${cmd}: warning: ${context}: ${(e as { code?: string }).code ?? 'ERROR'}: ${e.message}`),
  };
  if (values.jetstream !== undefined) {
    options.jetstream = { stream: values.jetstream };
    if (values.replicas !== undefined) options.jetstream.replicas = positiveInt(cmd, '--replicas', values.replicas, 5);
    if (values['ack-wait'] !== undefined) {
      const ms = positiveInt(cmd, '--ack-wait', values['ack-wait'], 3_600_000);
      if (ms < 1000) throw new UsageError(`${cmd}: invalid value for --ack-wait: '${values['ack-wait']}' (expected an integer from 1000 to 3600000)`);
      options.jetstream.ackWaitMs = ms;
    }
  }
  // Secrets from the environment unless given as flags (see the help).
  const token = values.token ?? nonEmptyEnv('UDS_IPC_NATS_TOKEN');
  const password = values.password ?? nonEmptyEnv('UDS_IPC_NATS_PASSWORD');
  if (token !== undefined) options.token = token;
  if (values.user !== undefined) options.user = values.user;
  if (password !== undefined) options.password = password;
  if (values.creds !== undefined) options.credsFile = values.creds;
  if (values['tls-ca'] !== undefined) options.tlsCaFile = values['tls-ca'];
  const b = constructing(cmd, () => new Bridge(options));

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
    const mode = values.jetstream !== undefined ? `JetStream stream ${values.jetstream}` : 'core NATS, at most once';
    if (values.listen !== undefined) err(`uds-ipc ${cmd}: ${values.listen} -> ${values.publish} (${mode})`);
    if (values.subscribe !== undefined) err(`uds-ipc ${cmd}: ${values.subscribe} -> ${values.connect} (${mode})`);
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
