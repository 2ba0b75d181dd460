// Type-level tests of the public API, compiled by tsc (test/types.test.ts);
// never run. `@ts-expect-error` lines must fail to compile, or tsc fails.
import { on, once } from 'node:events';
import type { EventEmitter } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { expectTypeOf } from 'vitest';
import {
  AbortError,
  Batch,
  createWritable,
  IpcError,
  Reader,
  RpcClient,
  Writer,
  type CallCallback,
  type Connection,
  type ErrorContext,
  type ReconnectingInfo,
  type StopResult,
  type WriterStopResult,
} from '../../src/index';

declare const reader: Reader;
declare const writer: Writer;

// ─── Reader events ──────────────────────────────────────────────────────────
reader.on('connection', (conn) => {
  expectTypeOf(conn).toEqualTypeOf<Connection>();
  expectTypeOf(conn.pid).toBeNumber();
});
reader.once('disconnect', (conn, reason) => {
  expectTypeOf(conn).toEqualTypeOf<Connection>();
  expectTypeOf(reason).toEqualTypeOf<IpcError | undefined>();
});
reader.on('error', (err, context, conn) => {
  expectTypeOf(err).toEqualTypeOf<Error>();
  expectTypeOf(context).toEqualTypeOf<ErrorContext>();
  expectTypeOf(conn).toEqualTypeOf<Connection | undefined>();
});
reader.prependListener('close', (info) => expectTypeOf(info.forced).toBeBoolean());
reader.addListener('listening', () => {});
expectTypeOf(reader.on('listening', () => {})).toEqualTypeOf<Reader>();
// @ts-expect-error: no such event
reader.on('conection', () => {});
// @ts-expect-error: a connection is not a string
reader.on('connection', (conn: string) => void conn);
// @ts-expect-error: 'listening' has no arguments
reader.on('listening', (x: number) => void x);

// ─── Writer events ──────────────────────────────────────────────────────────
writer.on('reconnecting', (info) => {
  expectTypeOf(info).toEqualTypeOf<ReconnectingInfo>();
  expectTypeOf(info.attempt).toBeNumber();
  expectTypeOf(info.delayMs).toBeNumber();
  expectTypeOf(info.error).toEqualTypeOf<IpcError>();
});
writer.on('disconnect', (reason) => expectTypeOf(reason).toEqualTypeOf<IpcError>());
writer.on('error', (err, context) => {
  expectTypeOf(err).toEqualTypeOf<IpcError>();
  expectTypeOf(context).toEqualTypeOf<ErrorContext>();
});
writer.once('drain', () => {}).once('connect', () => {}).off('close', () => {});
// @ts-expect-error: no such event
writer.on('drained', () => {});
// @ts-expect-error: the info is an object
writer.on('reconnecting', (info: number) => void info);

// Still plain EventEmitters for node:events helpers.
const asEmitter: EventEmitter = reader;
void asEmitter;
void once(writer, 'drain');
void once(reader, 'close');
void on(reader, 'connection');

// ─── AbortSignal, send(), flush(), stop() ───────────────────────────────────
const signal = AbortSignal.timeout(1000);
expectTypeOf(reader.start({ signal })).toEqualTypeOf<Promise<void>>();
expectTypeOf(reader.start()).toEqualTypeOf<Promise<void>>();
expectTypeOf(reader.stop({ timeoutMs: 10, signal })).toEqualTypeOf<Promise<StopResult>>();
expectTypeOf(writer.stop({ signal })).toEqualTypeOf<Promise<WriterStopResult>>();
expectTypeOf(writer.flush({ signal })).toEqualTypeOf<Promise<void>>();
expectTypeOf(writer.send('x', { signal })).toEqualTypeOf<Promise<void>>();
expectTypeOf(writer.send(new Uint8Array(1))).toEqualTypeOf<Promise<void>>();
// @ts-expect-error: signal must be an AbortSignal
void writer.flush({ signal: true });
// @ts-expect-error: unknown option
void reader.start({ timeoutMs: 5 });
// @ts-expect-error: numbers are not messages
void writer.send(5);
expectTypeOf(new AbortError()).toMatchTypeOf<Error>();
expectTypeOf(new AbortError().code).toEqualTypeOf<'ABORT_ERR'>();

// ─── iteration ──────────────────────────────────────────────────────────────
const iterable = new Reader('/tmp/x.sock');
const iterable2 = new Reader('/tmp/x.sock', { maxMessageSize: 10 });
const iterable3 = new Reader('/tmp/x.sock', undefined, { maxMessageSize: 10 });
void iterable2;
void iterable3;
async function consume(): Promise<void> {
  for await (const batch of iterable) {
    expectTypeOf(batch).toEqualTypeOf<Batch>();
  }
}
void consume;
// @ts-expect-error: options are not a handler when options follow
new Reader('/tmp/x.sock', { maxMessageSize: 1 }, {});
new Reader('/tmp/x.sock', (batch) => {
  expectTypeOf(batch).toEqualTypeOf<Batch>();
}, { backlog: 1 });

// ─── streams and metrics ────────────────────────────────────────────────────
expectTypeOf(writer.createWriteStream({ highWaterMark: 8, signal })).toEqualTypeOf<Writable>();
expectTypeOf(createWritable(writer)).toEqualTypeOf<Writable>();
void pipeline(Readable.from(['a', 'b']), writer.createWriteStream());
expectTypeOf(reader.metricsText()).toBeString();
expectTypeOf(writer.metricsText('app_ipc', { socket: 'main' })).toBeString();
// @ts-expect-error: label values are strings
writer.metricsText('p', { n: 1 });

// ─── RpcClient.call: promise and callback forms ─────────────────────────────
declare const client: RpcClient;
expectTypeOf(client.call('m')).toEqualTypeOf<Promise<Buffer>>();
expectTypeOf(client.call('m', 'body', { timeoutMs: 5 })).toEqualTypeOf<Promise<Buffer>>();
expectTypeOf(
  client.call('m', 'body', (err, reply) => {
    expectTypeOf(err).toEqualTypeOf<Error | null>();
    expectTypeOf(reply).toEqualTypeOf<Buffer | undefined>();
  }),
).toEqualTypeOf<void>();
expectTypeOf(client.call('m', undefined, { signal }, () => {})).toEqualTypeOf<void>();
const cb: CallCallback = () => {};
client.call('m', new Uint8Array(1), undefined, cb);
// @ts-expect-error: the callback comes last, after the options
client.call('m', 'body', cb, { timeoutMs: 5 });
