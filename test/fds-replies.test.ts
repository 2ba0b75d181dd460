// File descriptors with replies (issue #19): a Reader's connection.write(data,
// { fds }) / send() back to a Writer with onMessage. With acceptFds the
// Writer's handler takes them (batch.takeFds); without it its socket refuses
// them (Linux 6.16+: the reader reports ERR_FDS_REFUSED and drops that reply),
// or, on older kernels, the connection is replaced (ERR_UNEXPECTED_FDS); either
// way nothing lands in the writer's descriptor table. Argument checks as for
// writer.write().
import { describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import { Reader, Writer, type Batch, type Connection, type IpcError } from '../src/index';
import { tmpSocket, waitFor, within, FAST, useTracking } from './helpers';
import { fdsOnFile, fileNear, itOnKernel } from './fd-helpers';

const track = useTracking(500);

/**
 * A Reader that answers each message "send-file" with a reply carrying `file`
 * (opened and closed around write()), and "plain" with a reply "plain-reply".
 */
async function fileServer(
  path: string,
  file: string,
  onError: (err: IpcError, context: string) => void = () => {},
): Promise<{ reader: Reader; conns: Connection[] }> {
  const conns: Connection[] = [];
  const reader = track(
    new Reader(
      path,
      (b: Batch) => {
        conns.push(b.connection);
        for (const m of b) {
          if (m.toString() === 'plain') b.connection.write('plain-reply');
          if (m.toString() !== 'send-file') continue;
          const fd = fs.openSync(file, 'r');
          try {
            b.connection.write('here', { fds: [fd] });
          } finally {
            fs.closeSync(fd);
          }
        }
      },
      { onError: (e, context) => onError(e as IpcError, context) },
    ),
  );
  await reader.start();
  return { reader, conns };
}

describe('descriptors with replies', () => {
  it('a Writer with onMessage and acceptFds takes them; the reader closed its own right after write()', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'r.txt', 'a reply with a file');
    const { reader } = await fileServer(path, file);
    const got: { data: string; contents: string[] }[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        acceptFds: true,
        onMessage: (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            const contents = b.takeFds(i).map((fd: number) => {
              const s = fs.readFileSync(fd, 'utf8');
              fs.closeSync(fd);
              return s;
            });
            got.push({ data: b.at(i)!.toString(), contents });
          }
        },
      }),
    ).start();
    for (let i = 0; i < 3; i++) w.write('send-file');
    await within(w.flush(), 'flush()');
    await waitFor(() => got.length >= 3, 10_000, 'three replies');
    expect(got).toEqual(new Array(3).fill({ data: 'here', contents: ['a reply with a file'] }));
    expect(w.metrics().fdsReceived).toBe(3);
    await waitFor(() => reader.metrics().fdsSent === 3, 10_000, "the reader's fdsSent").catch(() => {});
    expect(reader.metrics().fdsSent).toBe(3);
    expect(fdsOnFile(file)).toBe(0);
  });

  itOnKernel(true)('a Writer with onMessage but without acceptFds: its socket refuses them (Linux 6.16+), so the reader reports ERR_FDS_REFUSED and drops that reply only; nothing in the writer\'s table, the connection kept', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'r.txt', 'unwanted reply');
    const readerErrors: { code?: string; context: string }[] = [];
    const { reader, conns } = await fileServer(path, file, (e, context) => readerErrors.push({ code: e.code, context }));
    const replies: string[] = [];
    const errors: (string | undefined)[] = [];
    const reasons: (string | undefined)[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage: (b: Batch) => {
          for (const m of b) replies.push(m.toString());
        },
      }),
    );
    w.on('error', (e) => errors.push(e.code));
    w.on('disconnect', (why) => reasons.push(why?.code));
    w.start();
    w.write('send-file');
    w.write('plain');
    await waitFor(() => replies.length >= 1 && readerErrors.length >= 1, 10_000, 'the plain reply and the refusal');
    w.write('plain');
    await waitFor(() => replies.length >= 2, 10_000, 'a reply after the refused one');
    expect(replies).toEqual(['plain-reply', 'plain-reply']);
    expect(readerErrors).toEqual([{ code: 'ERR_FDS_REFUSED', context: 'connection' }]);
    expect(errors).toEqual([]);
    expect(reasons).toEqual([]);
    expect(new Set(conns.map((c) => c.id)).size).toBe(1);
    expect(fdsOnFile(file)).toBe(0);
    expect(w.metrics().fdsRefused).toBe(0);
    expect(w.metrics().fdsReceived).toBe(0);
    expect(reader.metrics().fdsSent).toBe(0);
    expect(reader.metrics().replyBytesDropped).toBe(5); // the refused frame: a 1-byte prefix and 'here'
  });

  itOnKernel(false)('a Writer with onMessage but without acceptFds: ERR_UNEXPECTED_FDS, none of them in its table, the connection replaced and working', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'r.txt', 'unwanted reply');
    const { conns } = await fileServer(path, file);
    const replies: string[] = [];
    const errors: { code?: string; context: string }[] = [];
    const reasons: (string | undefined)[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        onMessage: (b: Batch) => {
          for (const m of b) replies.push(m.toString());
        },
      }),
    );
    w.on('error', (e, context) => errors.push({ code: e.code, context }));
    w.on('disconnect', (why) => reasons.push(why?.code));
    w.start();
    w.write('send-file');
    await waitFor(() => reasons.length >= 1, 10_000, "the writer's disconnect");
    expect(reasons[0]).toBe('ERR_UNEXPECTED_FDS');
    expect(errors).toContainEqual({ code: 'ERR_UNEXPECTED_FDS', context: 'connection' });
    expect(fdsOnFile(file)).toBe(0);
    expect(replies).toEqual([]);
    expect(w.metrics().fdsRefused).toBeGreaterThanOrEqual(1);
    // Replaced: the writer reconnects and goes on.
    w.write('hello again');
    await within(w.flush(), 'flush()');
    await waitFor(() => conns.some((c) => c.id !== conns[0].id), 10_000, 'a new connection');
  });

  it('connection.write() checks fds as writer.write() does: ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE / ERR_OUT_OF_RANGE, nothing sent', async () => {
    const path = tmpSocket();
    const file = fileNear(path, 'v.txt', 'validation');
    const results: { what: string; name?: string; code?: string; returned?: unknown }[] = [];
    let conn: Connection | undefined;
    const reader = track(
      new Reader(path, (b: Batch) => {
        conn = b.connection;
      }),
    );
    await reader.start();
    const replies: string[] = [];
    const w = track(
      new Writer(path, {
        reconnect: FAST,
        acceptFds: true,
        onMessage: (b: Batch) => {
          for (let i = 0; i < b.length; i++) {
            for (const fd of b.takeFds(i)) fs.closeSync(fd);
            replies.push(b.at(i)!.toString());
          }
        },
      }),
    ).start();
    w.write('hi');
    await waitFor(() => conn !== undefined, 10_000, 'the connection');
    const fd = fs.openSync(file, 'r');
    const closed = fs.openSync(file, 'r');
    fs.closeSync(closed);
    try {
      const cases: [string, unknown][] = [
        ['not an array', 3],
        ['a string element', ['3']],
        ['a closed descriptor', [closed]],
        ['a negative number', [-1]],
        ['254 descriptors', new Array(254).fill(fd)],
      ];
      for (const [what, fds] of cases) {
        try {
          results.push({ what, returned: conn!.write(`bad: ${what}`, { fds } as never) });
        } catch (e) {
          results.push({ what, name: (e as Error).name, code: (e as { code?: string }).code });
        }
      }
      expect(results).toEqual([
        { what: 'not an array', name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
        { what: 'a string element', name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
        { what: 'a closed descriptor', name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
        { what: 'a negative number', name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
        { what: '254 descriptors', name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
      ]);
      // An open descriptor, then a closed one whose number a dup of the first would take.
      const closed2 = fs.openSync(file, 'r');
      fs.closeSync(closed2);
      let mixed: unknown;
      try {
        mixed = conn!.write('mixed', { fds: [fd, closed2] });
      } catch (e) {
        mixed = (e as { code?: string }).code;
      }
      expect(mixed).toBe('ERR_INVALID_ARG_VALUE');
      expect(conn!.write('fine', { fds: [fd] })).toBe(true);
      await waitFor(() => replies.length >= 1, 10_000, 'the good reply');
      expect(replies).toEqual(['fine']);
      expect(fdsOnFile(file)).toBe(1); // `fd` only
    } finally {
      fs.closeSync(fd);
    }
  });
});
