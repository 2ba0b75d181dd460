/**
 * Typed methods: a name and two codecs, used on both sides, so that the
 * server's handler and the client's call agree on types end to end.
 */
import type { Codec, CodecInput, CodecValue } from '../codec';
import { checkCodec } from '../codec';
import { IpcError } from '../errors';
import { methodBytes } from './envelope';
import { kBodySync, kStreaming } from './server-core';
import type { RpcClient } from './client';
import type { CallContext, CallOptions, MethodHandler, StreamOptions } from './types';

/** A unary method with typed request and reply: see {@link defineMethod}. */
export interface UnaryMethod<Req, Res, ReqIn = Req, ResIn = Res> {
  /** The method name. */
  readonly name: string;
  /** The request codec. */
  readonly request: Codec<Req>;
  /** The reply codec. */
  readonly response: Codec<Res>;
  /**
   * The server side: `{ [name]: handler }`, to spread into an RpcServer's methods.
   * A request body that does not decode fails the call with remote code `ERR_BAD_REQUEST`.
   */
  serve(handler: (request: Req, ctx: CallContext) => ResIn | Promise<ResIn>): Record<string, MethodHandler>;
  /** The client side: calls the method and decodes the reply. */
  call(client: RpcClient, request: ReqIn, options?: CallOptions): Promise<Res>;
  /** `call` bound to one client. */
  bind(client: RpcClient): (request: ReqIn, options?: CallOptions) => Promise<Res>;
}

/** A server-streaming method with typed request and parts: see {@link defineStreamMethod}. */
export interface StreamMethod<Req, Res, ReqIn = Req, ResIn = Res> {
  /** The method name. */
  readonly name: string;
  /** The request codec. */
  readonly request: Codec<Req>;
  /** The codec of each part. */
  readonly response: Codec<Res>;
  /** The server side: `{ [name]: handler }` where the handler is an async generator (or returns an async iterable). */
  serve(handler: (request: Req, ctx: CallContext) => AsyncIterable<ResIn>): Record<string, MethodHandler>;
  /** The client side: the decoded parts; leaving the loop early cancels the call. */
  stream(client: RpcClient, request: ReqIn, options?: StreamOptions): AsyncIterableIterator<Res>;
}

function decodeRequest<T>(codec: Codec<T>, body: Buffer, name: string): T {
  try {
    return codec.decode(body);
  } catch (e) {
    throw Object.assign(new Error(`the request body of ${JSON.stringify(name)} is not valid ${codec.name}: ${(e as Error)?.message ?? String(e)}`), {
      code: 'ERR_BAD_REQUEST',
    });
  }
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function';
}

/**
 * Defines a unary method once, for both sides.
 * @param name - The method name (1 to 256 bytes of UTF-8).
 * @param request - The request codec, e.g. `json<AddRequest>()`.
 * @param response - The reply codec.
 * @returns The method: `serve()` on the server, `call()` / `bind()` on the client.
 * @throws TypeError for an invalid name or codec.
 * @example
 * const add = defineMethod('add', json<{ a: number; b: number }>(), json<number>());
 * const server = new RpcServer(path, { ...add.serve(({ a, b }) => a + b) });
 * const sum: number = await add.call(client, { a: 1, b: 2 });
 */
