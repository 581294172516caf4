"""Build TorchServe model archives (handler + model-config.yaml + checkpoint + assets).

Without --checkpoint (sam3) or --pipeline-dir (sam3d), a *demo* archive is built from a tiny random-weight
model made of the real sam3 / sam3d_objects classes: it serves real computations but its outputs mean nothing.

Examples:
  gen3d-build-archives sam3                                   # demo archive, tiny preset
  gen3d-build-archives sam3 --checkpoint /models/sam3.pt      # real SAM 3 (preset sam3)
  gen3d-build-archives sam3d                                  # demo archive, preset tiny-cpu-demo (CPU)
  gen3d-build-archives sam3d --pipeline-dir /models/sam3d/hf  # real SAM 3D Objects (preset sam3d-objects)
  gen3d-build-archives sam3d_body                             # demo archive, preset tiny-cpu-demo (CPU)
  gen3d-build-archives sam3d_body --checkpoint /models/sam-3d-body-vith/model.ckpt  # real SAM 3D Body (ViT-H)
(scripts/build_archives.py takes the same arguments.)

--pipeline-dir is the checkpoints/hf folder of the facebook/sam-3d-objects download (pipeline.yaml, its
configs and checkpoints) with DINOv2 and MoGe staged beside pipeline.yaml, so nothing is fetched at run time:
  dinov2/                   a copy of github.com/facebookresearch/dinov2 (hubconf.py)
  torch_hub/checkpoints/    the DINOv2 weights its hubconf would download (e.g. dinov2_vitl14_reg4_pretrain.pth)
  moge/model.pt             MoGe's checkpoint (Hugging Face Ruicheng/moge-vitl)
It is copied into an uncompressed archive directory (model-store/sam3d/pipeline/).

sam3d_body's --checkpoint is the model.ckpt of a facebook/sam-3d-body-* download, with model_config.yaml and
assets/mhr_model.pt beside it (and dinov3/, DINOv3's hub code, for --preset sam3d-body-dinov3); they are copied
into an uncompressed archive directory (model-store/sam3d_body/). Nothing is downloaded at run time.

Archives carry no code besides the handler: workers import the installed gen3d package (the image installs it
once; `make setup` installs this checkout in editable mode).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from gen3d.errors import StartupError
from gen3d.files import copy_tree_with_progress, copy_with_progress
from gen3d.models import MODELS

log = logging.getLogger("build_archives")
CHECKOUT = Path(__file__).resolve().parents[2]
LARGE = 1 << 30  # checkpoints above 1 GiB go into an uncompressed archive directory
PIPELINE_SUBDIR = "pipeline"


def write_model_config(folder: Path, args: argparse.Namespace, handler: dict) -> None:
    """``folder``/model-config.yaml: TorchServe's worker/batching settings plus the handler's own section."""
    config = {
        "minWorkers": args.workers,
        "maxWorkers": args.workers,
        "batchSize": args.batch_size,
        "maxBatchDelay": args.max_batch_delay,
        "responseTimeout": args.response_timeout,
        "startupTimeout": args.startup_timeout,
        "handler": handler,
    }
    (folder / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def handler_file(args: argparse.Namespace) -> Path:
    """The model's TorchServe handler in the checkout's handlers/ folder."""
    return Path(args.handlers_dir) / f"{args.model}_handler.py"


def check_pipeline_dir(pipeline_dir: Path) -> None:
    """Runs the serving-time checks of pipeline.yaml (targets, named files, staged DINOv2 and MoGe)."""
    import torch

    from gen3d.sam3d.pipeline import prepare_config

    pipeline_yaml = pipeline_dir / "pipeline.yaml"
    if not pipeline_yaml.is_file():
        raise SystemExit(f"pipeline.yaml not found in {pipeline_dir}")
    with tempfile.TemporaryDirectory() as runtime:
        try:
            prepare_config(pipeline_yaml, {}, torch.device("cuda"), Path(runtime))
        except StartupError as err:
            raise SystemExit(f"--pipeline-dir {pipeline_dir}: {err}") from None


def stage_sam3d(args: argparse.Namespace, stage: Path, work: Path) -> tuple[dict, Path | None, str, bool]:
    """The sam3d handler section; returns it, the directory to ship, the archive format and whether it is a demo."""
    from gen3d.sam3d.demo.weights import demo_checkpoint
    from gen3d.sam3d.presets import get_preset

    if args.checkpoint:
        raise SystemExit("sam3d takes --pipeline-dir (the checkpoints/hf folder), not --checkpoint")
    demo = args.pipeline_dir is None
    preset = get_preset(args.preset or ("tiny-cpu-demo" if demo else "sam3d-objects"))
    if preset.demo != demo:
        kind, need = ("a demo", "without") if preset.demo else ("the production model", "with")
        raise SystemExit(f"preset {preset.name} is {kind}: build it {need} --pipeline-dir")
    handler = {"preset": preset.name, "demo_weights": demo, "min_gpu_memory_gib": preset.min_gpu_memory_gib}
    if demo:
        checkpoint = demo_checkpoint(work, preset, args.seed)
        shutil.copy2(checkpoint, stage / checkpoint.name)
        handler["checkpoint"] = checkpoint.name
        return handler, None, "default" if args.archive_format == "auto" else args.archive_format, True
    pipeline_dir = Path(args.pipeline_dir).resolve()
    check_pipeline_dir(pipeline_dir)
    if args.archive_format not in ("auto", "no-archive"):
        raise SystemExit("a sam3d-objects archive is always an uncompressed directory (--archive-format no-archive)")
    handler["checkpoint"] = f"{PIPELINE_SUBDIR}/pipeline.yaml"
    return handler, pipeline_dir, "no-archive", False


def build_sam3d(args: argparse.Namespace, stage: Path, work: Path) -> Path:
    handler, pipeline_dir, fmt, demo = stage_sam3d(args, stage, work)
    handler["require_gpu"] = not demo  # the production pipeline runs on CUDA only
    if args.output_prefix:
        handler["output_prefix"] = args.output_prefix
    write_model_config(stage, args, handler)
    target = run_archiver(args, stage, fmt)
    if pipeline_dir is not None:
        copy_tree_with_progress(pipeline_dir, target / PIPELINE_SUBDIR)
    source = pipeline_dir or handler["checkpoint"]
    print(f"{'DEMO (random weights) ' if demo else ''}archive {target} preset={handler['preset']} from {source}")
    return target


def build_sam3d_body(args: argparse.Namespace, stage: Path, work: Path) -> Path:
    """SAM 3D Body: the staged files (checkpoint, model_config.yaml, assets/mhr_model.pt) of a download, or the
    demo's, generated here."""
    from gen3d.sam3d_body.demo import write_demo_files
    from gen3d.sam3d_body.presets import DEFAULT_PRESET, get_preset

    demo = args.checkpoint is None
    preset = get_preset(args.preset or ("tiny-cpu-demo" if demo else DEFAULT_PRESET))
    if preset.demo != demo:
        kind, need = ("a demo", "without") if preset.demo else ("the production model", "with")
        raise SystemExit(f"preset {preset.name} is {kind}: build it {need} --checkpoint")
    if demo:
        source = write_demo_files(work / "sam3d_body-demo", args.seed)["checkpoint"]
    else:
        source = Path(args.checkpoint).resolve()
    folder = source.parent
    files = {"checkpoint": source.name, "model_config": "model_config.yaml", "mhr_model": "assets/mhr_model.pt"}
    for key, name in files.items():
        if not (folder / name).is_file():
            raise SystemExit(f"{name} not found in {folder} (the {key} SAM 3D Body needs beside its checkpoint)")
    code = [preset.staged_code] if preset.staged_code else []
    for name in code:
        if not (folder / name / "hubconf.py").is_file():
            raise SystemExit(f"{folder / name}/hubconf.py not found (preset {preset.name} needs that code staged)")
    handler = {"preset": preset.name, **files, "demo_weights": demo, "min_gpu_memory_gib": preset.min_gpu_memory_gib}
    handler["require_gpu"] = not demo and not args.allow_cpu
    if args.output_prefix:
        handler["output_prefix"] = args.output_prefix
    write_model_config(stage, args, handler)
    target = run_archiver(args, stage, "no-archive")
    for name in files.values():
        copy_with_progress(folder / name, target / name, progress=not demo)
    for name in code:
        copy_tree_with_progress(folder / name, target / name)
    print(f"{'DEMO (random weights) ' if demo else ''}archive {target} preset={preset.name} from {folder}")
    return target


