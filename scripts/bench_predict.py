"""Prediction on the CPU: seconds and peak memory per case against nnU-Net 2.8.1, and peak memory on a large CT.

Speed (default): ``mambaseg predict`` with each ``--run`` (fold 0) against nnU-Net's ``nnUNetPredictor``
on the same Task04_Hippocampus images, both with test-time mirroring, step 0.5, the Gaussian weighting,
one background reader/writer, and the same number of threads. nnU-Net runs from its own venv
(``--nnunet-venv``) with its ResEnc M plans (``--nnunet-plans``) given the run's patch and topology, and a
randomly initialised network (random weights time the same as trained ones) handed to
``nnUNetPredictor.manual_initialization``: by default the run's own network module (imported from this
checkout, so both predictors run identical networks and only the pipelines differ), or with
``--nnunet-network resenc`` nnU-Net's ``ResidualEncoderUNet`` with the run's stages, features, strides,
kernels and block counts (the same network for ``unet_resenc``, a lighter one for U-Mamba, whose decoder
stacks residual blocks). After an untimed warm-up (which builds the CPU scan kernel), each tool runs as
a subprocess on 1 case and on N cases, so ``per case`` is ``(time(N) - time(1)) / (N - 1)``, without
start-up; ``end to end`` is ``time(N) / N``. CPU seconds are user + system of the process and its
children; peak memory is the largest resident set.

Modes (``--modes``): ours runs once per mode, each against the same nnU-Net timing: ``float32``
(``--precision float32``), ``default`` (no option: ``--precision auto``, bfloat16 where the CPU has it
natively), ``fast`` (``--fast``), ``compile`` (``--compile``; its compilation counts, once per process).
With ``--held-out`` the images are fold 0's validation cases of the run's ``splits.json`` and each mode's
masks of the N cases are scored against ``--labels`` (mean foreground Dice).

Against another revision (``--against REV``): the same ``mambaseg predict`` of this checkout's code is also run from
a ``git worktree`` of REV (a commit, tag or branch; same venv, same kernels, same run folder), as the tool
``mambaseg@REV MODE``; the column "ratio to REV" is ours over it, per mode, measured in one run: how a change to the
pipeline moved its speed. ``--no-nnunet`` leaves nnU-Net out (the ratio to nnU-Net column is then empty).

Memory (``--memory``): ``mambaseg predict`` of a synthetic 300 × 512 × 512 CT (int16 HU, 0.8 × 0.8 × 1.5 mm,
NIfTI) with a small ``unet_resenc`` run planned at that spacing (no resampling), once per class count
in ``--classes``, without mirroring; peak resident memory of the predicting process.

The images default to ``$MAMBASEG_REAL_DATA/Task04_Hippocampus/imagesTr`` (the Medical Segmentation Decathlon's
Task04, from medicaldecathlon.com).

Usage::

    python scripts/bench_predict.py --run WS/Hippocampus/runs/3d_fullres__unet_resenc --run WS/.../umamba_bot
    python scripts/bench_predict.py --memory --classes 3 10
    python scripts/bench_predict.py --run WS/.../3d_fullres__unet_resenc --against a12fa20 --no-nnunet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_dataset import require_dataset, task04_default  # noqa: E402
from machine_info import cpu_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NNUNET_VENV = Path("/tmp/nnunet_venv")
DEFAULT_NNUNET_PLANS = Path("/tmp/nnu/pre/Dataset004_Hippocampus/nnUNetResEncUNetMPlans.json")
TOPOLOGY_KEYS = ("n_stages", "features_per_stage", "strides", "kernel_sizes", "n_blocks_per_stage")
MODES = {"float32": ["--precision", "float32"], "default": [], "fast": ["--fast"], "compile": ["--compile"]}

log = logging.getLogger("bench_predict")


@dataclass
class Measurement:
    wall: float  # seconds
    cpu: float  # user + system seconds, children included
    peak_mib: float  # largest resident set


def measure(command: list[str], env: dict[str, str], log_file: Path, cwd: Path = ROOT) -> Measurement:
    """Runs ``command`` in ``cwd`` with its output in ``log_file``; raises if it fails."""
    start = time.perf_counter()
    with log_file.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}; see {log_file}")
    return Measurement(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def link_cases(images: list[Path], folder: Path) -> Path:
    """``folder/NAME_0000.nii.gz`` links to each image: the channel naming both tools group by."""
    folder.mkdir(parents=True)
    for image in images:
        (folder / image.name.replace(".nii.gz", "_0000.nii.gz")).symlink_to(image.resolve())
    return folder


def run_ours(
    run: Path, cases: Path, out: Path, threads: int, checkpoint: str, mode: str = "float32", code: Path = ROOT
) -> Measurement:
    """``mambaseg predict`` of the package in ``code`` (``python -m`` imports it from its working folder)."""
    command = [sys.executable, "-m", "mambaseg", "predict", "-i", str(cases), "-o", str(out), "-m", str(run)]
    command += ["-f", "0", "--checkpoint", checkpoint, "--device", "cpu", *MODES[mode]]
    return measure(command, thread_env(threads), out.with_suffix(".log"), cwd=code)


def checkout(revision: str, work: Path) -> Path:
    """A ``git worktree`` of ``revision`` in ``work`` (removed with ``work``'s folder by ``remove_checkout``)."""
    folder = work / f"code_{revision.replace('/', '_')}"
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True)
    return folder


