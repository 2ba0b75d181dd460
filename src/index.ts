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
export { createWritable } from './stream';
export type { WritableOptions } from './stream';
export { IpcError, ErrorCodes, AbortError } from './errors';
export type { ErrorCode, ErrorContext, IpcErrorOptions } from './errors';
export { PROMETHEUS_CONTENT_TYPE } from './metrics';
export type { MetricLabels } from './metrics';
export { MAX_PATH_BYTES, DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE_LIMIT } from './options';
export type { ReaderOptions, WriterOptions, ReconnectOptions, StopOptions, SignalOptions, ErrorHandler, PeerInfo } from './options';
export * from './framing';
