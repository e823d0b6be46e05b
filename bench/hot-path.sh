#!/usr/bin/env bash
# latchkey's hot path measured by wrk against the release `latchkey serve`, side by side with a
# hello-world axum handler built alike (`latchkey-bench hello`), targets interleaved over rounds;
# prints each target's median req/s, p50, p99 and ratio to hello (docs/benchmarks.md).
#
#   bench/hot-path.sh                                   # SQLite, 2 000 sessions, every target
#   BACKEND=postgres bench/hot-path.sh                  # a fresh PostgreSQL database ($PGURL)
#   SESSIONS=1000000 TARGETS="hello keepalive-many" bench/hot-path.sh
#
# Targets: hello, healthz, keepalive (one token), keepalive-many (every seeded session, all
# cached), validate-jwt, forward-auth (a browser's session cookie, every seeded session), refresh (REFRESH_CHAINS concurrent rotating chains), scram (SCRAM
# logins, the client's PBKDF2 done ahead), basic (HTTP Basic logins: argon2id each).
# Every variable below may be set in the environment. Installs wrk (Debian) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND="${BACKEND:-sqlite}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
SESSIONS="${SESSIONS:-2000}"
TARGETS="${TARGETS:-hello healthz keepalive keepalive-many validate-jwt forward-auth refresh scram basic}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
REFRESH_CHAINS="${REFRESH_CHAINS:-1000}"
# Basic logins each cost one argon2id hash: more connections only fill the hashing queue (503).
BASIC_CONNECTIONS="${BASIC_CONNECTIONS:-8}"
PORT="${PORT:-18080}"
HELLO_PORT="${HELLO_PORT:-18081}"
# 1: each check target is also sent, as it is, to the hello-world handler, which answers it
# with an answer of latchkey's size (the "same request and answer" column: a JWT header alone
# is 400 bytes any server must read, /forward-auth's four headers 130 bytes wrk must parse).
SAME_REQUEST="${SAME_REQUEST:-1}"
# shellcheck source=bench/common.sh
. bench/common.sh

bench_tools wrk

pg_database=""
bench_cleanup_more() {
    if [ -n "$pg_database" ]; then
        psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $pg_database" 2>/dev/null
    fi
}

case "$BACKEND" in
    sqlite) export LATCHKEY_DATABASE="sqlite://$work/latchkey.db" ;;
    postgres)
        pg_database="latchkey_bench_$$"
        psql -q "$PGURL/postgres" -c "CREATE DATABASE $pg_database"
        export LATCHKEY_DATABASE="$PGURL/$pg_database" ;;
    *) echo "BACKEND is sqlite or postgres" >&2; exit 2 ;;
esac
export LATCHKEY_MASTER_KEY_FILE="$work/master.key"
export LATCHKEY_LISTEN="127.0.0.1:$PORT"
export LATCHKEY_LOG="${LATCHKEY_LOG:-warn}"
# Every request comes from 127.0.0.1: the per-address login rate would refuse the login
# targets after a few (429); it is off, the hashing pool and the store are what they meet.
export LATCHKEY_LOGIN_RATE_PER_ADDRESS=0
url="http://127.0.0.1:$PORT"

echo "seeding $SESSIONS sessions ($BACKEND)..." >&2
bench_seed "$SESSIONS"

"$latchkey" serve & pids+=($!)
latchkey_pid=$!
"$tools" hello --listen "127.0.0.1:$HELLO_PORT" 2>/dev/null & pids+=($!)
for _ in $(seq 1 100); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && curl -fsS "http://127.0.0.1:$HELLO_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
done
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$latchkey_pid/status"; }
idle_kib=$(rss_kib)
"$tools" prime --url "$url" --tokens "$work/tokens.txt"
sleep 2   # the coalesced "last active" writes of the priming pass
primed_kib=$(rss_kib)
# /forward-auth's first check of each session also loads who is behind it (kept with the
# cached session from then on): loaded here too, so that its rounds measure cached sessions.
case " $TARGETS " in
    *" forward-auth "*) "$tools" prime --url "$url" --tokens "$work/tokens.txt" --identities ;;
esac

bench_check_requests "$url"
echo "Basic $(printf '%s:%s' "$USER_NAME" "$BENCH_PASSWORD" | base64 -w0)" > "$work/basic.txt"

# The hello-world handler answers each check's request as latchkey does, in size: status line,
# header names and value lengths, body (the date aside). A mismatch would make the "same
# request and answer" column measure something else: stop.
answer_shape() {
    curl -s -i "$1" ${2:+-H "$2: $(head -n 1 "$3")"} | tr -d '\r' | grep -vi '^date:' |
        awk -F': ' 'NF > 1 { print $1 ": " length($2); next } { print }'
}

# One wrk run; prints "<req/s> <p50 ms> <p99 ms> <non-2xx and socket errors>".
run_wrk() {
    local connections="$1" address="$2" script="$3"
    shift 3
    wrk -t"$THREADS" -c"$connections" -d"${DURATION}s" --latency -s "bench/wrk/$script" \
        "$address" -- "$@" | awk -f bench/wrk/summary.awk
}

if [ "$SAME_REQUEST" = 1 ]; then
    for target in healthz keepalive validate-jwt forward-auth; do
        # shellcheck disable=SC2046
        set -- $(check_request "$target")
        if ! diff <(answer_shape "$url$1" "${2:-}" "${3:-}") \
            <(answer_shape "http://127.0.0.1:$HELLO_PORT$1" "${2:-}" "${3:-}") >&2; then
            echo "!!! the hello-world handler does not answer $target as latchkey does (above)" >&2
            exit 1
        fi
    done
