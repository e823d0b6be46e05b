#!/usr/bin/env bash
# Scale-out on PostgreSQL: three `latchkey serve` processes behind HAProxy (Debian's package) on
# one PostgreSQL database, against one process alone (docs/benchmarks.md):
#   1. validate-jwt and refresh throughput (wrk) through one process, then through HAProxy to
#      three; every process's cache primed with every session first;
#   2. while wrk drives keepalives through HAProxy, a session is logged out on process 1 and
#      processes 2 and 3 are asked for it every 10 ms until they refuse it: the time each took
#      to learn of the revocation (LISTEN/NOTIFY) must be under a second.
#
#   bench/scale-out.sh
#   PGURL=postgres://postgres@127.0.0.1:5432 DURATION=10 bench/scale-out.sh
#
# Installs wrk and haproxy (Debian) when missing. Exits non-zero when a request failed or a
# revocation took a second or more.
set -euo pipefail
cd "$(dirname "$0")/.."

PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
SESSIONS="${SESSIONS:-2000}"
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-64}"
REFRESH_CHAINS="${REFRESH_CHAINS:-1000}"
BASE_PORT="${BASE_PORT:-18090}"
PROXY_PORT="${PROXY_PORT:-18099}"
# shellcheck source=bench/common.sh
. bench/common.sh

bench_tools wrk haproxy
database="latchkey_scale_$$"
bench_cleanup_more() {
    psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $database" 2>/dev/null || true
}

psql -q "$PGURL/postgres" -c "CREATE DATABASE $database"
export LATCHKEY_DATABASE="$PGURL/$database"
export LATCHKEY_MASTER_KEY_FILE="$work/master.key"
export LATCHKEY_LOG="${LATCHKEY_LOG:-warn}"
export LATCHKEY_LOGIN_RATE_PER_ADDRESS=0

bench_seed "$SESSIONS"

ports=("$BASE_PORT" "$((BASE_PORT + 1))" "$((BASE_PORT + 2))")
for port in "${ports[@]}"; do
    LATCHKEY_LISTEN="127.0.0.1:$port" "$latchkey" serve & pids+=($!)
done
cat > "$work/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend latchkey
    bind 127.0.0.1:$PROXY_PORT
    default_backend processes
backend processes
    balance roundrobin
    option httpchk GET /readyz
    server one 127.0.0.1:${ports[0]} check inter 1s
    server two 127.0.0.1:${ports[1]} check inter 1s
    server three 127.0.0.1:${ports[2]} check inter 1s
EOF
haproxy -q -f "$work/haproxy.cfg" & pids+=($!)
for port in "${ports[@]}" "$PROXY_PORT"; do
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
sleep 2   # HAProxy's first health checks
for port in "${ports[@]}"; do
    "$tools" prime --url "http://127.0.0.1:$port" --tokens "$work/tokens.txt"
done
one="http://127.0.0.1:${ports[0]}"
proxy="http://127.0.0.1:$PROXY_PORT"
"$tools" scram --url "$one" --user "$USER_NAME" --logins 1 \
    --refresh-tokens "$work/unused.txt" --jwt "$work/jwt.txt"
read -r jwt session_id < "$work/jwt.txt"
echo "Bearer $jwt" > "$work/bearer.txt"

failed=0
# "<req/s> <p50 ms> <p99 ms> <errors>" of one wrk run.
run_wrk() {
    local address="$1" script="$2"
    shift 2
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "bench/wrk/$script" "$address" -- "$@" | awk -f bench/wrk/summary.awk
}
row() {
    local name="$1" result
    shift
    result=$(run_wrk "$@")
    read -r rps p50 p99 errors <<< "$result"
    printf '| %s | %s | %.2f ms | %.2f ms | %s |\n' "$name" "$rps" "$p50" "$p99" "$errors"
    [ "$errors" -eq 0 ] || failed=1
}

echo
echo "latchkey $(git describe --always --dirty 2>/dev/null || echo '?'), PostgreSQL, $SESSIONS sessions cached" \
    "in every process, wrk -t1 -c$CONNECTIONS, ${DURATION} s per run; $(nproc) cores shared by all"
echo
echo "| target | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
row "validate-jwt, one process" "$one" requests.lua GET "/sessions/validate/$session_id" \
    Authorization "$work/bearer.txt"
row "validate-jwt, three behind HAProxy" "$proxy" requests.lua GET "/sessions/validate/$session_id" \
    Authorization "$work/bearer.txt"
"$tools" scram --url "$one" --user "$USER_NAME" --logins "$REFRESH_CHAINS" --refresh-tokens "$work/chains.txt"
row "refresh, one process" "$one" refresh.lua "$work/chains.txt"
"$tools" scram --url "$one" --user "$USER_NAME" --logins "$REFRESH_CHAINS" --refresh-tokens "$work/chains.txt"
row "refresh, three behind HAProxy" "$proxy" refresh.lua "$work/chains.txt"

# Revocation under load: keepalives through HAProxy (every session but the victim's).
victim=$(head -n 1 "$work/tokens.txt")
tail -n +2 "$work/tokens.txt" > "$work/others.txt"
wrk -t1 -c"$CONNECTIONS" -d"$((DURATION + 4))s" -s bench/wrk/requests.lua "$proxy" -- \
    GET /session/keepalive X-Auth-Token "$work/others.txt" > "$work/load.txt" &
load_pid=$!
sleep 2
status_on() { curl -s -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $victim" "http://127.0.0.1:$1/session/keepalive"; }
for port in "${ports[@]:1}"; do
    [ "$(status_on "$port")" = 200 ] || { echo "the victim session is not active on $port" >&2; exit 1; }
done
revoked_at=$(date +%s.%N)
curl -fsS -o /dev/null -H "X-Auth-Token: $victim" "$one/session/logout"
echo
for port in "${ports[@]:1}"; do
    seen=""
    while :; do
        now=$(date +%s.%N)
        if [ "$(status_on "$port")" = 401 ]; then seen=$now; break; fi
        if awk -v a="$revoked_at" -v b="$now" 'BEGIN { exit !(b - a > 5) }'; then break; fi
        sleep 0.01
    done
    if [ -z "$seen" ]; then
        echo "revocation on process 1 NOT seen by the process on port $port within 5 s"
        failed=1
    else
        ms=$(awk -v a="$revoked_at" -v b="$seen" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
        echo "revocation on process 1 refused by the process on port $port after $ms ms (under load)"
        [ "$ms" -lt 1000 ] || failed=1
    fi
done
wait "$load_pid"
echo "keepalives through HAProxy meanwhile: $(awk '/^Requests\/sec:/ {print $2}' "$work/load.txt") req/s"
if grep -q "Non-2xx\|Socket errors" "$work/load.txt"; then
    echo "!!! keepalives failed during the revocation run:" >&2
    grep "Non-2xx\|Socket errors" "$work/load.txt" >&2
    failed=1
fi
exit "$failed"
