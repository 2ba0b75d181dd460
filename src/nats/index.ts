/**
 * `uds-ipc/nats`: a bridge between uds-ipc sockets and NATS, so that local
 * Readers and Writers reach other hosts through a NATS server or cluster.
 *
 * The NATS clients (`@nats-io/transport-node`, `@nats-io/jetstream`) are
 * optional peer dependencies, loaded by {@link Bridge.start} only: the core
 * package never loads them. See docs/nats.md.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { Reader } from '../reader';
import { Writer } from '../writer';
import type { Batch, Connection } from '../batch';
import { IpcError, invalidType, invalidValue } from '../errors';
import { checkKeys, checkObject, intOption, validatePath, type ReaderOptions, type WriterOptions } from '../options';
import { formatMetrics, type MetricLabels, type MetricSpec } from '../metrics';

// ─── The NATS client, as far as the bridge uses it ───────────────────────────
// Structural types, so that the declarations of uds-ipc/nats do not need the
// optional packages installed.

/** @internal */
interface NatsHeaders {
  set(key: string, value: string): void;
  get(key: string): string;
  readonly code?: number;
  readonly description?: string;
}
/** @internal */
interface NatsMsg {
  subject: string;
  data: Uint8Array;
  headers?: NatsHeaders;
}
/** @internal */
interface NatsSubscription {
  unsubscribe(): void;
}
/** @internal */
interface NatsConnection {
  info?: { max_payload: number; version: string; jetstream?: boolean };
  publish(subject: string, data?: Uint8Array, opts?: { headers?: NatsHeaders; reply?: string }): void;
  subscribe(subject: string, opts: { callback: (err: Error | null, msg: NatsMsg) => void }): NatsSubscription;
  flush(): Promise<void>;
  close(): Promise<void>;
  isClosed(): boolean;
  getServer(): string;
  status(): AsyncIterable<{ type: string }>;
}
/** @internal */
interface PubAck {
  duplicate: boolean;
}
/** @internal */
interface JsMsg {
  data: Uint8Array;
  redelivered: boolean;
  ack(): void;
  working(): void;
  /** Tells JetStream never to deliver it again (@nats-io/jetstream JsMsg.term). */
  term(reason?: string): void;
}
/** @internal */
interface ConsumerMessages extends AsyncIterable<JsMsg> {
  stop(): void;
}
/** @internal */
interface JetStreamClient {
  publish(subject: string, data: Uint8Array, opts: Record<string, unknown>): Promise<PubAck>;
  consumers: { get(stream: string, name: string): Promise<{ consume(opts: Record<string, unknown>): Promise<ConsumerMessages> }> };
}
/** @internal */
interface JetStreamManager {
  streams: {
    info(name: string): Promise<{ config: { subjects?: string[] } }>;
    add(config: Record<string, unknown>): Promise<unknown>;
  };
  consumers: {
    info(stream: string, name: string): Promise<{ config: { filter_subject?: string } }>;
    add(stream: string, config: Record<string, unknown>): Promise<unknown>;
  };
}
/** @internal What the bridge takes from the two packages. */
export interface NatsModules {
  connect(opts: Record<string, unknown>): Promise<NatsConnection>;
  headers(): NatsHeaders;
  credsAuthenticator(creds: Uint8Array): unknown;
  createInbox(): string;
  jetstream(nc: NatsConnection, opts?: Record<string, unknown>): JetStreamClient;
  jetstreamManager(nc: NatsConnection, opts?: Record<string, unknown>): Promise<JetStreamManager>;
}

const PACKAGES = ['@nats-io/transport-node', '@nats-io/jetstream'] as const;

/**
 * @internal Loads the NATS client packages (optional peer dependencies).
 * `req` (tests): load with it instead of this module's `require`.
 * @throws IpcError `ERR_MISSING_DEPENDENCY` naming the packages to install.
 */
export function loadNats(req?: (id: string) => unknown): NatsModules {
  const r = req ?? createRequire(__filename);
  const mods: Record<string, Record<string, unknown>> = {};
  const missing: string[] = [];
  let cause: unknown;
  for (const p of PACKAGES) {
    try {
      mods[p] = r(p) as Record<string, unknown>;
    } catch (e) {
      missing.push(p);
      cause ??= e;
    }
  }
  if (missing.length) {
    throw new IpcError(
      'ERR_MISSING_DEPENDENCY',
      `The NATS bridge needs ${missing.map((m) => `"${m}"`).join(' and ')} (version 3), optional peer dependencies of uds-ipc: npm install ${PACKAGES.join(' ')}`,
      { cause },
    );
  }
  const t = mods[PACKAGES[0]];
  const j = mods[PACKAGES[1]];
  return {
    connect: t.connect as NatsModules['connect'],
    headers: t.headers as NatsModules['headers'],
    credsAuthenticator: t.credsAuthenticator as NatsModules['credsAuthenticator'],
    createInbox: t.createInbox as NatsModules['createInbox'],
    jetstream: j.jetstream as NatsModules['jetstream'],
    jetstreamManager: j.jetstreamManager as NatsModules['jetstreamManager'],
  };
}

// ─── Options ─────────────────────────────────────────────────────────────────

export { readBridgeConfig, parseBridgeConfig, type BridgeConfig } from './config';

/** Chooses the subject of message `index` of a batch (core mode only). */
export type SubjectFunction = (batch: Batch, index: number) => string;

/** A Reader on `listen`: every message local writers send is published to NATS. */
export interface ListenRoute {
  /** The socket path of the bridge's Reader (local writers connect to it). */
  listen: string;
  /** The subject (a literal: no wildcards), or (core mode only) a function choosing it per message. */
  publish: string | SubjectFunction;
  /**
   * Options of the Reader. `maxMessageSize` defaults to the server's
   * `max_payload` less {@link HEADER_RESERVE}, and may not exceed that.
   * `delivery` is set by the bridge (`'acked'` in JetStream mode).
   */
  readerOptions?: ReaderOptions;
}

