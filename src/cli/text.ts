/**
 * How `uds-ipc listen` prints a message: as one line of escaped text, as hex,
 * or as a JSON object.
 */
import { isUtf8 } from 'node:buffer';
import type { Connection } from '../index';

const HEX = '0123456789abcdef';

function hex2(b: number): string {
  return HEX[b >> 4] + HEX[b & 15];
}

/** Length of the valid UTF-8 sequence at b[i] (a non-ASCII lead byte), or 0. */
function utf8Length(b: Uint8Array, i: number, n: number): number {
  const c = b[i];
  const cont = (j: number, lo = 0x80, hi = 0xbf): boolean => j < n && b[j] >= lo && b[j] <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const lo = c === 0xe0 ? 0xa0 : 0x80;
    const hi = c === 0xed ? 0x9f : 0xbf; // no UTF-16 surrogates
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const lo = c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xf4 ? 0x8f : 0xbf; // at most U+10FFFF
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/**
 * One message as one line of text: UTF-8, with `\` `\n` `\r` `\t` escaped as
 * such, other C0 controls and DEL as `\xHH`, C1 controls and U+2028/U+2029 as
 * `\uHHHH`, and each byte that is not part of valid UTF-8 as `\xHH` (always
 * 80-ff, so never confused with an escaped control character).
 */
export function escapeText(b: Buffer): string {
  let s = '';
  let run = 0; // start of the bytes not yet appended, all needing no escape
  const n = b.length;
  let i = 0;
  while (i < n) {
    const c = b[i];
    if (c >= 0x20 && c < 0x7f && c !== 0x5c) {
      i++;
      continue;
    }
    let len = 0;
    let esc: string;
    if (c < 0x80) {
      esc = c === 0x5c ? '\\\\' : c === 0x0a ? '\\n' : c === 0x0d ? '\\r' : c === 0x09 ? '\\t' : '\\x' + hex2(c);
      len = 1;
    } else {
      len = utf8Length(b, i, n);
      if (len === 0) {
        esc = '\\x' + hex2(c);
        len = 1;
      } else if (len === 2 && c === 0xc2 && b[i + 1] <= 0x9f) {
        esc = '\\u00' + hex2(b[i + 1]); // C1 control U+0080..U+009F (C2 80..C2 9F)
      } else if (len === 3 && c === 0xe2 && b[i + 1] === 0x80 && (b[i + 2] === 0xa8 || b[i + 2] === 0xa9)) {
        esc = b[i + 2] === 0xa8 ? '\\u2028' : '\\u2029';
      } else {
        i += len; // printable: part of the run
        continue;
      }
    }
    if (i > run) s += b.toString('utf8', run, i);
    s += esc;
    i += len;
    run = i;
  }
  if (run === 0) return b.toString('utf8');
  if (run < n) s += b.toString('utf8', run, n);
  return s;
}

export type Format = 'text' | 'hex' | 'json';

export function formatMessage(format: Format, msg: Buffer, conn: Connection): string {
  if (format === 'hex') return msg.toString('hex');
  if (format === 'text') return escapeText(msg);
  const utf8 = isUtf8(msg);
  return JSON.stringify({
    conn: conn.id,
    pid: conn.pid,
    uid: conn.uid,
    len: msg.length,
    encoding: utf8 ? 'utf8' : 'base64',
    data: msg.toString(utf8 ? 'utf8' : 'base64'),
  });
}
