#!/usr/bin/env bash
# A flood of HTTP Basic logins against the release `latchkey serve` (embedded SQLite, the
# production argon2id cost), as docs/benchmarks.md reports it:
#   1. one client, sequentially: the time of one login (one argon2id hash plus the rest);
#   2. CONNECTIONS clients at once (default 256) for FLOOD_SECONDS: judged logins/s, refusals (503 from
#      the full hashing queue, 429 from the per-address rate), latency, and the server's peak
#      resident memory, beside the argon2id limit (cores / time of one login).
# Installs wrk (Debian) when missing. Every variable below may be set in the environment.
#
#   bench/login-flood.sh
#   CONNECTIONS=64 FLOOD_SECONDS=20 bench/login-flood.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS="${CONNECTIONS:-256}"
SECONDS_FLOOD="${FLOOD_SECONDS:-10}"
PORT="${PORT:-18181}"
USER_NAME="bench@example.com"
PASSWORD="correct horse battery staple"

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq wrk
fi
cargo build --release -p latchkey
bin="${CARGO_TARGET_DIR:-target}/release/latchkey"

data="$(mktemp -d)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT

db="sqlite://$data/latchkey.db"
export LATCHKEY_LOG=warn
# The per-address rate limit is off so the hashing pool is what the flood meets (every
# client is 127.0.0.1); set LATCHKEY_LOGIN_RATE_PER_ADDRESS to see 429s instead.
export LATCHKEY_LOGIN_RATE_PER_ADDRESS="${LATCHKEY_LOGIN_RATE_PER_ADDRESS:-0}"
"$bin" init --database "$db" >/dev/null
echo "$PASSWORD" | "$bin" user add "$USER_NAME" --password-stdin --database "$db" >/dev/null
"$bin" serve --database "$db" --listen "127.0.0.1:$PORT" &
server_pid=$!
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

peak_rss() { awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server_pid/status"; }
cores=$(nproc)
export LOGIN_AUTH="Basic $(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)"
script="bench/login-flood.lua"
url="http://127.0.0.1:$PORT"

echo "=== one client, 5 s: the time of one login"
single=$(wrk -t1 -c1 -d5s -s "$script" "$url")
echo "$single"
per_second=$(echo "$single" | awk '/judged logins\/s/ {print $3}')
echo "=== $CONNECTIONS clients, ${SECONDS_FLOOD} s"
wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_FLOOD}s" --timeout 30s -s "$script" "$url"
healthz=$(curl -s -o /dev/null -w '%{time_total}' "$url/healthz")
echo "=== summary"
awk -v c="$cores" -v p="$per_second" 'BEGIN {
    printf "argon2id limit: %d cores x %.1f logins/s per core = %.1f logins/s\n", c, p, c * p }'
echo "server peak RSS (VmHWM): $(peak_rss) MiB; /healthz right after: ${healthz} s"