/** A Writer to `connect`: every message on a NATS subject is written to the local Reader there. */
export interface SubscribeRoute {
  /** The subject to subscribe to (wildcards `*` and `>` allowed). */
  subscribe: string;
  /** The socket path of the local application's Reader. */
  connect: string;
  /** JetStream mode: the durable consumer's name. Default: `uds-ipc-` and a hash of stream, subject and path. */
  durable?: string;
  /** Options of the Writer. `delivery` is set by the bridge (`'acked'` in JetStream mode). */
  writerOptions?: WriterOptions;
}

/** A route of a {@link Bridge}. */
export type BridgeRoute = ListenRoute | SubscribeRoute;

/** JetStream mode: at-least-once end to end. */
export interface JetStreamOptions {
  /** The stream. Created (file storage) covering the routes' subjects when it does not exist. */
  stream: string;
  /** Replicas of a stream the bridge creates (1 to 5, default 1). */
  replicas?: number;
  /** Publishes awaiting the stream's acknowledgement, per bridge (default 1024); also each durable consumer's `max_ack_pending`. */
  maxInFlight?: number;
  /** A durable consumer's `ack_wait` when the bridge creates it, ms (default 30000). The bridge extends it for messages it holds. */
  ackWaitMs?: number;
  /** How long one publish waits for the stream's acknowledgement before it is sent again, ms (default 5000). */
  publishTimeoutMs?: number;
}

/** Options of a {@link Bridge}. */
export interface BridgeOptions {
  /** NATS server URL(s), e.g. `'nats://127.0.0.1:4222'`. */
  servers: string | string[];
  /** The routes: at least one. */
  routes: BridgeRoute[];
  /** Switches every route to JetStream (at-least-once). Without it: core NATS, at most once. */
  jetstream?: JetStreamOptions;
  /** NATS token authentication. */
  token?: string;
  /** NATS user (with `password`). */
  user?: string;
  /** NATS password (with `user`). */
  password?: string;
  /** A NATS credentials file (JWT + nkey seed). */
  credsFile?: string;
  /** A PEM file of the CA(s) that signed the server's certificate; turns TLS on. */
  tlsCaFile?: string;
  /** The connection's name as the server shows it (default `'uds-ipc bridge on HOST'`). */
  name?: string;
  /** How long the first connect may take, ms (default 5000). Later reconnects are the client library's, without limit. */
  connectTimeoutMs?: number;
  /** Called with errors that happen while running (as the `'error'` event, which is emitted only while a listener is attached). */
  onError?: (error: Error, context: BridgeErrorContext) => void;
}

/** Where a running bridge's error came from. */
export type BridgeErrorContext = 'reader' | 'writer' | 'publish' | 'subscribe' | 'nats';

/** Counters of a {@link Bridge} (all routes). */
export interface BridgeMetrics {
  /** Messages taken in: from local writers (listen routes) and from NATS (subscribe routes). */
  received: number;
  /** Messages published to NATS (JetStream mode: and acknowledged by the stream). */
  published: number;
  /** Messages queued to local Writers (subscribe routes). */
  written: number;
  /** JetStream mode: publishes the stream acknowledged, plus NATS messages acknowledged once the local reader had. */
  acked: number;
  /** Messages that came again: flagged by the local writer (`batch.redelivered`) or by JetStream. */
  redelivered: number;
  /** JetStream mode: publishes the stream found to be duplicates (same `Nats-Msg-Id`) and did not store again. */
  duplicates: number;
  /** JetStream mode: publishes sent again after a failure or a timeout (same `Nats-Msg-Id`). */
  retries: number;
  /** Core mode: messages dropped (a local Writer full, or a publish refused by the client). */
  dropped: number;
  /** Errors reported. */
  errors: number;
  /** Messages taken in and not finished: publishes awaiting the stream, NATS messages awaiting the local reader's acknowledgement. */
  inFlight: number;
  /** Whether the NATS connection is up. */
  connected: boolean;
}

const BRIDGE_METRICS: readonly MetricSpec[] = [
  ['received', 'messages_received_total', 'counter', 'Messages taken in: from local writers (listen routes) and from NATS (subscribe routes).'],
  ['published', 'messages_published_total', 'counter', 'Messages published to NATS (JetStream: acknowledged by the stream).'],
  ['written', 'messages_written_total', 'counter', 'Messages queued to local Writers (subscribe routes).'],
  ['acked', 'messages_acked_total', 'counter', 'JetStream: publishes acknowledged by the stream, plus NATS messages acknowledged after the local reader acknowledged them.'],
  ['redelivered', 'messages_redelivered_total', 'counter', 'Messages that came again (flagged by the local writer or by JetStream).'],
  ['duplicates', 'messages_duplicate_total', 'counter', 'JetStream publishes the stream recognised as duplicates (Nats-Msg-Id) and did not store again.'],
  ['retries', 'publish_retries_total', 'counter', 'JetStream publishes sent again after a failure or a timeout (same Nats-Msg-Id).'],
  ['dropped', 'messages_dropped_total', 'counter', 'Core mode: messages dropped (local Writer full, or publish refused).'],
  ['errors', 'errors_total', 'counter', 'Errors reported.'],
  ['inFlight', 'in_flight_messages', 'gauge', 'Messages taken in and not finished (awaiting the stream, or the local reader).'],
  ['connected', 'nats_connected', 'gauge', 'Whether the NATS connection is up (1) or not (0).'],
];

/** Core mode: bytes published between two waits for the server (flush). */
const FLUSH_BYTES = 1024 * 1024;

/** Bytes of `max_payload` kept for the bridge's NATS headers: a Reader's default `maxMessageSize` is `max_payload` less this. */
export const HEADER_RESERVE = 256;
/** Header: the host name of the bridge that took the message in. */
export const HEADER_HOST = 'Uds-Ipc-Host';
/** Header: the pid of the local writer (as `SO_PEERCRED` gave it). */
export const HEADER_PID = 'Uds-Ipc-Pid';
/** Header: the uid of the local writer. */
export const HEADER_UID = 'Uds-Ipc-Uid';

