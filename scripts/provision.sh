#!/usr/bin/env bash
# Set up everything rpctl needs on a Debian (12+) machine, idempotently:
#   - Debian packages (bcc for Python, kernel headers, bpftool, ...);
#   - a virtualenv at $REPO/.venv with rpctl installed in editable mode;
#   - /usr/local/bin/rpctl -> $REPO/.venv/bin/rpctl;
#   - bpffs mounted at /sys/fs/bpf.
# A second run installs nothing: apt is skipped when every package is already
# installed, pip when pyproject.toml has not changed since the last install.
#
# Usage: scripts/provision.sh [--with-tests]
#   --with-tests   also install what the test suite and the benchmarks need
#                  (ruby, tmux, nginx-light, wrk, systemd, prometheus, gcc,
#                  debootstrap, systemd-container; pytest and matplotlib).
# May be executed or sourced (source scripts/provision.sh [--with-tests]).
set -euo pipefail

provision_log() { printf 'provision: %s\n' "$*"; }
provision_die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

provision_now_ms() { date +%s%3N; }

provision_main() {
    local with_tests=0 arg
    for arg in "$@"; do
        case "$arg" in
            --with-tests) with_tests=1 ;;
            -h|--help)
                printf 'usage: %s [--with-tests]\n' "${BASH_SOURCE[0]}"
                return 0 ;;
            *) provision_die "unknown argument: $arg (usage: provision.sh [--with-tests])" ;;
        esac
    done

    # --- preconditions ---------------------------------------------------
    if [ "$(id -u)" -ne 0 ]; then
        provision_die "must run as root (try: sudo $0)"
    fi
    local os_id="" os_like=""
    if [ -r /etc/os-release ]; then
        os_id="$(. /etc/os-release && printf '%s' "${ID:-}")"
        os_like="$(. /etc/os-release && printf '%s' "${ID_LIKE:-}")"
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1 \
        || { [ "$os_id" != debian ] && [[ " $os_like " != *" debian "* ]]; }; then
        provision_die "needs a Debian (apt-based) system; this is '${os_id:-unknown}' — use the Vagrantfile for a Debian 12 VM"
    fi

    local start_ms repo venv
    start_ms="$(provision_now_ms)"
    # The repository root is the parent of this script's directory, wherever
    # the caller's current directory is.
    repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
    venv="$repo/.venv"
    [ -f "$repo/pyproject.toml" ] || provision_die "no pyproject.toml in $repo"

    # Serialise concurrent runs (demo.sh and test.sh at once): apt has its own
    # lock, but the venv does not.
    local lock_fd
    exec {lock_fd}>/run/lock/rpctl-provision.lock
    flock "$lock_fd"

    provision_apt "$with_tests" "$os_id"
    provision_venv "$repo" "$venv" "$with_tests"
    provision_link "$venv"
    provision_bpffs

    flock -u "$lock_fd"
    exec {lock_fd}>&-

    local end_ms
    end_ms="$(provision_now_ms)"
    provision_log "ready in $(( (end_ms - start_ms) / 1000 )).$(printf '%03d' $(( (end_ms - start_ms) % 1000 )))s"
}

