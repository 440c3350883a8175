#!/usr/bin/env bash
# Set everything up, test tools included (idempotent: fast when already done),
# then run the test suite with the venv's pytest.
# Usage: ./scripts/test.sh [pytest arguments...]   (as root)
#   ./scripts/test.sh                          the whole suite (tests/)
#   ./scripts/test.sh tests/unit -k vagrant    only what the paths name
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"

"$REPO/scripts/provision.sh" --with-tests

cd "$REPO"
args=()
if [ "${CI:-}" = true ]; then
    # CI runs in a fresh clone: leave no .pytest_cache behind.
    args+=(-p no:cacheprovider)
fi
# Run tests/ unless the arguments already name test paths (tests/unit,
# tests/x.py::test_y), so that a selection does not also run the whole suite.
names_path=0
for a in "$@"; do
    case "$a" in -*) continue ;; esac
    [ -e "${a%%::*}" ] && names_path=1
done
[ "$names_path" = 1 ] || args+=("$REPO/tests")

rc=0
"$REPO/.venv/bin/python" -m pytest "${args[@]}" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$rc"
