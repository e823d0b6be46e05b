# What bench/hot-path.sh, bench/scale-out.sh and bench/instructions.sh share: the bench user,
# the tools (Debian packages installed when missing, the release binaries built), a work folder
# cleaned up at exit with every process started, and a store seeded with sessions. Sourced from
# the repository's root; sets `latchkey`, `tools`, `work` and `pids`.

USER_NAME="bench@example.com"
export BENCH_PASSWORD="correct horse battery staple"

# Installs the Debian packages of the commands named that are missing, then builds latchkey
# and latchkey-bench in release.
bench_tools() {
    local missing=() command
    for command in "$@"; do
        command -v "$command" >/dev/null 2>&1 || missing+=("$command")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    fi
    cargo build --release -p latchkey -p latchkey-bench
    local target_dir="${CARGO_TARGET_DIR:-target}/release"
    latchkey="$target_dir/latchkey"
    tools="$target_dir/latchkey-bench"
}

# A fresh work folder; at exit, every pid in `pids` is stopped, `bench_cleanup_more` runs if
# the script defined it, and the folder goes.
work="$(mktemp -d)"
pids=()
bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    # A failure here must not become the script's status (session-scale.sh runs hot-path.sh
    # under `set -e`): it is reported.
    if declare -F bench_cleanup_more >/dev/null; then
        bench_cleanup_more || echo "cleanup: bench_cleanup_more failed" >&2
    fi
    rm -rf "$work"
}
trap bench_cleanup EXIT

# The files the check targets' requests read, for the server at $1: one token, every session's
# cookie, and the JWT of a fresh SCRAM login (whose session id goes in `session_id`).
bench_check_requests() {
    head -n 1 "$work/tokens.txt" > "$work/one-token.txt"
    sed 's/^/latchkey_session=/' "$work/tokens.txt" > "$work/cookies.txt"
    "$tools" scram --url "$1" --user "$USER_NAME" --logins 1 \
        --refresh-tokens "$work/unused.txt" --jwt "$work/jwt.txt"
    local jwt
    read -r jwt session_id < "$work/jwt.txt"
    echo "Bearer $jwt" > "$work/bearer.txt"
}

# The request of a check target: "<path> [<header> <values file>]".
check_request() {
    case "$1" in
        healthz) echo "/healthz" ;;
        keepalive) echo "/session/keepalive X-Auth-Token $work/one-token.txt" ;;
        keepalive-many) echo "/session/keepalive X-Auth-Token $work/tokens.txt" ;;
        validate-jwt) echo "/sessions/validate/$session_id Authorization $work/bearer.txt" ;;
        forward-auth) echo "/forward-auth Cookie $work/cookies.txt" ;;
        *) return 1 ;;
    esac
}

# `latchkey init` on $LATCHKEY_DATABASE, the bench user with its password, and $1 active
# sessions written straight into the store, their tokens in $work/tokens.txt.
bench_seed() {
    "$latchkey" init >/dev/null
    echo "$BENCH_PASSWORD" | "$latchkey" user add "$USER_NAME" --password-stdin >/dev/null
    "$tools" seed --database "$LATCHKEY_DATABASE" --master-key-file "$LATCHKEY_MASTER_KEY_FILE" \
        --user "$USER_NAME" --sessions "$1" --tokens "$work/tokens.txt"
}

# One latchkey on a SQLite database in the work folder, listening on port $1 (the
# per-address login rate off: every request comes from 127.0.0.1); sets `url`.
bench_sqlite_env() {
    export LATCHKEY_DATABASE="sqlite://$work/latchkey.db"
    export LATCHKEY_MASTER_KEY_FILE="$work/master.key"
    export LATCHKEY_LISTEN="127.0.0.1:$1"
    export LATCHKEY_LOG=warn
    export LATCHKEY_LOGIN_RATE_PER_ADDRESS=0
    url="http://127.0.0.1:$1"
}

# Waits until every URL given answers (up to 100 s each: servers under valgrind start slowly).
bench_wait_for() {
    local address
    for address in "$@"; do
        for _ in $(seq 1 400); do
            curl -fsS "$address" >/dev/null 2>&1 && break
            sleep 0.25
        done
    done
}
