#!/usr/bin/env node
// Fails (exit 1) unless each given .node file loads where Node 20's official
// Linux binaries run: glibc >= 2.28 and the libgcc_s every such system has.
// It reads the ELF file with readelf (binutils; any architecture):
//   - every version it needs (.gnu.version_r) from glibc is <= GLIBC_2.28
//     (MAX_GLIBC), from libgcc_s <= GCC_4.2.0;
//   - no GLIBCXX_/CXXABI_ version and no NEEDED libstdc++.so.6 (the C++
//     runtime is linked in statically; a system's libstdc++ may be older);
//   - NEEDED only libc, libm, libgcc_s, libpthread, libdl, librt, ld-linux;
//   - exports only Node's entry points (napi_register_module_v1,
//     node_api_module_get_api_version_v1), so the static libstdc++ never
//     binds to or interposes on the one Node loaded;
//   - the ELF machine matches the directory (prebuilds/linux-x64 -> X86-64,
//     linux-arm64 -> AArch64) or --arch x64|arm64.
// The undefined symbols that need a too-new version are listed by name.
//
// Usage: node scripts/check-glibc.mjs [--arch x64|arm64] [--max-glibc 2.28] FILE.node...
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

let maxGlibc = process.env.MAX_GLIBC || '2.28';
const maxGcc = '4.2.0';
let arch;
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--arch') arch = args[++i];
  else if (args[i] === '--max-glibc') maxGlibc = args[++i];
  else files.push(args[i]);
}
if (!files.length) {
  console.error('usage: node scripts/check-glibc.mjs [--arch x64|arm64] [--max-glibc 2.28] FILE.node...');
  process.exit(2);
}

const cmp = (a, b) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  }
  return 0;
};
const readelf = (...a) => execFileSync('readelf', ['-W', ...a], { encoding: 'utf8', maxBuffer: 64 << 20 });
const machines = { x64: 'Advanced Micro Devices X86-64', arm64: 'AArch64' };
const allowedNeeded = /^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-(x86-64|aarch64)\.so\.[12])$/;
const exportsAllowed = new Set(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);

let failed = false;
for (const file of files) {
  const problems = [];
  const want = arch ?? path.basename(path.dirname(path.resolve(file))).match(/^linux-(x64|arm64)$/)?.[1];
  const machine = readelf('-h', file).match(/Machine:\s+(.*)/)?.[1].trim();
  if (want && machine !== machines[want]) problems.push(`ELF machine is ${machine}, expected ${machines[want]} (${want})`);

  const needed = [...readelf('-d', file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  for (const n of needed) if (!allowedNeeded.test(n)) problems.push(`NEEDED ${n}`);

  // .gnu.version_r: File: libc.so.6 ... Name: GLIBC_2.28
  const versions = [];
  let lib = '';
  for (const line of readelf('-V', file).split('\n')) {
    const f = line.match(/File: (\S+)/);
    if (f) lib = f[1];
    const n = line.match(/Name: (\S+)/);
    if (n && line.includes('Flags:')) versions.push({ lib, name: n[1] });
  }
  let maxSeen = '0';
  for (const { lib: l, name } of versions) {
    const g = name.match(/^GLIBC_(\d+(?:\.\d+)*)$/);
    const c = name.match(/^GCC_(\d+(?:\.\d+)*)$/);
    if (g) {
      if (cmp(g[1], maxSeen) > 0) maxSeen = g[1];
      if (cmp(g[1], maxGlibc) > 0) problems.push(`needs ${name} from ${l} (max GLIBC_${maxGlibc})`);
    } else if (c) {
      if (cmp(c[1], maxGcc) > 0) problems.push(`needs ${name} from ${l} (max GCC_${maxGcc})`);
    } else if (/^(GLIBCXX|CXXABI)_/.test(name)) problems.push(`needs ${name} from ${l} (the system libstdc++)`);
    else if (/PRIVATE/.test(name)) problems.push(`needs ${name} from ${l}`);
  }

  // Symbols: which imports are too new, and what is exported.
  const bad = [];
  const exported = [];
  for (const line of readelf('--dyn-syms', file).split('\n')) {
    const m = line.match(/^\s*\d+:\s+\S+\s+\d+\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)/);
    if (!m) continue;
    const [, , bind, ndx, sym] = m;
    if (ndx === 'UND') {
      const v = sym.match(/@(GLIBC|GLIBCXX|CXXABI|GCC)_([\d.]+)/);
      if (v && ((v[1] === 'GLIBC' && cmp(v[2], maxGlibc) > 0) || v[1] === 'GLIBCXX' || v[1] === 'CXXABI' || (v[1] === 'GCC' && cmp(v[2], maxGcc) > 0))) bad.push(sym);
    } else if (bind === 'GLOBAL' || bind === 'WEAK' || bind === 'UNIQUE') {
      const name = sym.replace(/@.*/, '');
      if (!exportsAllowed.has(name)) exported.push(sym);
    }
  }
  if (bad.length) problems.push(`imports ${bad.length} too new: ${bad.slice(0, 12).join(', ')}${bad.length > 12 ? ', ...' : ''}`);
  if (exported.length) problems.push(`exports ${exported.length} symbols besides Node's entry points, e.g. ${exported.slice(0, 5).join(', ')}`);

  if (problems.length) {
    failed = true;
    console.error(`check-glibc: FAIL ${file}\n  - ${problems.join('\n  - ')}`);
  } else {
    const gcc = versions.filter((v) => v.name.startsWith('GCC_')).map((v) => v.name.slice(4)).sort(cmp).pop();
    console.log(`check-glibc: OK ${file} (${machine}; needs at most GLIBC_${maxSeen}${gcc ? ', GCC_' + gcc : ''}; NEEDED ${needed.join(' ')})`);
  }
}
process.exit(failed ? 1 : 0);
