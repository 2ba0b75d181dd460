#!/usr/bin/env bash
# Tests the npm package as a user gets it:
#   1. `npm pack` into a temp dir; the tarball must hold only what `files` in
#      package.json lists (no build/, test/, bench/, ...) and the prebuilt
#      binary (run `npm run prebuild` first).
#   2. A fresh project (`npm init -y`) installs the tarball with install scripts
#      disabled (--ignore-scripts: nothing is compiled), which also fetches the
#      runtime dependencies from the npm registry.
#   3. A script there require()s and import()s 'uds-ipc', round-trips a message
#      from a Writer to a Reader over a temp socket, and checks in
#      /proc/self/maps that the addon mapped into the process is the prebuild
#      under node_modules/uds-ipc/prebuilds/.
#   4. `npm rebuild uds-ipc` (install scripts enabled: node-gyp-build) must keep
#      the prebuild and compile nothing.
#   5. The tarball holds prebuilds for linux-x64 and linux-arm64, and for each
#      node-gyp-build's own resolution (its module read with npm_config_arch /
#      npm_config_platform / LIBC set, as on such a machine) selects that one,
#      an ELF file of that architecture that passes scripts/check-glibc.mjs;
#      on musl and on macOS it finds none (so uds-ipc's loader reports
#      ERR_ADDON_LOAD there instead of loading a wrong binary).
#
# Usage: npm run test:pack   (or: bash scripts/test-pack.sh)
# Env:   TEST_PACK_KEEP=1  keep the temp dir (printed) for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

shopt -s nullglob
prebuilt=(prebuilds/*/*.node)
if (( ${#prebuilt[@]} == 0 )); then
  echo "test-pack: no prebuilt binary in prebuilds/; run \`npm run prebuild\` first" >&2
  exit 1
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/uds-ipc-pack.XXXXXX")"
if [[ "${TEST_PACK_KEEP:-0}" == 1 ]]; then
  echo "test-pack: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi
# The user's environment, not ours: no addon override, no prebuild-only switch.
unset UDS_IPC_ADDON_PATH UDS_IPC_PREBUILD PREBUILDS_ONLY

echo "== npm pack (runs prepare: the TypeScript build)"
npm pack --pack-destination "$tmp" --loglevel=error >"$tmp/pack.log" 2>&1 || { cat "$tmp/pack.log" >&2; exit 1; }
tgz=("$tmp"/uds-ipc-*.tgz)
(( ${#tgz[@]} == 1 )) || { echo "test-pack: expected one tarball in $tmp" >&2; cat "$tmp/pack.log" >&2; exit 1; }
tgz="${tgz[0]}"

echo "== tarball contents"
tar -tzf "$tgz" | sort >"$tmp/contents.txt"
# Allowed: what `files` lists, plus what npm always adds (package.json, README, LICENSE).
node -e '
  const pkg = require(process.argv[1]);
  const allowed = [...pkg.files, "package.json", "README.md", "LICENSE", "LICENSE.md"];
  const bad = [];
  const lines = require("fs").readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean);
  for (const line of lines) {
    const f = line.replace(/^package\//, "");
    const listed = allowed.some((a) => (a.endsWith("/") ? f.startsWith(a) : f === a));
    if (!listed) bad.push(f + " (not in files)");
    // bench/README.md (the figures the README links to) is the one file of bench/ shipped.
    else if ((/^(build|test|bench|demo|scripts|node_modules)\//.test(f) && f !== "bench/README.md") || /\.tgz$/.test(f)) bad.push(f);
    else if (/\.node$/.test(f) && !f.startsWith("prebuilds/")) bad.push(f + " (.node outside prebuilds/)");
  }
  if (bad.length) { console.error("test-pack: unexpected files in the tarball:\n  " + bad.join("\n  ")); process.exit(1); }
  const nodes = lines.filter((l) => /^package\/prebuilds\/[^/]+\/[^/]+\.node$/.test(l));
  if (!nodes.length) { console.error("test-pack: no prebuilds/*/*.node in the tarball"); process.exit(1); }
  for (const want of ["linux-x64", "linux-arm64"]) {
    if (!nodes.some((n) => n.startsWith("package/prebuilds/" + want + "/"))) {
      console.error("test-pack: no prebuilds/" + want + "/*.node in the tarball (run `npm run prebuild`)");
      process.exit(1);
    }
  }
  console.log("   " + lines.length + " files, all listed in package.json files; prebuilds: " + nodes.map((n) => n.slice(8)).join(", "));
' "$root/package.json" "$tmp/contents.txt"
packed=$(stat -c %s "$tgz")
unpacked=$(tar -xzOf "$tgz" | wc -c)
echo "   $(basename "$tgz"): $packed bytes packed, $unpacked bytes unpacked"

echo "== fresh project: npm install --ignore-scripts <tarball>"
proj="$tmp/project"
mkdir -p "$proj"
cd "$proj"
npm init -y >/dev/null 2>&1
npm install --ignore-scripts --no-audit --no-fund --loglevel=error "$tgz" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; exit 1; }
installed="$proj/node_modules/uds-ipc"
[[ -d "$installed" && ! -L "$installed" ]] || { echo "test-pack: $installed is not an installed copy" >&2; exit 1; }
[[ ! -e "$installed/build" ]] || { echo "test-pack: $installed/build exists: something was compiled" >&2; exit 1; }
echo "   installed: $(cd node_modules && ls -d */ | tr -d / | tr '\n' ' ')"

