// The RPC envelope: the hex test vectors of docs/rpc.md (test/fixtures/rpc-vectors.json,
// shared with the Python peer) against the encoder and the decoder, and the
// decoder's refusals.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeRpcEnvelope, decodeRpcEnvelope, type RpcEnvelopeInput, MAX_METHOD_BYTES } from '../src/rpc/envelope';
import { IpcError } from '../src/errors';

interface Vector {
  name: string;
  hex: string;
  decoded: { kind: string; id: number; body?: string; [k: string]: unknown };
}

const vectors = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'rpc-vectors.json'), 'utf8')) as Vector[];

describe('test vectors', () => {
  it('cover every kind', () => {
    expect(new Set(vectors.map((v) => v.decoded.kind))).toEqual(new Set(['request', 'reply', 'error', 'part', 'end', 'cancel', 'credit']));
    expect(vectors.some((v) => v.decoded.kind === 'request' && v.decoded.stream === true)).toBe(true);
  });

  for (const v of vectors) {
    it(`${v.name}: encodes to ${v.hex} and decodes back`, () => {
      expect(Buffer.from(encodeRpcEnvelope(v.decoded as unknown as RpcEnvelopeInput)).toString('hex')).toBe(v.hex);
      const d = decodeRpcEnvelope(Buffer.from(v.hex, 'hex')) as unknown as Record<string, unknown>;
      if ('body' in d) d.body = Buffer.from(d.body as Uint8Array).toString('utf8');
      expect(d).toEqual(v.decoded);
    });
  }

  it('the request vector, byte by byte', () => {
    // kind 01 | id 01 | flags 00 | deadline 1000 = e8 07 | method_len 03 | "add" | body
    expect(vectors[0].hex).toBe('01' + '01' + '00' + 'e807' + '03' + Buffer.from('add').toString('hex') + Buffer.from('{"a":1,"b":2}').toString('hex'));
  });
});

describe('decoder', () => {
  const bad = (hex: string) => {
    try {
      decodeRpcEnvelope(Buffer.from(hex, 'hex'));
    } catch (e) {
      expect(e).toBeInstanceOf(IpcError);
      expect((e as IpcError).code).toBe('ERR_INVALID_FRAME');
      return (e as Error).message;
    }
    throw new Error(`${hex} decoded`);
  };

  it('refuses malformed envelopes with a reason', () => {
    expect(bad('')).toContain('empty');
    expect(bad('08 01'.replace(' ', ''))).toContain('unknown kind 0x08');
    expect(bad('00 01'.replace(' ', ''))).toContain('unknown kind 0x00');
    expect(bad('01')).toContain('call id is truncated');
    expect(bad('0180')).toContain('call id is truncated');
    expect(bad('01' + 'ff'.repeat(9) + '02')).toContain('longer than 64 bits');
    expect(bad('01' + 'ff'.repeat(8) + '7f')).toContain('above 2^53 - 1');
    expect(bad('0101')).toContain('flags are missing');
    expect(bad('010102000161')).toContain('unknown request flags 0x02');
    expect(bad('010180')).toContain('unknown request flags 0x80');
    expect(bad('01010080')).toContain('deadline is truncated');
    expect(bad('0101010080')).toContain('credit is truncated');
    expect(bad('01010000')).toContain('method length is truncated');
    expect(bad('0101000000')).toContain('method name is 0 bytes');
    expect(bad('010100000561')).toContain('method name is truncated');
    expect(bad('01010000' + '8102' + '61'.repeat(257))).toContain('method name is 257 bytes');
    expect(bad('0101000002c328')).toContain('not valid UTF-8');
    expect(bad('0301')).toContain('error code length is truncated');
    expect(bad('030100')).toContain('error code is 0 bytes');
    expect(bad('03010541')).toContain('error code is truncated');
    expect(bad('0301024120')).toContain('not printable ASCII');
    expect(bad('050100')).toContain('unexpected bytes');
    expect(bad('060100')).toContain('unexpected bytes');
    expect(bad('0701')).toContain('credit is truncated');
    expect(bad('07010100')).toContain('unexpected bytes');
  });

  it('accepts the longest method name, non-minimal varints, UTF-8 method names; replaces invalid UTF-8 in error messages', () => {
    const long = 'm'.repeat(MAX_METHOD_BYTES);
    expect(decodeRpcEnvelope(encodeRpcEnvelope({ kind: 'request', id: 0, method: long }))).toMatchObject({ method: long });
    expect(decodeRpcEnvelope(Buffer.from('02' + '8100' + '41', 'hex'))).toMatchObject({ kind: 'reply', id: 1 });
    expect(decodeRpcEnvelope(encodeRpcEnvelope({ kind: 'request', id: 1, method: 'größe' }))).toMatchObject({ method: 'größe' });
    expect(decodeRpcEnvelope(Buffer.from('030101' + '45' + 'ff41', 'hex'))).toEqual({ kind: 'error', id: 1, code: 'E', message: '\ufffdA' });
    const big = decodeRpcEnvelope(encodeRpcEnvelope({ kind: 'credit', id: Number.MAX_SAFE_INTEGER, credit: 2 ** 40 }));
    expect(big).toEqual({ kind: 'credit', id: Number.MAX_SAFE_INTEGER, credit: 2 ** 40 });
  });

  it('bodies are views of the payload, not copies', () => {
    const p = Buffer.from('0201' + '616263', 'hex');
    const d = decodeRpcEnvelope(p) as { body: Uint8Array };
    expect(d.body.buffer).toBe(p.buffer);
    expect(d.body.byteOffset).toBe(p.byteOffset + 2);
  });
});

describe('encoder argument checks', () => {
  it('refuses bad ids, method names and codes with Node-style codes', () => {
    expect(() => encodeRpcEnvelope({ kind: 'end', id: -1 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => encodeRpcEnvelope({ kind: 'end', id: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => encodeRpcEnvelope({ kind: 'end', id: '1' as unknown as number })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => encodeRpcEnvelope({ kind: 'request', id: 1, method: '' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => encodeRpcEnvelope({ kind: 'request', id: 1, method: 'x'.repeat(257) })).toThrow(/1 to 256 bytes/);
    expect(() => encodeRpcEnvelope({ kind: 'request', id: 1, method: '\ud800' })).toThrow(/lone surrogates/);
    expect(() => encodeRpcEnvelope({ kind: 'error', id: 1, code: 'has space' })).toThrow(/printable ASCII/);
    expect(() => encodeRpcEnvelope({ kind: 'nope', id: 1 } as unknown as RpcEnvelopeInput)).toThrow(/Unknown envelope kind/);
  });
});
