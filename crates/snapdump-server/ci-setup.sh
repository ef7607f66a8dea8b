#!/usr/bin/env bash
# Installs what snapdump-server's checks need, into $SNAPDUMP_SERVER_TOOLS (default
# ~/.cache/snapdump-server-tools), where they look for it; each is skipped when already there:
#   azurite      Microsoft's Azure Storage emulator (npm)    tests/egress_cloud.rs
#   s3s-fs       an S3-compatible server over a folder (crates.io)    tests/egress_cloud.rs
#   schemathesis OpenAPI conformance runner (PyPI)    openapi-check.sh
set -euo pipefail
tools="${SNAPDUMP_SERVER_TOOLS:-$HOME/.cache/snapdump-server-tools}"
mkdir -p "$tools"

if [ ! -x "$tools/azurite/node_modules/.bin/azurite-blob" ]; then
  npm install --prefix "$tools/azurite" --no-audit --no-fund --loglevel=error azurite@3.35.0
fi
"$tools/azurite/node_modules/.bin/azurite-blob" --version

if [ ! -x "$tools/s3s/bin/s3s-fs" ]; then
  # 0.14.1: the last release that builds with rustc 1.95.
  cargo install --locked --quiet s3s-fs@0.14.1 --features binary --root "$tools/s3s"
fi
"$tools/s3s/bin/s3s-fs" --version

if [ ! -x "$tools/venv/bin/schemathesis" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet schemathesis==4.32.5
fi
"$tools/venv/bin/schemathesis" --version
