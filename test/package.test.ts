// The package as users load it: CommonJS require, ES module import, types,
// and one addon instance shared by both.
import { describe, it, expect, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tmpSocket, cleanupDirs } from './helpers';

afterAll(cleanupDirs);

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
}

describe('package entry points', () => {
  it('require("uds-ipc") exposes the public API', () => {
    const out = node([
      '-e',
      `const m = require('uds-ipc');
       console.log(JSON.stringify([typeof m.Reader, typeof m.Writer, typeof m.IpcError, typeof m.encodeFrame, m.MAX_PATH_BYTES, m.ErrorCodes.ERR_MESSAGE_TOO_LARGE]));`,
    ]);
    expect(JSON.parse(out)).toEqual(['function', 'function', 'function', 'function', 107, 'ERR_MESSAGE_TOO_LARGE']);
  });

  it('import { ... } from "uds-ipc" gives the same classes as require', () => {
    const out = node([
      '--input-type=module',
      '-e',
      `import { Reader, Writer, IpcError } from 'uds-ipc';
       import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('uds-ipc');
       console.log(JSON.stringify([Reader === cjs.Reader, Writer === cjs.Writer, new IpcError('ERR_SOCKET', 'x') instanceof cjs.IpcError]));`,
    ]);
    expect(JSON.parse(out)).toEqual([true, true, true]);
  });

  it('round-trips a message through the ES module entry point', () => {
    const path = tmpSocket();
    const out = node([
      '--input-type=module',
      '-e',
      `import { Reader, Writer } from 'uds-ipc';
       let got;
       const r = new Reader(${JSON.stringify(path)}, (b) => { got = b.at(0).toString(); });
       await r.start();
       const w = new Writer(${JSON.stringify(path)});
       w.start(); w.write('hello from esm');
       await w.stop();
       while (got === undefined) await new Promise((res) => setTimeout(res, 5));
       await r.stop();
       console.log(got);`,
    ]);
    expect(out.trim()).toBe('hello from esm');
  });

  it('uds-ipc/nats: the same Bridge through require and import, sharing the core package\'s classes', () => {
    const out = node([
      '--input-type=module',
      '-e',
      `import { Bridge, HEADER_HOST } from 'uds-ipc/nats';
       import { createRequire } from 'node:module';
       const req = createRequire(import.meta.url);
       const cjs = req('uds-ipc/nats');
       console.log(JSON.stringify([typeof Bridge, Bridge === cjs.Bridge, HEADER_HOST, req.resolve('uds-ipc/nats').endsWith('dist/nats/index.js')]));`,
    ]);
    expect(JSON.parse(out)).toEqual(['function', true, 'Uds-Ipc-Host', true]);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(readFileSync(join(ROOT, pkg.exports['./nats'].types), 'utf8')).toMatch(/class Bridge/);
    // optional peer dependencies: installing uds-ipc does not pull the NATS clients in
    for (const p of ['@nats-io/transport-node', '@nats-io/jetstream']) {
      expect(pkg.peerDependenciesMeta[p]).toEqual({ optional: true });
      expect(pkg.dependencies[p]).toBeUndefined();
    }
  });

  it('ships TypeScript declarations for every entry point', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const types = pkg.exports['.'].types as string;
    expect(existsSync(join(ROOT, types))).toBe(true);
    const dts = readFileSync(join(ROOT, 'dist', 'reader.d.ts'), 'utf8');
    expect(dts).toMatch(/class Reader/);
    expect(dts).toMatch(/start\(options\?: StartOptions\): Promise<void>/);
    expect(readFileSync(join(ROOT, types), 'utf8')).toMatch(/Writer/);
  });
});
