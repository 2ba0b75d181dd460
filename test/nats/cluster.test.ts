// A three-node NATS cluster (routes on loopback) standing in for three hosts:
// a uds-ipc Writer on "host A" → bridge (connected to node 1) → node 1 … node 3
// → bridge (connected to node 3) → a uds-ipc Reader on "host B".
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Reader, Writer, type Batch } from '../../src';
import { Bridge } from '../../src/nats';
import { tmpSocket, waitFor, within } from '../helpers';
import { startCluster, startNats, stopAllNats, type NatsServer } from './server';

let nodes: NatsServer[];

/** Waits until JetStream answers on every node (a metadata leader is elected). */
async function jetStreamReady(urls: string[]): Promise<void> {
  for (const url of urls) {
    const nc: NatsConnection = await connect({ servers: url });
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 1000 });
        await jsm.getAccountInfo();
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await nc.close();
  }
}

beforeAll(async () => {
  nodes = await startCluster(3);
  await jetStreamReady(nodes.map((n) => n.url));
}, 60_000);
afterAll(async () => {
  await stopAllNats();
});

/** Message i: its number and some bytes that depend on it, 16 to 1040 bytes. */
function body(i: number): Buffer {
  const h = createHash('sha256').update(String(i)).digest();
  const b = Buffer.alloc(16 + (h[0] << 2));
  b.writeUInt32BE(i, 0);
  for (let k = 4; k < b.length; k++) b[k] = h[k % 32] ^ k;
  return b;
}

const ROUTE_PORT = /Listening for route connections on 127\.0\.0\.1:(\d+)/;

/** SIGKILLs `node`, runs `meanwhile`, and starts it again on its ports with its storage. */
async function restartNode(node: NatsServer, name: string, meanwhile: () => Promise<void>): Promise<NatsServer> {
  const cport = ROUTE_PORT.exec(node.log())![1];
  const routes = nodes.filter((n) => n !== node).map((n) => ROUTE_PORT.exec(n.log())![1]);
  await node.kill();
  await meanwhile();
  return startNats({
    port: node.port,
    dir: node.dir,
    args: ['-n', name, '--cluster_name', 'udsipc', '--cluster', `nats://127.0.0.1:${cport}`, '--routes', [cport, ...routes].map((p) => `nats-route://127.0.0.1:${p}`).join(',')],
  });
}

describe('three-node cluster', () => {
  it('core mode: 100k messages host A → node 1 → node 3 → host B, in order and byte-exact', async () => {
    const inPath = tmpSocket('a.sock');
    const outPath = tmpSocket('b.sock');
    const N = 100_000;
    let next = 0;
    let bad = '';
    const reader = new Reader(outPath, (b: Batch) => {
      for (const m of b) {
        if (m.length >= 4 && m.readUInt32BE(0) === 0xffffffff) continue; // probes
        if (!bad && !body(next).equals(m)) bad = `message ${next} differs (got #${m.length >= 4 ? m.readUInt32BE(0) : '?'})`;
        next++;
      }
    });
    await reader.start();
    const hostB = new Bridge({ servers: nodes[2].url, routes: [{ subscribe: 'cluster.core', connect: outPath, writerOptions: { maxBufferedWrites: 200_000, maxBufferedBytes: 256 * 1024 * 1024 } }] });
    await hostB.start();
    const hostA = new Bridge({ servers: nodes[0].url, routes: [{ listen: inPath, publish: 'cluster.core' }] });
    await hostA.start();
    const writer = new Writer(inPath).start();
    // Interest travels over the routes: send probes until one arrives at host B.
    const probe = Buffer.alloc(4, 0xff);
    await waitFor(() => (writer.write(probe), hostB.metrics().received > 0), 20_000, 'the subscription known on node 1', 50);
    await waitFor(() => hostB.metrics().received === hostA.metrics().published, 20_000, 'probes through');
    for (let i = 0; i < N; i++) await writer.send(body(i));
    await writer.flush();
    await waitFor(() => next >= N || bad !== '', 120_000, `100k at host B (have ${next})`);
    expect(bad).toBe('');
    expect(next).toBe(N);
    expect(hostB.metrics().dropped).toBe(0);
    await writer.stop();
    await hostA.stop();
    await hostB.stop();
    await reader.stop();
  });

  it('JetStream replicas 3: nothing lost while the node of host A\'s bridge, then the node of host B\'s, is killed and restarted', async () => {
    const inPath = tmpSocket('ja.sock');
    const outPath = tmpSocket('jb.sock');
    const N = 100_000;
    const seen = new Map<number, number>();
    let bad = '';
    const reader = new Reader(outPath, (b: Batch) => {
      for (const m of b) {
        const i = m.readUInt32BE(0);
        if (!bad && !body(i).equals(m)) bad = `message ${i} differs`;
        seen.set(i, (seen.get(i) ?? 0) + 1);
      }
    }, { delivery: 'acked' });
    await reader.start();
    const js = { stream: 'CLUSTER', replicas: 3, ackWaitMs: 2000, publishTimeoutMs: 2000 };
    const hostB = new Bridge({ servers: nodes[2].url, jetstream: js, routes: [{ subscribe: 'cluster.js', connect: outPath }] });
    await hostB.start();
    const hostA = new Bridge({ servers: nodes[0].url, jetstream: js, routes: [{ listen: inPath, publish: 'cluster.js' }] });
    const errors: string[] = [];
    hostA.on('error', (e) => errors.push(e.message));
    await hostA.start();
    const nc = await connect({ servers: nodes[1].url });
    const info = await (await jetstreamManager(nc)).streams.info('CLUSTER');
    expect(info.config.num_replicas).toBe(3);
    expect(info.config.storage).toBe('file');
    const writer = new Writer(inPath, { delivery: 'acked' }).start();
    const sending = (async () => {
      for (let i = 0; i < N; i++) await writer.send(body(i));
    })();
    await waitFor(() => seen.size >= N / 3, 60_000, 'a third through');
    // node 1 (host A's server) dies; the client reconnects to node 2 or 3 by itself; node 1 comes back with its storage
    nodes[0] = await restartNode(nodes[0], 'n1', () => waitFor(() => seen.size >= (2 * N) / 3, 90_000, 'two thirds through with node 1 down'));
    // then node 3, the one host B's bridge consumes through
    await waitFor(() => seen.size >= (5 * N) / 6, 90_000, 'five sixths through');
    nodes[2] = await restartNode(nodes[2], 'n3', async () => {
      await waitFor(() => seen.size >= (5 * N) / 6 + 500 || seen.size >= N, 90_000, 'more through with node 3 down');
    });
    await within(sending, 'all sent', 90_000);
    await within(writer.acknowledged(), 'all in the stream', 90_000);
    await waitFor(() => seen.size >= N, 90_000, `every message at host B (have ${seen.size})`);
    expect(bad).toBe('');
    expect([...Array(N).keys()].filter((i) => !seen.has(i))).toEqual([]);
    const dups = [...seen.values()].reduce((a, c) => a + c - 1, 0);
    console.log(`cluster JetStream: ${N} messages, ${dups} delivered more than once, ${errors.length} publish retries reported`);
    await nc.close();
    await writer.stop();
    await hostA.stop();
    await hostB.stop();
    await reader.stop();
  });
});
