#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine: a virtual environment in
# .venv with memjax and its pinned dependencies; with --data, also Debian's
# Fashion-MNIST package used by configs/default.py; with --test, also the test
# tools. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

data=0; extras=""
for arg in "$@"; do
  case "$arg" in
    --data) data=1 ;;
    --test) extras="[test]" ;;
    *) echo "setup.sh: unknown option $arg (use --data and/or --test)" >&2; exit 2 ;;
  esac
done

data_job=""
if [[ "$data" == 1 && ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo"
  {  # the data downloads while pip installs
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  } &
  data_job=$!
fi

python=""
for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    python="$candidate"; break
  fi
done
[[ -n "$python" ]] || { echo "memjax needs Python >= 3.10 (apt-get install -y python3 python3-venv)" >&2; exit 1; }

# uv (a fast pip; fetched once into .venv/uv-tool) installs memjax and its pinned dependencies in
# about a minute on a fresh machine, where pip took five; pip is the fallback.
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv --without-pip .venv
fi
stamp=".venv/.memjax-installed${extras:+-test}"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" || constraints.txt -nt "$stamp" ]]; then
  if [[ ! -x .venv/uv-tool/bin/uv ]]; then
    "$python" -m pip install -q --disable-pip-version-check --target .venv/uv-tool uv 2>/dev/null || true
  fi
  if [[ -x .venv/uv-tool/bin/uv ]]; then
    .venv/uv-tool/bin/uv pip install -q --python .venv/bin/python -c constraints.txt -e ".${extras}"
  else
    [[ -x .venv/bin/pip ]] || .venv/bin/python -m ensurepip -q
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${extras}"
  fi
  touch "$stamp"
fi
if [[ -n "$data_job" ]]; then
  wait "$data_job" || { echo "setup.sh: could not install Debian's dataset-fashion-mnist (apt-get)" >&2; exit 1; }
fi
