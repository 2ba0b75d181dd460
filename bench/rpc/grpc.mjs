// The @grpc/grpc-js contender of `npm run bench:rpc`: a generic service (no
// .proto, no protobuf: Buffer passthrough serializers) on a `unix:` address,
// what a Node user would otherwise reach for. One channel per client; calls in
// flight share it (HTTP/2 streams).
import grpc from '@grpc/grpc-js';

const passthrough = (b) => b;

export const SERVICE = {
  echo: {
    path: '/bench.Bench/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: passthrough,
    requestDeserialize: passthrough,
    responseSerialize: passthrough,
    responseDeserialize: passthrough,
  },
};

const LIMITS = {
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};

/** Starts the echo server; `stats.calls` counts the calls served. */
export async function startServer(path, stats, handler = (body) => body) {
  const server = new grpc.Server(LIMITS);
  server.addService(SERVICE, {
    echo(call, callback) {
      stats.calls++;
      callback(null, handler(call.request));
    },
  });
  await new Promise((resolve, reject) =>
    server.bindAsync(`unix:${path}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  return {
    close: () => new Promise((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()),
  };
}

const Client = grpc.makeGenericClientConstructor(SERVICE, 'Bench');

/** Connects a client: `call(body, cb(err, reply))`. */
export async function connect(path) {
  const client = new Client(`unix:${path}`, grpc.credentials.createInsecure(), LIMITS);
  await new Promise((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
  return {
    call(body, cb) {
      client.echo(body, cb);
    },
    close() {
      client.close();
      return Promise.resolve();
    },
  };
}
