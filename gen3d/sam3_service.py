"""The ``sam3`` model's work, independent of TorchServe: load once, then answer batches of requests.

Each batch goes through three small steps: ``decode`` (parse and fetch every request's image; a bad one
gets its own error), ``predict`` (one encoder pass over the distinct images), ``encode`` (per request:
safetensors to S3 or inline, and the JSON envelope).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from gen3d import output_encoding as out
from gen3d.assets import BPE_VOCAB_NAME
from gen3d.errors import RequestError, StartupError
from gen3d.images import decode_image, image_digest
from gen3d.request_schema import ParsedRequest, RawRequest, embedding_dtype, parse_request, require_image
from gen3d.sam3_builder import LoadedSam3, load_sam3
from gen3d.sam3_features import ImageFeatures, encode_images
from gen3d.storage import DEFAULT_OUTPUT_PREFIX, S3Location, S3Store, output_key, output_prefix

log = logging.getLogger(__name__)

TASKS = ("get_embedding",)
OTHER_MODELS_TASKS = {"generate_3d": "sam3d"}
MetricSink = Callable[[str, float, str], None]


@dataclass
class Reply:
    """One answer: HTTP status, body (JSON-able dict or bytes) and content type."""

    status: int
    body: dict | bytes
    content_type: str = "application/json"


@dataclass
class Job:
    """One request on its way through a batch."""

    raw: RawRequest
    started: float = field(default_factory=time.perf_counter)
    request: ParsedRequest | None = None
    image: Image.Image | None = None
    digest: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    reply: Reply | None = None

    @property
    def task(self) -> str | None:
        return self.request.task if self.request else None

    def fail(self, err: RequestError) -> None:
        self.reply = Reply(err.status, out.failure(self.task, err))


def server_error(task: str | None, stage: str, err: Exception) -> Reply:
    """A 502 (storage) or 500 answer for an unexpected failure of one request, logged with its traceback."""
    from botocore.exceptions import BotoCoreError, ClientError

    log.error("%s stage of a %s request failed", stage, task, exc_info=err)
    status = 502 if isinstance(err, (BotoCoreError, ClientError)) else 500
    rerr = RequestError(stage, f"{err.__class__.__name__}: {err}", status=status)
    return Reply(status, out.failure(task, rerr))


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


class Sam3Service:
    """Loaded SAM 3 plus storage; ``handle`` answers one TorchServe batch."""

    def __init__(self, loaded: LoadedSam3, store: S3Store, prefix_template: str, metric: MetricSink | None = None):
        self.loaded = loaded
        self.store = store
        self.prefix_template = prefix_template
        self.metric = metric or (lambda name, value, unit: None)
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sam3-io")

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink | None = None
    ):
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        model_dir = Path(model_dir)
        for key in ("preset", "checkpoint"):
            if not config.get(key):
                raise StartupError(f"model-config.yaml in {model_dir} lacks handler.{key}")
        bpe = model_dir / BPE_VOCAB_NAME
        if not bpe.is_file():
            raise StartupError(f"BPE vocabulary not found at {bpe} (looked for {BPE_VOCAB_NAME} in the archive)")
        loaded = load_sam3(config["preset"], model_dir / config["checkpoint"], str(bpe), device)
        template = os.environ.get("GEN3D_OUTPUT_PREFIX") or config.get("output_prefix") or DEFAULT_OUTPUT_PREFIX
        return cls(loaded, S3Store(), template, metric)

    # -- decode ---------------------------------------------------------------------------------------
    def _decode(self, job: Job) -> None:
        started = time.perf_counter()
        try:
            job.request = parse_request(job.raw, TASKS)
            task = job.request.task
            if task in OTHER_MODELS_TASKS:
                raise RequestError("task", f"task {task} is served by model {OTHER_MODELS_TASKS[task]}, not sam3")
            if task not in TASKS:
                raise RequestError("task", f"unknown task {task!r}; model sam3 serves {list(TASKS)}")
            embedding_dtype(job.request)
            if job.request.came_by_s3:
                self._prefix(job.request)
            source = require_image(job.request)
            data = source.inline if source.s3 is None else self.store.get_bytes(source.s3, source.field)
            job.image = decode_image(data, source.field)
            job.digest = image_digest(job.image)
        except RequestError as err:
            job.fail(err)
        except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
            job.reply = server_error(job.task, "image", err)
        job.timings_ms["decode"] = _ms(started)

    def _prefix(self, req: ParsedRequest) -> str:
        for name in ("user_id", "session_id"):
            if req.get(name) is None:
                raise RequestError(name, "required when the image comes from S3 (it names the output prefix)")
        return output_prefix(self.prefix_template, req.get("user_id"), req.get("session_id"))

    # -- predict --------------------------------------------------------------------------------------
    def _predict(self, jobs: list[Job]) -> dict[str, ImageFeatures]:
        distinct: dict[str, Image.Image] = {}
        for job in jobs:
            distinct.setdefault(job.digest, job.image)
        if not distinct:
            return {}
        started = time.perf_counter()
        features = encode_images(self.loaded, list(distinct.values()))
        elapsed = _ms(started)
        self.metric("EncoderPasses", 1, "count")
        self.metric("EncodedImages", len(distinct), "count")
        log.info("encoded %d image(s) for %d request(s) in %.0f ms", len(distinct), len(jobs), elapsed)
        for job in jobs:
            job.timings_ms["encode"] = elapsed
        return dict(zip(distinct, features, strict=True))

    # -- encode ---------------------------------------------------------------------------------------
    def embedding_id(self, digest: str) -> str:
        """Identifies an image's embedding under this model: hash of image content and model id."""
        import hashlib

        return hashlib.sha256(f"{self.loaded.model_id}|{digest}".encode()).hexdigest()[:32]

    def _encode_embedding(self, job: Job, features: ImageFeatures, batch_size: int) -> None:
        started = time.perf_counter()
        req = job.request
        dtype = embedding_dtype(req)
        emb_id = self.embedding_id(job.digest)
        h, w = features.original_size
        meta = {
            "embedding_id": emb_id,
            "model_id": self.loaded.model_id,
            "preset": self.loaded.preset.name,
            "checkpoint_sha256": self.loaded.checkpoint_sha256,
            "resolution": self.loaded.preset.resolution,
            "original_height": h,
            "original_width": w,
        }
        data = out.embedding_safetensors(features.interactive, dtype, meta)
        fields = {
            "embedding_id": emb_id,
            "model_id": self.loaded.model_id,
            "embedding_size_mb": out.size_mb(data),
            "dtype": dtype,
            "tensors": {k: list(v.shape) for k, v in features.interactive.items()},
            "original_size": [h, w],
            "resolution": self.loaded.preset.resolution,
            "batch_size": batch_size,
        }
        for name in ("session_id", "user_id"):
            if req.get(name) is not None:
                fields[name] = req.get(name)
        if req.came_by_s3:
            bucket = req.get("output_bucket") or req.image.s3.bucket
            key = output_key(self._prefix(req), f"embeddings/{emb_id}.safetensors")
            self.store.put_bytes(
                S3Location(bucket, key), data, "application/x-safetensors", {"model-id": meta["model_id"]}
            )
            fields.update(output_s3_key=key, output_bucket=bucket)
        elif req.binary_response:
            job.reply = Reply(200, data, "application/x-safetensors")
            return
        else:
            fields["embedding_base64"] = base64.b64encode(data).decode()
        job.timings_ms["write"] = _ms(started)
        job.timings_ms["total"] = _ms(job.started)
        job.reply = Reply(200, out.success(req.task, **fields, timings_ms=job.timings_ms))

    # -- batch ----------------------------------------------------------------------------------------
    def handle(self, raws: list[RawRequest]) -> list[Reply]:
        """Answers every request of a batch; one request's error never affects the others."""
        jobs = [Job(raw) for raw in raws]
        list(self._io.map(self._decode, jobs))
        ready = [job for job in jobs if job.reply is None]
        features = self._predict(ready)
        self.metric("Batches", 1, "count")
        self.metric("BatchRequests", len(jobs), "count")

        def encode(job: Job) -> None:
            try:
                self._encode_embedding(job, features[job.digest], len(ready))
            except RequestError as err:
                job.fail(err)
            except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
                job.reply = server_error(job.task, "output", err)

        list(self._io.map(encode, ready))
        return [job.reply for job in jobs]