fi

# One measurement of a target: "<req/s> <p50 ms> <p99 ms> <errors>". "same:<check target>" is
# the hello-world handler sent exactly that target's requests (path and header), answering
# them as latchkey does (checked above).
measure() {
    case "$1" in
        hello) run_wrk "$CONNECTIONS" "http://127.0.0.1:$HELLO_PORT" requests.lua GET / ;;
        same:*)
            # shellcheck disable=SC2046
            run_wrk "$CONNECTIONS" "http://127.0.0.1:$HELLO_PORT" requests.lua GET $(check_request "${1#same:}") ;;
        healthz | keepalive | keepalive-many | validate-jwt | forward-auth)
            # shellcheck disable=SC2046
            run_wrk "$CONNECTIONS" "$url" requests.lua GET $(check_request "$1") ;;
        refresh)
            # Fresh chains each round: the previous round's tokens are superseded now.
            "$tools" scram --url "$url" --user "$USER_NAME" --logins "$REFRESH_CHAINS" \
                --refresh-tokens "$work/chains.txt"
            run_wrk "$CONNECTIONS" "$url" refresh.lua "$work/chains.txt" ;;
        scram)
            "$tools" scram --url "$url" --user "$USER_NAME" --seconds "$DURATION" \
                --connections "$CONNECTIONS" |
                awk '{ printf "%s %s %s %s\n", $2, $4, $6, $8 }' ;;
        basic) run_wrk "$BASIC_CONNECTIONS" "$url" requests.lua GET /session/login \
            Authorization "$work/basic.txt" ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}

# Each check target runs right after a run of hello ("hello@<target>") and, with
# SAME_REQUEST, right before hello sent its very requests: its ratios are taken within those
# pairs, a minute apart at most, and the median over the rounds is reported. This machine
# changes speed for tens of seconds at a time; a ratio of two medians taken minutes apart
# moved by ±0.1 between runs of the same code.
results="$work/results.txt"
for round in $(seq 1 "$ROUNDS"); do
    for target in $TARGETS; do
        runs="$target"
        if check_request "$target" >/dev/null; then
            runs="hello@$target $target"
            if [ "$SAME_REQUEST" = 1 ]; then runs="$runs same:$target"; fi
        fi
        for run in $runs; do
            line=$(measure "${run%@*}")
            echo "$round $run $line" >> "$results"
            echo "round $round: $run $line (req/s p50_ms p99_ms errors)" >&2
        done
    done
done

echo
echo "latchkey $(git describe --always --dirty 2>/dev/null || echo '?'), $BACKEND, $SESSIONS stored sessions" \
    "(all cached), wrk -t$THREADS -c$CONNECTIONS, $ROUNDS rounds of ${DURATION} s, medians; $(nproc) cores"
echo "server memory: idle $((idle_kib / 1024)) MiB; after priming $SESSIONS sessions $((primed_kib / 1024)) MiB" \
    "($(( (primed_kib - idle_kib) * 1024 / SESSIONS )) bytes per cached session)"
echo
awk -v order="$TARGETS" '
    # "<round> <run> <req/s> <p50> <p99> <errors>"
    { n[$2]++; rps[$2, $1] = $3; p50[$2, n[$2]] = $4; p99[$2, n[$2]] = $5; errors[$2] += $6
      rounds[$2, n[$2]] = $1 }
    function median_of(v, c,    i, j, k) {
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { k = v[i]; v[i] = v[j]; v[j] = k }
        return v[int((c + 1) / 2)]
    }
    function median(a, t,    i, v) {
        for (i = 1; i <= n[t]; i++) v[i] = (a == "rps") ? rps[t, rounds[t, i]] : (a == "p50") ? p50[t, i] : p99[t, i]
        return median_of(v, n[t])
    }
    # The median over the rounds of the ratio of t to u measured in the same round.
    function paired(t, u,    i, v) {
        for (i = 1; i <= n[t]; i++) v[i] = rps[t, rounds[t, i]] / rps[u, rounds[t, i]]
        return median_of(v, n[t])
    }
    END {
        printf "| target | req/s | ratio to hello | ratio to hello, same request and answer | p50 | p99 | errors |\n"
        printf "|---|---|---|---|---|---|---|\n"
        hello = ("hello" in n) ? median("rps", "hello") : 0
        split(order, targets, " ")
        for (i = 1; targets[i] != ""; i++) {
            t = targets[i]
            r = median("rps", t)
            if ("hello@" t in n) ratio = sprintf("%.2f (hello %d req/s)", paired(t, "hello@" t), median("rps", "hello@" t))
            else ratio = hello > 0 ? sprintf("%.2f", r / hello) : "-"
            same = ("same:" t in n) ? sprintf("%.2f (hello %d req/s)", paired(t, "same:" t), median("rps", "same:" t)) : "-"
            printf "| %s | %d | %s | %s | %.2f ms | %.2f ms | %d |\n", t, r, ratio, same, median("p50", t), median("p99", t), errors[t]
        }
    }' "$results"
if awk '$6 > 0 && $2 != "basic" { bad = 1 } END { exit !bad }' "$results"; then
    echo "!!! some requests failed (errors column): those numbers do not measure what they name" >&2
    exit 1
fi
