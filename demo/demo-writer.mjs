// The demo's writer process: sends COUNT messages of SIZE bytes, each starting
// with its sequence number, waiting for 'drain' whenever the queue is full.
import { once } from 'node:events';
import { Writer } from '../dist/index.mjs';

const [socketPath, countArg, sizeArg] = process.argv.slice(2);
const count = Number(countArg);
const msg = Buffer.alloc(Number(sizeArg), 0x61);
const writer = new Writer(socketPath, {
  onError: (err, context) => console.error(`writer ${context} error:`, err.message),
});
writer.start();
for (let i = 0; i < count; ) {
  msg.writeUInt32LE(i, 0);
  if (writer.write(msg)) i++;
  else await once(writer, 'drain');
}
const { discarded } = await writer.stop({ timeoutMs: 10_000 });
if (discarded) {
  console.error(`writer: ${discarded} messages could not be sent`);
  process.exitCode = 1;
}
