/**
 * A bridge's configuration file (`uds-ipc bridge --config FILE`): JSON with
 * the {@link BridgeOptions} that JSON can hold (no functions, no Reader or
 * Writer options), checked strictly for its structure here; the values
 * (subjects, paths, names, ranges) are checked by the `Bridge` constructor.
 * See docs/nats.md#routes-from-a-configuration-file.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { invalidArg, invalidValue } from '../errors';
import type { BridgeOptions, BridgeRoute, JetStreamOptions } from './index';

/** What a configuration file holds: {@link BridgeOptions} without functions; `servers` may be left to the command line (`--nats`). */
export type BridgeConfig = Omit<BridgeOptions, 'servers' | 'onError' | 'routes'> & {
  servers?: string | string[];
  routes: BridgeRoute[];
};

const FILE_KEYS = ['servers', 'token', 'user', 'password', 'credsFile', 'tlsCaFile', 'name', 'connectTimeoutMs', 'jetstream', 'routes'];
const STRING_KEYS = ['token', 'user', 'password', 'credsFile', 'tlsCaFile', 'name'] as const;
const JS_FILE_KEYS = ['stream', 'replicas', 'maxInFlight', 'ackWaitMs', 'publishTimeoutMs'];
const JS_NUMBER_KEYS = ['replicas', 'maxInFlight', 'ackWaitMs', 'publishTimeoutMs'] as const;
const LISTEN_FILE_KEYS = ['listen', 'publish'];
const SUBSCRIBE_FILE_KEYS = ['subscribe', 'connect', 'durable'];
/** Keys a file may not hold, with why (the API has them). */
const API_ONLY: Record<string, string> = {
  onError: 'an error callback is for the API only (the command line prints errors on stderr)',
  readerOptions: 'Reader options are for the API only: new Bridge({ routes: [{ listen, publish, readerOptions }] })',
  writerOptions: 'Writer options are for the API only: new Bridge({ routes: [{ subscribe, connect, writerOptions }] })',
};

// Secrets are never echoed in errors (they are printed): named by type only.
const SECRET_KEYS: readonly string[] = ['token', 'password'];
const SECRET = Symbol('secret');

function kindOf(v: unknown): string {
  if (v === SECRET) return 'a value of another type (not shown: a secret)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

const wrongType = (key: string, expected: string, v: unknown): TypeError =>
  invalidArg('ERR_INVALID_ARG_TYPE', v === undefined ? `"${key}" is missing: it must be ${expected}` : `"${key}" must be ${expected}, not ${kindOf(v)}`);

function object(key: string, v: unknown): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw wrongType(key, 'an object', v);
  return v as Record<string, unknown>;
}

function keys(where: string, o: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (allowed.includes(k)) continue;
    const why = API_ONLY[k];
    throw invalidValue(`unknown key "${k}" in ${where}; known keys: ${allowed.join(', ')}${why ? `. ${why}` : ''}`);
  }
}

function string(key: string, v: unknown): string {
  if (typeof v !== 'string') throw wrongType(key, 'a string', v !== undefined && SECRET_KEYS.includes(key) ? SECRET : v);
  return v;
}

function number(key: string, v: unknown): number {
  if (typeof v !== 'number') throw wrongType(key, 'a number', v);
  return v;
}

/**
 * Checks the structure of a parsed configuration file and returns it as
 * options: every key known, every value of the right JSON type, required keys
 * present, each route exactly one kind.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` (unknown key, a route of neither or both kinds, no routes),
 *   `ERR_INVALID_ARG_TYPE` (a value of the wrong type, or missing).
 */
