"""The ``sam3`` model's work, independent of TorchServe: load once, then answer batches of requests.

``decode`` parses one request and fetches and decodes its image (or takes its ``embedding_id``); ``run`` looks
every image up in the shared embedding cache, then makes one encoder pass over the distinct images still
missing; ``encode`` answers one request: get_embedding writes a safetensors file, segment runs its prompts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gen3d.checks import require_handler_keys
from gen3d.errors import Conflict, NotFound, StartupError
from gen3d.models import SAM3
from gen3d.sam3.assets import BPE_VOCAB_NAME
from gen3d.sam3.cache import FeatureStore, Tier
from gen3d.sam3.embedding_file import embedding_safetensors
from gen3d.sam3.features import ImageFeatures, encode_images
from gen3d.sam3.loading import LoadedSam3, load_sam3
from gen3d.sam3.prompting import segment
from gen3d.sam3.request import (
    GetEmbeddingRequest,
    SegmentPrompts,
    SegmentRequest,
    check_in_image,
    embedding_request,
    parse_segment,
)
from gen3d.sam3.warmup import warm_up
from gen3d.serving.images import decode_image, image_digest
from gen3d.serving.limits import MAX_ANSWER_RLE_BYTES
from gen3d.serving.masks import png_of_rows
from gen3d.serving.replies import Reply, size_mb
from gen3d.serving.schema import require_image
from gen3d.serving.service import Job, MetricSink, ModelService, elapsed_ms, no_metrics
from gen3d.serving.storage import S3Location, S3Store, prefix_template

log = logging.getLogger(__name__)

PROMPT_FIELDS = ("text", "points", "point_labels", "boxes", "box_labels", "multimask", "score_threshold", "max_masks")
DEFAULT_CACHE_DIR = "/tmp/gen3d-embedding-cache"
# GEN3D_CACHE_GB: interactive tier (~94 images per GB at 1008 px); GEN3D_CONCEPT_CACHE_GB: concept tier (~18 per
# GB); GEN3D_DEVICE_CACHE_MB: interactive features each worker keeps on its device (~94 images per GB);
# GEN3D_CACHE_WRITE_QUEUE_MB: host memory each worker holds for features waiting for the disk (~15 images per GB)
CACHE_SETTINGS = {
    "GEN3D_CACHE_GB": 4.0,
    "GEN3D_CONCEPT_CACHE_GB": 4.0,
    "GEN3D_DEVICE_CACHE_MB": 1024.0,
    "GEN3D_CACHE_WRITE_QUEUE_MB": 512.0,
}


@dataclass
class Sam3Job(Job):
    """One sam3 request on its way through a batch."""

    prompts: SegmentPrompts | None = None
    image: Image.Image | None = None
    embedding_id: str = ""
    cache_hit: bool = False
    features: ImageFeatures | None = None
    model: GetEmbeddingRequest | SegmentRequest | None = None  # None: a raw image body (get_embedding defaults)
    batch_size: int = 0  # requests of the batch that reached the encoder stage

    @property
    def tier(self) -> Tier:
        """The features this request needs: the detector's for concept prompts, else the prompt decoder's."""
        return "concept" if self.prompts is not None and self.prompts.concept else "interactive"


class Sam3Service(ModelService[Sam3Job]):
    """Loaded SAM 3, storage and the shared embedding cache."""

    spec = SAM3
    job_type = Sam3Job
    stage_names = ("decode", "features", "respond")

    def __init__(
        self,
        loaded: LoadedSam3,
        store: S3Store,
        prefix_template: str,
        cache: FeatureStore,
        metric: MetricSink = no_metrics,
    ):
        super().__init__(store, prefix_template, metric)
        self.loaded = loaded
        self.cache = cache

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink = no_metrics
    ) -> Sam3Service:
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        store = S3Store.from_env()  # first: an unknown bucket owner stops start-up before the weights load
        model_dir = Path(model_dir)
        require_handler_keys(config, ("preset", "checkpoint"), model_dir)
        bpe = model_dir / BPE_VOCAB_NAME
        if not bpe.is_file():
            raise StartupError(f"BPE vocabulary not found at {bpe} (looked for {BPE_VOCAB_NAME} in the archive)")
        loaded = load_sam3(
            config["preset"],
            model_dir / config["checkpoint"],
            str(bpe),
            device,
            config.get("checkpoint_sha256"),
            config.get("checkpoint_bytes"),
        )
        warm_up(loaded)  # stops here when sam3 would silently skip its mask post-processing on this device
        settings = {name: float(os.environ.get(name) or default) for name, default in CACHE_SETTINGS.items()}
        cache = FeatureStore(
            os.environ.get("GEN3D_CACHE_DIR") or DEFAULT_CACHE_DIR,
            {
                "interactive": int(settings["GEN3D_CACHE_GB"] * 1e9),
                "concept": int(settings["GEN3D_CONCEPT_CACHE_GB"] * 1e9),
            },
            int(settings["GEN3D_DEVICE_CACHE_MB"] * 1e6),
            loaded.model_id,
            device,
            write_queue_bytes=int(settings["GEN3D_CACHE_WRITE_QUEUE_MB"] * 1e6),
        )
        if not cache.on_disk:  # a read-only or full cache disk: served without the disk tiers (logged by the cache)
            metric("CacheDiskOff", 1)
        return cls(loaded, store, prefix_template(config), cache, metric)

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def describe(self) -> dict[str, object]:
        return self.loaded.describe()

    def embedding_id(self, digest: str) -> str:
        """Identifies an image's features under this model: hash of image content and model id."""
        return hashlib.sha256(f"{self.loaded.model_id}|{digest}".encode()).hexdigest()[:32]

    def segment_id(self, job: Sam3Job) -> str:
        """Identifies a segment result: the image's embedding id and the prompt fields."""
        prompt_fields = json.dumps({k: job.request.get(k) for k in PROMPT_FIELDS}, sort_keys=True)
        return hashlib.sha256(f"{job.embedding_id}|{prompt_fields}".encode()).hexdigest()[:16]

    # -- decode ---------------------------------------------------------------------------------------
    def decode(self, job: Sam3Job) -> None:
        req = job.request
        if req.task == "get_embedding":
            model = job.model = embedding_request(req) if req.fields else None
        else:
            model, job.prompts = parse_segment(req)
            job.model = model
        if model is not None and model.model_id is not None and model.model_id != self.loaded.model_id:
            raise Conflict("model_id", f"this server runs {self.loaded.model_id}")
        if req.came_by_s3 or (job.prompts and job.prompts.return_png_masks):
            self.output_prefix(req)
        if req.task == "segment" and model.embedding_id is not None and req.image is None:
            job.embedding_id = model.embedding_id
            return
        source = require_image(req)
        job.image = decode_image(self.fetch(source.field, source.s3, source.inline), source.field)
        job.embedding_id = self.embedding_id(image_digest(job.image))
        if job.prompts:
            check_in_image(job.prompts, job.image.height, job.image.width)

    # -- run: features from the cache, else one encoder pass over the misses --------------------------
    def run(self, jobs: list[Sam3Job]) -> None:
        found: dict[tuple[str, Tier], ImageFeatures] = {}
        missing: dict[str, Image.Image] = {}
        for job in jobs:
            key = (job.embedding_id, job.tier)
            if key in found or job.embedding_id in missing:
                continue
            cached = self.cache.get(*key)
            if cached is not None:
                found[key] = cached
            elif job.image is not None:
                missing[job.embedding_id] = job.image
        for job in jobs:
            job.cache_hit = (job.embedding_id, job.tier) in found
        failed: dict[str, Exception] = {}
        for eid, outcome in self._encode_images(missing).items():
            if isinstance(outcome, Exception):
                failed[eid] = outcome
                continue
            found[(eid, "interactive")] = found[(eid, "concept")] = outcome
            self.cache.put(eid, outcome)  # returns at once: written to disk in the background
        for job in jobs:
            if job.embedding_id in failed:
                job.reply = self.reply_for(job, "features", failed[job.embedding_id])
        stats = self.cache.stats.take()
        for name, value in (
            ("EmbeddingCacheHits", stats.hits),
            ("EmbeddingCacheMisses", stats.misses),
            ("DeviceCacheHits", stats.device_hits),
            ("EmbeddingCacheReadBytes", stats.disk_bytes_read),
            ("CacheWriteErrors", stats.write_errors),
            ("CacheWritesSkipped", stats.writes_skipped),
            ("CacheCorruptEntries", stats.corrupt_entries),
        ):
            if value:
                self.metric(name, value)
        log.info(
            "features for %d request(s): %d cached (%d on the device, %.1f MB read from disk), %d encoded",
            len(jobs),
            len(jobs) - sum(not job.cache_hit for job in jobs),
            stats.device_hits,
            stats.disk_bytes_read / 1e6,
            len(missing),
        )
        for job in jobs:
            job.features = found.get((job.embedding_id, job.tier))
            job.batch_size = len(jobs)

    def _encode_images(self, images: dict[str, Image.Image]) -> dict[str, ImageFeatures | Exception]:
        """One encoder pass over ``images``; when it fails (a CUDA out-of-memory on a large batch, say), each image
        again alone, so that only an image that cannot be encoded by itself fails."""
        if not images:
            return {}
        try:
            encoded = encode_images(self.loaded, list(images.values()))
            self.metric("EncoderPasses", 1)
            self.metric("EncodedImages", len(images))
            return dict(zip(images, encoded, strict=True))
        except Exception as err:  # noqa: BLE001 - retried per image below; a lone image's failure is its answer
            if len(images) == 1:
                return {eid: err for eid in images}
            log.warning("encoder pass over %d images failed (%s); encoding each alone", len(images), type(err).__name__)
            self.metric("EncoderSplits", 1)
            self.release_memory()
        outcomes: dict[str, ImageFeatures | Exception] = {}
        for eid, image in images.items():
            try:
                outcomes[eid] = encode_images(self.loaded, [image])[0]
                self.metric("EncoderPasses", 1)
                self.metric("EncodedImages", 1)
            except Exception as err:  # noqa: BLE001 - this image's answer (507 for an out-of-memory)
                outcomes[eid] = err
                self.release_memory()
        return outcomes

    def release_memory(self) -> None:
        """Returns cached GPU blocks after a failed pass, so the next try starts from the same state."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- encode ---------------------------------------------------------------------------------------
    def encode(self, job: Sam3Job) -> dict[str, object] | Reply:
        if job.features is None:
            raise NotFound("embedding_id", f"unknown embedding_id for model {self.loaded.model_id}; send the image")
        fields: dict[str, object] = {
            "embedding_id": job.embedding_id,
            "model_id": self.loaded.model_id,
            "original_size": list(job.features.original_size),
            "cache_hit": job.cache_hit,
            "batch_size": job.batch_size,
            "worker_pid": os.getpid(),
        }
        respond = self._get_embedding if job.task == "get_embedding" else self._segment
        return respond(job, fields)

    def _get_embedding(self, job: Sam3Job, fields: dict[str, object]) -> dict[str, object] | Reply:
        req, features, preset = job.request, job.features, self.loaded.preset
        dtype = job.model.embedding_dtype if job.model is not None else "float16"
        height, width = features.original_size
        meta = {
            "embedding_id": job.embedding_id,
            "model_id": self.loaded.model_id,
            "preset": preset.name,
            "checkpoint_sha256": self.loaded.checkpoint_sha256,
            "resolution": preset.resolution,
            "original_height": height,
            "original_width": width,
        }
        data = embedding_safetensors(features.interactive, dtype, meta)
        fields.update(
            embedding_size_mb=size_mb(data),
            dtype=dtype,
            tensors={k: list(v.shape) for k, v in features.interactive.items()},
            resolution=preset.resolution,
        )
        if req.came_by_s3:
            loc = self.output_location(req, f"embeddings/{job.embedding_id}.safetensors")
            self.store.put_bytes(loc, data, "application/x-safetensors", {"model-id": self.loaded.model_id})
            fields.update(output_s3_key=loc.key, output_bucket=loc.bucket)
        elif req.binary_response:
            return Reply(200, data, "application/x-safetensors")
        else:
            fields["embedding_base64"] = base64.b64encode(data).decode()
        return fields

    def _segment(self, job: Sam3Job, fields: dict[str, object]) -> dict[str, object]:
        req, prompts = job.request, job.prompts
        if job.image is None:  # by embedding_id: now the image's size is known (decode checked a sent image)
            check_in_image(prompts, *job.features.original_size)
        started = time.perf_counter()
        found = segment(self.loaded, job.features, prompts, MAX_ANSWER_RLE_BYTES)
        job.timings_ms["prompt"] = elapsed_ms(started)
        masks = [
            {
                "rle": r.rle,
                "score": round(r.score, 6),
                "box": [round(v, 2) for v in r.box],
                "prompt_index": r.prompt_index,
                "area": r.area,
            }
            for r in found.masks
        ]
        if prompts.return_png_masks:  # written on the io pool while the batch's next request is answered
            segment_id = self.segment_id(job)
            for i, (entry, result) in enumerate(zip(masks, found.masks, strict=True)):
                loc = self.output_location(req, f"masks/{segment_id}/{i}.png")
                job.pending.append(self.io.submit(self._write_png, loc, result.rows, job.features.original_size[1]))
                result.rows = None  # the task holds them until the PNG is written
                entry["png_s3_key"] = loc.key
                fields["output_bucket"] = loc.bucket
        fields.update(
            mode="concept" if prompts.concept else "interactive",
            masks=masks,
            masks_total=found.total,
            truncated=found.truncated,
        )
        return fields

    def _write_png(self, loc: S3Location, rows: np.ndarray, width: int) -> None:
        self.store.put_bytes(loc, png_of_rows(rows, width), "image/png")
