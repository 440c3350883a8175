#!/usr/bin/env bash
# Set everything up (idempotent: fast when already done), then run the demo.
# Usage: ./scripts/demo.sh [rpctl demo arguments...]   (as root)
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd -P)"

"$REPO/scripts/provision.sh"
exec "$REPO/.venv/bin/rpctl" demo "$@"
