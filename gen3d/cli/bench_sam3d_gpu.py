"""Run SAM 3D Objects' production path once (or a few times) on a GPU and print, per pipeline stage, the
wall time and the peak GPU memory allocated during that stage (torch.cuda.max_memory_allocated, reset at
the start of each stage), plus the model load.

It loads the model exactly as the sam3d TorchServe worker does (gen3d.sam3d.loading.load_sam3d, preset
sam3d-objects) from a checkpoints directory prepared as for `scripts/build_archives.py sam3d --pipeline-dir`
(pipeline.yaml, configs, checkpoints; DINOv2 and MoGe staged beside it), or from a built archive directory.

Examples (in the sam3d image, on a machine with a >= 32 GiB GPU):
  scripts/sam3d_gpu_benchmark.py --pipeline-dir /models/sam3d/hf --image photo.jpg --mask mask.png
  scripts/sam3d_gpu_benchmark.py --archive model-store/sam3d --image photo.jpg --mask mask.png \\
      --runs 3 --ss-steps 12 --slat-steps 12 --decode-formats gaussian --out /tmp/bench
  scripts/sam3d_gpu_benchmark.py --demo --image photo.jpg --mask mask.png   # CPU demo preset, no GPU needed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pipeline-dir", type=Path, help="checkpoints/hf folder with DINOv2 and MoGe staged")
    where.add_argument("--archive", type=Path, help="a built sam3d archive directory (model-store/sam3d)")
    where.add_argument("--demo", action="store_true", help="the tiny-cpu-demo preset on the CPU (random weights)")
    parser.add_argument("--image", type=Path, required=True, help="picture (PNG/JPEG/...)")
    parser.add_argument("--mask", type=Path, required=True, help="object mask PNG, same size (non-zero = object)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ss-steps", type=int, help="sparse-structure flow steps (default: pipeline.yaml's)")
    parser.add_argument("--slat-steps", type=int, help="structured-latent flow steps (default: pipeline.yaml's)")
    parser.add_argument("--decode-formats", default="gaussian,mesh", help="comma-separated: gaussian, mesh")
    parser.add_argument("--mesh-postprocess", action="store_true")
    parser.add_argument("--texture-baking", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="generations (the first one includes warm-up)")
    parser.add_argument("--gpu", type=int, default=0, help="CUDA device index")
    parser.add_argument("--out", type=Path, help="write object.ply, object.glb and pose.json of the last run here")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    return parser.parse_args(argv)


def load(args: argparse.Namespace, device):
    """The loaded model and the seconds and peak GPU MiB its loading took."""
    import torch

    from gen3d.archives import archive_contents
    from gen3d.sam3d.loading import load_sam3d

    with tempfile.TemporaryDirectory(prefix="sam3d-bench-") as scratch:  # the demo checkpoint, read while loading
        if args.demo:
            from gen3d.sam3d.demo.weights import demo_checkpoint_bytes
            from gen3d.sam3d.presets import PRESETS

            model_dir = Path(scratch)
            (model_dir / "demo.safetensors").write_bytes(demo_checkpoint_bytes(PRESETS["tiny-cpu-demo"]))
            config = {"preset": "tiny-cpu-demo", "checkpoint": "demo.safetensors", "demo_weights": True}
        elif args.archive:
            model_dir = args.archive
            config = archive_contents(model_dir)[1]["handler"]
        else:
            model_dir, config = args.pipeline_dir, {"preset": "sam3d-objects", "checkpoint": "pipeline.yaml"}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        loaded = load_sam3d(model_dir, config, device)
        seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return loaded, seconds, peak


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import numpy as np
    import torch

    from gen3d.errors import ServingError, StartupError
    from gen3d.sam3d.outputs import FILE_NAMES, encode_generation
    from gen3d.sam3d.request import Generate3dRequest, generate_options
    from gen3d.serving.images import decode_image
    from gen3d.serving.masks import mask_from_png
    from gen3d.serving.schema import validated

    if args.demo:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA GPU visible: the production path needs one (use --demo for the CPU demo preset)")
        return 2
    else:
        device = torch.device("cuda", args.gpu)
        torch.cuda.set_device(device)
    picture = decode_image(args.image.read_bytes(), "--image")
    image = np.asarray(picture, dtype=np.uint8)
    try:
        mask = mask_from_png(args.mask.read_bytes(), image.shape[:2], "--mask")
        problem = "" if mask.any() else "it is empty"
    except ServingError as err:
        problem = err.message
    if problem:
        print(f"--mask must be a non-empty {image.shape[0]}x{image.shape[1]} mask PNG: {problem}")
        return 2
    try:
        fields = {
            "seed": args.seed,
            "ss_steps": args.ss_steps,
            "slat_steps": args.slat_steps,
            "decode_formats": args.decode_formats.split(","),
            "mesh_postprocess": args.mesh_postprocess,
            "texture_baking": args.texture_baking,
        }
        request = validated(Generate3dRequest, {"task": "generate_3d", **fields})
        with contextlib.redirect_stdout(sys.stderr):  # upstream prints as it loads; stdout is the report's (--json)
            loaded, load_s, load_peak = load(args, device)
        options = generate_options(request, loaded.generator.renderers)
    except (StartupError, ServingError) as err:
        print(f"cannot run: {err}")
        return 2

    report = {
        "model_id": loaded.model_id,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "image": list(image.shape[:2]),
        "options": {k: v for k, v in vars(options).items()},
        "load": {"seconds": round(load_s, 2), "peak_gpu_mib": load_peak},
        "runs": [],
    }
    gen = None
    for _ in range(args.runs):
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            gen = loaded.generator.generate(image, mask, options)
        total = time.perf_counter() - started
        peaks = gen.info.get("gpu_peak_mib") or {}
        report["runs"].append(
            {
                "total_seconds": round(total, 2),
                "peak_gpu_mib": max(peaks.values()) if peaks else None,  # stages reset the peak: max over them
                "stages": {name: {"ms": ms, "peak_gpu_mib": peaks.get(name)} for name, ms in gen.stages_ms.items()},
                "voxels": gen.info.get("voxels"),
            }
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out and gen is not None:
        encoded = encode_generation(gen, {"model_id": loaded.model_id, "seed": options.seed})
        args.out.mkdir(parents=True, exist_ok=True)
        for name, data in encoded.files.items():
            (args.out / FILE_NAMES[name]).write_bytes(data)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['model_id']} on {report['device']} {report['gpu'] or ''}, image {image.shape[1]}x{image.shape[0]}")
    mib = report["load"]["peak_gpu_mib"]
    print(f"load: {load_s:.1f} s, peak GPU {mib / 1024:.2f} GiB" if mib else f"load: {load_s:.1f} s")
    for i, run in enumerate(report["runs"], 1):
        print(f"\nrun {i}: {run['total_seconds']:.2f} s, {run['voxels']} voxels, peak GPU {run['peak_gpu_mib']} MiB")
        print(f"  {'stage':<18}{'ms':>10}{'peak GiB':>10}")
        for name, stage in run["stages"].items():
            peak = stage["peak_gpu_mib"]
            print(f"  {name:<18}{stage['ms']:>10.1f}{(peak / 1024 if peak else float('nan')):>10.2f}")
    return 0


def console() -> None:
    sys.exit(main())
