#!/usr/bin/env bash
# Two builds of `latchkey serve` compared on one check route: both serve the same seeded
# SQLite database at the same time, each driven by its own wrk, round after round; prints each
# round's req/s and server CPU per request (user + system, from /proc) and the medians of B/A.
# Driven at once, both meet the same moment of the machine (this one changes speed for tens
# of seconds at a time, which moves two runs made one after the other by ±10%); what is left
# is about ±5% per round, so a change is judged by the median of several rounds.
#
#   cp target/release/latchkey /tmp/latchkey-a    # before the change
#   ...change, cargo build --release -p latchkey...
#   bench/ab.sh /tmp/latchkey-a target/release/latchkey forward-auth
#
# Targets: those of bench/hot-path.sh that check a session (healthz, keepalive, keepalive-many,
# validate-jwt, forward-auth). Variables: ROUNDS (8),
# DURATION (5 s), CONNECTIONS (32 per server), SESSIONS (2 000).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: bench/ab.sh <latchkey A> <latchkey B> [target]" >&2
    exit 2
fi
a_binary="$(realpath "$1")"
b_binary="$(realpath "$2")"
TARGET="${3:-forward-auth}"
ROUNDS="${ROUNDS:-8}"
DURATION="${DURATION:-5}"
CONNECTIONS="${CONNECTIONS:-32}"
SESSIONS="${SESSIONS:-2000}"
A_PORT="${A_PORT:-18201}"
B_PORT="${B_PORT:-18202}"
# shellcheck source=bench/common.sh
. bench/common.sh

bench_tools wrk

# One database for both; each server is given its own port below.
bench_sqlite_env "$A_PORT"
bench_seed "$SESSIONS"

LATCHKEY_LISTEN="127.0.0.1:$A_PORT" "$a_binary" serve & pids+=($!)
a_pid=$!
LATCHKEY_LISTEN="127.0.0.1:$B_PORT" "$b_binary" serve & pids+=($!)
b_pid=$!
for port in "$A_PORT" "$B_PORT"; do
    bench_wait_for "http://127.0.0.1:$port/readyz"
    # Every session cached, with its identity (what /forward-auth reads).
    "$tools" prime --url "http://127.0.0.1:$port" --tokens "$work/tokens.txt" --identities
done
# Both servers share the store, so the session signed in on A is live on B too.
bench_check_requests "http://127.0.0.1:$A_PORT"
# shellcheck disable=SC2207
request=($(check_request "$TARGET")) || { echo "unknown target $TARGET" >&2; exit 2; }

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
drive() {
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/wrk/requests.lua \
        "http://127.0.0.1:$1" -- GET "${request[@]}" | awk -f bench/wrk/summary.awk | cut -d' ' -f1
}

ticks_per_second=$(getconf CLK_TCK)
results="$work/ab.txt"
for round in $(seq 1 "$ROUNDS"); do
    a_before=$(cpu_ticks "$a_pid")
    b_before=$(cpu_ticks "$b_pid")
    drive "$A_PORT" > "$work/a.rps" &
    a_driver=$!
    drive "$B_PORT" > "$work/b.rps"
    wait "$a_driver"
    a_ticks=$(( $(cpu_ticks "$a_pid") - a_before ))
    b_ticks=$(( $(cpu_ticks "$b_pid") - b_before ))
    awk -v r="$round" -v ar="$(cat "$work/a.rps")" -v br="$(cat "$work/b.rps")" \
        -v at="$a_ticks" -v bt="$b_ticks" -v d="$DURATION" -v hz="$ticks_per_second" 'BEGIN {
            au = at / hz * 1e6 / (ar * d); bu = bt / hz * 1e6 / (br * d)
            printf "%d %d %.2f %d %.2f %.3f %.3f\n", r, ar, au, br, bu, br / ar, bu / au }' |
        tee -a "$results" |
        awk '{ printf "round %d: A %d req/s %s us/request | B %d req/s %s us/request\n", $1, $2, $3, $4, $5 }' >&2
done

echo
echo "$TARGET: A $a_binary, B $b_binary; $ROUNDS rounds of $DURATION s, both at once," \
    "wrk -t1 -c$CONNECTIONS each; $(nproc) cores"
awk '{ rps[NR] = $6; cpu[NR] = $7 }
    function median(v, n,    i, j, k) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { k = v[i]; v[i] = v[j]; v[j] = k }
        return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    END { printf "median B/A: req/s %.3f, server CPU per request %.3f\n", median(rps, NR), median(cpu, NR) }' "$results"
