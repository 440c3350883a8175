#!/usr/bin/env bash
# Set everything up (as ./scripts/test.sh does), then run the benchmark suite,
# which rewrites the tables of docs/benchmarks.md.
# Usage: ./scripts/bench.sh [--quick] [NAME...]   (as root)
#   ./scripts/bench.sh                 every benchmark (under 10 minutes)
#   ./scripts/bench.sh controlplane    one of them
#   ./scripts/bench.sh --quick         smoke check (under a minute; figures not kept)
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"

"$REPO/scripts/provision.sh" --with-tests

cd "$REPO"
exec "$REPO/.venv/bin/python" -m bench.run "$@"
