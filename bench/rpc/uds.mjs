// The uds-ipc contender of `npm run bench:rpc`: RpcServer / RpcClient from the
// built package (dist/, `npm run build:ts`), with default options but
// maxConcurrentCalls, raised to the calls in flight of the run so that the
// server never holds requests back. Loaded only when the uds contender runs.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST = path.join(root, 'dist', 'index.mjs');

/** The package's RPC classes, or an Error saying why they are not there. */
export async function loadRpc() {
  if (!existsSync(DIST)) return new Error(`${path.relative(root, DIST)} is missing: run \`npm run build:ts\``);
  let pkg;
  try {
    pkg = await import(DIST);
  } catch (e) {
    return new Error(`cannot load ${path.relative(root, DIST)}: ${e?.message ?? e}`);
  }
  if (typeof pkg.RpcServer !== 'function' || typeof pkg.RpcClient !== 'function') {
    return new Error('this build of uds-ipc has no RpcServer/RpcClient (the RPC layer of issue #18 is not merged or not built)');
  }
  return pkg;
}

async function rpc() {
  const pkg = await loadRpc();
  if (pkg instanceof Error) throw pkg;
  return pkg;
}

/** Starts the echo server; `stats.calls` counts the calls served. */
export async function startServer(sockPath, stats, handler = (body) => body, options = {}) {
  const { RpcServer } = await rpc();
  const server = new RpcServer(
    sockPath,
    {
      echo(body) {
        stats.calls++;
        return handler(body);
      },
    },
    { maxConcurrentCalls: Math.max(64, options.inflight ?? 64) },
  );
  await server.start();
  return { close: () => server.stop({ timeoutMs: 2000 }) };
}

/**
 * Connects a client: `call(body, cb(err, reply))`. With `promise`, through
 * `client.call()`'s promise (what `await client.call(...)` costs); otherwise
 * through its callback form, as the node:net and gRPC contenders call.
 */
export async function connect(sockPath, { promise = false } = {}) {
  const { RpcClient } = await rpc();
  const client = new RpcClient(sockPath, {});
  await client.start();
  return {
    call: promise
      ? (body, cb) => {
          client.call('echo', body).then(
            (reply) => cb(null, reply),
            (err) => cb(err),
          );
        }
      : (body, cb) => client.call('echo', body, cb),
    close: () => client.stop({ timeoutMs: 2000 }),
  };
}
