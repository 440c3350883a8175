#!/usr/bin/env bash
# Build the Debian package of this tree: dist/rpctl_<version>_all.deb, with
# Debian's own tooling (debhelper 13, dh-python's pybuild with its pyproject
# plugin), then check it with lintian (any error fails the build).
#
# Installs the build dependencies debian/control names with apt when some are
# missing (idempotently: a second run installs nothing).  The tree is copied
# (its tracked and untracked, not ignored, files) to a scratch folder and
# built there, so the clone is left as it was but for dist/.
#
# --version-suffix +LABEL builds the same tree as version <version>+LABEL
# (e.g. 0.1.0+upgrade1): a package dpkg sees as newer, to try an upgrade
# with.  The suffix goes into the scratch copy's pyproject.toml and
# debian/changelog only; the tree is not edited.
#
# Usage: ./scripts/package.sh [--no-lintian] [--version-suffix +LABEL]   (as root)
set -euo pipefail

package_log() { printf 'package: %s\n' "$*"; }
package_die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

PACKAGE_USAGE="package.sh [--no-lintian] [--version-suffix +LABEL]"

package_main() {
    local lintian=1 suffix=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --no-lintian) lintian=0 ;;
            --version-suffix) [ "$#" -ge 2 ] || package_die "--version-suffix needs a value (e.g. +upgrade1)"
                suffix="$2"; shift ;;
            --version-suffix=*) suffix="${1#*=}" ;;
            -h|--help) printf 'usage: %s\n' "$PACKAGE_USAGE"; return 0 ;;
            *) package_die "unknown argument: $1 (usage: $PACKAGE_USAGE)" ;;
        esac
        shift
    done
    # A label both Debian (sorts after the plain version) and Python (a PEP 440
    # local version, which --version shows) read the same way.
    if [ -n "$suffix" ] && ! [[ "$suffix" =~ ^\+[a-z0-9]+(\.[a-z0-9]+)*$ ]]; then
        package_die "bad --version-suffix $suffix: a + then lower-case letters and digits, dot-separated (e.g. +upgrade1)"
    fi
    [ "$(id -u)" -eq 0 ] || package_die "must run as root: it installs build dependencies with apt (try: sudo $0)"
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 \
        || package_die "needs a Debian (apt-based) system"

    local repo
    repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"
    [ -f "$repo/debian/control" ] || package_die "no debian/control in $repo"

    # apt and dpkg have their own locks; two builds of one clone share dist/.
    local lock_fd
    exec {lock_fd}>/run/lock/rpctl-package.lock
    flock "$lock_fd"

    package_build_deps "$repo"
    local deb
    deb="$(package_build "$repo" "$suffix")"
    if [ "$lintian" = 1 ]; then
        package_lintian "$deb"
    fi
    package_log "built $deb"
}

# --- build dependencies ------------------------------------------------------
# The tools that read debian/control come first; then debian/control's
# Build-Depends, asked of dpkg-checkbuilddeps, installed only when unmet.
package_build_deps() {
    local repo="$1" p
    local -a tools=(dpkg-dev debhelper lintian) missing=()
    for p in "${tools[@]}"; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$p")
    done
    local unmet=""
    if [ "${#missing[@]}" -eq 0 ]; then
        unmet="$(cd "$repo" && dpkg-checkbuilddeps 2>&1 >/dev/null | sed -n 's/.*Unmet build dependencies: //p' || true)"
        if [ -z "$unmet" ]; then
            package_log "apt: build dependencies already installed"
            return 0
        fi
    fi
    package_log "apt: installing ${missing[*]:-}${unmet:+ (build dependencies: $unmet)}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null >/dev/null || package_die "apt-get update failed"
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >/dev/null \
            || package_die "apt-get install ${missing[*]} failed"
    fi
    # apt reads the Build-Depends of the source tree itself.
    apt-get build-dep -y -q --no-install-recommends "$repo" </dev/null >/dev/null \
        || package_die "apt-get build-dep $repo failed"
    (cd "$repo" && dpkg-checkbuilddeps) || package_die "build dependencies still unmet"
}

