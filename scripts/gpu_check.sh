#!/usr/bin/env bash
# GPU checks on a fresh machine with one NVIDIA GPU, from the repository root: bash scripts/gpu_check.sh
#
# 1. When nvidia-smi works and .venv has no torch that sees CUDA, installs a CUDA build of torch==2.13.0 and
#    triton into .venv first (PyPI's Linux wheels are CUDA builds; TORCH_INDEX_URL=... picks another index), so
#    that scripts/setup.sh, which keeps an installed torch, does not put its CPU build there.
# 2. bash scripts/setup.sh (mambaseg and its dev extra).
# 3. Tries `pip install mamba-ssm --no-build-isolation` for at most MAMBA_SSM_INSTALL_S seconds (default 150; 0
#    skips it); when it does not finish, the scan is compared with the PyTorch reference instead, and says so.
# 4. python scripts/gpu_check.py (sections device, scan, train, ddp; see its doc) in the time left.
# Each step has a timeout and the whole stays under GPU_CHECK_TOTAL_S seconds (default 570); at least 300 s are
# kept for the checks.
# Everything printed also goes to $OUT (when set, else gpu_check_out/): gpu_check_setup.txt and gpu_check.txt.
# Without a GPU it still runs, and every section prints one "no CUDA device" line.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${OUT:-gpu_check_out}
mkdir -p "$out"
exec > >(tee "$out/gpu_check_setup.txt") 2>&1
start=$(date +%s)
total=${GPU_CHECK_TOTAL_S:-570}  # the whole script, setup included, stays under 10 minutes
say() { echo "gpu_check.sh [$(( $(date +%s) - start )) s]: $*"; }
left() {  # seconds a step may take: at most $1, and never into the last $2 seconds of the total
    local rest=$(( total - ($(date +%s) - start) - $2 ))
    if [ "$rest" -lt "$1" ]; then echo $(( rest > 10 ? rest : 10 )); else echo "$1"; fi
}

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($python --version 2>&1)"
    "$python" -m venv .venv || { say "could not create .venv"; exit 1; }
fi
venv_python=.venv/bin/python
torch_index=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_index=(--index-url "$TORCH_INDEX_URL"); fi

if nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
    if "$venv_python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        say "keeping the installed torch, which sees CUDA"
    else
        say "nvidia-smi works but .venv's torch is absent or has no CUDA: installing a CUDA build of torch==2.13.0 and triton"
        timeout "$(left 240 300)" "$venv_python" -m pip install --quiet --force-reinstall "${torch_index[@]}" torch==2.13.0 triton \
            || say "torch CUDA install FAILED; the checks below will say whether CUDA is usable"
    fi
else
    say "nvidia-smi does not work here: no NVIDIA GPU; the sections will say no CUDA device"
fi

say "running scripts/setup.sh"
timeout "$(left 180 300)" bash scripts/setup.sh || say "scripts/setup.sh FAILED (exit $?)"

if "$venv_python" -c "import mamba_ssm" 2>/dev/null; then
    say "mamba_ssm already importable"
elif [ "${MAMBA_SSM_INSTALL_S:-150}" = 0 ]; then
    say "mamba_ssm: install skipped (MAMBA_SSM_INSTALL_S=0); the scan's speed baseline is the PyTorch reference"
elif ! "$venv_python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    say "mamba_ssm: not installed (no CUDA torch); the scan's speed baseline is the PyTorch reference"
else
    mamba_s=$(left "${MAMBA_SSM_INSTALL_S:-150}" 300)
    say "trying pip install mamba-ssm --no-build-isolation for at most $mamba_s s"
    if timeout "$mamba_s" "$venv_python" -m pip install --quiet --no-build-isolation mamba-ssm; then
        say "mamba_ssm installed"
    else
        say "mamba_ssm: install did not finish (exit $?: 124 is the time limit); skipping the comparison with its" \
            "CUDA kernel, the scan's speed baseline is the PyTorch reference"
    fi
fi

say "running scripts/gpu_check.py"
PYTHONPATH="$PWD:$PWD/kernels:$PWD/datasets${PYTHONPATH:+:$PYTHONPATH}" \
    "$venv_python" scripts/gpu_check.py --out "$out" --budget "$(left 600 5)" "$@"
status=$?
say "gpu_check.py exit $status; logs in $out/"
exit $status
