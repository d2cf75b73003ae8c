#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian/Ubuntu machine: a virtual environment in
# .venv with memjax and its pinned dependencies; with --data, also Debian's
# Fashion-MNIST package used by configs/default.py. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--data" && ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo"
  $sudo apt-get install -y dataset-fashion-mnist \
    || { $sudo apt-get update && $sudo apt-get install -y dataset-fashion-mnist; }
fi

python=""
for candidate in python3.11 python3.12 python3.13 python3.10 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    python="$candidate"; break
  fi
done
[[ -n "$python" ]] || { echo "memjax needs Python >= 3.10 (apt-get install -y python3 python3-venv)" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
stamp=.venv/.memjax-installed
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" || constraints.txt -nt "$stamp" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'
  touch "$stamp"
fi
