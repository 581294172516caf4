"""GPU check of the sam3 serving path: one command, one table (a check, not a test: timings are one run's).

It builds the real SAM 3 architecture (preset ``sam3``, ~850 M parameters) with random weights, writes them to
a safetensors file and loads that through the project's own loader (gen3d.sam3.loading.load_sam3), runs the
worker's start-up warm-up (gen3d.sam3.warmup), then what the service runs (gen3d.sam3.features.encode_images,
the feature store, gen3d.sam3.prompting) in the model's precision (LoadedSam3.precision: bf16 autocast on CUDA,
float32 on the CPU) and prints:
- get_embedding throughput: images/s of the encoder pass at each batch size (default 1, 4, 8, 16) and the
  peak GPU memory of that pass;
- click latency on cached features: held in the worker's device cache (a repeated click) and read from the
  disk cache (another worker's image), each the whole interactive prompt with masks;
- whether sam3's mask post-processing (hole filling: a Triton kernel on CUDA, scikit-image on the CPU) ran,
  or sam3 skipped it ("Skipping the post-processing step"), and the warm-up's verdict on it;
- agreement of the service's outputs with sam3's stock ``Sam3Processor`` on the same weights and precision:
  features of an image encoded in a batch vs ``set_image`` alone, a click mask vs ``Sam3Image.predict_inst``,
  text-concept masks vs ``set_text_prompt`` (all queries, threshold 0, so both sides keep query order);
- the peak GPU memory of the whole run.
Each row is printed as soon as it is measured, so a run cut short still reports what it measured. Mask IoUs count
only pairs where a mask has a pixel: two empty masks do not agree on anything. It exits 1 when the warm-up would
stop the worker, post-processing was skipped, a mask IoU is under --min-iou, the text masks differ in number or
every mask compared was empty, else 0. Nothing is downloaded.

On a GPU machine with torch preinstalled (sam3 and the few packages it lacks carried as wheels, see
`make gpu-check-wheels`):
  python3 scripts/gpu_check.py                       # preset sam3 on cuda, batches 1,4,8,16
On this CPU (what tests/unit/test_gpu_check.py runs, in seconds):
  python3 scripts/gpu_check.py --preset tiny --device cpu --batches 1,2 --repeats 1 --clicks 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

SKIP_WARNING = "Skipping the post-processing step"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sam3", help="SAM 3 preset (default sam3, the published architecture)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--batches", default="1,4,8,16", help="get_embedding batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size, after one warm-up")
    parser.add_argument("--clicks", type=int, default=20, help="timed clicks on cached features")
    parser.add_argument("--image-size", default="1280x960", help="WxH of the random test pictures")
    parser.add_argument("--text", default="a red chair", help="concept prompt of the agreement check")
    parser.add_argument("--min-iou", type=float, default=0.95, help="lowest mask IoU counted as agreement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and pictures")
    parser.add_argument("--work", type=Path, help="folder for the checkpoint and cache (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
        args.width, args.height = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error("--batches takes integers like 1,4,8,16 and --image-size WxH like 1280x960")
    if min(args.batches) < 1 or args.repeats < 1 or args.clicks < 1:
        parser.error("batch sizes, --repeats and --clicks must be >= 1")
    return args


class Check:
    """The run's device helpers; prints the table's rows (check, value, detail) as they are measured."""

    def __init__(self, device) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.type == "cuda"
        self.loaded = None  # the LoadedSam3, once loaded: its precision is the serving precision
        self.skipped_postprocessing: list[str] = []
        self.run_peak_bytes = 0  # the highest of the peaks that reset_peak cleared

    def row(self, check: str, value: str, detail: str = "") -> None:
        """Prints one row now (flushed: a run cut short, or piped, still shows it)."""
        print(f"| {check} | {value} | {detail} |", flush=True)

    def precision(self):
        """The model's serving precision (bf16 autocast on CUDA, float32 on the CPU), for sam3's stock calls too."""
        return self.loaded.precision() if self.loaded is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def watched(self):
        """Runs sam3 code in the serving precision and records whether it skipped its post-processing."""
        with warnings.catch_warnings(record=True) as caught, self.precision():
            warnings.simplefilter("always")
            yield
        self.skipped_postprocessing += [str(w.message).split("\n")[0] for w in caught if SKIP_WARNING in str(w.message)]

    def timed(self, fn: Callable[[], object], repeats: int) -> list[float]:
        """Wall seconds of each of ``repeats`` calls, the device synchronised around each."""
        times = []
        for _ in range(repeats):
            self.sync()
            started = time.perf_counter()
            with self.watched():
                fn()
            self.sync()
            times.append(time.perf_counter() - started)
        return times

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        """Starts a new peak (one batch size's); the run's peak keeps the one cleared."""
        if self.cuda:
            self.run_peak_bytes = max(self.run_peak_bytes, self.torch.cuda.max_memory_allocated(self.device))
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self, whole_run: bool = False) -> str:
        """The peak since the last :meth:`reset_peak`, or with ``whole_run`` since the start."""
        if not self.cuda:
            return "n/a (cpu)"
        peak = self.torch.cuda.max_memory_allocated(self.device)
        if whole_run:
            peak = max(peak, self.run_peak_bytes)
        return f"{peak / 2**30:.2f} GiB"


def pictures(count: int, width: int, height: int, seed: int) -> list:
    """Random RGB pictures (what the encoder costs does not depend on content)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def load(check: Check, args: argparse.Namespace, work: Path):
    """Random weights of the preset -> safetensors file (the demo archive's, kept in ``work``) -> the project's
    loader, on the device."""
    from gen3d.sam3.assets import bpe_vocab_path
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.loading import load_sam3
    from gen3d.sam3.presets import get_preset

    bpe = str(bpe_vocab_path())
    started = time.perf_counter()
    checkpoint = demo_checkpoint(work, get_preset(args.preset), bpe, seed=args.seed)
    made = time.perf_counter() - started
    started = time.perf_counter()
    loaded = load_sam3(args.preset, checkpoint, bpe, check.device)
    check.sync()
    values = sum(t.numel() for t in loaded.model.state_dict().values()) / 1e6
    check.row(
        "load_sam3 (safetensors -> device)",
        f"{time.perf_counter() - started:.1f} s",
        f"{values:.1f} M values, model id {loaded.model_id}; random-weight checkpoint {checkpoint.name} made "
        f"(or found in --work) in {made:.1f} s",
    )
    check.loaded = loaded
    return loaded


def warm_up(check: Check, loaded) -> bool:
    """The worker's start-up warm-up (one click with post-processing); False when it would stop the worker."""
    from gen3d.errors import StartupError
    from gen3d.sam3.warmup import warm_up as worker_warm_up

    try:
        with check.watched():
            elapsed = worker_warm_up(loaded)
    except StartupError as err:
        check.row("start-up warm-up", "STOPS THE WORKER", str(err))
        return False
    check.row("start-up warm-up", f"{elapsed:.0f} ms", "one click on random features, mask post-processing included")
    return True


def throughput(check: Check, loaded, args: argparse.Namespace) -> None:
    """Encoder pass (get_embedding's model part) at each batch size."""
    from gen3d.sam3.features import encode_images

    images = pictures(max(args.batches), args.width, args.height, args.seed)
    for batch in args.batches:
        check.timed(lambda b=batch: encode_images(loaded, images[:b]), 1)  # warm-up (kernels, autotuning)
        check.reset_peak()
        times = check.timed(lambda b=batch: encode_images(loaded, images[:b]), args.repeats)
        median = statistics.median(times)
        check.row(
            f"get_embedding images/s, batch {batch}",
            f"{batch / median:.2f}",
            f"{median * 1e3:.1f} ms per batch (median of {args.repeats}), peak {check.peak_gib()}",
        )


def clicks(check: Check, loaded, args: argparse.Namespace, work: Path) -> None:
    """One click on an image whose features are in the feature store, as a segment request by embedding_id:
    held on the device (a repeated click) or read from the disk cache (another worker's image)."""
    import numpy as np

    from gen3d.sam3.cache import FeatureStore
    from gen3d.sam3.features import encode_images
    from gen3d.sam3.prompting import segment_interactive

    image = pictures(1, args.width, args.height, args.seed + 1)[0]
    limits = {"interactive": 2 * 10**9, "concept": 4 * 10**9}
    store = FeatureStore(work / "cache", limits, 512 * 10**6, loaded.model_id, loaded.device)
    with check.watched():
        store.put("click", encode_images(loaded, [image])[0])
    store.flush()
    disk_only = FeatureStore(work / "cache", limits, 0, loaded.model_id, loaded.device)  # no device cache
    prompts = click_prompts(args.width / 2, args.height / 2)
    cases = {
        "click latency, features on the device": lambda: segment_interactive(
            loaded, store.get("click", "interactive"), prompts
        ),
        "click latency, features from the disk cache": lambda: segment_interactive(
            loaded, disk_only.get("click", "interactive"), prompts
        ),
    }
    for name, click in cases.items():
        check.timed(click, 1)  # warm-up
        times = check.timed(click, args.clicks)
        check.row(
            name,
            f"{statistics.median(times) * 1e3:.1f} ms",
            f"median of {args.clicks}, p90 {np.percentile(times, 90) * 1e3:.1f} ms: lookup, prompt encoder, "
            "mask decoder, post-processing, mask and box",
        )


def click_prompts(x: float, y: float):
    from gen3d.sam3.request import SegmentPrompts

    return SegmentPrompts.one_click(x, y, score_threshold=0.0)


def iou(a, b) -> float | None:
    """Intersection over union of two boolean masks; None when both are empty (nothing to agree on)."""
    union = (a | b).sum()
    return None if union == 0 else float((a & b).sum() / union)


def shown(value: float | None) -> str:
    return "both empty" if value is None else f"{value:.4f}"


def failures(warmed: bool, skipped: list[str], ious: list[float], counts_match: bool, min_iou: float) -> list[str]:
    """Why the run fails (empty: it passes). ``ious`` holds only IoUs of masks with a pixel on either side."""
    reasons = [] if warmed else ["the warm-up would stop the worker"]
    reasons += ["mask post-processing was skipped"] if skipped else []
    if not ious:
        reasons.append("every mask compared was empty on both sides, so nothing was shown to agree")
    elif min(ious) < min_iou:
        reasons.append(f"a mask IoU ({min(ious):.4f}) is under --min-iou {min_iou}")
    return reasons + ([] if counts_match else ["the service and set_text_prompt gave different numbers of masks"])


def agreement(check: Check, loaded, args: argparse.Namespace) -> tuple[list[float], bool]:
    """The service's outputs vs sam3's stock Sam3Processor on the same weights; returns the click mask's IoU and the
    text masks' mean IoU, each over mask pairs with a pixel (none when all are empty), and whether both sides gave as
    many text masks."""
    import numpy as np

    from gen3d.sam3.features import encode_images
    from gen3d.sam3.loading import sam3_processor
    from gen3d.sam3.prompting import segment_concept, segment_interactive
    from gen3d.sam3.request import SegmentPrompts

    batch = max(args.batches)
    images = pictures(batch, args.width, args.height, args.seed)
    target = images[batch // 2]
    with check.watched():
        served = encode_images(loaded, images)[batch // 2]
        stock = sam3_processor(loaded, confidence_threshold=0.0)
        state = stock.set_image(target)
    levels = zip(served.backbone_fpn, state["backbone_out"]["backbone_fpn"], strict=True)
    diffs = [
        ((ours.float() - theirs.float()).abs().max().item(), theirs.float().abs().max().item())
        for ours, theirs in levels
    ]
    check.row(
        "agreement: features max abs diff",
        f"{max(d for d, _ in diffs):.2e}",
        f"image {batch // 2} of a batch of {batch}, held in float16, vs set_image alone, per FPN level "
        "(largest magnitude): " + ", ".join(f"{d:.2e} ({m:.2f})" for d, m in diffs),
    )

    prompts = click_prompts(target.width / 3, target.height / 3)
    with check.watched():
        ours = segment_interactive(loaded, served, prompts)[0]
        masks, scores, _ = loaded.model.predict_inst(
            state, point_coords=prompts.points, point_labels=prompts.point_labels, multimask_output=False
        )
    click_iou = iou(ours.mask(), np.asarray(masks[0]) > 0)
    check.row(
        "agreement: click mask IoU",
        shown(click_iou),
        f"vs Sam3Image.predict_inst; score {ours.score:.4f} vs {float(scores[0]):.4f}",
    )

    concept = SegmentPrompts(
        text=args.text,
        points=None,
        point_labels=None,
        boxes=None,
        box_labels=[],
        multimask=False,
        score_threshold=0.0,
        return_png_masks=False,
    )
    with check.watched():
        ours_all = segment_concept(loaded, served, concept)
        theirs = stock.set_text_prompt(args.text, state)
    their_masks = theirs["masks"].squeeze(1).cpu().numpy()
    their_scores = theirs["scores"].float().cpu().numpy()
    order = np.argsort(-their_scores)  # the service answers best first
    pairs = [iou(o.mask(), their_masks[i]) for o, i in zip(ours_all, order, strict=False)]
    ious = [v for v in pairs if v is not None]
    score_diff = max((abs(o.score - float(their_scores[i])) for o, i in zip(ours_all, order, strict=False)), default=0)
    text_iou = float(np.mean(ious)) if ious else None
    check.row(
        "agreement: text masks mean IoU",
        shown(text_iou),
        f"{len(ours_all)} vs {len(their_masks)} masks for {args.text!r} vs set_text_prompt, best first, "
        f"{len(ious)} of {len(pairs)} pairs not both empty; max score diff {score_diff:.4f}",
    )
    return [v for v in (click_iou, text_iou) if v is not None], len(ours_all) == len(their_masks)


def print_header(header: str) -> None:
    print(f"{header}\n\n| check | value | detail |\n| --- | --- | --- |", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available to torch {torch.__version__}", file=sys.stderr)
        return 2
    check = Check(device)
    name = torch.cuda.get_device_name(device) if check.cuda else "CPU"
    precision = "bf16 autocast" if check.cuda else "float32"
    work_dir = contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="gen3d-gpu-")
    print_header(
        f"gen3d GPU check: SAM 3 preset {args.preset}, {device} ({name}), torch {torch.__version__}, "
        f"Python {sys.version.split()[0]}, {precision}"
    )
    started = time.perf_counter()
    with work_dir as work:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        loaded = load(check, args, work)
        check.reset_peak()
        warmed = warm_up(check, loaded)
        throughput(check, loaded, args)
        clicks(check, loaded, args, work)
        ious, counts_match = agreement(check, loaded, args)
    if check.cuda:
        check.row(
            "peak GPU memory, whole run",
            check.peak_gib(whole_run=True),
            "torch.cuda.max_memory_allocated, the highest since start (per-batch peaks above)",
        )
    skipped = sorted(set(check.skipped_postprocessing))
    check.row(
        "mask post-processing (hole filling)",
        "SKIPPED" if skipped else "ran",
        "; ".join(skipped) if skipped else ("Triton kernel on CUDA" if check.cuda else "scikit-image on CPU"),
    )
    reasons = failures(warmed, skipped, ious, counts_match, args.min_iou)
    took = time.perf_counter() - started
    why = "; ".join(reasons) or (
        f"the warm-up passed, post-processing ran and every mask IoU >= {args.min_iou} (masks with a pixel only)"
    )
    check.row("verdict", "FAIL" if reasons else "PASS", f"{why}; whole run {took:.0f} s")
    return 1 if reasons else 0


def console() -> None:
    sys.exit(main())