const BRIDGE_KEYS = ['servers', 'routes', 'jetstream', 'token', 'user', 'password', 'credsFile', 'tlsCaFile', 'name', 'connectTimeoutMs', 'onError'];
const LISTEN_KEYS = ['listen', 'publish', 'readerOptions'];
const SUBSCRIBE_KEYS = ['subscribe', 'connect', 'durable', 'writerOptions'];
const JS_KEYS = ['stream', 'replicas', 'maxInFlight', 'ackWaitMs', 'publishTimeoutMs'];

/** True for a subject a message can be published to: dot-separated non-empty tokens, no wildcards, no whitespace. */
export function isLiteralSubject(s: string): boolean {
  return s.length > 0 && !/[\s*>]/.test(s) && s.split('.').every((t) => t.length > 0);
}

/** True for a subject one can subscribe to: as a literal, but a token may be `*`, and the last `>`. */
export function isSubscribeSubject(s: string): boolean {
  if (s.length === 0 || /\s/.test(s)) return false;
  const t = s.split('.');
  return t.every((x, i) => x.length > 0 && (x === '*' || (x === '>' && i === t.length - 1) || !/[*>]/.test(x)));
}

/** True when the stream subject `pattern` matches every subject `subject` (itself maybe a wildcard) stands for. */
export function subjectCovers(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || s[i] === '>') return false;
    if (p[i] === '*') continue;
    if (p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

const NAME_RE = /^[A-Za-z0-9_-]+$/;

function stringOption(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidType(name, 'a string', v);
  if (v.length === 0) throw invalidValue(`The "${name}" option must not be empty`);
  return v;
}

interface ResolvedListen {
  kind: 'listen';
  path: string;
  publish: string | SubjectFunction;
  readerOptions: ReaderOptions;
}
interface ResolvedSubscribe {
  kind: 'subscribe';
  path: string;
  subject: string;
  durable: string | undefined;
  writerOptions: WriterOptions;
}
type ResolvedRoute = ResolvedListen | ResolvedSubscribe;

interface Resolved {
  servers: string[];
  routes: ResolvedRoute[];
  jetstream: Required<JetStreamOptions> | undefined;
  token?: string;
  user?: string;
  password?: string;
  credsFile?: string;
  tlsCaFile?: string;
  name: string;
  connectTimeoutMs: number;
  onError?: (error: Error, context: BridgeErrorContext) => void;
}

function resolveOptions(options: unknown): Resolved {
  if (options === undefined) throw invalidType('options', 'an object', options, 'argument');
  const o = checkObject('options', options);
  checkKeys('Bridge options', o, BRIDGE_KEYS);
  let servers: string[];
  if (typeof o.servers === 'string') servers = [o.servers];
  else if (Array.isArray(o.servers) && o.servers.length > 0 && o.servers.every((s) => typeof s === 'string')) servers = o.servers as string[];
  else throw invalidType('servers', 'a URL string or a non-empty array of them (e.g. "nats://127.0.0.1:4222")', o.servers);
  for (const s of servers) if (s.length === 0 || /\s/.test(s)) throw invalidValue(`Invalid NATS server URL ${JSON.stringify(redactUrls(s))}`);

  let jetstream: Required<JetStreamOptions> | undefined;
  if (o.jetstream !== undefined) {
    const j = checkObject('jetstream', o.jetstream);
    checkKeys('the "jetstream" option', j, JS_KEYS);
    if (typeof j.stream !== 'string') throw invalidType('jetstream.stream', 'a string (the stream name)', j.stream);
    if (!NAME_RE.test(j.stream)) throw invalidValue(`Invalid stream name ${JSON.stringify(j.stream)}: use letters, digits, "-" and "_" only`);
    jetstream = {
      stream: j.stream,
      replicas: intOption('jetstream.replicas', j.replicas, 1, 1, 5),
      maxInFlight: intOption('jetstream.maxInFlight', j.maxInFlight, 1024, 1, 1_000_000),
      ackWaitMs: intOption('jetstream.ackWaitMs', j.ackWaitMs, 30_000, 1000, 3_600_000),
      publishTimeoutMs: intOption('jetstream.publishTimeoutMs', j.publishTimeoutMs, 5000, 100, 600_000),
    };
  }

  if (!Array.isArray(o.routes) || o.routes.length === 0) {
    throw invalidType('routes', 'a non-empty array of routes ({ listen, publish } or { subscribe, connect })', o.routes);
  }
  const routes: ResolvedRoute[] = o.routes.map((r: unknown, i: number): ResolvedRoute => {
    const name = `routes[${i}]`;
    const ro = checkObject(name, r);
    if ('listen' in ro || 'publish' in ro) {
      checkKeys(`${name} (a listen route)`, ro, LISTEN_KEYS);
      const path = validatePath(ro.listen);
      const pub = ro.publish;
      if (typeof pub === 'string') {
        if (!isLiteralSubject(pub)) {
          throw invalidValue(`${name}.publish: ${JSON.stringify(pub)} is not a subject one can publish to: use dot-separated tokens without wildcards (* >) or whitespace, e.g. "app.events"`);
        }
      } else if (typeof pub === 'function') {
        if (jetstream) throw invalidValue(`${name}.publish: a subject function is for core mode only; in JetStream mode give the subject as a string`);
      } else throw invalidType(`${name}.publish`, 'a subject string or a function (batch, index) => subject', pub);
      const readerOptions = checkObject(`${name}.readerOptions`, ro.readerOptions) as ReaderOptions;
      if ('delivery' in readerOptions) throw invalidValue(`${name}.readerOptions.delivery is set by the bridge ('acked' in JetStream mode): leave it out`);
      return { kind: 'listen', path, publish: pub as string | SubjectFunction, readerOptions };
    }
    if ('subscribe' in ro || 'connect' in ro) {
      checkKeys(`${name} (a subscribe route)`, ro, SUBSCRIBE_KEYS);
      if (typeof ro.subscribe !== 'string') throw invalidType(`${name}.subscribe`, 'a subject string', ro.subscribe);
      if (!isSubscribeSubject(ro.subscribe)) {
        throw invalidValue(`${name}.subscribe: ${JSON.stringify(ro.subscribe)} is not a valid subject: dot-separated non-empty tokens, "*" as a whole token, ">" as the last token`);
      }
      const path = validatePath(ro.connect);
      const durable = stringOption(`${name}.durable`, ro.durable);
      if (durable !== undefined && !NAME_RE.test(durable)) throw invalidValue(`Invalid ${name}.durable ${JSON.stringify(durable)}: use letters, digits, "-" and "_" only`);
      if (durable !== undefined && !jetstream) throw invalidValue(`${name}.durable is for JetStream mode (the "jetstream" option)`);
      const writerOptions = checkObject(`${name}.writerOptions`, ro.writerOptions) as WriterOptions;
      if ('delivery' in writerOptions) throw invalidValue(`${name}.writerOptions.delivery is set by the bridge ('acked' in JetStream mode): leave it out`);
      return { kind: 'subscribe', path, subject: ro.subscribe, durable, writerOptions };
    }
    throw invalidValue(`${name} must be { listen, publish } or { subscribe, connect }`);
  });
  // Any number of routes of each kind, but no two Readers on one path, and no
  // two subscribe routes sharing a durable consumer (they would split its
  // messages) or, in core mode, repeating each other (each message twice).
  const listens = new Map<string, number>();
  const subscribes = new Map<string, number>();
  routes.forEach((r, i) => {
    if (r.kind === 'listen') {
      const j = listens.get(r.path);
      if (j !== undefined) throw invalidValue(`routes[${i}] listens on ${JSON.stringify(r.path)}, as routes[${j}] does: one Reader per path (several local writers can share one path)`);
      listens.set(r.path, i);
      return;
    }
    const key = jetstream ? (r.durable ?? defaultDurable(jetstream.stream, r.subject, r.path)) : `${r.subject}\0${r.path}`;
    const j = subscribes.get(key);
    if (j !== undefined) {
      throw invalidValue(
        r.durable !== undefined
          ? `routes[${i}] uses the durable consumer ${JSON.stringify(r.durable)}, as routes[${j}] does: give each subscribe route its own`
          : `routes[${i}] repeats routes[${j}] (subscribe ${JSON.stringify(r.subject)} to ${JSON.stringify(r.path)})`,
      );
    }
    subscribes.set(key, i);
  });

  const token = stringOption('token', o.token);
  const user = stringOption('user', o.user);
  const password = stringOption('password', o.password);
  if ((user === undefined) !== (password === undefined)) throw invalidValue('The "user" and "password" options go together: give both or neither');
  if (token !== undefined && user !== undefined) throw invalidValue('Give either "token" or "user"/"password", not both');
  const onError = o.onError;
  if (onError !== undefined && typeof onError !== 'function') throw invalidType('onError', 'a function', onError);
  return {
    servers,
    routes,
    jetstream,
    token,
    user,
    password,
    credsFile: stringOption('credsFile', o.credsFile),
    tlsCaFile: stringOption('tlsCaFile', o.tlsCaFile),
    name: stringOption('name', o.name) ?? `uds-ipc bridge on ${hostname()}`,
    connectTimeoutMs: intOption('connectTimeoutMs', o.connectTimeoutMs, 5000, 1, 600_000),
    onError: onError as Resolved['onError'],
  };
}

function natsError(what: string, e: unknown): IpcError {
  return new IpcError('ERR_NATS', redactUrls(`${what}: ${(e as Error)?.message ?? String(e)}`), { cause: e });
}

/** Credentials in URLs (`scheme://user:password@host`, `scheme://token@host`) replaced by `***`: errors are printed. */
export function redactUrls(s: string): string {
  return s.replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/@]+@/gi, '$1***@');
}