# --- build -------------------------------------------------------------------
# Prints the path of the .deb in dist/.
package_build() {
    local repo="$1" suffix="$2" version scratch src
    version="$(cd "$repo" && dpkg-parsechangelog -S Version)$suffix"
    scratch="$(mktemp -d /tmp/rpctl-package.XXXXXX)"
    trap 'rm -rf -- "'"$scratch"'"' EXIT
    src="$scratch/rpctl-$version"
    mkdir -p -- "$src"
    if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
        # What the tree holds, committed or not, without what git ignores
        # (.venv, dist/, caches); files deleted but not yet committed are left out.
        (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
            | xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh \
            | tar --null -T - -cf -) | tar -xf - -C "$src"
    else
        tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=__pycache__ \
            --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude='*.whl' -cf - . | tar -xf - -C "$src"
    fi
    if [ -n "$suffix" ]; then
        package_version_suffix "$src" "$version" "$suffix"
    fi
    package_log "building rpctl $version in $src" >&2
    local log="$scratch/build.log"
    # Debian's python3 and tools only, as a build daemon has them: not a
    # python3 that PATH or a virtualenv puts first.
    if ! (cd "$src" && env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            dpkg-buildpackage -b -us -uc </dev/null >"$log" 2>&1); then
        tail -n 40 "$log" >&2
        package_die "dpkg-buildpackage failed (the last lines of its log are above)"
    fi
    local deb
    deb="$(ls "$scratch"/rpctl_"$version"_all.deb 2>/dev/null)" || package_die "dpkg-buildpackage made no rpctl_${version}_all.deb"
    mkdir -p -- "$repo/dist"
    install -m 644 -- "$deb" "$repo/dist/"
    printf '%s\n' "$repo/dist/$(basename "$deb")"
}

# The copy in SRC made version VERSION (its own version and SUFFIX):
# pyproject's version (what `rpctl --version` says) and a changelog entry on
# top (the package's version).
package_version_suffix() {
    local src="$1" version="$2" suffix="$3" maintainer distribution
    sed -i '0,/^version = ".*"$/s//version = "'"$version"'"/' "$src/pyproject.toml"
    grep -qx "version = \"$version\"" "$src/pyproject.toml" || package_die "no version line in pyproject.toml"
    maintainer="$(cd "$src" && dpkg-parsechangelog -S Maintainer)"
    distribution="$(cd "$src" && dpkg-parsechangelog -S Distribution)"
    {
        printf 'rpctl (%s) %s; urgency=medium\n\n' "$version" "$distribution"
        printf '  * This tree, built with the version suffix %s.\n\n' "$suffix"
        printf ' -- %s  %s\n\n' "$maintainer" "$(date -R)"
        cat -- "$src/debian/changelog"
    } >"$src/debian/changelog.new"
    mv -- "$src/debian/changelog.new" "$src/debian/changelog"
}

# --- lintian -----------------------------------------------------------------
# Errors fail the build; warnings are shown (debian/rpctl.lintian-overrides
# says why each overridden one stays).
package_lintian() {
    local deb="$1" out rc=0 tmp
    # lintian advises against root: it reads the package as nobody, from a copy nobody can read.
    tmp="$(mktemp -d /tmp/rpctl-lintian.XXXXXX)"
    install -m 644 -- "$deb" "$tmp/"
    chown nobody "$tmp"
    out="$(cd "$tmp" && setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$tmp" TMPDIR="$tmp" \
        lintian --fail-on error --tag-display-limit 0 "$tmp/$(basename "$deb")" 2>&1)" || rc=$?
    rm -rf -- "$tmp"
    if [ -n "$out" ]; then
        printf '%s\n' "$out" | sed 's/^/package: lintian: /'
    fi
    [ "$rc" -eq 0 ] || package_die "lintian found errors in $deb"
    package_log "lintian: no errors"
}

package_main "$@"