export function defineMethod<Q extends Codec<any>, R extends Codec<any>>( // eslint-disable-line @typescript-eslint/no-explicit-any
  name: string,
  request: Q,
  response: R,
): UnaryMethod<CodecValue<Q>, CodecValue<R>, CodecInput<Q>, CodecInput<R>> {
  methodBytes(name, 'name');
  checkCodec(request, 'request');
  checkCodec(response, 'response');
  type Req = CodecValue<Q>;
  type Res = CodecValue<R>;
  const encode = (v: unknown): Uint8Array => response.encode(v);
  const decode = (b: Buffer): Res => response.decode(b) as Res;
  const call = (client: RpcClient, req: CodecInput<Q>, options?: CallOptions): Promise<Res> => {
    let body: Uint8Array;
    try {
      body = request.encode(req);
    } catch (e) {
      return Promise.reject(e);
    }
    return client.call(name, body, options).then(decode);
  };
  return Object.freeze({
    name,
    request: request as Codec<Req>,
    response: response as Codec<Res>,
    serve(handler: (req: Req, ctx: CallContext) => CodecInput<R> | Promise<CodecInput<R>>): Record<string, MethodHandler> {
      if (typeof handler !== 'function') throw new TypeError(`The handler of ${JSON.stringify(name)} must be a function`);
      const fn = (body: Buffer, ctx: CallContext): Uint8Array | Promise<Uint8Array> => {
        const r = handler(decodeRequest(request, body, name) as Req, ctx);
        return isThenable(r) ? Promise.resolve(r).then(encode) : encode(r);
      };
      Object.defineProperty(fn, kBodySync, { value: true });
      return { [name]: fn };
    },
    call,
    bind: (client: RpcClient) => (req: CodecInput<Q>, options?: CallOptions) => call(client, req, options),
  });
}

/**
 * Defines a server-streaming method once, for both sides.
 * @param name - The method name (1 to 256 bytes of UTF-8).
 * @param request - The request codec.
 * @param response - The codec of each part.
 * @returns The method: `serve()` on the server, `stream()` on the client.
 * @throws TypeError for an invalid name or codec.
 * @example
 * const tail = defineStreamMethod('tail', json<{ file: string }>(), json<string>());
 * new RpcServer(path, { ...tail.serve(async function* ({ file }, ctx) { yield* lines(file, ctx.signal); }) });
 * for await (const line of tail.stream(client, { file: 'app.log' })) console.log(line);
 */
export function defineStreamMethod<Q extends Codec<any>, R extends Codec<any>>( // eslint-disable-line @typescript-eslint/no-explicit-any
  name: string,
  request: Q,
  response: R,
): StreamMethod<CodecValue<Q>, CodecValue<R>, CodecInput<Q>, CodecInput<R>> {
  methodBytes(name, 'name');
  checkCodec(request, 'request');
  checkCodec(response, 'response');
  type Req = CodecValue<Q>;
  type Res = CodecValue<R>;
  return Object.freeze({
    name,
    request: request as Codec<Req>,
    response: response as Codec<Res>,
    serve(handler: (req: Req, ctx: CallContext) => AsyncIterable<CodecInput<R>>): Record<string, MethodHandler> {
      if (typeof handler !== 'function') throw new TypeError(`The handler of ${JSON.stringify(name)} must be a function`);
      const fn = (body: Buffer, ctx: CallContext): AsyncIterable<Uint8Array> =>
        mapIterable(handler(decodeRequest(request, body, name) as Req, ctx), (v) => response.encode(v));
      Object.defineProperty(fn, kBodySync, { value: true });
      Object.defineProperty(fn, kStreaming, { value: true });
      return { [name]: fn as unknown as MethodHandler };
    },
    stream(client: RpcClient, req: CodecInput<Q>, options?: StreamOptions): AsyncIterableIterator<Res> {
      const s = client.stream(name, request.encode(req), options);
      return mapIterable(s, (b: Buffer) => response.decode(b) as Res);
    },
  });
}

/** An async iterator that maps each value of `src` with `f` and forwards return() (so that closing it closes `src`). */
function mapIterable<A, B>(src: AsyncIterable<A>, f: (a: A) => B): AsyncIterableIterator<B> {
  if (src === null || typeof src !== 'object' || typeof (src as AsyncIterable<A>)[Symbol.asyncIterator] !== 'function') {
    throw new IpcError('ERR_INVALID_STATE', 'A streaming handler must return an async iterable (use an async generator function)');
  }
  const it = src[Symbol.asyncIterator]();
  const out: AsyncIterableIterator<B> = {
    next: () => it.next().then((r) => (r.done ? { done: true, value: undefined } : { done: false, value: f(r.value) })),
    return: (v?: unknown) =>
      it.return ? it.return(v).then(() => ({ done: true as const, value: undefined })) : Promise.resolve({ done: true as const, value: undefined }),
    [Symbol.asyncIterator]: () => out,
  };
  return out;
}
