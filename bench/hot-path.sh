#!/usr/bin/env bash
# The session hot path against a hello-world axum handler, at two store sizes, so both targets
# of DESIGN.md "Performance targets" can be checked: each hot-path target at >= 80% of hello's
# requests/s, and no more than a 10% drop from SMALL to LARGE stored sessions.
# See docs/benchmarks.md. Every variable below may be set in the environment; any arguments are
# passed on to both runs (e.g. --json, --database postgres://...: an EMPTY database per run).
#
#   bench/hot-path.sh                      # 1 000 then 1 000 000 sessions
#   LARGE=200000 bench/hot-path.sh --json  # smaller second run, JSON output
set -euo pipefail

cd "$(dirname "$0")/.."

SMALL="${SMALL:-1000}"
LARGE="${LARGE:-1000000}"
# Sampled tokens driving the load (each loaded into the hot-path cache before measuring).
SAMPLE_SMALL="${SAMPLE_SMALL:-$SMALL}"
SAMPLE_LARGE="${SAMPLE_LARGE:-10000}"
CONNECTIONS="${CONNECTIONS:-32}"
SECONDS_PER_TARGET="${SECONDS_PER_TARGET:-5}"
SEED_CONCURRENCY="${SEED_CONCURRENCY:-4}"

cargo build --release -p latchkey-bench
bin=target/release/latchkey-bench

status=0
for run in "$SMALL:$SAMPLE_SMALL" "$LARGE:$SAMPLE_LARGE"; do
    sessions="${run%%:*}"
    sample="${run##*:}"
    echo "=== $sessions stored sessions, $sample driving the load ===" >&2
    "$bin" --sessions "$sessions" --sample "$sample" --connections "$CONNECTIONS" \
        --seconds "$SECONDS_PER_TARGET" --seed-concurrency "$SEED_CONCURRENCY" "$@" || status=$?
done
exit "$status"
