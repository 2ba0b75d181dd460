// `uds-ipc bridge --config FILE` against a real nats-server: the example of
// docs/nats.md (two listen routes, two subscribe routes, JetStream) run in one
// bridge process, with the test's socket paths, server and one replica.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Reader, Writer, type Batch } from '../../src';
import { ROOT, waitFor, within } from '../helpers';
import { startNats, stopAllNats, type NatsServer } from './server';
import { docsConfigExample } from './config-example';

const TOKEN = 'cfg-t0ken';
let srv: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  srv = await startNats({ args: ['--auth', TOKEN] });
  nc = await connect({ servers: srv.url, token: TOKEN });
  jsm = await jetstreamManager(nc);
  // short: socket paths are limited to 107 bytes
  dir = mkdtempSync(join(tmpdir(), 'uds-cfg-'));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await nc?.close();
  await stopAllNats();
  rmSync(dir, { recursive: true, force: true });
});

describe('uds-ipc bridge --config', () => {
  it('the docs example: two listen and two subscribe routes in one process, JetStream, --nats and the token from the environment overriding the file', async () => {
    // The example as it is, but: the sockets in the test's directory, one
    // replica (one server), and instead of its credentials file a wrong token,
    // which UDS_IPC_NATS_TOKEN overrides; its servers (nats-1, nats-2) are
    // overridden by --nats.
    const config = JSON.parse(docsConfigExample().replaceAll('/run/app/', `${dir}/`)) as Record<string, unknown> & { jetstream: { replicas: number } };
    expect(config.credsFile).toBeDefined();
    delete config.credsFile;
    config.token = 'not-the-token';
    config.jetstream.replicas = 1;
    const file = join(dir, 'bridge.json');
    writeFileSync(file, JSON.stringify(config, null, 2));
    const sock = (name: string): string => join(dir, name);

    // the application's readers of the two subscribe routes
    const got = { replies: [] as string[], config: [] as string[] };
    const readers = await Promise.all(
      (['replies', 'config'] as const).map(async (k) => {
        const r = new Reader(sock(`${k}.sock`), (b: Batch) => {
          for (const m of b) got[k].push(m.toString());
        }, { delivery: 'acked' });
        await r.start();
        return r;
      }),
    );

    const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli.js'), 'bridge', '--config', file, '--nats', srv.url], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, UDS_IPC_NATS_TOKEN: TOKEN },
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor(() => stderr.includes('ready') || child.exitCode !== null, 20_000, 'bridge ready');
    expect(stderr).toContain('ready');
    for (const line of [
      `${sock('orders.sock')} -> app.orders (JetStream stream APP)`,
      `${sock('audit.sock')} -> app.audit (JetStream stream APP)`,
      `app.replies.a -> ${sock('replies.sock')} (JetStream stream APP)`,
      `app.config -> ${sock('config.sock')} (JetStream stream APP)`,
    ]) {
      expect(stderr).toContain(line);
    }

    // the stream covers the four subjects; the named durable consumer exists
    const info = await jsm.streams.info('APP');
    expect([...info.config.subjects!].sort()).toEqual(['app.audit', 'app.config', 'app.orders', 'app.replies.a']);
    expect((await jsm.consumers.info('APP', 'host-a-config')).config.filter_subject).toBe('app.config');

    // local writers -> the two listen routes -> the stream
    const N = 2000;
    const writers = (['orders', 'audit'] as const).map((k) => {
      const w = new Writer(sock(`${k}.sock`), { delivery: 'acked' }).start();
      for (let i = 0; i < N; i++) w.write(`${k} ${i}`);
      return w;
    });
    await within(Promise.all(writers.map((w) => w.acknowledged())), 'both listen routes stored everything');
    const counts = (await jsm.streams.info('APP', { subjects_filter: 'app.*' })).state.subjects as Record<string, number>;
    expect(counts).toMatchObject({ 'app.orders': N, 'app.audit': N });
    for (const [subject, k] of [['app.orders', 'orders'], ['app.audit', 'audit']] as const) {
      const first = await jsm.streams.getMessage('APP', { last_by_subj: subject });
      expect(first.string()).toBe(`${k} ${N - 1}`);
      expect(first.header.get('Uds-Ipc-Pid')).toBe(String(process.pid));
    }

    // the stream -> the two subscribe routes -> the application's readers
    const js = jetstream(nc);
    for (let i = 0; i < N; i++) {
      void js.publish('app.replies.a', `reply ${i}`);
      void js.publish('app.config', `config ${i}`);
    }
    await waitFor(() => got.replies.length >= N && got.config.length >= N, 30_000, 'both subscribe routes delivered');
    expect(got.replies).toEqual(Array.from({ length: N }, (_, i) => `reply ${i}`));
    expect(got.config).toEqual(Array.from({ length: N }, (_, i) => `config ${i}`));

    child.kill('SIGTERM');
    expect(await within(exit, 'bridge exit')).toBe(0);
    expect(stderr).toMatch(new RegExp(`stopped: received ${4 * N}, published ${2 * N}, written ${2 * N}, acked ${4 * N}, dropped 0`));
    await Promise.all(writers.map((w) => w.stop()));
    await Promise.all(readers.map((r) => r.stop()));
  });
});
