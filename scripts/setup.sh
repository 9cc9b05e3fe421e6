#!/usr/bin/env bash
# Sets up mambaseg in ./.venv (created if absent) with its dev extra.
# torch==2.13.0 (a CPU build) is installed first only when the venv has no importable torch, so a
# user who put their own CUDA build of torch into .venv beforehand keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
venv_python=.venv/bin/python
"$venv_python" -m pip install --quiet --upgrade pip
if "$venv_python" -c "import torch" 2>/dev/null; then
    echo "setup: keeping the installed torch $("$venv_python" -c 'import torch; print(torch.__version__)')"
else
    echo "setup: installing torch==2.13.0"
    "$venv_python" -m pip install --quiet torch==2.13.0
fi
# The build needs torch (setup.py prebuilds the CPU kernel for wheels; an editable install compiles nothing): build
# against the venv's own torch instead of resolving another one in an isolated build environment.
"$venv_python" -m pip install --quiet "setuptools>=64" wheel
"$venv_python" -m pip install --quiet --no-build-isolation -e ".[dev]"
echo "setup: done; activate with 'source .venv/bin/activate'"