cat >check.cjs <<'EOF'
// require() and import() the installed package, round-trip one message, and
// report which .node file is mapped into this process.
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const cjs = require('uds-ipc');

(async () => {
  const esm = await import('uds-ipc');
  assert.strictEqual(esm.Reader, cjs.Reader, 'import() and require() give the same Reader');
  assert.strictEqual(esm.Writer, cjs.Writer, 'import() and require() give the same Writer');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uds-ipc-pack-'));
  const sock = path.join(dir, 's.sock');
  const got = [];
  const reader = new cjs.Reader(sock, (batch) => {
    for (const m of batch) got.push(m.toString());
  });
  await reader.start();
  const writer = new esm.Writer(sock);
  writer.start();
  const msg = `hello from ${process.pid} via the packed tarball`;
  assert.strictEqual(writer.write(msg), true);
  await writer.flush();
  const end = Date.now() + 10_000;
  while (got.length < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  await writer.stop();
  const { discarded } = await reader.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  assert.deepStrictEqual(got, [msg]);
  assert.strictEqual(discarded, 0);

  const mapped = [
    ...new Set(
      fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
        .map((l) => l.split(/\s+/).slice(5).join(' '))
        .filter((f) => f.endsWith('.node')),
    ),
  ];
  const prebuilds = fs.realpathSync(path.join(__dirname, 'node_modules', 'uds-ipc', 'prebuilds')) + path.sep;
  assert.strictEqual(mapped.length, 1, `one .node mapped, got ${JSON.stringify(mapped)}`);
  assert.ok(mapped[0].startsWith(prebuilds), `${mapped[0]} is not under ${prebuilds}`);
  console.log(JSON.stringify({ roundTrip: got[0], addon: path.relative(fs.realpathSync(__dirname), mapped[0]) }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
EOF
echo "== require + import, Reader/Writer round trip, which addon is loaded"
out="$(node check.cjs)"
echo "   $out"

echo "== the prebuild node-gyp-build selects on each platform (its resolution, with that platform's arch/libc)"
for a in x64 arm64; do
  pick="$(cd "$proj" && npm_config_platform=linux npm_config_arch="$a" LIBC=glibc PREBUILDS_ONLY=1 \
    node -p 'require("path").relative(process.cwd(), require("node-gyp-build").resolve("node_modules/uds-ipc"))')"
  want="node_modules/uds-ipc/prebuilds/linux-$a/uds-ipc.glibc.node"
  [[ "$pick" == "$want" ]] || { echo "test-pack: on linux-$a node-gyp-build picks $pick, expected $want" >&2; exit 1; }
  node "$root/scripts/check-glibc.mjs" --arch "$a" "$proj/$pick" | sed 's/^/   /'
done
for t in "linux x64 musl" "linux arm64 musl" "darwin arm64 glibc" "linux ia32 glibc"; do
  read -r p a l <<<"$t"
  if pick="$(cd "$proj" && npm_config_platform="$p" npm_config_arch="$a" LIBC="$l" PREBUILDS_ONLY=1 \
      node -p 'require("node-gyp-build").resolve("node_modules/uds-ipc")' 2>/dev/null)"; then
    echo "test-pack: on $p-$a ($l) node-gyp-build picks $pick; there is no prebuild for it" >&2
    exit 1
  fi
done
echo "   linux-x64 and linux-arm64 (glibc) each get their own; musl, darwin and ia32 get none"

echo "== npm rebuild uds-ipc (install script node-gyp-build: must keep the prebuild, compile nothing)"
# Headers pointed at an empty dir: a compile attempt fails fast instead of
# building (or downloading anything).
mkdir -p "$tmp/no-headers"
npm_config_nodedir="$tmp/no-headers" npm rebuild uds-ipc --foreground-scripts --loglevel=error >"$tmp/rebuild.log" 2>&1 \
  || { cat "$tmp/rebuild.log" >&2; echo "test-pack: npm rebuild failed (did it try to compile?)" >&2; exit 1; }
[[ ! -e "$installed/build" ]] || { cat "$tmp/rebuild.log" >&2; echo "test-pack: npm rebuild compiled the addon instead of using the prebuild" >&2; exit 1; }
out2="$(node check.cjs)"
[[ "$out2" == *'"addon":"node_modules/uds-ipc/prebuilds/'* ]] || { echo "test-pack: after rebuild: $out2" >&2; exit 1; }
echo "   no build/ created; still loads the prebuild"

echo "== the uds-ipc command from the installed package (node_modules/.bin)"
bin="$proj/node_modules/.bin/uds-ipc"
[[ -x "$bin" ]] || { echo "test-pack: $bin missing or not executable" >&2; exit 1; }
"$bin" --version >/dev/null
sock="$tmp/cli.sock"
"$bin" listen "$sock" --count 2 --format hex --quiet >"$tmp/listen.out" 2>"$tmp/listen.err" &
lpid=$!
for _ in $(seq 1 100); do [[ -S "$sock" ]] && break; sleep 0.05; done
"$bin" send "$sock" hello $'\x01\x02' || { cat "$tmp/listen.err" >&2; echo "test-pack: uds-ipc send failed" >&2; exit 1; }
wait "$lpid" || { cat "$tmp/listen.err" >&2; echo "test-pack: uds-ipc listen failed" >&2; exit 1; }
[[ "$(cat "$tmp/listen.out")" == $'68656c6c6f\n0102' ]] || { echo "test-pack: listen printed: $(cat "$tmp/listen.out")" >&2; exit 1; }
echo "   listen + send round trip through the bin link"

echo "test-pack: OK ($(basename "$tgz"), $packed bytes)"
