// The NATS bridge (uds-ipc/nats) without a NATS server: option validation,
// subject rules, the missing-dependency error, and that neither the core
// package nor the bridge module loads the NATS clients before start(); the
// configuration file of `uds-ipc bridge --config` and its checks.
// What needs a real nats-server is in test/nats/ (`npm run test:nats`).
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bridge, loadNats, isLiteralSubject, isSubscribeSubject, subjectCovers, defaultDurable, readBridgeConfig, parseBridgeConfig } from '../src/nats';
import { IpcError } from '../src/errors';
import { ROOT, runNode } from './helpers';
import { docsConfigExample } from './nats/config-example';

describe('NATS bridge without a server', () => {
  it('a missing client package is ERR_MISSING_DEPENDENCY naming both packages to install', () => {
    const missing = (id: string): unknown => {
      if (id === '@nats-io/jetstream') throw Object.assign(new Error(`Cannot find module '${id}'`), { code: 'MODULE_NOT_FOUND' });
      return {};
    };
    let err: unknown;
    try {
      loadNats(missing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IpcError);
    expect((err as IpcError).code).toBe('ERR_MISSING_DEPENDENCY');
    expect((err as IpcError).message).toContain('"@nats-io/jetstream"');
    expect((err as IpcError).message).toContain('npm install @nats-io/transport-node @nats-io/jetstream');
    expect(typeof loadNats().connect).toBe('function');
  });

  it('the core package and uds-ipc/nats load no NATS client until a bridge starts', () => {
    const script = `
      require('uds-ipc'); const { Bridge } = require('uds-ipc/nats');
      new Bridge({ servers: 'nats://127.0.0.1:1', routes: [{ listen: '/tmp/x.sock', publish: 'a' }] });
      const loaded = Object.keys(require.cache).filter((f) => f.includes('@nats-io'));
      console.log(JSON.stringify(loaded));`;
    // Run in the repository: 'uds-ipc' is the package's own name (self-reference through its exports map, dist/).
    const out = execFileSync(process.execPath, ['-e', script], { cwd: ROOT }).toString();
    expect(JSON.parse(out)).toEqual([]);
  });

  it('subjects: literal for publishing, wildcards for subscribing, stream coverage', () => {
    for (const s of ['a', 'a.b', 'orders.eu-1.new', '$KV.x']) expect(isLiteralSubject(s), s).toBe(true);
    for (const s of ['', 'a.*', 'a.>', 'a..b', '.a', 'a.', 'a b', 'a\tb']) expect(isLiteralSubject(s), s).toBe(false);
    for (const s of ['a', 'a.*', 'a.>', '*.b.>', '>']) expect(isSubscribeSubject(s), s).toBe(true);
    for (const s of ['', 'a.>.b', 'a*', 'a.b>', 'a..b', 'a b']) expect(isSubscribeSubject(s), s).toBe(false);
    expect(subjectCovers('a.>', 'a.b.c')).toBe(true);
    expect(subjectCovers('a.>', 'a')).toBe(false);
    expect(subjectCovers('a.*', 'a.b')).toBe(true);
    expect(subjectCovers('a.*', 'a.*')).toBe(true);
    expect(subjectCovers('a.*', 'a.>')).toBe(false);
    expect(subjectCovers('a.*', 'a.b.c')).toBe(false);
    expect(subjectCovers('>', 'x.>')).toBe(true);
    expect(subjectCovers('a.b', 'a.b')).toBe(true);
    expect(subjectCovers('a.b', 'a.c')).toBe(false);
    expect(defaultDurable('S', 'a.b', '/p')).toMatch(/^uds-ipc-[0-9a-f]{16}$/);
    expect(defaultDurable('S', 'a.b', '/p')).toBe(defaultDurable('S', 'a.b', '/p'));
    expect(defaultDurable('S', 'a.b', '/p')).not.toBe(defaultDurable('S', 'a.b', '/q'));
  });

  it('every option is validated with an actionable message', () => {
    const ok = { servers: 'nats://127.0.0.1:4222', routes: [{ listen: '/tmp/x.sock', publish: 'a.b' }] };
    const cases: [unknown, string, RegExp][] = [
      [undefined, 'ERR_INVALID_ARG_TYPE', /"options" argument must be an object/],
      [{ ...ok, servers: 5 }, 'ERR_INVALID_ARG_TYPE', /"servers" option must be a URL string/],
      [{ ...ok, servers: [] }, 'ERR_INVALID_ARG_TYPE', /"servers"/],
      [{ ...ok, bogus: 1 }, 'ERR_INVALID_ARG_VALUE', /Unknown option "bogus" in Bridge options/],
      [{ ...ok, routes: [] }, 'ERR_INVALID_ARG_TYPE', /"routes" option must be a non-empty array/],
      [{ ...ok, routes: [{ foo: 1 }] }, 'ERR_INVALID_ARG_VALUE', /routes\[0\] must be \{ listen, publish \} or \{ subscribe, connect \}/],
      [{ ...ok, routes: [{ listen: '/tmp/x.sock', publish: 'a.>' }] }, 'ERR_INVALID_ARG_VALUE', /not a subject one can publish to/],
      [{ ...ok, routes: [{ listen: '/tmp/x.sock', publish: 3 }] }, 'ERR_INVALID_ARG_TYPE', /routes\[0\]\.publish/],
      [{ ...ok, routes: [{ listen: '', publish: 'a' }] }, 'ERR_INVALID_ARG_VALUE', /path/],
      [{ ...ok, routes: [{ listen: '/tmp/x.sock', publish: 'a', readerOptions: { delivery: 'acked' } }] }, 'ERR_INVALID_ARG_VALUE', /delivery is set by the bridge/],
      [{ ...ok, routes: [{ subscribe: 'a.>.b', connect: '/tmp/x.sock' }] }, 'ERR_INVALID_ARG_VALUE', /not a valid subject/],
      [{ ...ok, routes: [{ subscribe: 'a', connect: '/tmp/x.sock', durable: 'd' }] }, 'ERR_INVALID_ARG_VALUE', /durable is for JetStream mode/],
      [{ ...ok, routes: [{ subscribe: 'a', connect: '/tmp/x.sock', extra: 1 }] }, 'ERR_INVALID_ARG_VALUE', /Unknown option "extra" in routes\[0\] \(a subscribe route\)/],
      [{ ...ok, jetstream: { stream: 'S' }, routes: [{ listen: '/tmp/x.sock', publish: () => 'a' }] }, 'ERR_INVALID_ARG_VALUE', /subject function is for core mode only/],
      [{ ...ok, jetstream: { stream: 'a.b' } }, 'ERR_INVALID_ARG_VALUE', /Invalid stream name/],
      [{ ...ok, jetstream: {} }, 'ERR_INVALID_ARG_TYPE', /jetstream\.stream/],
      [{ ...ok, jetstream: { stream: 'S', replicas: 7 } }, 'ERR_OUT_OF_RANGE', /jetstream\.replicas/],
      [{ ...ok, jetstream: { stream: 'S', maxInFlight: 0 } }, 'ERR_OUT_OF_RANGE', /jetstream\.maxInFlight/],
      [{ ...ok, user: 'u' }, 'ERR_INVALID_ARG_VALUE', /"user" and "password" options go together/],
      [{ ...ok, token: 't', user: 'u', password: 'p' }, 'ERR_INVALID_ARG_VALUE', /either "token" or "user"\/"password"/],
      [{ ...ok, token: '' }, 'ERR_INVALID_ARG_VALUE', /"token" option must not be empty/],
      [{ ...ok, credsFile: 1 }, 'ERR_INVALID_ARG_TYPE', /"credsFile" option must be a string/],
      [{ ...ok, onError: 'x' }, 'ERR_INVALID_ARG_TYPE', /"onError" option must be a function/],
      [{ ...ok, connectTimeoutMs: -1 }, 'ERR_OUT_OF_RANGE', /connectTimeoutMs/],
      // several routes of each kind, but not two Readers on one path, two routes on one durable, or a core route repeated
      [{ ...ok, routes: [{ listen: '/tmp/x.sock', publish: 'a' }, { listen: '/tmp/y.sock', publish: 'b' }, { listen: '/tmp/x.sock', publish: 'c' }] }, 'ERR_INVALID_ARG_VALUE', /routes\[2\] listens on "\/tmp\/x\.sock", as routes\[0\] does/],
      [{ ...ok, jetstream: { stream: 'S' }, routes: [{ subscribe: 'a', connect: '/tmp/x.sock', durable: 'd' }, { subscribe: 'b', connect: '/tmp/y.sock', durable: 'd' }] }, 'ERR_INVALID_ARG_VALUE', /routes\[1\] uses the durable consumer "d", as routes\[0\] does/],
      [{ ...ok, jetstream: { stream: 'S' }, routes: [{ subscribe: 'a', connect: '/tmp/x.sock' }, { subscribe: 'a', connect: '/tmp/x.sock' }] }, 'ERR_INVALID_ARG_VALUE', /routes\[1\] repeats routes\[0\]/],
      [{ ...ok, routes: [{ subscribe: 'a', connect: '/tmp/x.sock' }, { subscribe: 'a', connect: '/tmp/x.sock' }] }, 'ERR_INVALID_ARG_VALUE', /routes\[1\] repeats routes\[0\] \(subscribe "a" to "\/tmp\/x\.sock"\)/],
    ];
    for (const [opts, code, re] of cases) {
      let err: unknown;
      try {
        new Bridge(opts as never);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(opts)).toBeDefined();
      expect((err as { code?: string }).code, `${JSON.stringify(opts)}: ${(err as Error).message}`).toBe(code);
      expect((err as Error).message).toMatch(re);
    }
    expect(() => new Bridge(ok)).not.toThrow();
    // several of each kind
    const many = [
      { listen: '/tmp/x.sock', publish: 'a' },
      { listen: '/tmp/y.sock', publish: 'a' },
      { subscribe: 'a', connect: '/tmp/p.sock' },
      { subscribe: 'a', connect: '/tmp/q.sock' },
      { subscribe: 'b.>', connect: '/tmp/p.sock' },
    ];
    expect(() => new Bridge({ ...ok, routes: many })).not.toThrow();
    expect(() => new Bridge({ ...ok, jetstream: { stream: 'S' }, routes: many })).not.toThrow();
  });

  it('metricsText() in the package\'s Prometheus format, before start', async () => {
    const b = new Bridge({ servers: 'nats://127.0.0.1:4222', routes: [{ subscribe: 'a.*', connect: '/tmp/x.sock' }] });
    const text = b.metricsText('br', { host: 'a' });
    expect(text).toContain('# TYPE br_messages_published_total counter\nbr_messages_published_total{host="a"} 0\n');
    expect(text).toContain('# TYPE br_in_flight_messages gauge\n');
    expect(b.metrics()).toEqual({ received: 0, published: 0, written: 0, acked: 0, redelivered: 0, duplicates: 0, retries: 0, dropped: 0, errors: 0, inFlight: 0, connected: false });
    await b.stop();
    await b.stop();
  });
});

describe('bridge configuration file (uds-ipc bridge --config) without a server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'uds-ipc-bridge-config-'));
  const CLI = join(ROOT, 'dist', 'cli.js');
  let n = 0;
  /** Writes `content` (a string as it is, anything else as JSON) to a new file. */
  const file = (content: unknown): string => {
    const f = join(dir, `c${n++}.json`);
    writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
    return f;
  };
  const S = 'nats://127.0.0.1:1';
  const L = { listen: '/tmp/uds-ipc-cfg-l.sock', publish: 'a.b' };
  const U = { subscribe: 'a.*', connect: '/tmp/uds-ipc-cfg-u.sock' };

  it('the example of docs/nats.md is valid, with two routes of each kind', () => {
    const f = file(docsConfigExample());
    const c = readBridgeConfig(f);
    expect(c).toEqual({
      servers: ['nats://nats-1:4222', 'nats://nats-2:4222'],
      credsFile: '/etc/app/bridge.creds',
      name: 'app bridge on host A',
      jetstream: { stream: 'APP', replicas: 3, ackWaitMs: 30000 },
      routes: [
        { listen: '/run/app/orders.sock', publish: 'app.orders' },
        { listen: '/run/app/audit.sock', publish: 'app.audit' },
        { subscribe: 'app.replies.a', connect: '/run/app/replies.sock' },
        { subscribe: 'app.config', connect: '/run/app/config.sock', durable: 'host-a-config' },
      ],
    });
    expect(() => new Bridge({ ...c, servers: c.servers! })).not.toThrow();
  });

  it('every mistake in the file is a usage error (exit 2) with a stable code, naming the file and the key', async () => {
    const unreadable = join(dir, 'a-directory.json');
    mkdirSync(unreadable);
    const cases: [string[], string | undefined, RegExp][] = [
      // the file itself
      [['--config', join(dir, 'missing.json')], 'ERR_INVALID_ARG_VALUE', /missing\.json: cannot read the configuration file: ENOENT/],
      [['--config', unreadable], 'ERR_INVALID_ARG_VALUE', /a-directory\.json: not a regular file/],
      [['--config', join(dir, 'missing.json')], 'ERR_INVALID_ARG_VALUE', /missing\.json: cannot read the configuration file: ENOENT/],
      [['--config', file('')], 'ERR_INVALID_ARG_VALUE', /not valid JSON: the file is empty/],
      [['--config', file('{\n  "servers": "nats://x",\n  "routes": [,]\n}\n')], 'ERR_INVALID_ARG_VALUE', /not valid JSON \(line 3 column 14\)/],
      [['--config', file('{ "routes": [] } x')], 'ERR_INVALID_ARG_VALUE', /not valid JSON \(line 1 column 18\)/],
      [['--config', file([L])], 'ERR_INVALID_ARG_TYPE', /the file must hold a JSON object .*, not an array/],
      [['--config', file('"x"')], 'ERR_INVALID_ARG_TYPE', /must hold a JSON object/],
      // unknown keys
      [['--config', file({ servers: S, routes: [L], bogus: 1 })], 'ERR_INVALID_ARG_VALUE', /unknown key "bogus" in the configuration; known keys: servers, /],
      [['--config', file({ servers: S, routes: [L], onError: 'x' })], 'ERR_INVALID_ARG_VALUE', /unknown key "onError" .*for the API only/],
      [['--config', file({ servers: S, routes: [{ ...L, readerOptions: {} }] })], 'ERR_INVALID_ARG_VALUE', /unknown key "readerOptions" in routes\[0\] \(a listen route\); known keys: listen, publish\. Reader options are for the API only/],
      [['--config', file({ servers: S, routes: [L, { ...U, extra: true }] })], 'ERR_INVALID_ARG_VALUE', /unknown key "extra" in routes\[1\] \(a subscribe route\)/],
      [['--config', file({ servers: S, routes: [L], jetstream: { stream: 'S', replica: 3 } })], 'ERR_INVALID_ARG_VALUE', /unknown key "replica" in "jetstream"/],
      // wrong types
      [['--config', file({ servers: 5, routes: [L] })], 'ERR_INVALID_ARG_TYPE', /"servers" must be a URL string or a non-empty array of them .*, not number 5/],
      [['--config', file({ servers: [S, 1], routes: [L] })], 'ERR_INVALID_ARG_TYPE', /"servers\[1\]" must be a string, not number 1/],
      [['--config', file({ servers: S, routes: L })], 'ERR_INVALID_ARG_TYPE', /"routes" must be an array of routes .*, not an object/],
      [['--config', file({ servers: S, routes: ['x'] })], 'ERR_INVALID_ARG_TYPE', /"routes\[0\]" must be an object, not the string "x"/],
      [['--config', file({ servers: S, routes: [{ listen: '/tmp/x.sock', publish: 3 }] })], 'ERR_INVALID_ARG_TYPE', /"routes\[0\]\.publish" must be a string, not number 3/],
      [['--config', file({ servers: S, routes: [{ ...U, durable: null }] })], 'ERR_INVALID_ARG_TYPE', /"routes\[0\]\.durable" must be a string, not null/],
      [['--config', file({ servers: S, routes: [L], jetstream: 'S' })], 'ERR_INVALID_ARG_TYPE', /"jetstream" must be an object, not the string "S"/],
      [['--config', file({ servers: S, routes: [L], jetstream: { stream: 'S', replicas: '3' } })], 'ERR_INVALID_ARG_TYPE', /"jetstream\.replicas" must be a number, not the string "3"/],
      [['--config', file({ servers: S, routes: [L], token: 7 })], 'ERR_INVALID_ARG_TYPE', /"token" must be a string/],
      [['--config', file({ servers: S, routes: [L], connectTimeoutMs: '5s' })], 'ERR_INVALID_ARG_TYPE', /"connectTimeoutMs" must be a number/],
      // missing
      [['--config', file({ servers: S })], 'ERR_INVALID_ARG_TYPE', /"routes" is missing: it must be an array of routes/],
      [['--config', file({ servers: S, routes: [{ listen: '/tmp/x.sock' }] })], 'ERR_INVALID_ARG_TYPE', /"routes\[0\]\.publish" is missing: it must be a string/],
      [['--config', file({ servers: S, routes: [{ subscribe: 'a' }] })], 'ERR_INVALID_ARG_TYPE', /"routes\[0\]\.connect" is missing/],
      [['--config', file({ servers: S, routes: [L], jetstream: { replicas: 3 } })], 'ERR_INVALID_ARG_TYPE', /"jetstream\.stream" is missing/],
      [['--config', file({ routes: [L] })], undefined, /missing --nats <url> \("servers" is not in .*\.json\)/],
      // routes of neither kind, both kinds, none
      [['--config', file({ servers: S, routes: [] })], 'ERR_INVALID_ARG_VALUE', /"routes" is empty/],
      [['--config', file({ servers: S, routes: [L, {}] })], 'ERR_INVALID_ARG_VALUE', /routes\[1\] is neither a listen route .* nor a subscribe route .* \(it is empty\)/],
      [['--config', file({ servers: S, routes: [{ path: '/tmp/x.sock', subject: 'a' }] })], 'ERR_INVALID_ARG_VALUE', /routes\[0\] is neither .* \(its keys: path, subject\)/],
      [['--config', file({ servers: S, routes: [{ ...L, ...U }] })], 'ERR_INVALID_ARG_VALUE', /routes\[0\] mixes a listen route .* and a subscribe route/],
      // values the Bridge refuses, named with the file
      [['--config', file({ servers: S, routes: [{ listen: '/tmp/x.sock', publish: 'a.>' }] })], 'ERR_INVALID_ARG_VALUE', /\.json: routes\[0\]\.publish: "a\.>" is not a subject one can publish to/],
      [['--config', file({ servers: S, routes: [L], jetstream: { stream: 'S', replicas: 9 } })], 'ERR_OUT_OF_RANGE', /\.json: The value of "jetstream\.replicas" is out of range/],
      [['--config', file({ servers: S, routes: [L], jetstream: { stream: 'a.b' } })], 'ERR_INVALID_ARG_VALUE', /Invalid stream name/],
      [['--config', file({ servers: S, routes: [{ ...U, durable: 'd' }] })], 'ERR_INVALID_ARG_VALUE', /routes\[0\]\.durable is for JetStream mode/],
      [['--config', file({ servers: S, routes: [L, L] })], 'ERR_INVALID_ARG_VALUE', /routes\[1\] listens on .*, as routes\[0\] does/],
      [['--config', file({ servers: S, routes: [L], user: 'u' })], 'ERR_INVALID_ARG_VALUE', /"user" and "password" options go together/],
      [['--config', file({ servers: S, routes: [{ listen: '', publish: 'a' }] })], 'ERR_INVALID_ARG_VALUE', /socket path must be a non-empty string/],
      // --config holds the routes: route and JetStream flags are refused, not merged
      [['--config', file({ servers: S, routes: [L] }), '--listen', '/tmp/x.sock', '--publish', 'b'], undefined, /--config .* holds the routes and the JetStream options: --listen, --publish cannot be combined with it/],
      [['--config', file({ servers: S, routes: [L] }), '--jetstream', 'S'], undefined, /--jetstream cannot be combined with it/],
      // connection flags are checked with the file's routes
      [['--config', file({ servers: S, routes: [L], token: 't' }), '--user', 'u', '--password', 'p'], 'ERR_INVALID_ARG_VALUE', /either "token" or "user"\/"password"/],
    ];
    const results = await Promise.all(cases.map(([args]) => runNode(CLI, ['bridge', ...args], { env: { UDS_IPC_NATS_TOKEN: '', UDS_IPC_NATS_PASSWORD: '' } })));
    results.forEach((r, i) => {
      const [args, code, re] = cases[i];
      const what = `uds-ipc bridge ${args.join(' ')} → exit ${r.code}, stderr: ${r.stderr}`;
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(new RegExp(`^uds-ipc: bridge: ${code ? code + ': ' : ''}`));
      expect(r.stderr, what).toMatch(re);
      // one line, then the hint
      expect(r.stderr, what).toMatch(/^uds-ipc: [^\n]*\nTry 'uds-ipc bridge --help'\.\n$/);
      expect(r.stdout, what).toBe('');
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it('parseBridgeConfig() takes parsed JSON: the same checks without a file', () => {
    expect(parseBridgeConfig({ routes: [L, U] })).toEqual({ routes: [L, U] });
    let err: unknown;
    try {
      parseBridgeConfig({ routes: [{ ...L, bogus: 1 }] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TypeError);
    expect((err as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    expect((err as Error).message).toMatch(/^unknown key "bogus" in routes\[0\]/);
  });
});