/**
 * JetStream publishes with many in flight and no timer or request object per
 * message: each goes out as a core publish whose reply subject is one token
 * under a single inbox; the stream's acknowledgements come back there. (The
 * client's `js.publish()` costs about four times as much per message.)
 */
class JetStreamPublisher {
  private readonly inbox: string;
  private next = 0;
  private readonly pending = new Map<string, { resolve: (a: PubAck) => void; reject: (e: Error) => void; sentAt: number }>();
  private readonly sub: NatsSubscription;
  private readonly timer: NodeJS.Timeout;
  closed = false;

  constructor(
    private readonly nc: NatsConnection,
    mods: NatsModules,
    private readonly stream: string,
    private readonly timeoutMs: number,
  ) {
    this.inbox = mods.createInbox();
    this.sub = nc.subscribe(`${this.inbox}.*`, { callback: (err, m) => (err ? undefined : this.onReply(m)) });
    this.timer = setInterval(() => this.expire(), Math.min(250, timeoutMs));
    this.timer.unref();
  }

  publish(subject: string, data: Uint8Array, h: NatsHeaders, msgID: string | undefined): Promise<PubAck> {
    if (this.closed) return Promise.reject(new Error('the bridge stopped'));
    const id = (this.next++).toString(36);
    h.set('Nats-Expected-Stream', this.stream);
    if (msgID !== undefined) h.set('Nats-Msg-Id', msgID);
    return new Promise<PubAck>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, sentAt: Date.now() });
      try {
        this.nc.publish(subject, data, { headers: h, reply: `${this.inbox}.${id}` });
      } catch (e) {
        this.pending.delete(id);
        reject(e as Error);
      }
    });
  }

  private onReply(m: NatsMsg): void {
    const id = m.subject.slice(this.inbox.length + 1);
    const p = this.pending.get(id);
    if (!p) return; // timed out before, and sent again
    this.pending.delete(id);
    if (m.data.length === 0) {
      const code = m.headers?.code ?? 0;
      p.reject(new Error(code === 503 ? 'no responders: no JetStream stream is listening on this subject' : `status ${code} ${m.headers?.description ?? ''}`.trim()));
      return;
    }
    try {
      const r = JSON.parse(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength).toString('utf8')) as { error?: { description?: string; err_code?: number }; duplicate?: boolean };
      if (r.error) p.reject(new Error(`${r.error.description ?? 'JetStream error'} (err_code ${r.error.err_code ?? '?'})`));
      else p.resolve({ duplicate: r.duplicate === true });
    } catch (e) {
      p.reject(e as Error);
    }
  }

  private expire(): void {
    const limit = Date.now() - this.timeoutMs;
    for (const [id, p] of this.pending) {
      if (p.sentAt > limit) continue;
      this.pending.delete(id);
      p.reject(new Error(`no acknowledgement from the stream within ${this.timeoutMs} ms`));
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(new Error('the bridge stopped'));
    this.pending.clear();
  }
}

