#!/usr/bin/env bash
# A native CPU profile of one check route beside the hello-world handler given the very same
# requests (bench/hot-path.sh's "same request and answer"): perf samples each server while wrk
# drives it, then prints, for both, the server's CPU time per request (from perf's task clock),
# its split between the kernel, the binary and libc, and the binary's hottest functions. What
# the check adds to reading that request and writing that answer is the difference; cold
# memory shows as a hot instruction right after a load (`perf annotate -i <data> <symbol>`).
#
#   bench/profile.sh forward-auth
#   KEEP=/tmp/profiles bench/profile.sh validate-jwt   # keeps the perf data files there
#
# Targets: those of bench/hot-path.sh that check a session. Variables: DURATION (6 s),
# CONNECTIONS (64), SESSIONS (2 000), TOP (25 functions).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${1:-forward-auth}"
DURATION="${DURATION:-6}"
CONNECTIONS="${CONNECTIONS:-64}"
SESSIONS="${SESSIONS:-2000}"
TOP="${TOP:-25}"
case "$TARGET" in
    healthz | keepalive | keepalive-many | validate-jwt | forward-auth) ;;
    *) echo "unknown target $TARGET" >&2; exit 2 ;;
esac
[ "$DURATION" -ge 2 ] || { echo "DURATION must be at least 2 s" >&2; exit 2; }
KEEP="${KEEP:-}"
PORT="${PORT:-18290}"
HELLO_PORT="${HELLO_PORT:-18291}"
# shellcheck source=bench/common.sh
. bench/common.sh

# perf is Debian's linux-perf.
command -v perf >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq linux-perf; }
bench_tools wrk

bench_sqlite_env "$PORT"

bench_seed "$SESSIONS"
"$latchkey" serve 2>"$work/latchkey.log" & pids+=($!)
latchkey_pid=$!
"$tools" hello --listen "127.0.0.1:$HELLO_PORT" 2>"$work/hello.log" & pids+=($!)
hello_pid=$!
bench_wait_for "$url/readyz" "http://127.0.0.1:$HELLO_PORT/"
"$tools" prime --url "$url" --tokens "$work/tokens.txt" --identities
bench_check_requests "$url"
# shellcheck disable=SC2207
request=($(check_request "$TARGET"))

# One server: "<name> <pid> <port>". wrk warms it up, then drives it while perf samples it.
profile() {
    local name="$1" pid="$2" port="$3"
    local data="$work/$name.perf"
    wrk -t1 -c"$CONNECTIONS" -d2s -s bench/wrk/requests.lua "http://127.0.0.1:$port" -- GET "${request[@]}" >/dev/null
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/wrk/requests.lua "http://127.0.0.1:$port" \
        -- GET "${request[@]}" > "$work/$name.wrk" &
    local driver=$!
    sleep 0.5
    perf record -q -e task-clock -F 2999 -o "$data" -p "$pid" -- sleep $((DURATION - 1)) >/dev/null
    wait "$driver"
    [ -s "$data" ] || { echo "perf record wrote no samples" >&2; exit 1; }
    local rps
    rps=$(awk '/Requests\/sec/ { print $2 }' "$work/$name.wrk")
    echo
    echo "== $name: ${request[0]} at $rps req/s"
    # Each sample is 1/2999 s of the server's CPU time (perf's task clock).
    perf report -i "$data" --stdio --no-children --sort dso -g none -n 2>/dev/null |
        awk -v rps="$rps" -v d="$((DURATION - 1))" '
            /^ *[0-9.]+%/ { samples += $2; share = share "  " $3 " " $1 }
            END { printf "CPU per request %.2f us:%s\n", samples / 2999 / (rps * d) * 1e6, share }'
    perf report -i "$data" --stdio --no-children --sort sym -g none 2>/dev/null |
        awk -v top="$TOP" '/\[\.\]/ && shown++ < top'
    [ -z "$KEEP" ] || { mkdir -p "$KEEP"; cp "$data" "$KEEP/"; }
}

echo "latchkey $(git describe --always --dirty), $TARGET against hello given its requests; sqlite, $SESSIONS sessions, wrk -t1 -c$CONNECTIONS, perf at 2999 Hz"
profile "$TARGET" "$latchkey_pid" "$PORT"
profile "same:$TARGET" "$hello_pid" "$HELLO_PORT"
