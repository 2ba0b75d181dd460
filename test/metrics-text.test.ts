// reader.metricsText() / writer.metricsText(): Prometheus text exposition
// format 0.0.4, parsed back and compared with metrics().
import { describe, expect, it } from 'vitest';
import { PROMETHEUS_CONTENT_TYPE, Reader, Writer, type Batch } from '../src/index';
import { tmpSocket, waitFor, useTracking } from './helpers';

const track = useTracking();

interface Family {
  help?: string;
  type?: string;
  samples: { labels: Record<string, string>; value: number }[];
}

/** A strict parser of the text format: every sample needs its # HELP and # TYPE first. */
function parse(text: string): Map<string, Family> {
  expect(text.endsWith('\n')).toBe(true);
  const fams = new Map<string, Family>();
  const fam = (name: string): Family => {
    let f = fams.get(name);
    if (!f) fams.set(name, (f = { samples: [] }));
    return f;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line))) {
      expect(fam(m[1]).help, `duplicate HELP for ${m[1]}`).toBeUndefined();
      fam(m[1]).help = m[2];
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$/.exec(line))) {
      expect(fam(m[1]).type, `duplicate TYPE for ${m[1]}`).toBeUndefined();
      expect(fam(m[1]).samples.length, `TYPE after samples for ${m[1]}`).toBe(0);
      fam(m[1]).type = m[2];
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/.exec(line))) {
      const f = fams.get(m[1]);
      expect(f?.help, `sample ${m[1]} without HELP`).toBeDefined();
      expect(f?.type, `sample ${m[1]} without TYPE`).toBeDefined();
      const labels: Record<string, string> = {};
      if (m[2] !== undefined) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/gy;
        let l: RegExpExecArray | null;
        let end = 0;
        while ((l = re.exec(m[2]))) {
          labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
          end = re.lastIndex;
        }
        expect(end, `malformed labels in: ${line}`).toBe(m[2].length);
      }
      f!.samples.push({ labels, value: Number(m[3]) });
    } else {
      throw new Error(`not a valid exposition line: ${JSON.stringify(line)}`);
    }
  }
  for (const [name, f] of fams) {
    expect(f.samples.length, `${name} has no sample`).toBe(1);
    if (f.type === 'counter') expect(name).toMatch(/_total$/);
    else expect(name).not.toMatch(/_total$/);
  }
  return fams;
}

const value = (fams: Map<string, Family>, name: string): number => {
  const f = fams.get(name);
  if (!f) throw new Error(`no metric ${name}; have ${[...fams.keys()].join(', ')}`);
  return f.samples[0].value;
};

