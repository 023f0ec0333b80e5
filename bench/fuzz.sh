#!/usr/bin/env bash
# A long fuzz run on the stable toolchain: the property tests that `cargo test` runs with 256
# cases each, built in release mode and run with many more generated inputs per property.
#
#   bench/fuzz.sh                 # 1,000,000 inputs per property (about 13 million in all)
#   CASES=50000 bench/fuzz.sh     # a shorter run
#   CASES_CONFIG=200000 bench/fuzz.sh   # fewer for the config loader, the slowest target
#
# Targets: key canonicalisation (policy::key, policy::php), the config loader (config::load),
# the admin API's bodies (admin), invalidation messages (storage::keeper), the front door's
# request-head reader against pingora's parser (proxy::front::parity), media files from
# Rentman (sniffing, completeness, the JPEG marker walk, variants: imaging::props; whether a
# file is whole: policy::media_complete::props). A failing property
# is shrunk by proptest and printed with its smallest input; the script then exits 1. Each
# target's log is kept in target/fuzz/ (under CARGO_TARGET_DIR when set).
set -euo pipefail
cd "$(dirname "$0")/.."

CASES="${CASES:-1000000}"
logs="${CARGO_TARGET_DIR:-target}/fuzz"
mkdir -p "$logs"

# target name, test filter, cases per property
targets=(
  "keys policy::key::props ${CASES_KEYS:-$CASES}"
  "php-names policy::php::props ${CASES_PHP:-$CASES}"
  "config config::load::props ${CASES_CONFIG:-$CASES}"
  "admin-bodies admin::props ${CASES_ADMIN:-$CASES}"
  "invalidations storage::keeper::props ${CASES_INVALIDATIONS:-$CASES}"
  "front-door proxy::front::parity ${CASES_FRONT:-$CASES}"
  "media-files imaging::props ${CASES_MEDIA:-$CASES}"
  "media-ends policy::media_complete::props ${CASES_MEDIA_ENDS:-$CASES}"
)

cargo test --release --lib --no-run

total=0
failed=0
printf '%-14s %10s %14s %10s\n' target properties inputs seconds
for t in "${targets[@]}"; do
  read -r name filter cases <<<"$t"
  log="$logs/$name.log"
  start=$SECONDS
  if PROPTEST_CASES="$cases" cargo test --release --lib "$filter" -- --test-threads=2 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
  fi
  props=$(grep -cE '^test .* \.\.\. (ok|FAILED)$' "$log" || true)
  inputs=$((props * cases))
  total=$((total + inputs))
  printf '%-14s %10d %14d %10d %s\n' "$name" "$props" "$inputs" "$((SECONDS - start))" "$status"
done
echo "total inputs: $total"
if [ "$failed" -ne 0 ]; then
  echo "a property failed: see $logs/*.log" >&2
  exit 1
fi
echo "0 failures (a panic in any target fails its property)"
