#!/usr/bin/env bash
# Build every plugin in plugins/ (or only those named: `build postgres`) into a
# wasm32-wasip2 component with Debian's rustc-web (see scripts/setup/guest-toolchain.sh). Components land in $STOWAGE_PLUGIN_DIR
# (default: $STOWAGE_GUEST_TARGET/wasm32-wasip2/release), named after the crate without
# its `stowage-plugin-` prefix: generator.wasm, sandbox-probe.wasm, ...
source "$(dirname "$0")/lib.sh"

"$STOWAGE_ROOT/scripts/setup/guest-toolchain.sh"
out_dir=$STOWAGE_GUEST_TARGET/wasm32-wasip2/release
export STOWAGE_PLUGIN_DIR=${STOWAGE_PLUGIN_DIR:-$out_dir}

guest_cargo() {
  (cd "$STOWAGE_ROOT/plugins" && CARGO_TARGET_DIR="$STOWAGE_GUEST_TARGET" "$STOWAGE_ROOT/scripts/guest-cargo" "$@")
}

case "${1:-build}" in
  build)
    [ $# -eq 0 ] || shift
    packages=() wasms=()
    for name in "$@"; do
      packages+=(-p "stowage-plugin-$name") wasms+=("$out_dir/stowage_plugin_${name//-/_}.wasm")
    done
    log "building plugins (wasm32-wasip2): ${*:-all}"
    guest_cargo build --release --locked "${packages[@]}"
    # All of them: listed only now, when the build has made them.
    [ $# -gt 0 ] || wasms=("$out_dir"/stowage_plugin_*.wasm)
    mkdir -p "$STOWAGE_PLUGIN_DIR"
    for wasm in "${wasms[@]}"; do
      name=$(basename "$wasm" .wasm); name=${name#stowage_plugin_}; name=${name//_/-}
      cp "$wasm" "$STOWAGE_PLUGIN_DIR/$name.wasm"
      log "plugin $name: $STOWAGE_PLUGIN_DIR/$name.wasm ($(stat -c %s "$wasm") bytes)"
    done
    ;;
  lint)
    guest_cargo fmt --all -- --check
    guest_cargo clippy --release --locked -- -D warnings
    ;;
  test)
    # The plugins' unit tests (parsers and planners, which call no host interface) run
    # natively, with the host's toolchain: a component has no test harness to run in.
    log "unit tests of the plugins (natively)"
    (cd "$STOWAGE_ROOT/plugins" && CARGO_TARGET_DIR="$STOWAGE_CACHE/target/plugins-host" cargo test --locked --workspace --lib)
    ;;
  *) die "usage: build-plugins.sh [build [plugin...]|lint|test]" ;;
esac
