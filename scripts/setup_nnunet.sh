#!/usr/bin/env bash
# Installs nnU-Net 2.x into its own venv (./.venv-nnunet, or the folder given as the first argument), for
# `mambaseg benchmark --with-nnunet VENV/bin/python`. It gets the same CPU build of torch as scripts/setup.sh first
# (plain `pip install nnunetv2` would pull a CUDA build of several GB); to benchmark on a GPU, install your CUDA torch
# into the venv before running this. nnU-Net's primus trainers import timm, which does not import beside the CPU
# torch: that one file is moved aside (the standard nnUNetTrainer does not need it). Prints the python to pass.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:-.venv-nnunet}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet torch==2.13.0
fi
torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
"$venv/bin/python" -m pip install --quiet "nnunetv2>=2.5,<3" "torch==$torch_version"
primus=$("$venv/bin/python" -c 'import nnunetv2, os; print(os.path.join(os.path.dirname(nnunetv2.__file__), "training", "nnUNetTrainer", "primus", "primus_trainers.py"))')
if [ -f "$primus" ] && ! "$venv/bin/python" -c "import timm" 2>/dev/null; then
    mv "$primus" "$primus.aside"
fi
"$venv/bin/python" -c "import nnunetv2.training.nnUNetTrainer.nnUNetTrainer" >/dev/null
echo "$(cd "$venv" && pwd)/bin/python"
