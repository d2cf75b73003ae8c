#!/usr/bin/env bash
# The test suite on a fresh machine: set-up (venv, pip), then pytest. CPU only,
# no network, no data download. Two pytest workers (one per core of the CI
# machine), each taking whole files so module fixtures are built once, the
# longest files first (tests/conftest.py);
# MEMJAX_TEST_WORKERS=0 runs in one process. The summary at the end names each
# skipped test with its reason, and each failure (-ra; a bare -rs would replace
# it and drop the failures); the last line counts them. The real-data tests read
# the sample in tests/data, so a normal run skips nothing. The run's processes
# share one new persistent XLA compilation cache (tests/conftest.py), removed at
# the end; MEMJAX_TEST_JAX_CACHE=<dir> keeps one across runs instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export JAX_PLATFORMS=cpu
if [[ -z "${MEMJAX_TEST_JAX_CACHE:-}" ]]; then
  MEMJAX_TEST_JAX_CACHE="$(mktemp -d "${TMPDIR:-/tmp}/memjax-test-jax-cache.XXXXXX")"
  trap 'rm -rf "$MEMJAX_TEST_JAX_CACHE"' EXIT
fi
export MEMJAX_TEST_JAX_CACHE
workers="${MEMJAX_TEST_WORKERS:-2}"
parallel=()
[[ "$workers" != 0 ]] && parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
.venv/bin/python -m pytest -q -ra --durations=15 ${parallel[@]+"${parallel[@]}"} tests "$@"
