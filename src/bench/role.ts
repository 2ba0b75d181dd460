/**
 * The child side of the benchmark protocol. A role process (a reader or a
 * writer of one implementation) is started as
 *
 *     node <script> '<json RoleConfig>'
 *
 * and writes JSON lines to stdout: `{"ready":true}` once it can take
 * connections (readers), `{"progress":n}` now and then if asked
 * (`progressMs`), and last its result: one object with `"role"`. It exits 0
 * after its result, non-zero on failure (the reason on stderr). The raw C++
 * roles (native/bench/raw_limit.cc) speak the same protocol. The parent side
 * is ./pair.ts.
 */

/** What a role process is asked to do: argv[2] of the process, as JSON. */
export interface RoleConfig {
  role: 'reader' | 'writer';
  /** 'throughput': `count` messages as fast as they go; 'latency': paced at `rate`, stamped. */
  mode?: 'throughput' | 'latency';
  /** The socket path. */
  path: string;
  /** Payload bytes per message. */
  size: number;
  /** Messages in all (latency: including `warmup`). */
  count: number;
  /** uds-ipc reader, throughput: 'visit' (batch.visit(), no object per message, the default) or 'buffer' (one Buffer per message). */
  variant?: 'visit' | 'buffer';
  /**
   * Throughput: how the reader checks what arrived. 'sum' (the default): the
   * sum of the first bytes (message i starts with i & 0xff), `checksumOk`.
   * 'each': every message's length and its 4-byte sequence number, `bad`.
   */
  check?: 'sum' | 'each';
  /** Throughput: the results carry `startNs` (writer: first write) and `endNs` (reader: last message), hrtime. */
  stamps?: boolean;
  /** Reader: writes `{"progress":<messages so far>}` this often (ms). */
  progressMs?: number;
  /** Latency: messages per second. */
  rate?: number;
  /** Latency: messages at the start that are not counted. */
  warmup?: number;
  /** uds-ipc: the socket type (default 'stream'). */
  type?: 'stream' | 'seqpacket' | 'dgram';
  /** uds-ipc: the delivery mode of both ends (default 'at-most-once'). */
  delivery?: 'at-most-once' | 'acked';
}

/** Names this process in the lines fail() prints. */
let who = 'bench role';

/** Reads and checks the configuration (argv[2]); exits with a usage line if it is missing or malformed. */
export function readConfig(raw: string | undefined = process.argv[2]): RoleConfig {
  const usage = `usage: node ${process.argv[1]} '{"role":"reader|writer","mode":"throughput|latency","path":"...","size":64,"count":1000}'`;
  let cfg: RoleConfig;
  try {
    cfg = JSON.parse(raw ?? '') as RoleConfig;
  } catch {
    return fail(usage);
  }
  const bad = (what: string): never => fail(`${usage}\ninvalid config: ${what}`);
  if (cfg === null || typeof cfg !== 'object') bad('not an object');
  if (cfg.role !== 'reader' && cfg.role !== 'writer') bad(`role ${JSON.stringify(cfg.role)}`);
  if (cfg.mode !== undefined && cfg.mode !== 'throughput' && cfg.mode !== 'latency') bad(`mode ${JSON.stringify(cfg.mode)}`);
  if (typeof cfg.path !== 'string' || cfg.path === '') bad('path');
  if (!Number.isSafeInteger(cfg.size) || cfg.size < 0) bad('size');
  if (!Number.isSafeInteger(cfg.count) || cfg.count < 1) bad('count');
  if (cfg.check !== undefined && cfg.check !== 'sum' && cfg.check !== 'each') bad(`check ${JSON.stringify(cfg.check)}`);
  if (cfg.mode === 'latency' && (cfg.check === 'each' || cfg.stamps)) bad('check/stamps are for throughput runs');
  if (cfg.mode === 'latency' && !(typeof cfg.rate === 'number' && cfg.rate > 0)) bad('rate');
  return cfg;
}

/**
 * Sets up a role process: reads its configuration, makes an unhandled
 * rejection fail it, and, when its parent gave it an IPC channel (./pair.ts
 * does for Node roles), exits when that channel closes: a role never outlives
 * the run that started it.
 */
export function roleProcess(): RoleConfig {
  const cfg = readConfig();
  who = cfg.role;
  process.on('unhandledRejection', fail);
  if (process.channel) {
    process.on('disconnect', () => process.exit(1));
    process.channel.unref();
  }
  return cfg;
}

/** Writes one JSON line to stdout (synchronous for pipes on Linux). */
export function emit(obj: object): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

export function ready(): void {
  emit({ ready: true });
}

/** Emits the final result and exits with `code` (stdout to a pipe is written synchronously). */
export function finish(obj: object, code = 0): never {
  emit(obj);
  process.exit(code);
}

/**
 * Dies loudly: the parent shows stderr. An error with a string `code` (an
 * IpcError: something the run met, not a bug) is one line; anything else
 * gets its stack.
 */
export function fail(err: unknown): never {
  const e = err as { code?: unknown; message?: unknown; stack?: unknown } | undefined;
  const line =
    typeof e?.code === 'string' && typeof e.message === 'string'
      ? `${e.code}: ${e.message}`
      : String((e as { stack?: unknown })?.stack ?? err);
  process.stderr.write(`${who}: ${line}\n`);
  process.exit(1);
}
