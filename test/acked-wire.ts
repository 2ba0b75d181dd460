// The acked-delivery wire by hand (docs/wire-format.md#acknowledged-delivery),
// for tests whose raw peers speak it: acked.test.ts, acked-attack.test.ts.
import { encodeFrame } from '../src/index';

export const MAGIC = Buffer.from('ff55445341434b01', 'hex'); // "\xffUDSACK" 01
export const GREETING = Buffer.concat([MAGIC, Buffer.from('G')]);
export const HELLO = Buffer.concat([MAGIC, Buffer.from('H')]);

/** A whole frame (uvarint length + payload): the package's own codec. */
export const frame = (payload: string | Buffer): Buffer => encodeFrame(payload);

export function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A hello's payload (frame it with {@link frame}). */
export const hello = (session: Buffer, firstSeq: number | bigint, resentBelow: number | bigint): Buffer =>
  Buffer.concat([HELLO, session, u64(firstSeq), u64(resentBelow)]);

/** Whole frames at the start of `buf` (a trailing partial frame is left out). */
export function parseFrames(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let p = 0;
  for (;;) {
    let len = 0;
    let mul = 1;
    let q = p;
    let done = false;
    while (q < buf.length) {
      const b = buf[q++];
      len += (b & 0x7f) * mul;
      mul *= 128;
      if (b < 0x80) {
        done = true;
        break;
      }
    }
    if (!done || q + len > buf.length) return out;
    out.push(buf.subarray(q, q + len));
    p = q + len;
  }
}

/** The cumulative sequence of an ack frame's payload ('A' + u64 LE), or undefined if it is not one. */
export const ackOf = (p: Buffer): number | undefined => (p.length === 9 && p[0] === 0x41 ? Number(p.readBigUInt64LE(1)) : undefined);
