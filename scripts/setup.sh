#!/usr/bin/env bash
# Installs what hyperfs needs on a bare Debian machine: the FUSE 3 system packages, a virtual
# environment in .venv with hyperfs and its test extras, and (with --interop) the JavaScript
# reference peer used by the replication tests. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
shared=${HYPERFS_SHARED:-$repo/../shared}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in fuse3 libfuse3-dev pkg-config rsync sqlite3 git; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

if [ "${1:-}" = "--interop" ]; then
  if [ ! -d .cache/interop/node_modules/hypercore ]; then
    echo "setup: installing the JS interop peer into .cache/interop"
    rm -rf .cache/interop && mkdir -p .cache
    cp -r "$shared/interop" .cache/interop && chmod -R u+w .cache/interop
    (cd .cache/interop && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
echo "setup: ready (.venv/bin/hyperfs)"