# --- Debian packages -------------------------------------------------------
provision_apt() {
    local with_tests="$1" os_id="$2" arch headers
    arch="$(dpkg --print-architecture)"
    # Debian's metapackage follows the newest Debian kernel (linux-headers-amd64
    # -> linux-headers-6.1.0-N-amd64 on bookworm); bcc compiles against it.
    headers="linux-headers-$arch"
    [ "$os_id" = ubuntu ] && headers="linux-headers-generic"

    local -a pkgs=(python3-bpfcc "$headers" bpftool python3-venv python3-pip
                   iproute2 procps util-linux)
    if [ "$with_tests" = 1 ]; then
        # ruby: `ruby -c Vagrantfile` in the unit tests; tmux, nginx-light and
        # wrk: the demo and end-to-end tests; systemd: `systemd-analyze verify`
        # and `security` of contrib/systemd/rpctl.service (container images
        # often lack it); prometheus: tests/kernel/test_read_many_hosts_through_prometheus.py
        # starts /usr/bin/prometheus itself, and
        # promtool checks contrib/prometheus; gcc and libc6-dev: the ABI test
        # compiles bpf/rpctl.h, the UDP rate benchmark builds its load in C;
        # debootstrap and systemd-container (systemd-nspawn):
        # tests/kernel/test_install_and_run_the_package.py builds a Debian root
        # once and boots it with systemd as PID 1.
        pkgs+=(ruby tmux nginx-light wrk systemd prometheus gcc libc6-dev debootstrap systemd-container)
    fi

    local -a missing=()
    local p
    for p in "${pkgs[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        provision_log "apt: all ${#pkgs[@]} packages already installed"
        return 0
    fi

    provision_log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Without systemd as PID 1 (a container), a package's maintainer scripts
    # would start its service through its init script (prometheus, nginx) and
    # leave it running: a policy-rc.d that refuses every start, for the
    # install only, unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ "$(cat /proc/1/comm 2>/dev/null || true)" != systemd ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# provision.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
        trap 'rm -f -- /usr/sbin/policy-rc.d' EXIT
    fi
    # No standard input in CI: never let apt or dpkg wait for an answer.
    apt-get update -q </dev/null >/dev/null \
        || provision_die "apt-get update failed"
    # Recommends are not needed by anything here (bcc's tools, a compiler
    # toolchain for pip, ...), so keep the install small.
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >/dev/null \
        || provision_die "apt-get install ${missing[*]} failed"
    if [ "$made_policy" = 1 ]; then
        rm -f -- "$policy"
        trap - EXIT
    fi
    provision_log "apt: installed ${#missing[@]} package(s)"
}

# --- virtualenv ------------------------------------------------------------
provision_venv() {
    local repo="$1" venv="$2" with_tests="$3" sys_py=/usr/bin/python3
    # The demo needs rpctl alone; tests and benchmarks add pyproject's extras.
    local extras="" spec="$repo"
    if [ "$with_tests" = 1 ]; then
        extras="test,bench"
        spec="$repo[$extras]"
    fi
    [ -x "$sys_py" ] || provision_die "$sys_py not found (python3 package)"
    local want_ver
    want_ver="$("$sys_py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

    # Keep an existing venv only if it was made from /usr/bin/python3 (not a
    # pyenv python found on PATH), sees the system site-packages (bcc comes
    # from python3-bpfcc, it is not on PyPI) and still runs.
    if [ -e "$venv" ]; then
        local reason=""
        if [ ! -x "$venv/bin/python" ]; then
            reason="no bin/python"
        elif [ "$("$venv/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true)" != "$want_ver" ]; then
            reason="not made by $sys_py $want_ver"
        elif ! grep -qiE '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" 2>/dev/null; then
            reason="no --system-site-packages"
        elif ! grep -qE '^home *= */usr/bin/?$' "$venv/pyvenv.cfg" 2>/dev/null; then
            reason="base interpreter is not /usr/bin"
        fi
        if [ -n "$reason" ]; then
            provision_log "venv: $venv is unusable ($reason), recreating it"
            rm -rf -- "$venv"
        fi
    fi
    if [ ! -e "$venv" ]; then
        provision_log "venv: creating $venv with $sys_py $want_ver"
        "$sys_py" -m venv --system-site-packages "$venv"
    fi

    # Re-run pip only when pyproject.toml (or the repo's location, baked into
    # the venv's scripts, or the python) changed since the last install, or
    # when extras are wanted that the last install did not include.
    local stamp="$venv/.rpctl-provision.stamp" want_stamp have_stamp=""
    want_stamp="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) python=$want_ver repo=$repo"
    [ -f "$stamp" ] && have_stamp="$(cat "$stamp")"
    if [ -x "$venv/bin/rpctl" ] && { [ "$have_stamp" = "$want_stamp extras=$extras" ] \
            || { [ -z "$extras" ] && [ "${have_stamp% extras=*}" = "$want_stamp" ]; }; }; then
        provision_log "venv: up to date (pyproject.toml unchanged)"
    else
        provision_log "venv: pip install -e '$spec'"
        rm -f -- "$stamp"
        PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$venv/bin/python" -m pip install -q -e "$spec" </dev/null \
            || provision_die "pip install -e '$spec' failed"
        printf '%s extras=%s\n' "$want_stamp" "$extras" >"$stamp"
    fi

    # bcc must be importable from the venv (python3-bpfcc, system site).
    "$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("bcc") is None)' \
        || provision_die "the venv cannot see bcc: is python3-bpfcc installed for $sys_py?"
}

# --- rpctl on PATH ---------------------------------------------------------
provision_link() {
    local venv="$1" link=/usr/local/bin/rpctl target
    target="$venv/bin/rpctl"
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
        provision_log "link: $link already -> $target"
    elif [ -e "$link" ] && [ ! -L "$link" ]; then
        provision_log "link: warning: $link is a regular file, not ours; left alone (use $target)"
    else
        mkdir -p -- "$(dirname "$link")"
        ln -sfn -- "$target" "$link"
        provision_log "link: $link -> $target"
    fi
}

# --- bpffs -----------------------------------------------------------------
provision_bpffs() {
    local dir=/sys/fs/bpf
    if awk -v d="$dir" '$2 == d && $3 == "bpf" { found = 1 } END { exit !found }' /proc/mounts; then
        provision_log "bpffs: already mounted at $dir"
        return 0
    fi
    mkdir -p -- "$dir"
    mount -t bpf bpf "$dir" || provision_die "cannot mount bpffs at $dir"
    provision_log "bpffs: mounted at $dir"
}

provision_main "$@"
