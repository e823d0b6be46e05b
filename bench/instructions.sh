#!/usr/bin/env bash
# User-space instructions per request of each check route and of the hello-world handler,
# counted by valgrind's callgrind: unlike req/s, the count does not move with what else the
# machine is doing, so it shows what one change of the request path costs or saves
# (docs/benchmarks.md). The servers run under callgrind (about 50 times slower); wrk drives
# each target for a few seconds after a warm-up, with the counters zeroed before and dumped
# after, and the dump's total is divided by the requests wrk completed. Every thread counts.
#
#   bench/instructions.sh
#   DUMPS=/tmp/counts bench/instructions.sh   # also keeps each target's callgrind dump there
#                                             # (callgrind_annotate <dump>: where they go)
#
# Caveat: under valgrind the CPU has no SHA extensions, so SHA-256 (every token is hashed
# once per check, a JWT is ~8 blocks) counts several times what it costs natively (about
# 3 500 instructions per block); compare the same route across changes, not routes.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS="${SESSIONS:-2000}"
DURATION="${DURATION:-4}"
PORT="${PORT:-18090}"
DUMPS="${DUMPS:-}"
[ -z "$DUMPS" ] || mkdir -p "$DUMPS"
HELLO_PORT="${HELLO_PORT:-18091}"
# shellcheck source=bench/common.sh
. bench/common.sh

bench_tools wrk valgrind

bench_sqlite_env "$PORT"

bench_seed "$SESSIONS"

valgrind --tool=callgrind --callgrind-out-file="$work/latchkey.%p" "$latchkey" serve \
    2>"$work/latchkey.log" & pids+=($!)
latchkey_pid=$!
valgrind --tool=callgrind --callgrind-out-file="$work/hello.%p" \
    "$tools" hello --listen "127.0.0.1:$HELLO_PORT" 2>"$work/hello.log" & pids+=($!)
hello_pid=$!
bench_wait_for "$url/readyz" "http://127.0.0.1:$HELLO_PORT/"
# Under valgrind a few seconds of warm-up are not enough to load every session's identity:
# /forward-auth is primed too.
"$tools" prime --url "$url" --tokens "$work/tokens.txt" --identities
bench_check_requests "$url"

# One target: "<pid> <port> <name> <path> [<header> <values file>]".
count() {
    local pid="$1" port="$2" name="$3"
    shift 3
    wrk -t1 -c8 -d2s -s bench/wrk/requests.lua "http://127.0.0.1:$port" -- GET "$@" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    local requests
    requests=$(wrk -t1 -c8 -d"${DURATION}s" -s bench/wrk/requests.lua "http://127.0.0.1:$port" -- GET "$@" |
        awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null
    sleep 1
    # The newest dump of this process (files <name>.<pid>.<n>, n counting up).
    local dump
    dump=$(ls "$work"/*."$pid".* | awk -F. '{print $NF " " $0}' | sort -n | tail -1 | cut -d' ' -f2)
    awk -v name="$name" -v n="$requests" '/^summary:/ { s += $2 }
        END { printf "| %s | %d | %d |\n", name, n, s / n }' "$dump"
    if [ -n "$DUMPS" ]; then
        echo "$requests" > "$DUMPS/$name.requests"
        cp "$dump" "$DUMPS/$name.callgrind"
    fi
}

echo
echo "latchkey $(git describe --always --dirty), sqlite, $SESSIONS sessions (all cached), wrk -t1 -c8, ${DURATION} s per target under callgrind"
echo
echo "| target | requests | instructions per request |"
echo "|---|---|---|"
count "$hello_pid" "$HELLO_PORT" hello /
count "$latchkey_pid" "$PORT" healthz /healthz
count "$latchkey_pid" "$PORT" keepalive /session/keepalive X-Auth-Token "$work/one-token.txt"
count "$latchkey_pid" "$PORT" keepalive-many /session/keepalive X-Auth-Token "$work/tokens.txt"
count "$latchkey_pid" "$PORT" validate-jwt "/sessions/validate/$session_id" Authorization "$work/bearer.txt"
count "$latchkey_pid" "$PORT" forward-auth /forward-auth Cookie "$work/cookies.txt"
# The hello-world handler sent the same requests, answering them as latchkey does in size
# (bench/hot-path.sh's "same request and answer"): what a server must do for that answer.
count "$hello_pid" "$HELLO_PORT" same:keepalive /session/keepalive X-Auth-Token "$work/tokens.txt"
count "$hello_pid" "$HELLO_PORT" same:validate-jwt "/sessions/validate/$session_id" Authorization "$work/bearer.txt"
count "$hello_pid" "$HELLO_PORT" same:forward-auth /forward-auth Cookie "$work/cookies.txt"