def build_sam3(args: argparse.Namespace, stage: Path, work: Path) -> Path:
    from gen3d.sam3.assets import BPE_VOCAB_NAME, bpe_vocab_path
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.presets import get_preset

    demo = args.checkpoint is None
    preset = get_preset(args.preset or ("tiny" if demo else "sam3"))
    checkpoint = demo_checkpoint(work, preset, str(bpe_vocab_path()), args.seed) if demo else Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"checkpoint not found: {checkpoint}")
    shutil.copy2(bpe_vocab_path(), stage / BPE_VOCAB_NAME)
    handler = {
        "preset": preset.name,
        "checkpoint": checkpoint.name,
        "assets": [BPE_VOCAB_NAME],
        "demo_weights": demo,
        "min_gpu_memory_gib": preset.min_gpu_memory_gib,
        # real weights belong on a GPU: a worker without CUDA stops instead of quietly running on the CPU
        "require_gpu": not demo and not args.allow_cpu,
    }
    if args.output_prefix:
        handler["output_prefix"] = args.output_prefix
    fmt = args.archive_format
    if fmt == "auto":
        fmt = "no-archive" if checkpoint.stat().st_size > LARGE else "default"
    # The checkpoint's digest is taken while it is copied (one pass) and recorded, so workers need not re-read
    # the file to identify it (the model id and the embedding cache are keyed by it).
    if fmt == "default":
        record_checkpoint(handler, checkpoint, copy_with_progress(checkpoint, stage / checkpoint.name, progress=False))
    write_model_config(stage, args, handler)
    target = run_archiver(args, stage, fmt)
    if fmt == "no-archive":
        record_checkpoint(handler, checkpoint, copy_with_progress(checkpoint, target / checkpoint.name))
        write_model_config(target, args, handler)
    print(f"{'DEMO (random weights) ' if demo else ''}archive {target} preset={preset.name} checkpoint={checkpoint}")
    return target


