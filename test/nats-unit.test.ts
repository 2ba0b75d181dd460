// The NATS bridge (uds-ipc/nats) without a NATS server: option validation,
// subject rules, the missing-dependency error, and that neither the core
// package nor the bridge module loads the NATS clients before start().
// What needs a real nats-server is in test/nats/ (`npm run test:nats`).
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { Bridge, loadNats, isLiteralSubject, isSubscribeSubject, subjectCovers, defaultDurable } from '../src/nats';
import { IpcError } from '../src/errors';
import { ROOT } from './helpers';

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
