#!/usr/bin/env bash
# The hot path with few and with many sessions, every one of them cached and driving the load:
# bench/hot-path.sh run twice (SMALL, then LARGE stored sessions; keepalive cycles through all
# of them), then the change of each route's rate from the first run to the second, and the
# server's memory per cached session (docs/benchmarks.md).
#
#   bench/session-scale.sh                       # 1 000 against 1 000 000
#   LARGE=200000 bench/session-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL="${SMALL:-1000}"
LARGE="${LARGE:-1000000}"
export TARGETS="${TARGETS:-hello keepalive-many validate-jwt}"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for sessions in "$SMALL" "$LARGE"; do
    echo "=== $sessions sessions" >&2
    SESSIONS="$sessions" bench/hot-path.sh | tee "$out/$sessions.txt"
done
echo
echo "| target | req/s at $SMALL | req/s at $LARGE | change |"
echo "|---|---|---|---|"
for target in $TARGETS; do
    small=$(awk -F'|' -v t="$target" '$2 ~ "^ " t " $" {gsub(/ /, "", $3); print $3}' "$out/$SMALL.txt")
    large=$(awk -F'|' -v t="$target" '$2 ~ "^ " t " $" {gsub(/ /, "", $3); print $3}' "$out/$LARGE.txt")
    awk -v t="$target" -v s="$small" -v l="$large" \
        'BEGIN { printf "| %s | %d | %d | %+.1f%% |\n", t, s, l, (l - s) * 100 / s }'
done
grep "bytes per cached session" "$out/$LARGE.txt"
