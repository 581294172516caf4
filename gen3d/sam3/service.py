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
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from gen3d.errors import Conflict, InvalidField, NotFound, StartupError
from gen3d.models import SAM3
from gen3d.sam3.assets import BPE_VOCAB_NAME
from gen3d.sam3.cache import FeatureStore, Tier
from gen3d.sam3.embedding_file import embedding_safetensors
from gen3d.sam3.features import ImageFeatures, encode_images
from gen3d.sam3.loading import LoadedSam3, load_sam3
from gen3d.sam3.prompting import segment
from gen3d.sam3.request import SegmentPrompts, check_in_image, embedding_dtype, parse_segment
from gen3d.sam3.warmup import warm_up
from gen3d.serving.images import decode_image, image_digest
from gen3d.serving.masks import mask_png
from gen3d.serving.replies import Reply, size_mb
from gen3d.serving.schema import require_image
from gen3d.serving.service import Job, MetricSink, ModelService, elapsed_ms, no_metrics
from gen3d.serving.storage import S3Store, prefix_template

log = logging.getLogger(__name__)

PROMPT_FIELDS = ("text", "points", "point_labels", "boxes", "box_labels", "multimask", "score_threshold")
EMBEDDING_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_CACHE_DIR = "/tmp/gen3d-embedding-cache"
# GEN3D_CACHE_GB: interactive tier (~94 images per GB at 1008 px); GEN3D_CONCEPT_CACHE_GB: concept tier (~18 per
# GB); GEN3D_DEVICE_CACHE_MB: interactive features each worker keeps on its device (~94 images per GB)
CACHE_SETTINGS = {"GEN3D_CACHE_GB": 4.0, "GEN3D_CONCEPT_CACHE_GB": 4.0, "GEN3D_DEVICE_CACHE_MB": 1024.0}


@dataclass
class Sam3Job(Job):
    """One sam3 request on its way through a batch."""

    prompts: SegmentPrompts | None = None
    image: Image.Image | None = None
    embedding_id: str = ""
    cache_hit: bool = False
    features: ImageFeatures | None = None

    @property
    def tier(self) -> Tier:
        """The features this request needs: the detector's for concept prompts, else the prompt decoder's."""
        return "concept" if self.prompts is not None and self.prompts.concept else "interactive"
    batch_size: int = 0  # requests of the batch that reached the encoder stage


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
        model_dir = Path(model_dir)
        for key in ("preset", "checkpoint"):
            if not config.get(key):
                raise StartupError(f"model-config.yaml in {model_dir} lacks handler.{key}")
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
        )
        return cls(loaded, S3Store(), prefix_template(config), cache, metric)

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
        if req.get("model_id") is not None and req.get("model_id") != self.loaded.model_id:
            raise Conflict("model_id", f"this server runs {self.loaded.model_id}")
        if req.task == "get_embedding":
            embedding_dtype(req)
        else:
            job.prompts = parse_segment(req)
        if req.came_by_s3 or (job.prompts and job.prompts.return_png_masks):
            self.output_prefix(req)
        given_id = req.get("embedding_id")
        if req.task == "segment" and given_id is not None and req.image is None:
            if not isinstance(given_id, str) or not EMBEDDING_ID.match(given_id):
                raise InvalidField("embedding_id", "must be the 32-hex-digit id returned by get_embedding")
            job.embedding_id = given_id
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
            self.metric("EmbeddingCacheHits" if cached else "EmbeddingCacheMisses", 1)
            if cached is not None:
                found[key] = cached
            elif job.image is not None:
                missing[job.embedding_id] = job.image
        for job in jobs:
            job.cache_hit = (job.embedding_id, job.tier) in found
        if missing:
            encoded = encode_images(self.loaded, list(missing.values()))
            self.metric("EncoderPasses", 1)
            self.metric("EncodedImages", len(missing))
            for eid, features in zip(missing, encoded, strict=True):
                found[(eid, "interactive")] = found[(eid, "concept")] = features
                self.cache.put(eid, features)  # returns at once: written to disk in the background
        stats = self.cache.stats.take()
        for name, value in (
            ("DeviceCacheHits", stats.device_hits),
            ("EmbeddingCacheReadBytes", stats.disk_bytes_read),
            ("CacheWriteErrors", stats.write_errors),
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
        dtype = embedding_dtype(req)
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
        check_in_image(prompts, *job.features.original_size)
        started = time.perf_counter()
        results = segment(self.loaded, job.features, prompts)
        job.timings_ms["prompt"] = elapsed_ms(started)
        masks = [
            {
                "rle": r.rle,
                "score": round(r.score, 6),
                "box": [round(v, 2) for v in r.box],
                "prompt_index": r.prompt_index,
                "area": r.area,
            }
            for r in results
        ]
        if prompts.return_png_masks:
            segment_id = self.segment_id(job)
            for i, (entry, result) in enumerate(zip(masks, results, strict=True)):
                loc = self.output_location(req, f"masks/{segment_id}/{i}.png")
                self.store.put_bytes(loc, mask_png(result.mask()), "image/png")
                entry["png_s3_key"] = loc.key
                fields["output_bucket"] = loc.bucket
        fields.update(mode="concept" if prompts.concept else "interactive", masks=masks)
        return fields
