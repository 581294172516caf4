"""What a click reads from the feature store at 1008 px, and the peak memory of concept-mask post-processing on
a 64-megapixel image with ``score_threshold`` 0.

Both use tensors of the published architecture's shapes with random values (the encoder is not run: these
numbers depend on shapes only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import torch

from gen3d.sam3.presets import PRESETS

PUBLISHED = PRESETS["sam3"]
GRID = PUBLISHED.grid  # 72 at 1008 px
FPN_SIDES = (4 * GRID, 2 * GRID, GRID, GRID // 2)  # Sam3DualViTDetNeck scale factors 4, 2, 1, 0.5
QUERIES = PUBLISHED.num_queries  # DETR queries of the published model (200)


def published_features():
    from gen3d.sam3.features import ImageFeatures

    gen = torch.Generator().manual_seed(0)
    return ImageFeatures(
        original_size=(PUBLISHED.resolution, PUBLISHED.resolution),
        interactive={k: torch.randn(s, generator=gen).half() for k, s in PUBLISHED.interactive_shapes.items()},
        backbone_fpn=[torch.randn((1, 256, side, side), generator=gen).half() for side in FPN_SIDES],
    )


def cache_per_click(clicks: int = 5) -> dict[str, object]:
    """Bytes a click reads in a worker that has not seen the image yet, then in the same worker again."""
    from gen3d.sam3.cache import FeatureStore, tensors_bytes

    features = published_features()
    eid = "0" * 32
    with tempfile.TemporaryDirectory() as directory:
        limits = {"interactive": 10**10, "concept": 10**10}
        writer = FeatureStore(directory, limits, 0, "bench", torch.device("cpu"))
        writer.put(eid, features)
        writer.flush()
        worker = FeatureStore(directory, limits, 10**9, "bench", torch.device("cpu"))
        worker.get(eid, "interactive")
        first = worker.stats.take()
        for _ in range(clicks):
            worker.get(eid, "interactive")
        again = worker.stats.take()
        worker.get(eid, "concept")
        concept = worker.stats.take()
    interactive_mb = tensors_bytes(features.interactive) / 1e6
    concept_mb = tensors_bytes(features.fpn_tensors()) / 1e6
    return {
        "first_click_read_mb": round(first.disk_bytes_read / 1e6, 2),
        "next_clicks": clicks,
        "next_clicks_device_hits": again.device_hits,
        "next_clicks_read_mb": round(again.disk_bytes_read / 1e6, 2),
        "concept_prompt_read_mb": round(concept.disk_bytes_read / 1e6, 2),
        "images_per_gb": {
            "interactive (disk, and device LRU)": int(1000 / interactive_mb),
            "concept (disk)": int(1000 / concept_mb),
        },
    }


PEAK = """
import json, resource, time, torch
from gen3d.sam3.prompting import concept_masks
h = w = SIDE
gen = torch.Generator().manual_seed(0)
outputs = {
    "pred_logits": torch.randn((1, QUERIES, 1), generator=gen),
    "presence_logit_dec": torch.full((1, 1), 4.0),
    "pred_masks": torch.randn((1, QUERIES, 288, 288), generator=gen) * 4,
    "pred_boxes": torch.rand((1, QUERIES, 4), generator=gen) * 0.5 + 0.25,
}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
count = sum(1 for _ in concept_masks(outputs, h, w, 0.0))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"masks": count, "peak_above_inputs_mb": round((peak - before) / 1024, 1),
                  "seconds": round(time.perf_counter() - started, 1)}))
"""


def mask_peak(side: int = 8000, queries: int = QUERIES) -> dict[str, object]:
    """Peak resident memory of thresholding + upsampling + RLE of every query's mask at ``side``x``side``, in a
    fresh process; beside it what upsampling every kept mask at once (sam3's processor) would allocate."""
    code = PEAK.replace("SIDE", str(side)).replace("QUERIES", str(queries))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    pixels = side * side
    measured.update(
        megapixels=round(pixels / 1e6, 1),
        queries=queries,
        all_at_once_gb=round(queries * pixels * (4 + 4 + 1) / 1e9, 1),  # probabilities, sigmoid, bool
    )
    return measured


if __name__ == "__main__":
    print(json.dumps({"cache": cache_per_click(), "masks": mask_peak(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)}))
