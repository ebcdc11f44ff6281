#!/usr/bin/env bash
# collectd-monitor developer entry point.
#
#   ./run.sh demo     install what is missing, then run the loopback demo
#   ./run.sh test     install what is missing, then run the whole test suite
#   ./run.sh bench    install what is missing, then run the benchmarks
#   ./run.sh setup    developer set-up (Debian packages, .venv, editable install)
#   ./run.sh lint     ruff + mypy
#   ./run.sh install [PREFIX]
#                     production install: a venv at PREFIX (default
#                     /opt/collectd-monitor) from /usr/bin/python3 with the
#                     runtime dependencies only, not tied to this checkout
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

# Production install: no test tools, no editable link to this checkout. The venv
# must come from /usr/bin/python3, the interpreter collectd embeds, and is made
# with PATH reset so that a pyenv/conda python on PATH cannot leak into it.
install() {
    local prefix=${1:-/opt/collectd-monitor}
    case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac
    if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo "run.sh install: /usr/bin/python3 cannot make a venv: apt-get install python3-venv" >&2
        exit 1
    fi
    if [ -e "$prefix" ] && [ ! -x "$prefix/bin/python" ] && [ -n "$(ls -A "$prefix")" ]; then
        echo "run.sh install: $prefix exists, is not empty and is not a venv" >&2
        exit 1
    fi
    if [ ! -x "$prefix/bin/python" ] || ! "$prefix/bin/python" -c \
        'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null; then
        echo "run.sh install: creating $prefix from /usr/bin/python3" >&2
        rm -rf "$prefix"
        env PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/python3 -m venv "$prefix"
    fi
    echo "run.sh install: installing collectd-monitor into $prefix" >&2
    local build
    build=$(mktemp -d)
    # Build from a copy: an in-tree build would leave build/ behind in this checkout.
    tar --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=build -cf - . \
        | tar -xf - -C "$build"
    env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$prefix/bin/python" -m pip install -q \
        --disable-pip-version-check --no-warn-script-location --upgrade "$build"
    rm -rf "$build"
    local version
    version=$("$prefix/bin/collectd-monitor" --version)
    echo "Installed $version into $prefix."
    local missing=()
    [ -x /usr/sbin/collectd ] || command -v collectd >/dev/null || missing+=(collectd-core)
    [ -f /usr/lib/collectd/python.so ] || missing+=("collectd's python plugin")
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Missing on this host: ${missing[*]}; install it with:"
        echo "  sudo apt-get install --no-install-recommends collectd-core"
    fi
    local bin="$prefix/bin/collectd-monitor" conf=/etc/collectd/monitor/config.json
    cat <<EOF

Next steps:
  1. Write $conf (start from examples/config.json: one broker user per host,
     named after the host) and make it private: chmod 600 $conf
  2. Check it the way the plugins will load it:
       $bin check-config --config $conf
  3. Add the plugin block to collectd.conf (add --local for local rules):
       $bin collectd-conf --config $conf
  4. Restart collectd; its log shows "collectd_monitor.remote: listening on ...".
The senders (send-command, send-config, hosts, history) run from the same venv.
EOF
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/collectd-monitor" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    bench) setup; for b in bench/bench_*.py; do "$VENV/bin/python" "$b" "$@"; done ;;
    install) install "$@" ;;
    lint) setup; "$VENV/bin/ruff" check src tests bench && "$VENV/bin/ruff" format --check src tests bench && "$VENV/bin/mypy" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
