// Codecs (src/codec) and typed methods (src/rpc/methods.ts): round trips,
// types end to end, errors, and the lazy optional protobuf dependency.
import { describe, it, expect, expectTypeOf } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { StructSchema, TimestampSchema, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { raw, json, protobuf, decodeBatch, typedWriter, loadProtobuf } from '../src/codec';
import { defineMethod, defineStreamMethod } from '../src/rpc/methods';
import { ClientCore } from '../src/rpc/client-core';
import { ServerCore } from '../src/rpc/server-core';
import type { RpcClient } from '../src/rpc/client';
import type { RpcMethods, FrameSink } from '../src/rpc/types';
import { IpcError } from '../src/errors';

/** An RpcClient-shaped object over a ClientCore joined in memory to a ServerCore. */
function memoryClient(methods: RpcMethods): RpcClient {
  const server = new ServerCore(methods, { maxConcurrentCalls: 16, maxFrameSize: 1 << 20 });
  const holder = { retain() {} };
  let client!: ClientCore;
  const toClient: FrameSink = {
    write: (f) => {
      const c = Buffer.from(f);
      setImmediate(() => client.onFrame(c));
      return true;
    },
    send: () => Promise.resolve(),
  };
  const conn = server.connection(toClient, { id: 1, pid: 1, uid: 0, gid: 0 });
  const toServer: FrameSink = {
    write: (f) => {
      const c = Buffer.from(f);
      setImmediate(() => conn.onFrame(c, holder));
      return true;
    },
    send: () => Promise.resolve(),
  };
  client = new ClientCore(toServer, { timeoutMs: 0, streamWindow: 4 });
  return {
    call: (m: string, b: Uint8Array, o?: { timeoutMs?: number; signal?: AbortSignal }) => client.call(m, b, o?.timeoutMs, o?.signal),
    stream: (m: string, b: Uint8Array, o?: { timeoutMs?: number; signal?: AbortSignal; window?: number }) =>
      client.stream(m, b, o?.timeoutMs, o?.signal, o?.window),
  } as unknown as RpcClient;
}

describe('raw', () => {
  it('passes bytes through without copying', () => {
    const b = Buffer.from('abc');
    expect(raw.encode(b)).toBe(b);
    const u = new Uint8Array([1, 2, 3]);
    const d = raw.decode(u);
    expect(Buffer.isBuffer(d)).toBe(true);
    expect(d.buffer).toBe(u.buffer);
    expect(() => raw.encode('x' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('json', () => {
  it('round-trips values, with reviver and replacer', () => {
    const c = json<{ a: number; when: Date }>({
      replacer: (_k, v) => v,
      reviver: (k, v) => (k === 'when' ? new Date(v as string) : v),
    });
    const when = new Date(1_700_000_000_000);
    const back = c.decode(c.encode({ a: 1, when }));
    expect(back).toEqual({ a: 1, when });
    expectTypeOf(back).toEqualTypeOf<{ a: number; when: Date }>();
  });

  it('refuses undefined, invalid UTF-8 and invalid JSON; validates its options', () => {
    const c = json();
    expect(() => c.encode(undefined)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => c.decode(Buffer.from([0xff]))).toThrow(TypeError);
    expect(() => c.decode(Buffer.from('{'))).toThrow(SyntaxError);
    expect(() => json({ reviver: 1 as unknown as () => unknown })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => json({ nope: 1 } as unknown as object)).toThrow(/Unknown option "nope"/);
  });
});

describe('protobuf', () => {
  it('round-trips well-known types; encode takes a message or an init object', () => {
    const ts = protobuf(TimestampSchema);
    expect(ts.name).toBe('protobuf:google.protobuf.Timestamp');
    const msg = timestampFromDate(new Date(1_700_000_000_123));
    const back = ts.decode(ts.encode(msg));
    expectTypeOf(back).toEqualTypeOf<Timestamp>();
    expect(back.seconds).toBe(1_700_000_000n);
    expect(back.nanos).toBe(123_000_000);
    expect(ts.decode(ts.encode({ seconds: 5n })).seconds).toBe(5n);
    const st = protobuf(StructSchema);
    const s = create(StructSchema, { fields: { name: { kind: { case: 'stringValue', value: 'x' } } } });
    expect(st.decode(st.encode(s)).fields.name.kind).toEqual({ case: 'stringValue', value: 'x' });
  });

  it('refuses what is not a message schema; ERR_MISSING_DEPENDENCY names the package when it is absent', () => {
    expect(() => protobuf({} as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    // a fresh load through a require that cannot find the package
    const failing = (id: string) => {
      throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
    };
    let err: unknown;
    try {
      loadProtobuf(failing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IpcError);
    expect((err as IpcError).code).toBe('ERR_MISSING_DEPENDENCY');
    expect((err as IpcError).message).toContain('npm install @bufbuild/protobuf');
    expect(loadProtobuf()).toBe(loadProtobuf());
  });
});

describe('plain streams', () => {
  it('typedWriter encodes each value; decodeBatch decodes a batch', async () => {
    const sent: Uint8Array[] = [];
    const fake = { write: (b: Uint8Array) => (sent.push(b), true), send: async (b: Uint8Array) => void sent.push(b) };
    const w = typedWriter(fake as never, json<{ n: number }>());
    expect(w.write({ n: 1 })).toBe(true);
    await w.send({ n: 2 });
    await expect(w.send(undefined as never)).rejects.toThrow(/JSON-serializable/);
    expect(decodeBatch(sent, json<{ n: number }>())).toEqual([{ n: 1 }, { n: 2 }]);
    expect(() => decodeBatch([], {} as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});

describe('typed methods', () => {
  interface AddReq {
    a: number;
    b: number;
  }
  const add = defineMethod('add', json<AddReq>(), json<number>());
  const now = defineMethod('now', json<{ offsetS: number }>(), protobuf(TimestampSchema));
  const count = defineStreamMethod('count', json<number>(), json<{ i: number }>());

  it('are typed end to end', () => {
    expectTypeOf(add.call).parameter(1).toEqualTypeOf<AddReq>();
    expectTypeOf(add.call).returns.toEqualTypeOf<Promise<number>>();
    expectTypeOf(now.call).returns.toEqualTypeOf<Promise<Timestamp>>();
    expectTypeOf(count.stream).returns.toEqualTypeOf<AsyncIterableIterator<{ i: number }>>();
    // @ts-expect-error a string is not an AddReq
    void (() => add.call(null as unknown as RpcClient, 'x'));
  });

  it('round-trip JSON and protobuf through a server and a client', async () => {
    const client = memoryClient({
      ...add.serve(({ a, b }) => a + b),
      ...now.serve(async ({ offsetS }) => ({ seconds: 1000n + BigInt(offsetS) })),
      ...count.serve(async function* (n) {
        for (let i = 0; i < n; i++) yield { i };
      }),
    });
    expect(await add.call(client, { a: 2, b: 3 })).toBe(5);
    expect(await add.bind(client)({ a: -1, b: 1 })).toBe(0);
    expect((await now.call(client, { offsetS: 5 })).seconds).toBe(1005n);
    const got: number[] = [];
    for await (const { i } of count.stream(client, 10)) got.push(i);
    expect(got).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('a request that does not decode fails with remote code ERR_BAD_REQUEST', async () => {
    const client = memoryClient({ ...add.serve(({ a, b }) => a + b) });
    const e = await client.call('add', Buffer.from('{not json')).catch((x: IpcError) => x);
    expect((e as IpcError).code).toBe('ERR_REMOTE');
    expect((e as IpcError).remoteCode).toBe('ERR_BAD_REQUEST');
    expect((e as IpcError).message).toContain('not valid json');
  });

  it('leaving a typed stream early closes the server generator', async () => {
    let closed = false;
    const client = memoryClient({
      ...count.serve(async function* () {
        try {
          for (let i = 0; ; i++) yield { i };
        } finally {
          closed = true;
        }
      }),
    });
    for await (const { i } of count.stream(client, 0)) if (i === 2) break;
    for (let k = 0; k < 100 && !closed; k++) await new Promise((r) => setImmediate(r));
    expect(closed).toBe(true);
  });

  it('validate names and codecs', () => {
    expect(() => defineMethod('', json(), json())).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => defineMethod('x', {} as never, json())).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});
