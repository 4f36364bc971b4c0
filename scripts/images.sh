#!/usr/bin/env bash
# The operator and runner images as OCI archives, built without Docker, a registry or a
# base image: each image is a root file system assembled here (the binary, the shared
# libraries it links, CA roots, /etc/passwd with the nonroot user 65532, an empty /tmp;
# for the runner the builtin plugins too), turned into a one-layer image by buildah with
# the recipe in deploy/images/. No shell, no package manager, no compiler.
#
# usage: scripts/images.sh [--profile release|dev]
#   release (default) builds the binaries with `cargo build --release`; dev packs the
#   binaries of `./dev build` (the image test uses those: same recipe, no second build).
# Archives land in $STOWAGE_IMAGE_DIR (default $STOWAGE_CACHE/images), tagged as the
# manifests in deploy/ name the images (docker.io/library/stowage-*:VERSION).
source "$(dirname "$0")/lib.sh"

profile=release
[ "${1:-}" = --profile ] && { profile=${2:?--profile needs release or dev}; shift 2; }
case "$profile" in release|dev) ;; *) die "unknown profile $profile (release or dev)" ;; esac
out=${STOWAGE_IMAGE_DIR:-$STOWAGE_CACHE/images}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$STOWAGE_ROOT/Cargo.toml" | head -1)

# buildah builds; podman and runc run the images in their test (tests/src/podman.rs).
apt_install buildah podman runc ca-certificates
if [ "$profile" = release ]; then
  "$STOWAGE_ROOT/scripts/build-plugins.sh" build
  log "building the operator and runner (release)"
  host_cargo build --release --locked -p stowage-runner -p stowage-operator
  bin_dir=$STOWAGE_HOST_TARGET/release
else
  bin_dir=$STOWAGE_HOST_TARGET/debug
fi
plugin_dir=$STOWAGE_GUEST_TARGET/wasm32-wasip2/release

# Image storage of our own (vfs: no overlay mounts needed), emptied after each build.
storage=(--root "$STOWAGE_CACHE/containers/storage" --runroot "$STOWAGE_CACHE/containers/run" --storage-driver vfs)

# usage: rootfs DIR BINARY: the binary in /usr/bin with what it needs to run.
rootfs() {
  local dir=$1 binary=$2 lib
  rm -rf "$dir" && mkdir -p "$dir/usr/bin" "$dir/etc/ssl/certs" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  [ -x "$binary" ] || die "$binary is missing: build it first (./dev build, or --profile release)"
  install -m 0755 "$binary" "$dir/usr/bin/"
  # Every shared library at the path the dynamic linker looks for it (glibc of this
  # Debian release: the binary was linked against it).
  for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
}

# usage: image NAME: build deploy/images/NAME.Dockerfile from $context, write the archive.
image() {
  local name=$1 tag="docker.io/library/stowage-$1:$version" archive="$out/stowage-$1-$version.oci.tar"
  buildah "${storage[@]}" bud --quiet --layers=false -f "$STOWAGE_ROOT/deploy/images/$name.Dockerfile" -t "$tag" "$context" >/dev/null
  rm -f "$archive"
  buildah "${storage[@]}" push --quiet "$tag" "oci-archive:$archive:$tag"
  buildah "${storage[@]}" rmi "$tag" >/dev/null
  log "image $tag: $archive ($(du -h "$archive" | cut -f1))"
}

mkdir -p "$out"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

rootfs "$context/rootfs" "$bin_dir/stowage-operator"
image operator

rootfs "$context/rootfs" "$bin_dir/stowage"
mkdir -p "$context/rootfs/usr/lib/stowage/plugins"
for plugin in postgres mysql redis generator; do
  [ -f "$plugin_dir/$plugin.wasm" ] || die "$plugin_dir/$plugin.wasm is missing: run scripts/build-plugins.sh"
  install -m 0644 "$plugin_dir/$plugin.wasm" "$context/rootfs/usr/lib/stowage/plugins/"
done
image runner
