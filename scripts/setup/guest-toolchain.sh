#!/usr/bin/env bash
# The toolchain that builds plugins as wasm32-wasip2 components (see docs/toolchain.md):
# Debian's rustc-web (1.96, with std sources for -Zbuild-std), its wasm-component-ld and
# lld, and a wasip2 wasi-libc taken from Debian testing into $STOWAGE_CACHE/wasi-libc.
source "$(dirname "$0")/../lib.sh"

apt_install rustc-web cargo-web rust-web-src rust-web-llvm lld-22 rust-web-clippy rustfmt-web

prefix="$STOWAGE_CACHE/wasi-libc"
if [ ! -f "$prefix/usr/lib/wasm32-wasip2/libc.a" ]; then
  log "fetching a wasip2 wasi-libc from Debian testing"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && private_apt testing "deb http://deb.debian.org/debian testing main" download -qq wasi-libc)
  rm -rf "$prefix.tmp" && mkdir -p "$prefix.tmp"
  dpkg -x "$work"/wasi-libc_*.deb "$prefix.tmp"
  [ -f "$prefix.tmp/usr/lib/wasm32-wasip2/libc.a" ] || die "the wasi-libc package has no wasm32-wasip2 libc.a"
  rm -rf "$prefix" && mv "$prefix.tmp" "$prefix"
fi
log "guest toolchain: $(/usr/bin/rustc --version), wasi-libc at $prefix"
