/**
 * Reading the caller's message data without running caller code: the real
 * type, length and position of a Uint8Array, and copies of its bytes.
 *
 * They are read from the typed array's internal slots, never from anything
 * the caller can override: a Uint8Array subclass, or an instance with own
 * properties, may make `length`, `byteLength`, `byteOffset`, `buffer`,
 * `subarray()` or `valueOf()` return anything (a lying `length` would copy
 * stale ring memory into the queue as frames). These are the
 * %TypedArray%.prototype getters, captured when this module loads. On
 * anything that is not a typed array the tag getter returns undefined without
 * running caller code: a Proxy around a Buffer has no typed-array slots (it
 * passes `instanceof Uint8Array`, and its traps would run for `.length`).
 * The copy itself (setBytes, i.e. %TypedArray%.prototype.set with a typed
 * array source) also reads the source's internal slots only.
 * @internal
 */
import { Buffer } from 'node:buffer';
import { types as utilTypes } from 'node:util';
import { invalidType, IpcError } from '../errors';

/**
 * %TypedArray%.prototype.set, called through a constant: optimized code calls
 * the builtin directly instead of looking the method up on each receiver.
 */
export const setBytes = Uint8Array.prototype.set;

const typedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
function intrinsicGetter<T>(key: PropertyKey): (this: unknown) => T {
  const get = Object.getOwnPropertyDescriptor(typedArrayPrototype, key)?.get;
  if (typeof get !== 'function') throw new Error(`uds-ipc: no %TypedArray%.prototype getter for ${String(key)}`);
  return get as (this: unknown) => T;
}
const typedArrayKind = intrinsicGetter<string | undefined>(Symbol.toStringTag);
const typedArrayLength = intrinsicGetter<number>('length');
/** The real byteOffset of a typed array. */
export const typedArrayByteOffset = intrinsicGetter<number>('byteOffset');
/** The real buffer of a typed array. */
export const typedArrayBuffer = intrinsicGetter<ArrayBufferLike>('buffer');

/** The byte length of a real Uint8Array (a Buffer, a subclass, another realm's), else -1. */
export function uint8Length(data: unknown): number {
  if (typedArrayKind.call(data) !== 'Uint8Array') return -1;
  // A read of element 0, for the optimizing compiler only: it records the
  // receiver's map, which lets TurboFan turn the getter call below into a
  // field load instead of a call into the builtin. Reading an element of a
  // real typed array never runs caller code (integer indices go to the
  // buffer, never to getters or the prototype chain).
  void (data as Uint8Array)[0];
  return typedArrayLength.call(data);
}

/** A copy of a real Uint8Array's bytes (see uint8Length()). */
export function copyBytes(data: Uint8Array): Buffer {
  const n = typedArrayLength.call(data);
  const copy = Buffer.allocUnsafe(n);
  if (n !== 0) setBytes.call(copy, data, 0);
  return copy;
}

// Describes a Proxy in an error message without touching it: describing it
// the usual way reads its `constructor`, i.e. runs the caller's traps.
const proxyStandIn = new (class Proxy {})();

/** The TypeError (ERR_INVALID_ARG_TYPE) of write()/send() for data of the wrong type: an argument, not an option. */
export function invalidData(data: unknown): TypeError {
  return invalidType('data', 'a Uint8Array, Buffer or string', utilTypes.isProxy(data) ? proxyStandIn : data, 'argument');
}

/**
 * The payload length of one message after the checks of write() and send():
 * a TypeError (ERR_INVALID_ARG_TYPE) for anything but a Uint8Array or a
 * string (sent as UTF-8), IpcError ERR_MESSAGE_TOO_LARGE above `max`.
 */
export function messageLength(data: unknown, max: number): number {
  // The real length (see uint8Length()), never `data.length`: a caller's
  // getter or own property could say anything.
  const len = typeof data === 'string' ? Buffer.byteLength(data, 'utf8') : uint8Length(data);
  if (len < 0) throw invalidData(data);
  if (len > max) throw tooLarge(len, max);
  return len;
}

function tooLarge(len: number, max: number): IpcError {
  return new IpcError('ERR_MESSAGE_TOO_LARGE', `Message of ${len} bytes exceeds maxMessageSize (${max} bytes)`);
}
