#!/usr/bin/env bash
# Fuzz the /proc parsers for SECONDS (default 30). Needs a nightly toolchain and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
if ! rustup toolchain list | grep -q nightly; then
  echo "fuzz: no nightly toolchain here; skipped" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
cargo +nightly fuzz run proc_parsers corpus/proc_parsers -- -max_total_time="$seconds" -rss_limit_mb=1024