def record_checkpoint(handler: dict, checkpoint: Path, sha256: str) -> None:
    """Notes the checkpoint's digest and size in the handler section (checked by the worker at start-up)."""
    handler["checkpoint_sha256"] = sha256
    handler["checkpoint_bytes"] = checkpoint.stat().st_size


def build(args: argparse.Namespace) -> Path:
    """Stages the archive's files and runs torch-model-archiver; returns the archive path."""
    spec = MODELS[args.model]
    defaults = {
        "batch_size": spec.batch_size,
        "max_batch_delay": spec.max_batch_delay_ms,
        "response_timeout": spec.response_timeout_s,
        "startup_timeout": spec.startup_timeout_s,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model in ("sam3d", "sam3d_body") and args.batch_size != 1:
        raise SystemExit(f"{args.model} answers one request per batch: --batch-size must be 1")
    if args.model != "sam3d" and args.pipeline_dir:
        raise SystemExit(f"--pipeline-dir is for sam3d; {args.model} takes --checkpoint")
    handler = handler_file(args)
    if not handler.is_file():
        raise SystemExit(f"handler not found at {handler} (--handlers-dir: the checkout's handlers/)")

    work = Path(args.work_dir)
    stage = work / "stage" / args.model
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    builders = {"sam3": build_sam3, "sam3d": build_sam3d, "sam3d_body": build_sam3d_body}
    return builders[args.model](args, stage, work)


def run_archiver(args: argparse.Namespace, stage: Path, fmt: str) -> Path:
    """torch-model-archiver over the staged files; returns the .mar file or the archive directory."""
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
        str(handler_file(args)),
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
    # Its own TMPDIR: torch-model-archiver stages the files in $TMPDIR/<model name> and deletes that folder
    # afterwards, so two builds of the same model on one machine (two test runs) would delete each other's.
    with tempfile.TemporaryDirectory(prefix=f"gen3d-archiver-{args.model}-") as tmp:
        subprocess.run(cmd, check=True, env=dict(env, TMPDIR=tmp))
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS), help="which model's archive to build")
    parser.add_argument(
        "--checkpoint",
        help="sam3: real checkpoint (.pt/.pth/.ckpt/.safetensors); sam3d_body: model.ckpt with model_config.yaml and "
        "assets/mhr_model.pt beside it; omit for a demo archive",
    )
    parser.add_argument(
        "--pipeline-dir", help="sam3d: checkpoints/hf folder with DINOv2 and MoGe staged; omit for a demo archive"
    )
    parser.add_argument(
        "--preset",
        help="model preset (default: sam3 / sam3d-objects with real weights, tiny / tiny-cpu-demo without)",
    )
    parser.add_argument("--export-path", default=str(CHECKOUT / "model-store"), help="where archives go (model-store/)")
    parser.add_argument("--handlers-dir", default=str(CHECKOUT / "handlers"), help="the checkout's handlers/ folder")
    parser.add_argument("--work-dir", default=str(CHECKOUT / "build"), help="staging and demo checkpoints (build/)")
    parser.add_argument(
        "--archive-format",
        choices=["auto", "default", "no-archive"],
        default="auto",
        help="auto: a directory (no-archive) when the checkpoint exceeds 1 GiB, else a .mar",
    )
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--workers", type=int, default=1, help="workers per model (min = max)")
    parser.add_argument("--batch-size", type=int, help="TorchServe batchSize (default: gen3d.models)")
    parser.add_argument("--max-batch-delay", type=int, help="TorchServe maxBatchDelay, ms (default: gen3d.models)")
    parser.add_argument("--response-timeout", type=int, help="seconds per batch (default: gen3d.models)")
    parser.add_argument("--startup-timeout", type=int, help="seconds for a worker to load (default: gen3d.models)")
    parser.add_argument("--output-prefix", help="S3 output prefix template, e.g. 'out/{user_id}/{session_id}'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo checkpoint's random weights")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="sam3 / sam3d_body with real weights: let workers without a GPU run them on the CPU (sam3: ~100 s/image)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(parse_args(argv))
