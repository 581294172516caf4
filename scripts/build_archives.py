#!/usr/bin/env python3
"""Build TorchServe model archives (handler + shared code + model-config.yaml + checkpoint + assets).

Without --checkpoint, a *demo* archive is built from a tiny random-weight model made of the real
sam3 classes: it serves real computations but its outputs mean nothing.

Examples:
  scripts/build_archives.py sam3                                   # demo archive, tiny preset
  scripts/build_archives.py sam3 --checkpoint /models/sam3.pt      # real SAM 3 (preset sam3)
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from gen3d.archive_files import copy_with_progress  # noqa: E402

log = logging.getLogger("build_archives")
LARGE = 1 << 30
# GPU memory a worker needs, checked against the GPUs by the serve entrypoint (0: runs anywhere).
MIN_GPU_MEMORY_GIB = {"sam3": 16, "tiny": 0}  # checkpoints above 1 GiB go into an uncompressed archive directory


def sam3_demo_checkpoint(work: Path, seed: int) -> Path:
    """A random-weight tiny SAM 3 checkpoint (safetensors), made once per seed."""
    from safetensors.torch import save_file

    from gen3d.assets import bpe_vocab_path
    from gen3d.sam3_builder import PRESETS, random_sam3_state_dict

    path = work / f"sam3-tiny-demo-seed{seed}.safetensors"
    if not path.exists():
        log.info("making demo checkpoint %s (random weights)", path)
        save_file(random_sam3_state_dict(PRESETS["tiny"], str(bpe_vocab_path()), seed=seed), str(path))
    return path


def model_config(args: argparse.Namespace, handler: dict) -> dict:
    """model-config.yaml: TorchServe's worker/batching settings plus the handler's own section."""
    return {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "startupTimeout": args.startup_timeout,
        "handler": handler,
    }


def build(args: argparse.Namespace) -> Path:
    """Stages the archive's files and runs torch-model-archiver; returns the archive path."""
    from gen3d.assets import BPE_VOCAB_NAME, bpe_vocab_path

    work = REPO / "build"
    stage = work / "stage" / args.model
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    shutil.copytree(REPO / "gen3d", stage / "gen3d", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    demo = args.checkpoint is None
    checkpoint = sam3_demo_checkpoint(work, args.seed) if demo else Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {checkpoint}")
    preset = args.preset or ("tiny" if demo else "sam3")
    shutil.copy2(bpe_vocab_path(), stage / BPE_VOCAB_NAME)
    handler = {
        "preset": preset,
        "checkpoint": checkpoint.name,
        "demo_weights": demo,
        "min_gpu_memory_gib": MIN_GPU_MEMORY_GIB.get(preset, 0),
    }
    if args.output_prefix:
        handler["output_prefix"] = args.output_prefix
    (stage / "model-config.yaml").write_text(yaml.safe_dump(model_config(args, handler), sort_keys=False))

    fmt = args.archive_format
    if fmt == "auto":
        fmt = "no-archive" if checkpoint.stat().st_size > LARGE else "default"
    if fmt == "default":
        shutil.copy2(checkpoint, stage / checkpoint.name)

    export = Path(args.export_path).resolve()
    export.mkdir(parents=True, exist_ok=True)
    target = export / (args.model if fmt == "no-archive" else f"{args.model}.mar")
    if target.is_dir():
        shutil.rmtree(target)
    cmd = [
        "torch-model-archiver",
        "--model-name",
        args.model,
        "--version",
        args.version,
        "--handler",
        str(REPO / "handlers" / f"{args.model}_handler.py"),
        "--extra-files",
        str(stage),
        "--config-file",
        str(stage / "model-config.yaml"),
        "--export-path",
        str(export),
        "--archive-format",
        fmt,
        "--force",
    ]
    log.info("running %s", " ".join(cmd))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run(cmd, check=True, env=env)
    if fmt == "no-archive":
        copy_with_progress(checkpoint, target / checkpoint.name)
    print(f"{'DEMO (random weights) ' if demo else ''}archive {target} preset={preset} checkpoint={checkpoint}")
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["sam3"], help="which model's archive to build")
    parser.add_argument("--checkpoint", help="real checkpoint (.pt/.pth/.ckpt/.safetensors); omit for a demo archive")
    parser.add_argument("--preset", help="model preset (default: sam3 with --checkpoint, tiny without)")
    parser.add_argument("--export-path", default=str(REPO / "model-store"), help="where archives go (model-store/)")
    parser.add_argument(
        "--archive-format",
        choices=["auto", "default", "no-archive"],
        default="auto",
        help="auto: a directory (no-archive) when the checkpoint exceeds 1 GiB, else a .mar",
    )
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--workers", type=int, default=1, help="workers per model (min = max)")
    parser.add_argument("--batch-size", type=int, default=4, help="TorchServe batchSize")
    parser.add_argument("--max-batch-delay", type=int, default=100, help="TorchServe maxBatchDelay, ms")
    parser.add_argument("--response-timeout", type=int, default=300, help="seconds per batch")
    parser.add_argument("--startup-timeout", type=int, default=600, help="seconds for a worker to load")
    parser.add_argument("--output-prefix", help="S3 output prefix template, e.g. 'out/{user_id}/{session_id}'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo checkpoint's random weights")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(parse_args())