def remove_checkout(folder: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=False)


def run_nnunet(run: Path, cases: Path, out: Path, args: argparse.Namespace) -> Measurement:
    settings = {
        "plan": str(run / "fold_0" / "plan.json"),
        "plans": str(args.nnunet_plans),
        "cases": str(cases),
        "out": str(out),
        "threads": args.threads,
        "network": args.nnunet_network,
        "mambaseg_paths": [str(ROOT), str(ROOT / "kernels"), *site.getsitepackages()],
    }
    command = [str(args.nnunet_venv / "bin" / "python"), __file__, "--nnunet-worker", json.dumps(settings)]
    # its own build folder for our CPU scan kernel: one shared with our venv would be rebuilt at every switch
    env = {**thread_env(args.threads), "TORCH_EXTENSIONS_DIR": str(out.parent / "torch_extensions_nnunet")}
    return measure(command, env, out.with_suffix(".log"))


def nnunet_worker(settings: dict) -> None:
    """Inside nnU-Net's venv: predict the cases with a randomly initialised network of the run's topology."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(settings["threads"])
    plan = json.loads(Path(settings["plan"]).read_text())
    plans = json.loads(Path(settings["plans"]).read_text())
    dataset_json = json.loads((Path(settings["plans"]).parent / "dataset.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    configuration["patch_size"] = plan["patch_size"]
    configuration["architecture"]["arch_kwargs"].update({key: plan["network_kwargs"][key] for key in TOPOLOGY_KEYS})
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    n_channels, n_classes = (
        len(dataset_json["channel_names"]),
        manager.get_label_manager(dataset_json).num_segmentation_heads,
    )
    if settings["network"] == "same":
        sys.path += settings["mambaseg_paths"]  # after nnU-Net's own packages: only what they lack comes from ours
        from mambaseg.networks.registry import create

        kwargs = {**plan["network_kwargs"], "deep_supervision": False}
        network = create(plan["network"], plan["spatial_dims"], n_channels, n_classes, **kwargs)
    else:
        network = get_network_from_plans(
            config.network_arch_class_name,
            config.network_arch_init_kwargs,
            config.network_arch_init_kwargs_req_import,
            n_channels,
            n_classes,
            deep_supervision=False,
        )
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
    mirror_axes = tuple(range(len(config.patch_size)))
    predictor.manual_initialization(
        network, manager, config, [network.state_dict()], dataset_json, "nnUNetTrainer", mirror_axes
    )
    predictor.predict_from_files(
        settings["cases"], settings["out"], num_processes_preprocessing=1, num_processes_segmentation_export=1
    )


def held_out_images(args: argparse.Namespace) -> list[Path]:
    """Fold 0's validation cases of the runs' ``splits.json`` (one dataset for all runs), as image files."""
    from mambaseg.workspace.layout import DatasetFiles

    splits = {DatasetFiles(run.parent.parent).splits for run in args.run}
    if len(splits) != 1:
        raise ValueError(f"--held-out: the runs belong to more than one dataset: {sorted(map(str, splits))}")
    names = json.loads(splits.pop().read_text())[0]["val"]
    return [args.images / f"{name}.nii.gz" for name in sorted(names)]


def mean_dice(masks: Path, labels: Path, names: list[str], work: Path) -> float:
    """Mean foreground Dice of ``masks`` against the references of the same names in ``labels``."""
    from mambaseg.evaluation.summary import evaluate_folders

    references = work / f"{masks.name}_references"
    references.mkdir()
    for name in names:
        (references / name).symlink_to((labels / name).resolve())
    return evaluate_folders(masks, references, metrics=("dice",))["foreground_mean"]["dice"]


def speed(args: argparse.Namespace, work: Path) -> list[str]:
    """The speed table's rows, one per run, tool and mode, with the ratios to nnU-Net and to ``--against``'s
    revision (and Dice with --held-out)."""
    images = (
        held_out_images(args)[: args.cases] if args.held_out else sorted(args.images.glob("*.nii.gz"))[: args.cases]
    )
    if len(images) < 2:
        raise ValueError(f"{args.images}: needs at least 2 .nii.gz images, found {len(images)}")
    folders = {1: link_cases(images[:1], work / "cases_1"), len(images): link_cases(images, work / "cases_n")}
    names, n = [image.name for image in images], len(images)
    codes = {"mambaseg": ROOT}
    if args.against:
        codes[f"mambaseg@{args.against}"] = args.against_code
    rows = []
    for run in args.run:
        ours = {f"{name} {mode}": (code, mode) for name, code in codes.items() for mode in args.modes}
        tools = [*ours, *([] if args.no_nnunet else ["nnU-Net"])]
        timings: dict[str, dict[int, Measurement]] = {tool: {} for tool in tools}
        for tool, (code, mode) in ours.items():  # builds the kernels, fills caches
            run_ours(
                run,
                folders[1],
                work / f"{run.name}_warm_{tool}".replace(" ", "_"),
                args.threads,
                args.checkpoint,
                mode,
                code,
            )
        if not args.no_nnunet:
            run_nnunet(run, folders[1], work / f"{run.name}_warm_nnunet", args)
        for size, cases in folders.items():
            for tool, (code, mode) in ours.items():
                out = work / f"{run.name}_{size}_{tool}".replace(" ", "_")
                timings[tool][size] = run_ours(run, cases, out, args.threads, args.checkpoint, mode, code)
            if not args.no_nnunet:
                timings["nnU-Net"][size] = run_nnunet(run, cases, work / f"{run.name}_{size}_nnunet", args)
        per_case = {tool: (by_n[n].wall - by_n[1].wall) / (n - 1) for tool, by_n in timings.items()}
        for tool, by_n in timings.items():
            one, many = by_n[1], by_n[n]
            cpu = (many.cpu - one.cpu) / (n - 1)
            dice = ""
            if args.held_out and tool != "nnU-Net":  # nnU-Net's network is random: its masks are not scored
                masks = work / f"{run.name}_{n}_{tool}".replace(" ", "_")
                dice = f"{mean_dice(masks, args.labels, names, work):.4f}"
            to_nnunet = "" if args.no_nnunet else f"{per_case[tool] / per_case['nnU-Net']:.2f}"
            mode = ours[tool][1] if tool in ours else ""
            baseline = f"mambaseg@{args.against} {mode}"
            to_revision = f"{per_case[tool] / per_case[baseline]:.2f}" if args.against and tool in ours else ""
            rows.append(
                f"| {run.name} | {tool} | {per_case[tool]:.2f} | {to_nnunet} | {to_revision} | {cpu:.2f} "
                f"| {many.wall / n:.2f} | {many.peak_mib:.0f} | {dice} |"
            )
            log.info(rows[-1])
    header = (
        f"| run | tool | s per case | ratio to nnU-Net (target <= 0.7) | ratio to {args.against or 'REV'} "
        "| CPU s per case | end to end s per case | peak RSS (MiB) | Dice |"
    )
    return [header, "|---|---|---|---|---|---|---|---|---|", *rows]


def write_ct(path: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like int16 volume (z, y, x): air, an elliptic body of soft tissue with noise, a bony core."""
    import numpy as np

    from mambaseg.io import Image, write_image

    z, y, x = shape
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:y, :x]
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    bone = ((yy - 0.6 * y) / (0.06 * y)) ** 2 + ((xx - x / 2) / (0.06 * x)) ** 2 <= 1
    volume = np.full(shape, -1000, dtype=np.int16)
    for k in range(z):
        slab = volume[k]
        slab[body] = 40 + rng.normal(0, 20, size=int(body.sum())).astype(np.int16)
        slab[bone] = 700
    write_image(Image(volume, (0.8, 0.8, 1.5), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), path)


