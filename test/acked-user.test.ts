// Acknowledged delivery and other users (docs/security.md): a Reader keeps
// writer sessions apart per peer uid, so a peer of another user that presents
// a writer's session id gets a session of its own. If sessions were shared,
// its messages 1..5 would be dropped as "copies" of what the real writer
// already delivered, and it could acknowledge for it. The peer runs as uid
// 65534 (setpriv) and speaks the wire format by hand (fixtures/acked-raw-peer.js).
import { describe, it, expect, afterAll, afterEach, beforeAll } from 'vitest';
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import { Reader, Writer, type Batch } from '../src/index';
import { FAST, tmpSocket, useTracking, waitFor, within, killChildren, readableCopy, assertCanRunAs, asUser, type ReadableCopy } from './helpers';

const NOBODY = 65534;
const track = useTracking(500);
let copy: ReadableCopy | undefined;
afterEach(() => killChildren());
afterAll(() => copy?.remove());
beforeAll(() => {
  copy = readableCopy();
  assertCanRunAs(NOBODY, copy);
});

describe('acked sessions are kept apart per user', () => {
  it("another user presenting a writer's session id gets its own session: its messages are delivered, not dropped as copies, and its acks are its own", async () => {
    const path = tmpSocket();
    fs.chmodSync(dirname(path), 0o755);
    const got: { data: string; seq: number | undefined; uid: number; session: string | undefined }[] = [];
    const reader = track(
      new Reader(
        path,
        (b: Batch) => {
          for (let i = 0; i < b.length; i++) got.push({ data: b.at(i)!.toString(), seq: b.sequence(i), uid: b.connection.uid, session: b.connection.session });
        },
        { delivery: 'acked', mode: 0o666 },
      ),
    );
    await reader.start();
    const w = track(new Writer(path, { delivery: 'acked', reconnect: FAST }).start());
    for (let i = 1; i <= 10; i++) w.write(`w${i}`);
    await within(w.acknowledged(), 'the real writer acknowledged');
    expect(got.map((g) => g.data)).toEqual(Array.from({ length: 10 }, (_, i) => `w${i + 1}`));

    const peer = asUser(NOBODY, copy!, 'acked-raw-peer.js', [path, w.session!, '5']);
    await peer.line((l) => l.event === 'greeted', 'the greeting at the other user');
    await waitFor(() => got.length >= 15, 10_000, "the other user's five messages delivered");
    const theirs = got.slice(10);
    expect(theirs.map((g) => [g.data, g.seq, g.uid, g.session])).toEqual(
      [1, 2, 3, 4, 5].map((s) => [`n${s}`, s, NOBODY, w.session]),
    );
    expect(reader.metrics().duplicatesDropped).toBe(0);
    // Its acknowledgements are of its own session: up to its 5th message (never the real writer's 10).
    const ack = await peer.line((l) => l.event === 'ack', 'an ack at the other user');
    expect(ack.seq).toBeLessThanOrEqual(5);
    await waitFor(() => peer.all((l) => l.event === 'ack').some((l) => l.seq === 5), 10_000, 'the ack of its 5th message');
    expect(peer.all((l) => l.event === 'ack').every((l) => (l.seq as number) <= 5)).toBe(true);
    // The real writer goes on: its next messages are numbered 11.. and delivered.
    for (let i = 11; i <= 13; i++) w.write(`w${i}`);
    await within(w.acknowledged(), 'the real writer acknowledged again');
    expect(got.filter((g) => g.uid !== NOBODY).map((g) => g.seq)).toEqual(Array.from({ length: 13 }, (_, i) => i + 1));
  });
});
