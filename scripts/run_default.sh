#!/usr/bin/env bash
# The default job on a fresh machine: set-up (venv, pip, Debian's Fashion-MNIST),
# then train configs/default.py into runs/default and run its analyses.
# Running it again resumes an interrupted run or re-prints a finished one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
exec .venv/bin/python -m memjax.main --config=configs/default.py --workdir=runs/default "$@"
