#!/usr/bin/env bash
# CI fuzz smoke: each fuzz target for 60 s on its committed corpus; any
# crash, panic, timeout or out-of-memory fails the run. Runs on the stable
# toolchain (RUSTC_BOOTSTRAP=1 lets it accept cargo-fuzz's -Z flags).
# The corpus is copied first: new inputs go to a scratch directory, the
# committed corpus stays as it is. FUZZ_SECONDS overrides the 60 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-60}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# crate directory, target, -max_len (bytes)
targets=(
  "engine decode 8192"
  "engine swim 8192"
  "engine import 32768"
  "node config 4096"
)
for entry in "${targets[@]}"; do
  read -r crate target max_len <<<"$entry"
  echo "== fuzz smoke: $crate/$target (${seconds} s)"
  mkdir -p "$scratch/$target"
  (
    cd "$crate"
    cargo fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -max_len="$max_len" -timeout=30 \
      -rss_limit_mb=2048 -print_final_stats=1
  )
done
echo "== fuzz smoke: no crash"
