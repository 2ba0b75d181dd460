// `await using` (Symbol.asyncDispose): a Reader and a Writer declared with it
// are stopped when the block ends, in reverse order, also when it throws.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { IpcError, Reader, Writer, type Batch } from '../src/index';
import { cleanupDirs, tmpSocket, waitFor } from './helpers';

afterAll(() => cleanupDirs());

const FAST = { initialDelayMs: 5, maxDelayMs: 20 };

describe('await using', () => {
  it('stops the Reader and the Writer at the end of the block (the writer first, its messages delivered)', async () => {
    const path = tmpSocket();
    const got: string[] = [];
    const closes: string[] = [];
    let r: Reader | undefined;
    let w: Writer | undefined;
    {
      await using reader = new Reader(path, (b: Batch) => void got.push(...b.toArray().map(String)));
      await reader.start();
      await using writer = new Writer(path, { reconnect: FAST });
      writer.start();
      reader.on('close', () => closes.push('reader'));
      writer.on('close', () => closes.push('writer'));
      for (let i = 0; i < 100; i++) writer.write(`m${i}`);
      r = reader;
      w = writer;
      expect(reader.listening).toBe(true);
    }
    expect(closes).toEqual(['writer', 'reader']);
    expect(r!.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`));
    expect(w!.metrics()).toMatchObject({ sent: 100, failed: 0 });
    let e: unknown;
    try {
      w!.write('after');
    } catch (x) {
      e = x;
    }
    expect((e as IpcError).code).toBe('ERR_NOT_RUNNING');
  });

  it('disposes on a throw as well, and the error propagates', async () => {
    const path = tmpSocket();
    let r: Reader | undefined;
    const run = async () => {
      await using reader = new Reader(path);
      await reader.start();
      r = reader;
      await waitFor(() => existsSync(path));
      throw new Error('inside the block');
    };
    await expect(run()).rejects.toThrow('inside the block');
    expect(r!.listening).toBe(false);
    expect(existsSync(path)).toBe(false);
  });
});
