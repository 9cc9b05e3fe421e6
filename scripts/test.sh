#!/usr/bin/env bash
# Sets up the project (scripts/setup.sh), then runs the linter and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/ops -k cpu
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# UTF-8 mode: files opened without an encoding (torch's inductor templates among them) read as UTF-8 whatever
# locale a test or library left set
export PYTHONUTF8=1
.venv/bin/ruff check mambaseg kernels tests scripts datasets
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