export function parseBridgeConfig(value: unknown): BridgeConfig {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidArg('ERR_INVALID_ARG_TYPE', `the file must hold a JSON object ({ "servers", "routes": [...], ... }), not ${kindOf(value)}`);
  }
  const o = value as Record<string, unknown>;
  keys('the configuration', o, FILE_KEYS);
  const c: Partial<BridgeConfig> = {};
  if (o.servers !== undefined) {
    const s = o.servers;
    if (typeof s === 'string') c.servers = s;
    else if (Array.isArray(s) && s.length > 0) c.servers = s.map((x, i) => string(`servers[${i}]`, x));
    else throw wrongType('servers', 'a URL string or a non-empty array of them (e.g. "nats://127.0.0.1:4222")', s);
  }
  for (const k of STRING_KEYS) if (o[k] !== undefined) c[k] = string(k, o[k]);
  if (o.connectTimeoutMs !== undefined) c.connectTimeoutMs = number('connectTimeoutMs', o.connectTimeoutMs);
  if (o.jetstream !== undefined) {
    const j = object('jetstream', o.jetstream);
    keys('"jetstream"', j, JS_FILE_KEYS);
    const js: JetStreamOptions = { stream: string('jetstream.stream', j.stream) };
    for (const k of JS_NUMBER_KEYS) if (j[k] !== undefined) js[k] = number(`jetstream.${k}`, j[k]);
    c.jetstream = js;
  }
  if (!Array.isArray(o.routes)) throw wrongType('routes', 'an array of routes ({ "listen", "publish" } or { "subscribe", "connect" })', o.routes);
  if (o.routes.length === 0) throw invalidValue('"routes" is empty: give at least one route ({ "listen", "publish" } or { "subscribe", "connect" })');
  c.routes = o.routes.map((r: unknown, i: number): BridgeRoute => {
    const name = `routes[${i}]`;
    const ro = object(name, r);
    const isListen = 'listen' in ro || 'publish' in ro;
    const isSubscribe = 'subscribe' in ro || 'connect' in ro || 'durable' in ro;
    if (isListen && isSubscribe) {
      throw invalidValue(`${name} mixes a listen route ("listen", "publish") and a subscribe route ("subscribe", "connect", "durable"): one route per object`);
    }
    if (isListen) {
      keys(`${name} (a listen route)`, ro, LISTEN_FILE_KEYS);
      return { listen: string(`${name}.listen`, ro.listen), publish: string(`${name}.publish`, ro.publish) };
    }
    if (isSubscribe) {
      keys(`${name} (a subscribe route)`, ro, SUBSCRIBE_FILE_KEYS);
      const route: BridgeRoute = { subscribe: string(`${name}.subscribe`, ro.subscribe), connect: string(`${name}.connect`, ro.connect) };
      if (ro.durable !== undefined) route.durable = string(`${name}.durable`, ro.durable);
      return route;
    }
    const ks = Object.keys(ro);
    throw invalidValue(`${name} is neither a listen route { "listen", "publish" } nor a subscribe route { "subscribe", "connect" }${ks.length ? ` (its keys: ${ks.join(', ')})` : ' (it is empty)'}`);
  });
  return c as BridgeConfig;
}

/** Whether `text` could be the start of a JSON value (JSON.parse fails, if at all, only for want of more). */
function viablePrefix(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch (e) {
    const msg = (e as Error).message;
    if (/Unexpected end of JSON input/.test(msg)) return true;
    const at = /at position (\d+)/.exec(msg);
    return at !== null && Number(at[1]) >= text.length;
  }
}

/** The offset of the character where `text` (invalid JSON) goes wrong: the end of its longest viable prefix. */
function errorOffset(text: string): number | undefined {
  let lo = 0; // viable
  let hi = text.length; // not viable
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (viablePrefix(text.slice(0, mid))) lo = mid;
    else hi = mid;
  }
  return hi - 1;
}

/** The most a configuration file may hold. */
const MAX_CONFIG_BYTES = 1024 * 1024;

/** A regular file of at most MAX_CONFIG_BYTES, as UTF-8 (never a device or a pipe that does not end). */
function readLimited(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw invalidValue(`${file}: not a regular file`);
    const buf = Buffer.alloc(Math.min(st.size, MAX_CONFIG_BYTES) + 1);
    let n = 0;
    for (;;) {
      const k = readSync(fd, buf, n, buf.length - n, null);
      if (k === 0) break;
      n += k;
      if (n === buf.length) break;
    }
    if (n > MAX_CONFIG_BYTES) throw invalidValue(`${file}: larger than a configuration file may be (${MAX_CONFIG_BYTES} bytes)`);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** "line L column C" of a character offset. */
function lineColumn(text: string, pos: number): string {
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  return `line ${line} column ${pos - before.lastIndexOf('\n')}`;
}

/**
 * Reads a bridge configuration file (JSON, UTF-8) and checks it
 * ({@link parseBridgeConfig}). Pass the result to `new Bridge()` (with
 * `servers` when the file leaves it out), which checks the values.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` (unreadable file, not JSON, unknown key...),
 *   `ERR_INVALID_ARG_TYPE` (a value of the wrong type, or missing); the message starts with the file's path.
 */
export function readBridgeConfig(file: string): BridgeConfig {
  let text: string;
  try {
    text = readLimited(file);
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_INVALID_ARG_VALUE') throw e;
    const x = e as { code?: string; message?: string };
    throw invalidValue(`${file}: cannot read the configuration file: ${x.code ?? ''}${x.code ? ': ' : ''}${(x.message ?? String(e)).replace(/^\w+: /, '')}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // Where, never what: V8's message quotes the text (a token, the start of
    // the file), and the file may hold secrets, or be something else entirely.
    if (text.trim() === '') throw invalidValue(`${file}: not valid JSON: the file is empty`);
    const pos = errorOffset(text);
    throw invalidValue(`${file}: not valid JSON${pos !== undefined && pos >= 0 ? ` (${lineColumn(text, pos)})` : ''}`);
  }
  try {
    return parseBridgeConfig(value);
  } catch (e) {
    (e as Error).message = `${file}: ${(e as Error).message}`;
    throw e;
  }
}