/** A bounded count of permits (publishes in flight). */
class Window {
  private free: number;
  private waiting: (() => void)[] = [];
  constructor(size: number) {
    this.free = size;
  }
  acquire(): Promise<void> | undefined {
    if (this.free > 0) {
      this.free--;
      return undefined;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }
  release(): void {
    const w = this.waiting.shift();
    if (w) w();
    else this.free++;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface RunningSubscribe {
  route: ResolvedSubscribe;
  writer: Writer;
  sub?: NatsSubscription;
  messages?: ConsumerMessages;
  loop?: Promise<void>;
  held: Set<JsMsg>;
  timer?: NodeJS.Timeout;
}

/** Events of a {@link Bridge}. */
export interface BridgeEvents {
  /** An error while running; emitted only while a listener is attached. */
  error: [error: Error, context: BridgeErrorContext];
}

/**
 * Bridges uds-ipc sockets and NATS, in both directions, in one process.
 *
 * - A listen route `{ listen: PATH, publish: SUBJECT }` runs a Reader on PATH
 *   and publishes every message local writers send to SUBJECT.
 * - A subscribe route `{ subscribe: SUBJECT, connect: PATH }` runs a Writer to
 *   PATH and writes every message of SUBJECT to it.
 *
 * Core mode (default) is at most once; `jetstream: { stream }` is at least
 * once end to end (acknowledged delivery on the local hops). See docs/nats.md.
 */
export class Bridge extends EventEmitter<BridgeEvents> {
  private readonly opts: Resolved;
  private mods?: NatsModules;
  private nc?: NatsConnection;
  private js?: JetStreamClient;
  private publisher?: JetStreamPublisher;
  private readers: Reader[] = [];
  private subs: RunningSubscribe[] = [];
  private window?: Window;
  private state: 'idle' | 'starting' | 'running' | 'stopping' | 'stopped' = 'idle';
  private stopping?: Promise<void>;
  private starting?: Promise<void>;
  private natsUp = false;
  private readonly host = hostname();
  private maxPayloadValue: number | undefined;
  private readonly m = { received: 0, published: 0, written: 0, acked: 0, redelivered: 0, duplicates: 0, retries: 0, dropped: 0, errors: 0, inFlight: 0 };
  private lastRetryReport = 0;
  private unflushed = 0;
  private upWaiters: (() => void)[] = [];
  private retriesUnreported = 0;
  private readonly coreOptions = new WeakMap<Connection, { headers: NatsHeaders }>();

  /**
   * Validates the options; nothing connects before `start()`.
   * @throws TypeError `ERR_INVALID_ARG_TYPE` / `ERR_INVALID_ARG_VALUE`, RangeError `ERR_OUT_OF_RANGE` for invalid options.
   */
  constructor(options: BridgeOptions) {
    super();
    this.opts = resolveOptions(options);
  }

  /** The connected server's `max_payload` (bytes), once started. */
  get maxPayload(): number | undefined {
    return this.maxPayloadValue;
  }

  /**
   * Connects to NATS, checks `max_payload` and (JetStream mode) the stream
   * and consumers, then starts every route's Reader and Writer.
   * @throws IpcError `ERR_MISSING_DEPENDENCY` (NATS clients not installed),
   *   `ERR_NATS` (unreachable, credentials refused, no JetStream),
   *   `ERR_MESSAGE_TOO_LARGE` (a Reader's `maxMessageSize` above what the
   *   server's `max_payload` allows), `ERR_STREAM_MISMATCH`, `ERR_INVALID_STATE`
   *   (started twice), or what a Reader's start throws (`ERR_ADDRESS_IN_USE`...).
   */
  async start(): Promise<this> {
    if (this.state !== 'idle') throw new IpcError('ERR_INVALID_STATE', 'A Bridge can be started once');
    this.state = 'starting';
    this.starting = this.startInner().then(
      () => {
        this.state = 'running';
      },
      async (e: unknown) => {
        await this.teardown(0).catch(() => undefined);
        this.state = 'stopped';
        throw e;
      },
    );
    await this.starting;
    return this;
  }

  private async startInner(): Promise<void> {
    const o = this.opts;
    const mods = (this.mods = loadNats());
    const copts: Record<string, unknown> = {
      servers: o.servers,
      name: o.name,
      timeout: o.connectTimeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
    };
    if (o.token !== undefined) copts.token = o.token;
    if (o.user !== undefined) {
      copts.user = o.user;
      copts.pass = o.password;
    }
    if (o.credsFile !== undefined) {
      let creds: Buffer;
      try {
        creds = readFileSync(o.credsFile);
      } catch (e) {
        throw natsError(`cannot read the credentials file ${o.credsFile}`, e);
      }
      copts.authenticator = mods.credsAuthenticator(new Uint8Array(creds));
    }
    if (o.tlsCaFile !== undefined) copts.tls = { caFile: o.tlsCaFile };
    let nc: NatsConnection;
    try {
      nc = await mods.connect(copts);
    } catch (e) {
      throw natsError(`cannot connect to NATS at ${o.servers.join(', ')}`, e);
    }
    this.nc = nc;
    this.natsUp = true;
    void this.watchStatus(nc);

    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    this.maxPayloadValue = maxPayload;
    const limit = maxPayload - HEADER_RESERVE;
    for (const r of o.routes) {
      if (r.kind !== 'listen') continue;
      const mms = r.readerOptions.maxMessageSize;
      if (mms !== undefined && mms > limit) {
        throw new IpcError(
          'ERR_MESSAGE_TOO_LARGE',
          `The Reader on ${r.path} accepts messages up to maxMessageSize ${mms} bytes, but the NATS server's max_payload is ${maxPayload} bytes (${limit} once the bridge's ${HEADER_RESERVE} bytes of headers are kept): lower maxMessageSize to at most ${limit}, or raise max_payload on the server`,
        );
      }
    }

    if (o.jetstream) {
      if (nc.info && nc.info.jetstream === false) {
        throw new IpcError('ERR_NATS', `The NATS server at ${nc.getServer()} does not have JetStream enabled (start it with -js, or "jetstream {}" in its configuration)`);
      }
      await this.setupStream(o.jetstream);
      this.js = mods.jetstream(nc, { timeout: o.jetstream.publishTimeoutMs });
      this.publisher = new JetStreamPublisher(nc, mods, o.jetstream.stream, o.jetstream.publishTimeoutMs);
      this.window = new Window(o.jetstream.maxInFlight);
    }

    for (const r of o.routes) {
      if (r.kind === 'listen') await this.startListen(r, limit);
      else await this.startSubscribe(r);
    }
    // start() resolves once the server has every subscription (one PING/PONG
    // after the SUBs): in core mode, what is published from then on is
    // delivered, not lost to a SUB still on its way.
    if (!o.jetstream && o.routes.some((r) => r.kind === 'subscribe')) {
      try {
        await nc.flush();
      } catch (e) {
        throw natsError('the NATS server did not confirm the subscriptions', e);
      }
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect' || s.type === 'close') this.setUp(false);
        else if (s.type === 'reconnect') this.setUp(true);
        // Asynchronous errors of the server, e.g. a publish or subscribe the
        // credentials do not permit: reported, never silent.
        else if (s.type === 'error') this.report(natsError('NATS reported an error', (s as { error?: unknown }).error ?? s), 'nats');
      }
    } catch {
      // the status iterator ends with the connection
    }
    this.natsUp = false;
    this.setUp(false);
  }

  private async setupStream(j: Required<JetStreamOptions>): Promise<void> {
    const mods = this.mods!;
    const nc = this.nc!;
    let jsm: JetStreamManager;
    try {
      jsm = await mods.jetstreamManager(nc, { timeout: j.publishTimeoutMs });
    } catch (e) {
      throw natsError('JetStream is not available on this NATS server (is it started with -js?)', e);
    }
    const subjects = this.opts.routes.map((r) => (r.kind === 'listen' ? (r.publish as string) : r.subject));
    let existing: string[] | undefined;
    try {
      existing = (await jsm.streams.info(j.stream)).config.subjects ?? [];
    } catch (e) {
      if (!isNotFound(e)) throw natsError(`cannot look up the JetStream stream "${j.stream}"`, e);
    }
    if (existing === undefined) {
      const own: string[] = [];
      for (const s of subjects) if (!own.some((p) => subjectCovers(p, s))) own.push(s);
      try {
        await jsm.streams.add({ name: j.stream, subjects: own.filter((s) => !own.some((p) => p !== s && subjectCovers(p, s))), storage: 'file', num_replicas: j.replicas });
      } catch (e) {
        throw natsError(`cannot create the JetStream stream "${j.stream}" for ${own.join(', ')}`, e);
      }
    } else {
      for (const s of subjects) {
        if (!existing.some((p) => subjectCovers(p, s))) {
          throw new IpcError(
            'ERR_STREAM_MISMATCH',
            `The JetStream stream "${j.stream}" exists but does not cover the subject "${s}" (its subjects: ${existing.join(', ') || 'none'}): add the subject to the stream, or use another stream`,
          );
        }
      }
    }
    for (const r of this.opts.routes) {
      if (r.kind !== 'subscribe') continue;
      const durable = (r.durable ??= defaultDurable(j.stream, r.subject, r.path));
      let info: { config: { filter_subject?: string } } | undefined;
      try {
        info = await jsm.consumers.info(j.stream, durable);
      } catch (e) {
        if (!isNotFound(e)) throw natsError(`cannot look up the durable consumer "${durable}"`, e);
      }
      if (info) {
        if ((info.config.filter_subject ?? '') !== r.subject) {
          throw new IpcError(
            'ERR_STREAM_MISMATCH',
            `The durable consumer "${durable}" of stream "${j.stream}" exists for subject "${info.config.filter_subject ?? ''}", not "${r.subject}": choose another durable name, or delete it`,
          );
        }
        continue;
      }
      try {
        await jsm.consumers.add(j.stream, {
          durable_name: durable,
          filter_subject: r.subject,
          ack_policy: 'explicit',
          deliver_policy: 'all',
          ack_wait: j.ackWaitMs * 1_000_000,
          max_ack_pending: j.maxInFlight,
        });
      } catch (e) {
        throw natsError(`cannot create the durable consumer "${durable}" on stream "${j.stream}"`, e);
      }
    }
  }

  private report(e: Error, context: BridgeErrorContext): void {
    this.m.errors++;
    this.opts.onError?.(e, context);
    if (this.listenerCount('error') > 0) this.emit('error', e, context);
  }

  private headersFor(conn: Connection): NatsHeaders {
    const h = this.mods!.headers();
    h.set(HEADER_HOST, this.host);
    h.set(HEADER_PID, String(conn.pid));
    h.set(HEADER_UID, String(conn.uid));
    return h;
  }

  /**
   * Core mode: the publish options of a local connection's messages, made
   * once per connection (its host, pid and uid do not change). The client
   * encodes a headers object on every publish (`encode()`, about 8 % of the
   * bridge's time at 1 KiB): these headers are never changed, so their bytes
   * are encoded once and handed out again.
   */
  private coreOptionsFor(conn: Connection): { headers: NatsHeaders } {
    let o = this.coreOptions.get(conn);
    if (o === undefined) {
      const h = this.headersFor(conn) as NatsHeaders & { encode?: () => Uint8Array };
      if (typeof h.encode === 'function') {
        const bytes = h.encode();
        h.encode = () => bytes;
      }
      o = { headers: h };
      this.coreOptions.set(conn, o);
    }
    return o;
  }

  private async startListen(r: ResolvedListen, limit: number): Promise<void> {
    const js = this.opts.jetstream !== undefined;
    const readerOptions: ReaderOptions = {
      ...r.readerOptions,
      maxMessageSize: r.readerOptions.maxMessageSize ?? limit,
      onError: (e, context) => {
        r.readerOptions.onError?.(e, context);
        this.report(e, 'reader');
      },
      ...(js ? { delivery: 'acked' as const } : {}),
    };
    const reader = js
      ? new Reader(r.path, (batch) => this.publishJetStream(r.publish as string, batch), readerOptions)
      : new Reader(r.path, (batch) => this.publishCore(r.publish, batch), readerOptions);
    this.readers.push(reader);
    await reader.start();
  }

  private publishCore(publish: string | SubjectFunction, batch: Batch): void | Promise<void> {
    // NATS away: the client would buffer without limit. Hold this batch (the
    // Reader reads no more meanwhile, so local writers fill and back off)
    // until the client has reconnected, or the bridge stops.
    this.m.received += batch.length;
    if (!this.natsUp && this.nc && !this.nc.isClosed()) {
      const n = batch.length;
      this.m.inFlight += n;
      return this.untilUp().then(() => {
        this.m.inFlight -= n;
        return this.publishCoreNow(publish, batch);
      });
    }
    return this.publishCoreNow(publish, batch);
  }

  private untilUp(): Promise<void> {
    return new Promise((resolve) => this.upWaiters.push(resolve));
  }

  private setUp(up: boolean): void {
    this.natsUp = up;
    if (up || !this.nc || this.nc.isClosed()) {
      const w = this.upWaiters;
      this.upWaiters = [];
      for (const f of w) f();
    }
  }

  private publishCoreNow(publish: string | SubjectFunction, batch: Batch): void | Promise<void> {
    const nc = this.nc!;
    // nc.publish() may keep a reference to the bytes until it flushes: keep the batch's views valid.
    batch.retain();
    const opts = this.coreOptionsFor(batch.connection);
    for (let i = 0; i < batch.length; i++) {
      let subject: string;
      if (typeof publish === 'string') subject = publish;
      else {
        try {
          subject = publish(batch, i);
        } catch (e) {
          this.m.dropped++;
          this.report(e as Error, 'publish');
          continue;
        }
        if (typeof subject !== 'string' || !isLiteralSubject(subject)) {
          this.m.dropped++;
          this.report(invalidValue(`The publish function returned ${JSON.stringify(subject)}, not a subject one can publish to (no wildcards or whitespace): message dropped`), 'publish');
          continue;
        }
      }
      try {
        const data = batch.at(i)!;
        nc.publish(subject, data, opts);
        this.m.published++;
        this.unflushed += data.length + 64;
      } catch (e) {
        this.m.dropped++;
        this.report(natsError(`publish to ${subject} failed`, e), 'publish');
      }
    }
    // Backpressure towards the local writers: the client buffers what it
    // publishes without limit, so every FLUSH_BYTES the handler waits for
    // the server to have it all (one PING/PONG), and the Reader reads no more
    // meanwhile.
    if (this.unflushed >= FLUSH_BYTES && this.natsUp) {
      this.unflushed = 0;
      return nc.flush().catch((e: unknown) => this.report(natsError('flush failed', e), 'publish'));
    }
  }

  private async publishJetStream(subject: string, batch: Batch): Promise<void> {
    const conn = batch.connection;
    const session = conn.session;
    const waits: Promise<void>[] = [];
    for (let i = 0; i < batch.length; i++) {
      this.m.received++;
      if (batch.redelivered(i)) this.m.redelivered++;
      const seq = batch.sequence(i);
      const msgID = session !== undefined && seq !== undefined ? `${session}:${seq}` : undefined;
      const wait = this.window!.acquire();
      if (wait) await wait;
      this.m.inFlight++;
      waits.push(
        this.publishOne(subject, batch.at(i)!, conn, msgID).finally(() => {
          this.m.inFlight--;
          this.window!.release();
        }),
      );
    }
    // The handler returns, and the local writer's messages are acknowledged,
    // only once the stream acknowledged every publish of the batch.
    await Promise.all(waits);
  }

  private async publishOne(subject: string, data: Uint8Array, conn: Connection, msgID: string | undefined): Promise<void> {
    let delay = 100;
    for (;;) {
      try {
        const ack = await this.publisher!.publish(subject, data, this.headersFor(conn), msgID);
        this.m.acked++;
        if (ack.duplicate) this.m.duplicates++;
        else this.m.published++;
        return;
      } catch (e) {
        if (this.state === 'stopped' || this.nc!.isClosed() || this.publisher!.closed) throw natsError(`publish to ${subject} abandoned: the bridge stopped`, e);
        this.m.retries++;
        // Every publish in flight fails at once when NATS goes away: one report per second, with the count.
        const now = Date.now();
        if (now - this.lastRetryReport >= 1000) {
          const more = this.retriesUnreported;
          this.lastRetryReport = now;
          this.retriesUnreported = 0;
          this.report(natsError(`JetStream publish to ${subject} failed${more ? ` (and ${more} more since the last report)` : ''}, sending again in ${delay} ms`, e), 'publish');
        } else this.retriesUnreported++;
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  private async startSubscribe(r: ResolvedSubscribe): Promise<void> {
    const js = this.opts.jetstream;
    const writer = new Writer(r.path, {
      ...r.writerOptions,
      onError: (e, context) => {
        r.writerOptions.onError?.(e, context);
        this.report(e, 'writer');
      },
      ...(js ? { delivery: 'acked' as const } : {}),
    });
    const s: RunningSubscribe = { route: r, writer, held: new Set() };
    this.subs.push(s);
    writer.start();
    if (!js) {
      s.sub = this.nc!.subscribe(r.subject, {
        callback: (err, msg) => {
          if (err) {
            this.report(natsError(`subscription to ${r.subject} failed`, err), 'subscribe');
            return;
          }
          this.m.received++;
          try {
            if (writer.write(msg.data)) this.m.written++;
            else this.m.dropped++;
          } catch (e) {
            // A message the local Writer refuses (larger than its
            // maxMessageSize: anyone who may publish on the subject can send
            // one). Thrown here, it would end the NATS client's read loop.
            this.m.dropped++;
            this.report(e as Error, 'writer');
          }
        },
      });
      return;
    }
    let consumer: { consume(opts: Record<string, unknown>): Promise<ConsumerMessages> };
    try {
      consumer = await this.js!.consumers.get(js.stream, r.durable!);
      // A pull lasts 5 s (the client's default is 30 s): after a NATS node fails, missed heartbeats
      // are noticed and a new pull issued within seconds.
      s.messages = await consumer.consume({ max_messages: Math.min(js.maxInFlight, 512), expires: 5000 });
    } catch (e) {
      throw natsError(`cannot consume from the durable consumer "${r.durable}" of stream "${js.stream}"`, e);
    }
    // Tell JetStream we are working on what we hold, so that it does not
    // deliver it again while the local reader is slow or away.
    s.timer = setInterval(() => {
      for (const m of s.held) m.working();
    }, Math.max(500, Math.floor(js.ackWaitMs / 3)));
    s.timer.unref();
    s.loop = this.consumeLoop(s);
  }

  private async consumeLoop(s: RunningSubscribe): Promise<void> {
    const { writer, held } = s;
    let group: JsMsg[] = [];
    let scheduled = false;
    const settle = (): void => {
      scheduled = false;
      if (group.length === 0) return;
      const g = group;
      group = [];
      // acknowledged() resolves once the local reader acknowledged every
      // message queued so far: then (only then) they are acked to NATS.
      writer.acknowledged().then(
        () => {
          for (const m of g) {
            m.ack();
            held.delete(m);
          }
          this.m.acked += g.length;
          this.m.inFlight -= g.length;
        },
        () => {
          // The writer stopped first: JetStream delivers them again later.
          for (const m of g) held.delete(m);
          this.m.inFlight -= g.length;
        },
      );
    };
    try {
      for await (const m of s.messages!) {
        this.m.received++;
        if (m.redelivered) this.m.redelivered++;
        this.m.inFlight++;
        held.add(m);
        try {
          // Waits while the local writer's window is full: no more pulling meanwhile.
          await writer.send(m.data);
        } catch (e) {
          held.delete(m);
          this.m.inFlight--;
          if (this.state === 'stopping' || this.state === 'stopped') break;
          this.report(e as Error, 'writer');
          if ((e as { code?: unknown }).code === 'ERR_MESSAGE_TOO_LARGE') {
            // It will never fit: delivered again every ack_wait it would
            // come back forever (and, enough of them, hold every slot).
            // JetStream is told to stop; it is counted as dropped.
            try {
              m.term(); // no reason: nats-server 2.9 (Debian 12) does not take one
            } catch {
              // the client is closing: JetStream delivers it again, and it is refused again
            }
            this.m.dropped++;
          }
          continue;
        }
        this.m.written++;
        group.push(m);
        if (group.length >= 256) settle();
        else if (!scheduled) {
          scheduled = true;
          setImmediate(settle);
        }
      }
    } catch (e) {
      if (this.state === 'running') this.report(natsError(`consuming from ${s.route.subject} failed`, e), 'subscribe');
    }
    settle();
  }

  /**
   * Stops: stops taking messages from NATS, lets the Readers deliver (and
   * publish) what they received and the Writers deliver what they hold, up
   * to `timeoutMs` (default 5000) in all, then closes the NATS connection.
   * Idempotent.
   */
  stop(options?: { timeoutMs?: number }): Promise<void> {
    if (this.stopping) return this.stopping;
    const o = checkObject('options', options);
    checkKeys('stop options', o, ['timeoutMs']);
    const timeoutMs = intOption('timeoutMs', o.timeoutMs, 5000, 0, 2_147_483_647);
    if (this.state === 'idle') {
      this.state = 'stopped';
      this.stopping = Promise.resolve();
      return this.stopping;
    }
    this.stopping = (async () => {
      // A start() in progress finishes (or fails) first.
      await this.starting?.catch(() => undefined);
      if (this.state === 'stopped') return;
      this.state = 'stopping';
      await this.teardown(timeoutMs);
      this.state = 'stopped';
    })();
    return this.stopping;
  }

  private async teardown(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(0, deadline - Date.now());
    for (const s of this.subs) {
      s.sub?.unsubscribe();
      s.messages?.stop();
    }
    await Promise.all(this.readers.map((r) => r.stop({ timeoutMs: left() }).catch((e: Error) => this.report(e, 'reader'))));
    await Promise.all(
      this.subs.map(async (s) => {
        await s.writer.stop({ timeoutMs: left() }).catch((e: Error) => this.report(e, 'writer'));
        await s.loop;
        if (s.timer) clearInterval(s.timer);
      }),
    );
    this.publisher?.close();
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      // Flush what was published, but not beyond the deadline (and leave no timer behind).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([nc.flush(), new Promise<void>((r) => (timer = setTimeout(r, left())))]).catch(() => undefined);
      clearTimeout(timer);
      await nc.close().catch(() => undefined);
    }
    this.setUp(false);
  }

  /** The counters, a snapshot. */
  metrics(): BridgeMetrics {
    return { ...this.m, connected: this.natsUp && !!this.nc && !this.nc.isClosed() };
  }

  /**
   * The metrics in the Prometheus text format (as `reader.metricsText()`).
   * @param prefix - Metric name prefix (default `'uds_ipc_bridge'`).
   * @param labels - Labels added to every sample.
   */
  metricsText(prefix: string = 'uds_ipc_bridge', labels?: MetricLabels): string {
    return formatMetrics(prefix, labels, BRIDGE_METRICS, this.metrics());
  }

  /** Stops the bridge (`await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** The default durable consumer name of a subscribe route: stable for the same stream, subject and path. */
export function defaultDurable(stream: string, subject: string, path: string): string {
  return 'uds-ipc-' + createHash('sha256').update(`${stream}\0${subject}\0${path}`).digest('hex').slice(0, 16);
}

function isNotFound(e: unknown): boolean {
  const x = e as { code?: unknown; message?: string; api_error?: { err_code?: number }; apiError?: () => { err_code?: number; code?: number } };
  let api: { err_code?: number; code?: number } | undefined;
  try {
    api = typeof x?.apiError === 'function' ? x.apiError() : x?.api_error;
  } catch {
    api = undefined;
  }
  if (api && (api.err_code === 10059 || api.err_code === 10014 || api.code === 404)) return true;
  return /not found/i.test(x?.message ?? '');
}
