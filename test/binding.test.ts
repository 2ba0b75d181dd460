// Loading the native addon: the UDS_IPC_ADDON_PATH override, and the
// ERR_ADDON_LOAD error (what was searched, how to fix) when nothing loads.
// Every case runs in a child process: the addon is loaded once per process.
import { describe, it, expect, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { ROOT } from './helpers';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'uds-ipc-binding-'));
  dirs.push(d);
  return d;
}

/** A copy of the package's JavaScript with no addon next to it. */
function bareCopy(): string {
  const pkg = tmpDir();
  cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(pkg, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'));
  return pkg;
}

interface Outcome {
  loaded?: string;
  code?: string;
  name?: string;
  isIpcError?: boolean;
  message?: string;
}

/**
 * Requires the package at `pkg` (its dist/index.js), creates a Writer (first
 * use loads the addon) and reports the .node file mapped into the process or
 * the error.
 */
function tryLoad(pkg: string, env: Record<string, string> = {}): Outcome {
  const script = `
    const m = require(${JSON.stringify(join(pkg, 'dist', 'index.js'))});
    let out;
    try {
      new m.Writer('/tmp/uds-ipc-binding-test.sock');
      const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n');
      out = { loaded: maps.map((l) => l.split(/\\s+/).slice(5).join(' ')).find((f) => f.endsWith('.node')) };
    } catch (e) {
      out = { code: e.code, name: e.name, isIpcError: e instanceof m.IpcError, message: e.message };
    }
    console.log(JSON.stringify(out));`;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ['UDS_IPC_ADDON_PATH', 'PREBUILDS_ONLY', 'UDS_IPC_PREBUILD', 'LIBC']) {
    if (!(k in env)) delete childEnv[k];
  }
  const out = execFileSync(process.execPath, ['-e', script], { env: childEnv, encoding: 'utf8', timeout: 30_000 });
  return JSON.parse(out) as Outcome;
}

const FIX = /npm rebuild uds-ipc --build-from-source[\s\S]*npm_config_build_from_source=true/;

describe('addon loading', () => {
  it('UDS_IPC_ADDON_PATH naming a missing file: ERR_ADDON_LOAD naming that path', () => {
    const missing = join(tmpDir(), 'missing', 'uds_ipc.node');
    const r = tryLoad(ROOT, { UDS_IPC_ADDON_PATH: missing });
    expect(r).toMatchObject({ code: 'ERR_ADDON_LOAD', name: 'IpcError', isIpcError: true });
    expect(r.message).toContain(`UDS_IPC_ADDON_PATH=${missing}`);
    expect(r.message).toContain('no such file');
    expect(r.message).toMatch(FIX);
  });

  it('UDS_IPC_ADDON_PATH naming a file that is not an addon: ERR_ADDON_LOAD with the loader error', () => {
    const dir = tmpDir();
    const bogus = join(dir, 'bogus.node');
    writeFileSync(bogus, 'this is not a shared object\n'.repeat(100));
    const r = tryLoad(ROOT, { UDS_IPC_ADDON_PATH: bogus });
    expect(r).toMatchObject({ code: 'ERR_ADDON_LOAD', isIpcError: true });
    expect(r.message).toContain(bogus);
    expect(r.message).toMatch(/failed to load: .*(invalid ELF header|file too short)/);
    // A file without the .node extension is loaded as an addon too, never run as JavaScript.
    const js = join(dir, 'addon.js');
    writeFileSync(js, 'console.log("EXECUTED"); process.exit(3);\n');
    const r2 = tryLoad(ROOT, { UDS_IPC_ADDON_PATH: js });
    expect(r2).toMatchObject({ code: 'ERR_ADDON_LOAD' });
    expect(r2.message).toContain(js);
  });

  it('a relative UDS_IPC_ADDON_PATH to the real addon loads that file', () => {
    const addon = tryLoad(ROOT).loaded;
    expect(addon).toMatch(/\.node$/);
    const r = tryLoad(ROOT, { UDS_IPC_ADDON_PATH: relative(process.cwd(), addon!) });
    expect(r.loaded).toBe(addon);
  });

  it('no addon in the package: the message lists build/Release, build/Debug and prebuilds/<platform>-<arch>', () => {
    const pkg = bareCopy();
    const r = tryLoad(pkg);
    expect(r).toMatchObject({ code: 'ERR_ADDON_LOAD', isIpcError: true });
    for (const d of ['build/Release', 'build/Debug', `prebuilds/${process.platform}-${process.arch}`]) {
      expect(r.message).toContain(join(pkg, d));
    }
    expect(r.message).toContain('no binary for');
    expect(r.message).toMatch(FIX);
    expect(r.message).toContain('UDS_IPC_ADDON_PATH');

    const p = tryLoad(pkg, { PREBUILDS_ONLY: '1' });
    expect(p.code).toBe('ERR_ADDON_LOAD');
    expect(p.message).not.toContain(join(pkg, 'build/Release'));
    expect(p.message).toContain(join(pkg, 'prebuilds', `${process.platform}-${process.arch}`));
    expect(p.message).toContain('PREBUILDS_ONLY');
  });

  it('a broken binary in the package: the message names the file found and why it did not load', () => {
    const pkg = bareCopy();
    mkdirSync(join(pkg, 'build', 'Release'), { recursive: true });
    const broken = join(pkg, 'build', 'Release', 'uds_ipc.node');
    writeFileSync(broken, 'not an ELF file'.repeat(100));
    const r = tryLoad(pkg);
    expect(r).toMatchObject({ code: 'ERR_ADDON_LOAD', isIpcError: true });
    expect(r.message).toContain(`found ${broken} but it failed to load`);
    expect(r.message).toMatch(FIX);
  });
});
