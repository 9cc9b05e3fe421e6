"""Wall time of ``mambaseg preprocess`` against nnU-Net's ``nnUNetv2_plan_and_preprocess`` on one dataset.

Both run as subprocesses from scratch on the same Decathlon-layout dataset, with one configuration and the
same number of worker processes:

- ours: ``python -m mambaseg preprocess DATASET -c CONFIG --workers N`` (dataset check, fingerprint,
  plan, preprocess), reading the Decathlon folder as it is;
- nnU-Net: ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -npfp N -np N --verify_dataset_integrity``
  (it checks the dataset too), after an untimed ``nnUNetv2_convert_MSD_dataset`` into its own layout.

nnU-Net runs from its own virtual environment (``--nnunet-venv``), created for example with
``python -m venv /tmp/nnunet_venv && /tmp/nnunet_venv/bin/pip install nnunetv2 torch==2.13.0`` (pin torch in
that same command, or pip fetches a CUDA build of several GB). Everything is written under a temporary
folder that is removed afterwards unless ``--keep``.

Usage::

    python scripts/bench_preprocess.py                          # $MAMBASEG_REAL_DATA/Task04_Hippocampus
    python scripts/bench_preprocess.py /data/Task02_Heart --workers 4 --markdown bench.md
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_dataset import require_dataset, task04_default  # noqa: E402
from machine_info import cpu_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NNUNET_VENV = Path("/tmp/nnunet_venv")

log = logging.getLogger("bench_preprocess")


def timed(command: list[str], env: dict[str, str] | None, log_file: Path) -> float:
    """Runs ``command``, its output going to ``log_file``; returns the wall time; raises if it fails."""
    start = time.perf_counter()
    with log_file.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}; see {log_file}")
    return elapsed


def run_ours(dataset: Path, work: Path, configuration: str, workers: int) -> float:
    command = [sys.executable, "-m", "mambaseg", "preprocess", str(dataset), "--workspace", str(work / "ours")]
    command += ["-c", configuration, "--workers", str(workers)]
    return timed(command, None, work / "ours.log")


def run_nnunet(dataset: Path, work: Path, configuration: str, workers: int, venv: Path) -> float:
    """Converts (untimed) and then plans and preprocesses (timed) with nnU-Net."""
    match = re.fullmatch(r"Task(\d+)_\w+", dataset.name)
    if match is None:
        raise ValueError(f"{dataset}: nnU-Net's converter needs a TaskNN_Name folder name")
    source = work / "msd" / dataset.name
    source.mkdir(parents=True)
    for entry in ("dataset.json", "imagesTr", "labelsTr"):
        (source / entry).symlink_to(dataset.resolve() / entry)
    (source / "imagesTs").mkdir()
    env = dict(os.environ)
    for variable, folder in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "res")):
        env[variable] = str(work / "nnunet" / folder)
        (work / "nnunet" / folder).mkdir(parents=True)
    timed(
        [str(venv / "bin" / "nnUNetv2_convert_MSD_dataset"), "-i", str(source), "-np", str(workers)],
        env,
        work / "nnunet_convert.log",
    )
    command = [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(int(match[1])), "-c", configuration]
    command += ["-npfp", str(workers), "-np", str(workers), "--verify_dataset_integrity"]
    return timed(command, env, work / "nnunet.log")


def table(rows: list[tuple[str, str]]) -> str:
    lines = ["| tool | wall time (s) |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dataset",
        nargs="?",
        type=Path,
        default=task04_default(),
        help="Decathlon TaskNN_Name folder (default: $MAMBASEG_REAL_DATA/Task04_Hippocampus)",
    )
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both tools")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_NNUNET_VENV)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.dataset = require_dataset(args.dataset, "the dataset folder as the first argument")
    if not args.dataset.is_dir():
        log.info("skipped: dataset folder %s not found (give its path as the first argument)", args.dataset)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        log.info(
            "%s, configuration %s, %d workers; logs in %s", args.dataset.name, args.configuration, args.workers, work
        )
        ours = run_ours(args.dataset, work, args.configuration, args.workers)
        log.info("mambaseg: %.1f s", ours)
        rows = [(f"mambaseg preprocess -c {args.configuration}", f"{ours:.1f}")]
        if (args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess").exists():
            theirs = run_nnunet(args.dataset, work, args.configuration, args.workers, args.nnunet_venv)
            log.info("nnU-Net: %.1f s", theirs)
            rows.append((f"nnUNetv2_plan_and_preprocess -c {args.configuration}", f"{theirs:.1f}"))
            rows.append(("ratio mambaseg / nnU-Net (target <= 1.0)", f"{ours / theirs:.2f}"))
        else:
            log.info("nnU-Net skipped: %s has no nnUNetv2_plan_and_preprocess", args.nnunet_venv)
        text = table(rows)
        text = f"{cpu_summary()}\n\n{text}"
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
    finally:
        if args.keep:
            log.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
