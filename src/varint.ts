/**
 * Unsigned LEB128 ("uvarint"), the length prefix of every frame: 7 bits per
 * byte, low group first, high bit set when more bytes follow. The one
 * TypeScript implementation: framing.ts's public codec and the Writer's ring
 * producer both write with these functions. No argument checks here; the
 * callers check (framing.ts) or cannot pass anything else (the ring producer
 * writes lengths of at most 1 GiB).
 * @internal
 */

const TWO_POW_28 = 0x10000000;
const TWO_POW_31 = 0x80000000;

/** Bytes of the minimal encoding of `n`, an integer from 0 to 2^53 − 1: 1 below 2^7, 2 below 2^14, ... */
export function uvarintSize(n: number): number {
  // Below 2^31: one byte per 7 significant bits, ⌊(bits + 6) / 7⌋ with
  // bits = 32 − clz32(n | 1), the division by 7 done as `* 37 >>> 8` (exact
  // for the 7..38 this takes). No branch on the value: the same code runs for
  // every length, so frames of any size keep an optimized write() on one path.
  if (n < TWO_POW_31) return ((38 - Math.clz32(n | 1)) * 37) >>> 8;
  // 4 groups of 7 bits, then as many groups as the rest needs (at most 8 in all below 2^53).
  let len = 5;
  for (let rest = Math.floor(n / TWO_POW_28); rest >= 0x80; rest = Math.floor(rest / 0x80)) len++;
  return len;
}

/**
 * Writes the minimal encoding of `n` (below 2^31) at `out[pos]`; returns the
 * position after it. The caller makes sure it fits.
 */
export function putUvarint31(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[pos] = n;
  return pos + 1;
}

/**
 * {@link putUvarint31} into a ring of a power-of-two size (`mask` = size − 1):
 * the encoding may run past the end and continue at offset 0. Returns the
 * ring offset after it (masked).
 */
export function putUvarint31Wrapped(ring: Uint8Array, pos: number, mask: number, n: number): number {
  while (n >= 0x80) {
    ring[pos] = (n & 0x7f) | 0x80;
    pos = (pos + 1) & mask;
    n >>>= 7;
  }
  ring[pos] = n;
  return (pos + 1) & mask;
}

/** Writes the minimal encoding of `n` (0 to 2^53 − 1) at `out[offset]`; returns the bytes written. */
export function writeUvarint(n: number, out: Uint8Array, offset: number): number {
  let i = offset;
  // Above 2^31 − 1, `&` and `>>>` would truncate: peel groups off arithmetically.
  while (n >= TWO_POW_31) {
    out[i++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80); // exact: division by a power of two
  }
  return putUvarint31(out, i, n) - offset;
}
