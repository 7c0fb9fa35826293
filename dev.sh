#!/usr/bin/env bash
# Developer entry point: sets up everything the project needs on a fresh Debian machine
# (Python 3.11+), then runs the demo or the whole test suite.
#
#   ./dev.sh demo [--vehicles N]   the agent's main job on simulated lane hardware
#   ./dev.sh test [pytest args]    lint, type checks and the whole test suite
#
# System packages (python3-venv, mosquitto; strace for the tests) are installed with apt-get when missing; the
# Python dependencies go into .venv, reinstalled whenever pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "dev.sh: installing system packages: $*" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}

ensure_system_packages() {
    # $1 = "test" also brings strace: the no-phoning-home test traces onnxruntime's syscalls.
    local wanted=()
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "dev.sh: Python 3.11 or newer is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
        exit 1
    }
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || wanted+=("python3-venv")
    have_mosquitto || wanted+=("mosquitto")
    if [ "${1:-}" = "test" ]; then
        command -v strace >/dev/null 2>&1 || wanted+=("strace")
    fi
    if [ ${#wanted[@]} -gt 0 ]; then
        apt_install "${wanted[@]}"
    fi
}

ensure_venv() {
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    [ -f "$stamp" ] && return 0
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade "pip>=25.1"
    # --group needs pip 25.1+ (PEP 735 dependency groups).
    "$VENV/bin/python" -m pip install -q -e . --group dev
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

cmd=${1:-help}
shift || true
case "$cmd" in
    demo)
        ensure_system_packages
        ensure_venv
        exec "$VENV/bin/lane-agent" demo "$@"
        ;;
    test)
        ensure_system_packages test
        ensure_venv
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