describe('metricsText()', () => {
  it('Reader and Writer: every metrics() counter and gauge, with matching values, after real traffic', async () => {
    const path = tmpSocket();
    let got = 0;
    const r = track(new Reader(path, (b: Batch) => void (got += b.length)));
    await r.start();
    const w = track(new Writer(path, { reconnect: { initialDelayMs: 5, maxDelayMs: 20 } }));
    w.start();
    for (let i = 0; i < 100; i++) w.write(`message ${i}`);
    await w.flush();
    await waitFor(() => got === 100, 10_000, 'delivery');

    const rm = r.metrics();
    const rf = parse(r.metricsText());
    const p = 'uds_ipc_reader';
    expect(value(rf, `${p}_messages_received_total`)).toBe(100);
    expect(value(rf, `${p}_received_bytes_total`)).toBe(rm.bytesReceived);
    expect(value(rf, `${p}_batches_total`)).toBe(rm.batches);
    expect(value(rf, `${p}_connections_total`)).toBe(1);
    expect(value(rf, `${p}_active_connections`)).toBe(1);
    expect(rf.get(`${p}_active_connections`)!.type).toBe('gauge');
    expect(rf.get(`${p}_messages_received_total`)!.type).toBe('counter');
    expect(value(rf, `${p}_read_bytes_total`)).toBe(rm.bytesRead);
    expect(value(rf, `${p}_read_calls_total`)).toBe(rm.readCalls);
    for (const n of ['errors', 'handler_errors', 'pauses', 'discarded_messages', 'rejected_connections']) {
      expect(value(rf, `${p}_${n}_total`)).toBe(0);
    }
    expect(rf.size).toBe(Object.keys(rm).length); // one family per field of metrics()

    const wm = w.metrics();
    const wf = parse(w.metricsText());
    const q = 'uds_ipc_writer';
    expect(value(wf, `${q}_messages_written_total`)).toBe(100);
    expect(value(wf, `${q}_messages_sent_total`)).toBe(100);
    expect(value(wf, `${q}_messages_dropped_total`)).toBe(0);
    expect(value(wf, `${q}_messages_failed_total`)).toBe(0);
    expect(value(wf, `${q}_queue_messages`)).toBe(0);
    expect(value(wf, `${q}_queue_bytes`)).toBe(0);
    expect(value(wf, `${q}_sent_bytes_total`)).toBe(wm.bytesSent);
    expect(value(wf, `${q}_send_calls_total`)).toBe(wm.sendCalls);
    expect(value(wf, `${q}_connects_total`)).toBe(1);
    expect(value(wf, `${q}_connect_attempts_total`)).toBe(wm.connectAttempts);
    expect(value(wf, `${q}_disconnects_total`)).toBe(0);
    expect(value(wf, `${q}_connected`)).toBe(1);
    expect(wf.get(`${q}_connected`)!.type).toBe('gauge');
    expect(value(wf, `${q}_send_buffer_bytes`)).toBe(wm.sendBufferSize);
    expect(wf.size).toBe(Object.keys(wm).length);

    await w.stop();
    expect(value(parse(w.metricsText()), `${q}_connected`)).toBe(0);
  });

  it('a custom prefix and labels (escaped) apply to every sample', () => {
    const w = new Writer(tmpSocket());
    const text = w.metricsText('myapp_ipc', { socket: 'main', note: 'a "quoted"\\path\nnext' });
    const fams = parse(text);
    for (const [name, f] of fams) {
      expect(name.startsWith('myapp_ipc_')).toBe(true);
      expect(f.samples[0].labels).toEqual({ socket: 'main', note: 'a "quoted"\\path\nnext' });
    }
    expect(value(fams, 'myapp_ipc_messages_written_total')).toBe(0);
    expect(text).toContain('note="a \\"quoted\\"\\\\path\\nnext"');
    void w.stop();
  });

  it('a Reader that was never started reports zeros; one written to before start reports its queue', () => {
    const r = new Reader(tmpSocket(), () => {});
    const rf = parse(r.metricsText());
    for (const f of rf.values()) expect(f.samples[0].value).toBe(0);
    const w = new Writer(tmpSocket());
    w.write('queued');
    const wf = parse(w.metricsText());
    expect(value(wf, 'uds_ipc_writer_queue_messages')).toBe(1);
    expect(value(wf, 'uds_ipc_writer_queue_bytes')).toBe(7);
    void w.stop();
  });

  it('invalid prefixes and labels throw typed errors', () => {
    const r = new Reader(tmpSocket(), () => {});
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => r.metricsText(1 as never))).toBe('ERR_INVALID_ARG_TYPE');
    for (const bad of ['', '1abc', 'has-dash', 'sp ace', 'é']) expect(code(() => r.metricsText(bad))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => r.metricsText('ok', 'x' as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => r.metricsText('ok', { 'bad-name': 'v' }))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => r.metricsText('ok', { __reserved: 'v' }))).toBe('ERR_INVALID_ARG_VALUE');
    expect(code(() => r.metricsText('ok', { n: 1 } as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => r.metricsText('ok:sub_system', {}))).toBeUndefined();
  });

  it('exports the content type to serve it with', () => {
    expect(PROMETHEUS_CONTENT_TYPE).toBe('text/plain; version=0.0.4; charset=utf-8');
  });
});
