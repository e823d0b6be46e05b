# Sourced by .ci/vendor-clients and .ci/openapi-check (bash, set -euo pipefail already on).
# Makes a Python virtual environment with the pinned packages of one requirements file, installing
# what a fresh Debian machine lacks. Sets PY (the venv's python) and VENV.
#
#   interop_env NAME REQUIREMENTS_FILE [needs-java]
#
# The venv is INTEROP_VENV_DIR/NAME (default ~/.cache/latchkey-interop/NAME), one per script so
# their packages (and pytest plugins) stay apart; later runs reuse it and pip only installs what
# is missing.

interop_apt() {
  if [ -z "${INTEROP_APT_UPDATED:-}" ]; then
    apt-get update -qq
    INTEROP_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

interop_env() {
  local name=$1 requirements=$2 needs_java=${3:-}
  if ! command -v python3 >/dev/null 2>&1; then
    interop_apt python3 python3-venv
  fi
  VENV=${INTEROP_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/latchkey-interop}/$name
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      interop_apt python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  PY="$VENV/bin/python"
  "$PY" -m pip install -q --disable-pip-version-check -r "$requirements"
  if [ -n "$needs_java" ] && ! command -v java >/dev/null 2>&1; then
    interop_apt default-jre-headless
  fi
  export PATH="$VENV/bin:$PATH"
}

# The latchkey binaries named by the given variables (LATCHKEY_BIN, LATCHKEY_APP_BIN; default
# target/debug/latchkey and target/debug/latchkey-app), exported as absolute paths. Nothing is built
# here; a missing binary is waited for a little (it may be being relinked), then is an error.
#
#   interop_binaries LATCHKEY_BIN [LATCHKEY_APP_BIN]
interop_binaries() {
  local var name path
  for var in "$@"; do
    case $var in
      LATCHKEY_BIN) name=latchkey ;;
      LATCHKEY_APP_BIN) name=latchkey-app ;;
      *) echo "interop_binaries: unknown variable $var" >&2; return 2 ;;
    esac
    path=${!var:-target/debug/$name}
    case $path in /*) ;; *) path="$PWD/$path" ;; esac
    for _ in $(seq 1 60); do
      [ -x "$path" ] && break
      sleep 2
    done
    if [ ! -x "$path" ]; then
      echo "error: $var: no executable $path (build it first: cargo build -p latchkey -p latchkey-app)" >&2
      return 1
    fi
    export "$var=$path"
    echo "$var=$path"
  done
}
