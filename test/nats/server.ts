// nats-server processes for the bridge tests (`npm run test:nats`): real
// servers on free loopback ports, JetStream on, storage in a temp directory;
// started, waited for (the port accepting connections), stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const NATS_SERVER = 'nats-server';

/** A free TCP port on 127.0.0.1 (bound, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export interface NatsServer {
  port: number;
  url: string;
  dir: string;
  proc: ChildProcess;
  log: () => string;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, waits for the exit. */
  kill(): Promise<void>;
}

const all = new Set<NatsServer>();

/**
 * Starts nats-server with JetStream (-js -sd DIR) on a free port; `config`:
 * extra lines of a configuration file (e.g. `max_payload: 4096`); `args`:
 * extra arguments. Resolves once the port accepts connections (and, with
 * `ready`, once the log says so).
 */
export async function startNats(opts: { config?: string; args?: string[]; port?: number; dir?: string; ready?: RegExp; jetstream?: boolean } = {}): Promise<NatsServer> {
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'uds-ipc-nats-'));
  mkdirSync(dir, { recursive: true });
  const args = ['-a', '127.0.0.1', '-p', String(port), ...(opts.jetstream === false ? [] : ['-js', '-sd', join(dir, 'js')])];
  if (opts.config !== undefined) {
    const conf = join(dir, `server-${port}.conf`);
    writeFileSync(conf, opts.config + '\n');
    args.push('-c', conf);
  }
  args.push(...(opts.args ?? []));
  const proc = spawn(NATS_SERVER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once('exit', () => ((exited = true), resolve())));
  proc.once('error', (e) => (log += String(e)));
  const s: NatsServer = {
    port,
    url: `nats://127.0.0.1:${port}`,
    dir,
    proc,
    log: () => log,
    async stop() {
      if (!exited) proc.kill('SIGTERM');
      await exit;
      all.delete(s);
    },
    async kill() {
      if (!exited) proc.kill('SIGKILL');
      await exit;
      all.delete(s);
    },
  };
  all.add(s);
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) throw new Error(`nats-server exited at start:\n${log}`);
    if ((await portOpen(port)) && (opts.ready === undefined || opts.ready.test(log))) break;
    if (Date.now() > deadline) throw new Error(`nats-server did not open port ${port} within 20 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return s;
}

/** Stops every server still running (afterAll) and removes their directories. */
export async function stopAllNats(): Promise<void> {
  const dirs = [...all].map((s) => s.dir);
  await Promise.all([...all].map((s) => s.kill()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/**
 * A cluster of `n` nodes with routes on loopback (JetStream clustered: each
 * node named, one cluster name). Resolves once every node's port is open and
 * JetStream has a meta leader.
 */
export async function startCluster(n: number): Promise<NatsServer[]> {
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const cports = await Promise.all(Array.from({ length: n }, () => freePort()));
  const routes = cports.map((p) => `nats-route://127.0.0.1:${p}`).join(',');
  const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-nats-cluster-'));
  return Promise.all(
    ports.map((port, i) =>
      startNats({
        port,
        dir: join(dir, `n${i + 1}`),
        args: ['-n', `n${i + 1}`, '--cluster_name', 'udsipc', '--cluster', `nats://127.0.0.1:${cports[i]}`, '--routes', routes],
      }),
    ),
  );
}
