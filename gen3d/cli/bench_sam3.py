"""Measure what the serving design buys, in one run, as ratios (not a test: timings here are noisy).

- batching: N images encoded one by one vs in one stacked pass;
- embedding cache: encoder pass vs reading the same features back from the on-disk cache;
- prompting: an interactive prompt on cached features vs the encoder pass it avoids.
Default is the tiny demo model with random weights; --checkpoint measures a real SAM 3 (preset sam3).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="real SAM 3 checkpoint; default: tiny random weights")
    parser.add_argument("--preset", help="default: sam3 with --checkpoint, tiny without")
    parser.add_argument("--images", type=int, default=4, help="images per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from gen3d.sam3.assets import bpe_vocab_path
    from gen3d.sam3.cache import EmbeddingCache
    from gen3d.sam3.demo_weights import random_sam3_state_dict
    from gen3d.sam3.features import encode_images
    from gen3d.sam3.loading import load_sam3
    from gen3d.sam3.presets import PRESETS
    from gen3d.sam3.prompting import segment_interactive
    from gen3d.sam3.request import SegmentPrompts

    preset = args.preset or ("sam3" if args.checkpoint else "tiny")
    work = Path(tempfile.mkdtemp(prefix="gen3d-bench-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = work / "random.safetensors"
        save_file(random_sam3_state_dict(PRESETS[preset], str(bpe_vocab_path())), str(checkpoint))
    started = time.perf_counter()
    loaded = load_sam3(preset, checkpoint, str(bpe_vocab_path()), torch.device(args.device))
    print(f"model {loaded.model_id} on {args.device}, loaded in {time.perf_counter() - started:.1f} s")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]

    one_by_one = timed(lambda: [encode_images(loaded, [img]) for img in images], args.repeats)
    stacked = timed(lambda: encode_images(loaded, images), args.repeats)
    print(
        f"batching: {args.images} images one by one {one_by_one:.3f} s, stacked {stacked:.3f} s, "
        f"speed-up x{one_by_one / stacked:.2f}"
    )

    features = encode_images(loaded, images[:1])[0]
    cache = EmbeddingCache(work / "cache", 10**10, loaded.model_id)
    cache.put("0" * 32, features)
    encode = timed(lambda: encode_images(loaded, images[:1]), args.repeats)
    read = timed(lambda: cache.get("0" * 32), args.repeats)
    print(f"cache: encoder pass {encode:.3f} s, cache read {read:.4f} s, x{encode / read:.1f} faster")

    prompts = SegmentPrompts(
        text=None,
        points=np.array([[320.0, 240.0]], dtype=np.float32),
        point_labels=np.array([1], dtype=np.int32),
        boxes=None,
        box_labels=[],
        multimask=True,
        score_threshold=0.5,
        return_png_masks=False,
    )
    prompt = timed(lambda: segment_interactive(loaded, features, prompts), args.repeats)
    print(f"prompting: one click {prompt:.4f} s = {100 * prompt / (prompt + encode):.1f}% of prompt + encode")


def console() -> None:
    main()
