#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (venv, pip), then pytest. CPU only,
# no network, no data download. Two pytest workers (one per core of the CI
# machine), each taking whole files so module fixtures are built once;
# MEMJAX_TEST_WORKERS=0 runs in one process. The summary at the end names each
# skipped test with its reason, and each failure (-ra; a bare -rs would replace
# it and drop the failures); the last line counts them. The real-data tests read
# the sample in tests/data, so a normal run skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export JAX_PLATFORMS=cpu
workers="${MEMJAX_TEST_WORKERS:-2}"
parallel=()
[[ "$workers" != 0 ]] && parallel=(-n "$workers" --dist loadfile)
exec .venv/bin/python -m pytest -q -ra --durations=15 ${parallel[@]+"${parallel[@]}"} tests "$@"
