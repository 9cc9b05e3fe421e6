#!/usr/bin/env bash
# Sets up the project (scripts/setup.sh), then runs the linter and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/ops -k cpu
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/ruff check mambaseg kernels tests scripts datasets
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
