#!/usr/bin/env bash
# Short, bounded libFuzzer run of every promfed fuzz target, one after the other.
#   fuzz/smoke.sh                 # 30 s per target
#   SECONDS_PER_TARGET=300 fuzz/smoke.sh promql_rewrite rule_file
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler; on a stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks the nightly flags cargo-fuzz passes (set here unless already set).
# New interesting inputs go to fuzz/work/<target>/ (ignored by git); the committed seeds in
# fuzz/corpus/<target>/ are only read. Crashes land in fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
secs="${SECONDS_PER_TARGET:-30}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(promql_rewrite rule_file prometheus_yml configmap admission)
fi
cargo fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "work/$t"
  echo "==> $t for ${secs}s"
  if ! cargo fuzz run -O "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      2> "work/$t.log"; then
    echo "FAILED: $t (see fuzz/work/$t.log and fuzz/artifacts/$t/)"
    tail -40 "work/$t.log"
    status=1
  else
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "work/$t.log" || true
    tail -1 "work/$t.log"
  fi
done
exit $status
