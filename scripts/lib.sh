# Shared helpers for Stowage's developer scripts. Source it; do not run it.
# Everything slow is cached under STOWAGE_CACHE, outside the clone, so a second
# run of any set-up step costs seconds and a fresh clone reuses earlier work.
set -euo pipefail

STOWAGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export STOWAGE_ROOT
export STOWAGE_CACHE=${STOWAGE_CACHE:-/var/cache/stowage}
# Host and guest builds use different compilers, so they get separate target dirs.
export STOWAGE_HOST_TARGET=${STOWAGE_HOST_TARGET:-$STOWAGE_CACHE/target/host}
export STOWAGE_GUEST_TARGET=${STOWAGE_GUEST_TARGET:-$STOWAGE_CACHE/target/plugins}
mkdir -p "$STOWAGE_CACHE"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# Run as root directly, otherwise through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Install Debian packages that are not installed yet; `apt-get update` runs at most
# once per process, and only when something is missing.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "${STOWAGE_APT_UPDATED:-}" ]; then
    log "apt-get update"
    as_root apt-get update -qq
    export STOWAGE_APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# An apt configuration of our own (sources, lists, cache) for fetching single packages
# from another suite without touching the system's sources.
# usage: private_apt NAME "SOURCES LINE" apt-get-args...
private_apt() {
  local name=$1 line=$2; shift 2
  local dir="$STOWAGE_CACHE/apt/$name"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc/preferences.d"
  printf '%s\n' "$line" >"$dir/etc/sources.list"
  : >"$dir/status"
  local opts=(
    -o "Dir::Etc::sourcelist=$dir/etc/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::Etc::preferencesparts=$dir/etc/preferences.d"
    -o "Dir::State=$dir" -o "Dir::State::lists=$dir/lists" -o "Dir::State::status=$dir/status"
    -o "Dir::Cache=$dir" -o "Dir::Cache::archives=$dir/archives"
    -o "APT::Sandbox::User=root"
  )
  if [ ! -f "$dir/updated" ] || [ "$line" != "$(cat "$dir/updated")" ]; then
    log "apt-get update ($name: $line)"
    apt-get "${opts[@]}" update -qq
    printf '%s\n' "$line" >"$dir/updated"
  fi
  apt-get "${opts[@]}" "$@"
}

# Host cargo (rustup's stable toolchain) with the cached target dir.
# - Clippy runs inside the real build: clippy-driver compiles the workspace's own crates
#   (dependencies get plain rustc) and denies warnings, so lint and build share one
#   compilation of the dependency tree instead of a check pass plus a build pass.
# - No incremental compilation: it cost gigabytes of cache and bought nothing for crates
#   built at opt-level 3 or rebuilt whole by a CI run.
# - It links with the lld that the guest toolchain installs: linking the test and tool
#   binaries, each with wasmtime, kube and the AWS SDK, is much faster than with ld.bfd.
host_cargo() {
  local lld=/usr/lib/llvm-22/bin flags="" clippy
  [ -x "$lld/ld.lld" ] && flags="-C link-arg=-fuse-ld=lld -C link-arg=-B$lld"
  clippy="$(dirname "$(rustup which cargo)")/clippy-driver"
  [ -x "$clippy" ] || die "no clippy-driver next to $(rustup which cargo): rustup component add clippy"
  CARGO_TARGET_DIR="$STOWAGE_HOST_TARGET" CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$flags" CARGO_INCREMENTAL=0 \
    RUSTC_WORKSPACE_WRAPPER="$clippy" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
    cargo "$@"
}

# Every build leaves the previous test and tool binaries of the workspace behind under
# new hashes; past STOWAGE_TARGET_LIMIT_GIB (default 20) of host target, the workspace's
# own artifacts are removed (dependencies stay, so the next build takes minutes, not tens).
prune_host_target() {
  local limit=${STOWAGE_TARGET_LIMIT_GIB:-20} used
  [ -d "$STOWAGE_HOST_TARGET" ] || return 0
  used=$(du -s --block-size=1G "$STOWAGE_HOST_TARGET" | cut -f1)
  if [ "$used" -gt "$limit" ]; then
    log "host target is ${used} GiB (limit ${limit}): removing old workspace artifacts"
    host_cargo clean --quiet -p stowage-api -p stowage-operator -p stowage-runner -p stowage-tests
  fi
}
