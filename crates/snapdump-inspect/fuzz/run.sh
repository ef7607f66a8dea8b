#!/usr/bin/env bash
# Fuzz both dump readers of snapdump-inspect, SECONDS each (default 30): the ELF core reader
# and the minidump reader. The seeds are corpus/<target>/ (small, in the repo; regenerate
# with `cargo test -p snapdump-inspect --test fuzz_lite -- --ignored write_fuzz_seeds`);
# what the fuzzer finds goes to target/corpus/<target>/ (kept between runs, not committed);
# crashes go to artifacts/<target>/. Needs a nightly toolchain and cargo-fuzz (installed
# here when missing).
# Without nightly, tests/fuzz_lite.rs still runs mutated dumps through both readers in
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
if ! rustup toolchain list | grep -q nightly; then
  echo "fuzz: no nightly toolchain here; skipped (tests/fuzz_lite.rs covers the readers)" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
for target in elf_core minidump; do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "target/corpus/$target"
  cargo +nightly fuzz run "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
done
