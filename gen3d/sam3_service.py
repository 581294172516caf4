"""The ``sam3`` model's work, independent of TorchServe: load once, then answer batches of requests.

Each batch goes through small steps: ``decode`` (parse every request, fetch and decode its image; a bad
one gets its own error), ``features`` (look each image up in the shared embedding cache, then one encoder
pass over the distinct images still missing), ``respond`` (per request: get_embedding writes a safetensors
file, segment runs its prompts; then the JSON envelope).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from gen3d import output_encoding as out
from gen3d.assets import BPE_VOCAB_NAME
from gen3d.embedding_cache import EmbeddingCache
from gen3d.errors import RequestError, StartupError
from gen3d.images import decode_image, image_digest
from gen3d.masks import mask_png, rle_from_mask
from gen3d.replies import Job, MetricSink, Reply, elapsed_ms, server_error
from gen3d.request_schema import ParsedRequest, RawRequest, embedding_dtype, parse_request, require_image
from gen3d.sam3_builder import LoadedSam3, load_sam3
from gen3d.sam3_features import ImageFeatures, encode_images
from gen3d.sam3_prompting import segment
from gen3d.segment_request import SegmentPrompts, check_in_image, parse_segment
from gen3d.storage import (
    S3Location,
    S3Store,
    check_bucket,
    output_key,
    output_prefix,
    prefix_template,
)

log = logging.getLogger(__name__)

TASKS = ("get_embedding", "segment")
OTHER_MODELS_TASKS = {"generate_3d": "sam3d"}
PROMPT_FIELDS = ("text", "points", "point_labels", "boxes", "box_labels", "multimask", "score_threshold")
EMBEDDING_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_CACHE_DIR = "/tmp/gen3d-embedding-cache"
DEFAULT_CACHE_GB = 4.0


@dataclass
class Sam3Job(Job):
    """One sam3 request on its way through a batch."""

    prompts: SegmentPrompts | None = None
    image: Image.Image | None = None
    embedding_id: str = ""
    cache_hit: bool = False


class Sam3Service:
    """Loaded SAM 3, storage and the shared embedding cache; ``handle`` answers one TorchServe batch."""

    def __init__(
        self,
        loaded: LoadedSam3,
        store: S3Store,
        prefix_template: str,
        cache: EmbeddingCache,
        metric: MetricSink | None = None,
    ):
        self.loaded = loaded
        self.store = store
        self.prefix_template = prefix_template
        self.cache = cache
        self.metric = metric or (lambda name, value, unit: None)
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sam3-io")

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink | None = None
    ) -> Sam3Service:
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        model_dir = Path(model_dir)
        for key in ("preset", "checkpoint"):
            if not config.get(key):
                raise StartupError(f"model-config.yaml in {model_dir} lacks handler.{key}")
        bpe = model_dir / BPE_VOCAB_NAME
        if not bpe.is_file():
            raise StartupError(f"BPE vocabulary not found at {bpe} (looked for {BPE_VOCAB_NAME} in the archive)")
        loaded = load_sam3(config["preset"], model_dir / config["checkpoint"], str(bpe), device)
        template = prefix_template(config)
        cache_dir = os.environ.get("GEN3D_CACHE_DIR") or config.get("embedding_cache_dir") or DEFAULT_CACHE_DIR
        cache_gb = float(os.environ.get("GEN3D_CACHE_GB") or config.get("embedding_cache_gb") or DEFAULT_CACHE_GB)
        cache = EmbeddingCache(cache_dir, int(cache_gb * 1e9), loaded.model_id)
        return cls(loaded, S3Store(), template, cache, metric)

    def embedding_id(self, digest: str) -> str:
        """Identifies an image's features under this model: hash of image content and model id."""
        return hashlib.sha256(f"{self.loaded.model_id}|{digest}".encode()).hexdigest()[:32]

    def segment_id(self, job: Sam3Job) -> str:
        """Identifies a segment result: the image's embedding id and the prompt fields."""
        prompt_fields = {k: job.request.get(k) for k in PROMPT_FIELDS}
        return hashlib.sha256(f"{job.embedding_id}|{json.dumps(prompt_fields, sort_keys=True)}".encode()).hexdigest()[
            :16
        ]

    # -- decode ---------------------------------------------------------------------------------------
    def _decode(self, job: Sam3Job) -> None:
        started = time.perf_counter()
        try:
            job.request = req = parse_request(job.raw, TASKS)
            if req.task in OTHER_MODELS_TASKS:
                raise RequestError(
                    "task", f"task {req.task} is served by model {OTHER_MODELS_TASKS[req.task]}, not sam3"
                )
            if req.task not in TASKS:
                raise RequestError("task", f"unknown task {req.task!r}; model sam3 serves {list(TASKS)}")
            if req.get("model_id") is not None and req.get("model_id") != self.loaded.model_id:
                raise RequestError("model_id", f"this server runs {self.loaded.model_id}", status=409)
            if req.task == "get_embedding":
                embedding_dtype(req)
            else:
                job.prompts = parse_segment(req)
            if req.came_by_s3 or (job.prompts and job.prompts.return_png_masks):
                self._prefix(req)
            given_id = req.get("embedding_id")
            if req.task == "segment" and given_id is not None and req.image is None:
                if not isinstance(given_id, str) or not EMBEDDING_ID.match(given_id):
                    raise RequestError("embedding_id", "must be the 32-hex-digit id returned by get_embedding")
                job.embedding_id = given_id
            else:
                source = require_image(req)
                data = source.inline if source.s3 is None else self.store.get_bytes(source.s3, source.field)
                job.image = decode_image(data, source.field)
                job.embedding_id = self.embedding_id(image_digest(job.image))
                if job.prompts:
                    check_in_image(job.prompts, job.image.height, job.image.width)
        except RequestError as err:
            job.fail(err)
        except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
            job.reply = server_error(job.task, "image", err)
        job.timings_ms["decode"] = elapsed_ms(started)

    def _prefix(self, req: ParsedRequest) -> str:
        return output_prefix(self.prefix_template, req.get("user_id"), req.get("session_id"))

    # -- features -------------------------------------------------------------------------------------
    def _features(self, jobs: list[Sam3Job]) -> dict[str, ImageFeatures]:
        """Features of every job's image: from the cache, else from one encoder pass over the misses."""
        started = time.perf_counter()
        found: dict[str, ImageFeatures] = {}
        missing: dict[str, Image.Image] = {}
        for job in jobs:
            eid = job.embedding_id
            if eid in found or eid in missing:
                continue
            cached = self.cache.get(eid)
            self.metric("EmbeddingCacheHits" if cached else "EmbeddingCacheMisses", 1, "count")
            if cached is not None:
                found[eid] = cached
            elif job.image is not None:
                missing[eid] = job.image
        for job in jobs:
            job.cache_hit = job.embedding_id in found
        if missing:
            encoded = encode_images(self.loaded, list(missing.values()))
            self.metric("EncoderPasses", 1, "count")
            self.metric("EncodedImages", len(missing), "count")
            for eid, features in zip(missing, encoded, strict=True):
                found[eid] = features
                self.cache.put(eid, features)
        elapsed = elapsed_ms(started)
        log.info(
            "features for %d request(s): %d cached, %d encoded in %.0f ms",
            len(jobs),
            len(found) - len(missing),
            len(missing),
            elapsed,
        )
        for job in jobs:
            job.timings_ms["features"] = elapsed
        return found

    # -- respond --------------------------------------------------------------------------------------
    def _common_fields(self, job: Sam3Job, features: ImageFeatures, batch_size: int) -> dict:
        fields = {
            "embedding_id": job.embedding_id,
            "model_id": self.loaded.model_id,
            "original_size": list(features.original_size),
            "cache_hit": job.cache_hit,
            "batch_size": batch_size,
            "worker_pid": os.getpid(),
        }
        for name in ("session_id", "user_id"):
            if job.request.get(name) is not None:
                fields[name] = job.request.get(name)
        return fields

    def _output_bucket(self, req: ParsedRequest) -> str:
        bucket = req.get("output_bucket") or (req.image.s3.bucket if req.came_by_s3 else req.get("bucket"))
        return check_bucket(bucket, "bucket")

    def _get_embedding(self, job: Sam3Job, features: ImageFeatures, fields: dict) -> Reply:
        req = job.request
        dtype = embedding_dtype(req)
        h, w = features.original_size
        meta = {
            "embedding_id": job.embedding_id,
            "model_id": self.loaded.model_id,
            "preset": self.loaded.preset.name,
            "checkpoint_sha256": self.loaded.checkpoint_sha256,
            "resolution": self.loaded.preset.resolution,
            "original_height": h,
            "original_width": w,
        }
        data = out.embedding_safetensors(features.interactive, dtype, meta)
        fields.update(
            embedding_size_mb=out.size_mb(data),
            dtype=dtype,
            tensors={k: list(v.shape) for k, v in features.interactive.items()},
            resolution=self.loaded.preset.resolution,
        )
        if req.came_by_s3:
            bucket = self._output_bucket(req)
            key = output_key(self._prefix(req), f"embeddings/{job.embedding_id}.safetensors")
            self.store.put_bytes(
                S3Location(bucket, key), data, "application/x-safetensors", {"model-id": meta["model_id"]}
            )
            fields.update(output_s3_key=key, output_bucket=bucket)
        elif req.binary_response:
            return Reply(200, data, "application/x-safetensors")
        else:
            fields["embedding_base64"] = base64.b64encode(data).decode()
        return Reply(200, out.success(req.task, **fields))

    def _segment(self, job: Sam3Job, features: ImageFeatures, fields: dict) -> Reply:
        req, prompts = job.request, job.prompts
        check_in_image(prompts, *features.original_size)
        started = time.perf_counter()
        results = segment(self.loaded, features, prompts)
        job.timings_ms["prompt"] = elapsed_ms(started)
        masks = [
            {
                "rle": rle_from_mask(r.mask),
                "score": round(r.score, 6),
                "box": [round(v, 2) for v in r.box],
                "prompt_index": r.prompt_index,
                "area": int(r.mask.sum()),
            }
            for r in results
        ]
        if prompts.return_png_masks:
            bucket = self._output_bucket(req)
            prefix = self._prefix(req)
            for i, (entry, result) in enumerate(zip(masks, results, strict=True)):
                key = output_key(prefix, f"masks/{self.segment_id(job)}/{i}.png")
                self.store.put_bytes(S3Location(bucket, key), mask_png(result.mask), "image/png")
                entry["png_s3_key"] = key
            fields["output_bucket"] = bucket
        fields.update(mode="concept" if prompts.concept else "interactive", masks=masks)
        return Reply(200, out.success(req.task, **fields))

    def _respond(self, job: Sam3Job, features: dict[str, ImageFeatures], batch_size: int) -> None:
        started = time.perf_counter()
        try:
            image_features = features.get(job.embedding_id)
            if image_features is None:
                raise RequestError(
                    "embedding_id", f"unknown embedding_id for model {self.loaded.model_id}; send the image", status=404
                )
            fields = self._common_fields(job, image_features, batch_size)
            respond = self._get_embedding if job.task == "get_embedding" else self._segment
            reply = respond(job, image_features, fields)
            if isinstance(reply.body, dict):
                job.timings_ms["respond"] = elapsed_ms(started)
                job.timings_ms["total"] = elapsed_ms(job.started)
                reply.body["timings_ms"] = job.timings_ms
            job.reply = reply
        except RequestError as err:
            job.fail(err)
        except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
            job.reply = server_error(job.task, "output", err)

    # -- batch ----------------------------------------------------------------------------------------
    def handle(self, raws: list[RawRequest]) -> list[Reply]:
        """Answers every request of a batch; one request's error never affects the others."""
        jobs = [Sam3Job(raw) for raw in raws]
        list(self._io.map(self._decode, jobs))
        ready = [job for job in jobs if job.reply is None]
        features = self._features(ready) if ready else {}
        self.metric("Batches", 1, "count")
        self.metric("BatchRequests", len(jobs), "count")
        for job in ready:  # sequential: the interactive predictor holds one image's features at a time
            self._respond(job, features, len(ready))
        return [job.reply for job in jobs]
