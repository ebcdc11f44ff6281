#!/usr/bin/env bash
# collectd-monitor developer entry point.
#
#   ./run.sh demo     install what is missing, then run the loopback demo
#   ./run.sh test     install what is missing, then run the whole test suite
#   ./run.sh bench    install what is missing, then run the benchmarks
#   ./run.sh setup    only install (Debian packages, .venv, Python packages)
#   ./run.sh lint     ruff + mypy
#
# Extra arguments are passed on (to pytest for "test").
set -euo pipefail
cd "$(dirname "$0")"

DEBIAN_PACKAGES=(collectd-core collectd-utils mosquitto python3-venv openssl procps postgresql)
VENV=.venv

need_packages() {
    local missing=()
    command -v collectd >/dev/null || [ -x /usr/sbin/collectd ] || missing+=(collectd-core)
    command -v collectd-tg >/dev/null || missing+=(collectd-utils)
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v pgrep >/dev/null || missing+=(procps)
    # PostgreSQL for the history tests (the fixtures run their own server)
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    echo "${missing[@]:-}"
}

setup() {
    local missing
    missing=$(need_packages)
    if [ -n "$missing" ]; then
        echo "run.sh: installing Debian packages: $missing" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        # shellcheck disable=SC2086
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${DEBIAN_PACKAGES[@]}" >/dev/null
    fi
    # The venv must come from the interpreter collectd embeds, /usr/bin/python3.
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c \
        'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
        echo "run.sh: creating $VENV from /usr/bin/python3" >&2
        rm -rf "$VENV"
        /usr/bin/python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.installed"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
        || ! "$VENV/bin/python" -c 'import collectd_monitor' 2>/dev/null; then
        echo "run.sh: installing Python packages into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/collectd-monitor" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    bench) setup; for b in bench/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done ;;
    lint) setup; "$VENV/bin/ruff" check src tests bench && "$VENV/bin/ruff" format --check src tests bench && "$VENV/bin/mypy" ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
