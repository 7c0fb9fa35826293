#!/usr/bin/env bash
# Developer entry point: sets up everything the project needs on a fresh Debian machine
# (Python 3.11+), then runs the demo or the whole test suite.
#
#   ./dev.sh demo [--vehicles N]   the agent's main job on simulated lane hardware
#   ./dev.sh test [pytest args]    lint, type checks and the whole test suite
#   ./dev.sh central-demo [opts]   simulated lanes, a broker, the ingest and PostgreSQL, end to end
#
# System packages (python3-venv, mosquitto; strace and chromium for the tests; postgresql for central's tests and demo)
# are installed with apt-get when missing; the Python dependencies go into .venv, reinstalled whenever
# pyproject.toml changes.
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
        # The plate renderer's tests draw with the training fonts (training/fonts.toml).
        for font_package in fonts-roboto-unhinted fonts-dejavu-extra fonts-bebas-neue fonts-opendin; do
            dpkg -s "$font_package" >/dev/null 2>&1 || wanted+=("$font_package")
        done
        # The lane page's browser tests drive Debian's Chromium (tests/page): nothing downloads one.
        [ -x /usr/bin/chromium ] || wanted+=("chromium")
        [ -x /usr/bin/chromedriver ] || wanted+=("chromium-driver")
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
    "$VENV/bin/python" -m pip install -q -e ".[central]" --group dev
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

PG_ADMIN_DSN_DEFAULT="postgresql://postgres@127.0.0.1:5432/postgres"

pg_reachable() {
    "$VENV/bin/python" -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()' \
        "$1" >/dev/null 2>&1
}

use_postgresql() {
    # $1 = a DSN of a role that may create databases: central's tests and demo make their own.
    export LANE_CENTRAL_TEST_DSN="$1"
    export LANE_CENTRAL_ADMIN_DSN="${LANE_CENTRAL_ADMIN_DSN:-$1}"
}

ensure_postgresql() {
    # Central's tests and demo need a PostgreSQL server (fail loudly, never skip): use the one
    # given or running, else install it, start its clusters (no init system on CI machines) and,
    # where loopback wants a password (a fresh install), make a role for them.
    local dsn="${LANE_CENTRAL_TEST_DSN:-$PG_ADMIN_DSN_DEFAULT}" sudo=""
    pg_reachable "$dsn" && { use_postgresql "$dsn"; return 0; }
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v pg_lsclusters >/dev/null 2>&1 || apt_install postgresql
    pg_lsclusters --no-header | while read -r version name _port status _rest; do
        [ "$status" = online ] || $sudo pg_ctlcluster "$version" "$name" start
    done
    for _ in $(seq 1 30); do
        pg_reachable "$dsn" && { use_postgresql "$dsn"; return 0; }
        $sudo runuser -u postgres -- psql -Atqc 'SELECT 1' >/dev/null 2>&1 && break
        sleep 1
    done
    $sudo runuser -u postgres -- psql -q -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lane_central_dev') THEN
            CREATE ROLE lane_central_dev LOGIN CREATEDB PASSWORD 'lane_central_dev';
        END IF; END \$\$;"
    dsn="postgresql://lane_central_dev:lane_central_dev@127.0.0.1:5432/postgres"
    pg_reachable "$dsn" || {
        echo "dev.sh: PostgreSQL runs but $dsn cannot connect; set LANE_CENTRAL_TEST_DSN" >&2
        exit 1
    }
    use_postgresql "$dsn"
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
        ensure_postgresql
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/mypy"
        "$VENV/bin/lint-imports" --no-cache
        exec "$VENV/bin/pytest" "$@"
        ;;
    central-demo)
        ensure_system_packages
        ensure_venv
        ensure_postgresql
        exec "$VENV/bin/lane-central" demo "$@"
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
