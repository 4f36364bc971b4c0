#!/usr/bin/env bash
# A real Kubernetes control plane for integration tests: etcd from Debian, and
# kube-apiserver + kube-controller-manager built offline from Debian bookworm's
# `kubernetes` source package (no registry ships these binaries). The build takes
# about 7 minutes of 2 cores once; the binaries are cached in $STOWAGE_CACHE/kube/bin.
source "$(dirname "$0")/../lib.sh"

# usage: kube.sh [packages]   (packages: only the Debian packages, so that the build can
# run in the background without racing other apt-get runs)
apt_install golang-1.19-go rsync dpkg-dev golang-github-modern-go-reflect2-dev etcd-server openssl
# kubectl (with kustomize) applies deploy/ in the tests; the machine image usually has one.
command -v kubectl >/dev/null || apt_install kubernetes-client
[ "${1:-}" = packages ] && exit 0

bin="$STOWAGE_CACHE/kube/bin"
if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ]; then
  log "kube: $("$bin/kube-apiserver" --version) (cached)"
  exit 0
fi

src="$STOWAGE_CACHE/kube/src"
mkdir -p "$src"
if ! ls "$src"/kubernetes_*.dsc >/dev/null 2>&1; then
  log "downloading Debian's kubernetes source package"
  (cd "$src" && private_apt bookworm-src "deb-src http://deb.debian.org/debian bookworm main" \
    source --download-only -qq kubernetes)
fi
tree="$src/tree"
if [ ! -d "$tree" ]; then
  log "unpacking the source package"
  rm -rf "$tree.tmp"
  dpkg-source -x "$src"/kubernetes_*.dsc "$tree.tmp" >/dev/null
  # The vendored reflect2 1.0.1 makes the apiserver segfault on the first custom
  # resource with Go >= 1.18; Debian's 1.0.2 is the fix.
  rm -rf "$tree.tmp/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree.tmp/vendor/github.com/modern-go/reflect2"
  mv "$tree.tmp" "$tree"
fi

log "building kube-apiserver and kube-controller-manager (about 7 minutes)"
(
  cd "$tree"
  # `providerless` leaves out the in-tree cloud providers (AWS, Azure, GCE, OpenStack,
  # vSphere SDKs) that a loopback control plane never calls, and `-s -w` the symbol
  # tables: 749 -> 449 s of CPU, binaries 110 -> 60 MB.
  export PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS="-mod=vendor -tags=providerless" GOPROXY=off
  export GOCACHE="$STOWAGE_CACHE/kube/gocache"
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOLDFLAGS="-s -w" >"$STOWAGE_CACHE/kube/build.log" 2>&1 \
    || { tail -40 "$STOWAGE_CACHE/kube/build.log"; die "kube build failed (log: $STOWAGE_CACHE/kube/build.log)"; }
)
mkdir -p "$bin.tmp"
for b in kube-apiserver kube-controller-manager; do
  cp "$(find "$tree/_output" -type f -name "$b" -perm -u+x | head -1)" "$bin.tmp/$b"
done
rm -rf "$bin" && mv "$bin.tmp" "$bin"
# The unpacked tree and Go's build cache are 2 GB that only a rebuild would use.
rm -rf "$tree" "$STOWAGE_CACHE/kube/gocache"
log "kube: $("$bin/kube-apiserver" --version)"
