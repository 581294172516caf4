"""The worst segment batch against sam3's ``responseTimeout``: ``requests`` (sam3's batchSize) concept requests on
distinct ``side`` x ``side`` pictures (8000: the 64-megapixel limit) with ``score_threshold`` 0, the default
``max_masks`` (100 of the published model's 200 queries) and ``return_png_masks``, answered by
``Sam3Service.handle`` with S3 on moto's server over HTTP.

The tiny demo model reads and encodes the pictures (the published encoder's own time is not in it: tens of ms per
image on a GPU); its grounding pass is replaced by outputs of the published model's shapes (200 queries, 288x288
mask logits, random: noisy masks with more runs than real objects have). Everything after grounding is the
service's own code on ``device``: thresholding, the cap, upsampling to full size, RLE, the answer, and the PNGs
written to S3 on the io pool. ``upsample_s_per_mask`` is the device's share per mask, wall and CPU seconds (on a GPU,
milliseconds): ``cpu_s`` less it times the masks upsampled is the host's work.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gen3d.bench.memory import PUBLISHED, QUERIES
from gen3d.bench.serving import CHECKOUT, MotoS3
from gen3d.models import SAM3

BUCKET = "gen3d-bench"
MASK_SIDE = 4 * PUBLISHED.grid  # 288: the published model's mask logits


MASK_KINDS = ("noisy", "objects")


def published_grounding(masks: str = "noisy", queries: int = QUERIES, seed: int = 0):
    """A stand-in for ``prompting.ground``: outputs of the published model's shapes on the model's device. Mask
    logits are random per 288x288 cell (``noisy``: the most runs a mask can have) or blobs of ~1/8 of the picture
    (``objects``: runs like real objects')."""

    def ground(loaded, features, prompts) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        cells = MASK_SIDE if masks == "noisy" else 8
        logits = torch.randn((1, queries, cells, cells), generator=gen) * 4
        outputs = {
            "pred_logits": torch.randn((1, queries, 1), generator=gen),
            "presence_logit_dec": torch.full((1, 1), 4.0),
            "pred_masks": torch.nn.functional.interpolate(logits, (MASK_SIDE, MASK_SIDE), mode="bilinear"),
            "pred_boxes": torch.rand((1, queries, 4), generator=gen) * 0.5 + 0.25,
        }
        return {name: value.to(loaded.device) for name, value in outputs.items()}

    return ground


def picture(side: int, index: int) -> bytes:
    """A smooth ``side`` x ``side`` RGB picture as PNG, different for each ``index``."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], np.float32(40 * index % 256)), axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread's, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def upsample_seconds(device: torch.device, side: int, masks: int = 3) -> tuple[float, float]:
    """Wall and CPU seconds per mask of the device's part of the post-processing (upsampling, threshold,
    transposed copy to the host), as ``concept_masks`` does it one mask at a time at this size."""
    from sam3.model.data_misc import interpolate

    low = torch.randn((masks, 1, MASK_SIDE, MASK_SIDE), device=device)
    started, cpu = time.perf_counter(), cpu_seconds()
    for i in range(masks):
        upsampled = interpolate(low[i : i + 1], (side, side), mode="bilinear", align_corners=False).sigmoid_()
        (upsampled > 0.5).squeeze(1).view(torch.uint8).transpose(1, 2).contiguous().cpu()
    return (time.perf_counter() - started) / masks, (cpu_seconds() - cpu) / masks


def run(
    side: int = 8000, requests: int = SAM3.batch_size, device: str = "cpu", masks: str = "noisy"
) -> dict[str, object]:
    """One batch as described above; what it took, per request and in all."""
    from gen3d.sam3 import prompting
    from gen3d.sam3.assets import bpe_vocab_path
    from gen3d.sam3.cache import FeatureStore
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.loading import load_sam3
    from gen3d.sam3.presets import PRESETS
    from gen3d.sam3.service import Sam3Service
    from gen3d.serving.buckets import BucketPolicy
    from gen3d.serving.schema import RawRequest
    from gen3d.serving.storage import S3Store

    torch_device = torch.device(device)
    bpe = str(bpe_vocab_path())
    (CHECKOUT / "build").mkdir(exist_ok=True)
    loaded = load_sam3("tiny", demo_checkpoint(CHECKOUT / "build", PRESETS["tiny"], bpe), bpe, torch_device)
    prompting.ground = published_grounding(masks)
    moto = MotoS3()
    moto.start()
    try:
        s3 = moto.client()
        s3.create_bucket(Bucket=BUCKET)
        for i in range(requests):
            s3.put_object(Bucket=BUCKET, Key=f"worst/{i}.png", Body=picture(side, i))
        with tempfile.TemporaryDirectory() as cache_dir:
            cache = FeatureStore(cache_dir, {"interactive": 10**10, "concept": 10**10}, 10**9, loaded.model_id,
                                 torch_device)  # fmt: skip
            store = S3Store(client=s3, buckets=BucketPolicy((BUCKET,)))
            service = Sam3Service(loaded, store, "bench/{user_id}/{session_id}", cache)
            fields = {"task": "segment", "bucket": BUCKET, "user_id": "bench", "session_id": "worst", "text": "thing",
                      "score_threshold": 0, "return_png_masks": True}  # fmt: skip
            raws = [
                RawRequest(json.dumps({**fields, "image_s3_key": f"worst/{i}.png"}).encode(), "application/json")
                for i in range(requests)
            ]
            started, cpu = time.perf_counter(), cpu_seconds()
            replies = service.handle(raws)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        written = s3.list_objects_v2(Bucket=BUCKET, Prefix="bench/").get("KeyCount", 0)
    finally:
        moto.stop()
    bodies = [reply.body for reply in replies]
    failed = [body for body in bodies if body.get("status") != "success"]
    if failed:
        raise RuntimeError(f"the worst-case batch failed: {failed[0]}")
    return {
        "device": str(torch_device),
        "masks": masks,
        "megapixels": round(side * side / 1e6, 1),
        "requests": requests,
        "masks_per_answer": [len(body["masks"]) for body in bodies],
        "masks_total": bodies[0]["masks_total"],
        "pngs_written": written,
        "answer_mb": round(max(len(json.dumps(body)) for body in bodies) / 1e6, 2),
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu, 1),
        "response_timeout_s": SAM3.response_timeout_s,
        "timings_ms": [{k: v for k, v in body["timings_ms"].items() if k != "total"} for body in bodies],
        "upsample_s_per_mask": [round(v, 3) for v in upsample_seconds(torch_device, side)],  # wall, CPU
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def in_fresh_process(side: int, requests: int, device: str, masks: str) -> dict[str, object]:
    """:func:`run` in a new Python process (its peak memory is the batch's alone); its report."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "gen3d.bench.segment_worst", str(side), str(requests), device, masks],
        capture_output=True, text=True, check=False, cwd=Path(CHECKOUT),
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"gen3d.bench.segment_worst failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(run(int(args[0]), int(args[1]), args[2], args[3]) if args else run()))
