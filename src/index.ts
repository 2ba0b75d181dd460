/**
 * uds-ipc: fast, safe message passing between processes over Unix domain
 * sockets, wire-compatible with the Go `uds-ipc` library.
 */
export { Reader } from './reader';
export type { BatchHandler, ReaderMetrics, StopResult, StartOptions, ReaderEvents, ReaderListener } from './reader/types';
export { Batch } from './batch';
export type { Connection } from './batch';
export { Writer } from './writer';
export type { WriterMetrics, WriterStopResult, ReconnectingInfo, FlushOptions, SendOptions, WriterEvents, WriterListener } from './writer/types';
export type { WriteOptions, FdLike } from './writer/fds';
export { createWritable } from './stream';
export type { WritableOptions } from './stream';
export { IpcError, ErrorCodes, AbortError } from './errors';
export type { ErrorCode, ErrorContext, IpcErrorOptions } from './errors';
export { PROMETHEUS_CONTENT_TYPE } from './metrics';
export type { MetricLabels } from './metrics';
export { MAX_PATH_BYTES, DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE_LIMIT } from './options';
export type { ReaderOptions, WriterOptions, ReconnectOptions, StopOptions, SignalOptions, ErrorHandler, PeerInfo } from './options';
export * from './framing';
export { RpcServer, DEFAULT_MAX_CONCURRENT_CALLS } from './rpc/server';
export type { RpcServerOptions, RpcServerMetrics, RpcServerEvents } from './rpc/server';
export { RpcClient, DEFAULT_STREAM_WINDOW } from './rpc/client';
export type { RpcClientOptions, RpcClientMetrics, RpcClientEvents } from './rpc/client';
export { RpcStream, type CallCallback } from './rpc/client-core';
export { defineMethod, defineStreamMethod } from './rpc/methods';
export type { UnaryMethod, StreamMethod } from './rpc/methods';
export type {
  CallContext,
  CallOptions,
  StreamOptions,
  RpcMethods,
  MethodHandler,
  UnaryHandler,
  StreamHandler,
  ReplyValue,
  PartValue,
  RpcPeer,
} from './rpc/types';
export { encodeRpcEnvelope, decodeRpcEnvelope, RpcKind, MAX_METHOD_BYTES } from './rpc/envelope';
export type { RpcEnvelope, RpcEnvelopeInput, RpcKindValue, BodyInput } from './rpc/envelope';
export { raw, json, protobuf, typedWriter, decodeBatch } from './codec';
export type { Codec, InputCodec, CodecValue, CodecInput, JsonCodecOptions, TypedWriter } from './codec';
