#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (venv, pip), then pytest. CPU only,
# no network, no data download; a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu
exec .venv/bin/python -m pytest -q tests "$@"
