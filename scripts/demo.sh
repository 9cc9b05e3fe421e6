#!/usr/bin/env bash
# Sets up the project (scripts/setup.sh), then runs the whole pipeline on the built-in synthetic dataset:
# check, plan, preprocess, train (a 5-minute budget on a CPU), predict the held-out cases, evaluate.
# Extra arguments go to `mambaseg demo`, e.g. scripts/demo.sh --network unet_resenc --workspace /tmp/ws
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/mambaseg demo "$@"
