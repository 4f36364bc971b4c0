#!/usr/bin/env bash
# Build every plugin in plugins/ into a wasm32-wasip2 component with Debian's rustc-web
# (see scripts/setup/guest-toolchain.sh). Components land in $STOWAGE_PLUGIN_DIR
# (default: $STOWAGE_GUEST_TARGET/wasm32-wasip2/release), named after the crate without
# its `stowage-plugin-` prefix: generator.wasm, sandbox-probe.wasm, ...
source "$(dirname "$0")/lib.sh"

"$STOWAGE_ROOT/scripts/setup/guest-toolchain.sh"
out_dir=$STOWAGE_GUEST_TARGET/wasm32-wasip2/release
export STOWAGE_PLUGIN_DIR=${STOWAGE_PLUGIN_DIR:-$out_dir}

guest_cargo() {
  # rustup's cargo comes first on PATH; plugins need Debian's 1.96 with std sources,
  # and its clippy and rustfmt.
  (cd "$STOWAGE_ROOT/plugins" && \
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$STOWAGE_GUEST_TARGET" \
    CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-L native=$STOWAGE_CACHE/wasi-libc/usr/lib/wasm32-wasip2 -C link-arg=--wasm-ld-path=/usr/lib/llvm-22/bin/wasm-ld" \
    PATH=/usr/bin:$PATH CARGO=/usr/bin/cargo RUSTFMT=/usr/bin/rustfmt "$@")
}

case "${1:-build}" in
  build)
    log "building plugins (wasm32-wasip2)"
    guest_cargo cargo build --release --locked
    mkdir -p "$STOWAGE_PLUGIN_DIR"
    for wasm in "$out_dir"/stowage_plugin_*.wasm; do
      name=$(basename "$wasm" .wasm); name=${name#stowage_plugin_}; name=${name//_/-}
      cp "$wasm" "$STOWAGE_PLUGIN_DIR/$name.wasm"
      log "plugin $name: $STOWAGE_PLUGIN_DIR/$name.wasm ($(stat -c %s "$wasm") bytes)"
    done
    ;;
  lint)
    guest_cargo cargo-fmt --all -- --check
    guest_cargo cargo-clippy clippy --release --locked -- -D warnings
    ;;
  *) die "usage: build-plugins.sh [build|lint]" ;;
esac