def write_ct_run(run_dir: Path, num_classes: int, patch: list[int]) -> None:
    """A ``3d_fullres__unet_resenc`` run with random weights, planned at the CT's spacing."""
    import torch

    from mambaseg.planning.checkpoint import save_checkpoint
    from mambaseg.planning.model import build_network
    from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans
    from mambaseg.training.setup import write_run_files
    from mambaseg.workspace.layout import RunFiles

    ct = Normalization("ct", {"clip_low": -1000.0, "clip_high": 1000.0, "mean": 40.0, "std": 200.0})
    topology = {"n_stages": 3, "features_per_stage": [4, 8, 16], "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}
    topology |= {"kernel_sizes": [[3, 3, 3]] * 3, "n_blocks_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1]}
    plan = ConfigurationPlan(3, [1.5, 0.8, 0.8], [300, 512, 512], patch, 2, "unet_resenc", topology, [ct], 0.0)
    labels = {"background": 0, **{f"class {k}": k for k in range(1, num_classes)}}
    plans = Plans("CT", {"0": "CT"}, labels, num_classes, 8.0, [0, 1, 2], [0, 1, 2], {}, {"3d_fullres": plan})
    torch.manual_seed(0)
    model = build_network(plans, plan, deep_supervision=False)
    fold = RunFiles(run_dir, "3d_fullres", "unet_resenc").fold(0)
    write_run_files(fold, {}, plan)
    save_checkpoint(fold.checkpoints.final, model=model, epoch=0, plans=plans.to_dict())


def memory(args: argparse.Namespace, work: Path) -> list[str]:
    """The memory table's rows, one per class count."""
    shape = tuple(args.shape)
    write_ct(work / "ct" / "ct.nii.gz", shape)
    rows = []
    for k in args.classes:
        run = work / f"ws_{k}" / "CT" / "runs" / "3d_fullres__unet_resenc"
        write_ct_run(run, k, args.patch)
        command = [sys.executable, "-m", "mambaseg", "predict", "-i", str(work / "ct"), "-o", str(work / f"out_{k}")]
        command += ["-m", str(run), "--device", "cpu", "--no-mirroring"]
        result = measure(command, thread_env(args.threads), work / f"memory_{k}.log")
        volume_mib = k * 4 * float(shape[0] * shape[1] * shape[2]) / 2**20
        row = f"| {' × '.join(map(str, shape))} | {k} | {volume_mib:.0f} | {result.peak_mib:.0f} | {result.wall:.0f} |"
        log.info(row)
        rows.append(row)
    header = "| volume (z × y × x) | classes k | k float32 volumes (MiB) | peak RSS (MiB) | wall (s) |"
    return [header, "|---|---|---|---|---|", *rows]


def main() -> int:
    if sys.argv[1:2] == ["--nnunet-worker"]:
        nnunet_worker(json.loads(sys.argv[2]))
        return 0
    task04 = task04_default()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, action="append", default=[], help="a run folder with fold_0 (repeatable)")
    parser.add_argument("--checkpoint", default="final", help="our checkpoint per fold: final or best")
    parser.add_argument(
        "--images",
        type=Path,
        default=task04 / "imagesTr" if task04 else None,
        help="folder of single-channel .nii.gz images (default: $MAMBASEG_REAL_DATA/Task04_Hippocampus/imagesTr)",
    )
    parser.add_argument("--cases", type=int, default=10, help="how many images (sorted by name)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["float32", "default", "fast"])
    parser.add_argument("--held-out", action="store_true", help="predict fold 0's validation cases and score them")
    parser.add_argument("--labels", type=Path, help="reference masks for --held-out (default: IMAGES/../labelsTr)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for both tools")
    parser.add_argument("--nnunet-venv", type=Path, default=DEFAULT_NNUNET_VENV)
    parser.add_argument("--nnunet-plans", type=Path, default=DEFAULT_NNUNET_PLANS, help="its ResEnc M plans")
    parser.add_argument(
        "--nnunet-network",
        choices=["same", "resenc"],
        default="same",
        help="nnU-Net predicts with the run's own network module (same) or its ResidualEncoderUNet (resenc)",
    )
    parser.add_argument("--against", metavar="REV", help="also time mambaseg predict at this git revision")
    parser.add_argument("--no-nnunet", action="store_true", help="leave nnU-Net out of the speed table")
    parser.add_argument("--memory", action="store_true", help="measure peak memory on a large CT instead")
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 10], help="class counts for --memory")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], help="CT array shape for --memory")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 128, 128], help="the CT run's patch for --memory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.memory and not args.run:
        parser.error("give --run RUN_FOLDER (one or more) or --memory")
    if not args.memory:
        args.images = require_dataset(args.images, "--images IMAGES")
        args.labels = args.labels or args.images.parent / "labelsTr"
    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    args.against_code = checkout(args.against, work) if args.against and not args.memory else None
    try:
        log.info("%d threads; work folder %s", args.threads, work)
        text = "\n".join(memory(args, work) if args.memory else speed(args, work))
        text = f"{cpu_summary()}\n\n{text}"
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
    finally:
        if args.against_code is not None:
            remove_checkout(args.against_code)
        if args.keep:
            log.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
