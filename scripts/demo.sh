#!/usr/bin/env bash
# Set up (first run only) and run the nfmesh demo mesh: a gateway with its NRF-compatible
# registry, emulated NFs exchanging SBI traffic through it, N2 traffic where kernel SCTP
# exists, and a live view.  Arguments go to `nfmesh demo` (e.g. --duration 15 --json).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh" demo >&2
exec "$root/.venv/bin/nfmesh" demo "$@"
