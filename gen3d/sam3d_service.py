"""The ``sam3d`` model's work, independent of TorchServe: load once, then answer generate_3d requests.

Each request goes through ``decode`` (envelope, options, image and mask; a bad one gets its own error),
``generate`` (the preset's pipeline; GPU memory released afterwards, a CUDA out-of-memory answered 507) and
``encode`` (PLY + GLB + pose JSON to S3 under the request's prefix, or inline when small). Errors have the
envelope and statuses of the sam3 service (:mod:`gen3d.replies`, :func:`gen3d.output_encoding.failure`).
"""

from __future__ import annotations

import base64
import gc
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen3d import output_encoding as out
from gen3d.errors import RequestError
from gen3d.images import decode_image
from gen3d.replies import Job, MetricSink, Reply, elapsed_ms, server_error
from gen3d.request_schema import ParsedRequest, RawRequest, parse_request, require_image
from gen3d.sam3d_builder import GenerateOptions, Generation, LoadedSam3d, load_sam3d
from gen3d.sam3d_outputs import CONTENT_TYPES, FILE_NAMES, encode_generation
from gen3d.sam3d_request import decode_mask, generate_options, mask_source
from gen3d.storage import S3Location, S3Store, output_key, output_prefix, prefix_template

log = logging.getLogger(__name__)

TASKS = ("generate_3d",)
OTHER_MODELS_TASKS = {"get_embedding": "sam3", "segment": "sam3"}
INLINE_LIMIT_BYTES = 16 * 1024 * 1024  # above this, outputs must go to S3 (output_bucket, user_id, session_id)


@dataclass
class Sam3dJob(Job):
    """One generate_3d request on its way through a batch."""

    options: GenerateOptions | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory, or the CPU allocator failing (the demo preset)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(err)
    )


class Sam3dService:
    """Loaded SAM 3D Objects plus storage; ``handle`` answers one TorchServe batch (batchSize 1)."""

    def __init__(self, loaded: LoadedSam3d, store: S3Store, prefix_template: str, metric: MetricSink | None = None):
        self.loaded = loaded
        self.store = store
        self.prefix_template = prefix_template
        self.metric = metric or (lambda name, value, unit: None)
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sam3d-io")

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink | None = None
    ):
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        loaded = load_sam3d(model_dir, config, device)
        template = prefix_template(config)
        return cls(loaded, S3Store(), template, metric)

    @property
    def preset(self):
        return self.loaded.preset

    # -- decode ---------------------------------------------------------------------------------------
    def _decode(self, job: Sam3dJob) -> None:
        started = time.perf_counter()
        try:
            req = job.request = parse_request(job.raw, TASKS)
            if req.image is not None and req.image.field == "body":
                req.task = "generate_3d"  # a raw image body is this model's one task
            if req.task in OTHER_MODELS_TASKS:
                model = OTHER_MODELS_TASKS[req.task]
                raise RequestError("task", f"task {req.task} is served by model {model}, not sam3d")
            if req.task not in TASKS:
                raise RequestError("task", f"unknown task {req.task!r}; model sam3d serves {list(TASKS)}")
            job.options = generate_options(req, self.preset)
            if self._writes_s3(req):
                self._prefix(req)
            source = require_image(req)
            masks = mask_source(req)
            data = source.inline if source.s3 is None else self.store.get_bytes(source.s3, source.field)
            picture = decode_image(data, source.field)
            mask_data = data if masks.field == "body" else None
            if masks.s3 is not None:
                mask_data = self.store.get_bytes(masks.s3, masks.field)
            job.mask = decode_mask(masks, mask_data, (picture.height, picture.width))
            job.image = np.asarray(picture, dtype=np.uint8)
        except RequestError as err:
            job.fail(err)
        except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
            job.reply = server_error(job.task, "input", err)
        job.timings_ms["decode"] = elapsed_ms(started)

    @staticmethod
    def _writes_s3(req: ParsedRequest) -> bool:
        return req.came_by_s3 or req.get("output_bucket") is not None

    def _prefix(self, req: ParsedRequest) -> str:
        return output_prefix(self.prefix_template, req.get("user_id"), req.get("session_id"))

    # -- generate -------------------------------------------------------------------------------------
    def _generate(self, job: Sam3dJob) -> Generation | None:
        started = time.perf_counter()
        try:
            return self.loaded.generator.generate(job.image, job.mask, job.options)
        except RequestError as err:
            job.fail(err)
        except Exception as err:  # noqa: BLE001 - answered as this request's 5xx/507, never swallowed
            if not is_out_of_memory(err):
                job.reply = server_error(job.task, "generate", err)
                return None
            device = self.loaded.generator.device
            log.error("out of memory on %s during generate_3d: %s", device, err)
            self.metric("OutOfMemory", 1, "count")
            message = (
                f"out of memory on {device} while generating (preset {self.preset.name} needs >= "
                f"{self.preset.min_gpu_memory_gib} GiB of GPU memory); retry later or with fewer steps / "
                "decode_formats ['gaussian']"
            )
            job.fail(RequestError("generate", message, status=507))
        finally:
            job.timings_ms["generate"] = elapsed_ms(started)
        return None

    def release_memory(self) -> None:
        """Returns the request's GPU memory to the driver's pool: the next request starts from the same state."""
        gc.collect()
        if self.loaded.generator.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- encode ---------------------------------------------------------------------------------------
    def _encode(self, job: Sam3dJob, gen: Generation) -> None:
        started = time.perf_counter()
        req, loaded, opts = job.request, self.loaded, job.options
        generation_id = uuid.uuid4().hex
        meta = {
            "generation_id": generation_id,
            "model_id": loaded.model_id,
            "preset": loaded.preset.name,
            "demo": loaded.preset.demo,
            "seed": opts.seed,
        }
        encoded = encode_generation(gen, meta)
        fields: dict[str, object] = {
            **meta,
            "pose": encoded.pose,
            "decode_formats": list(opts.decode_formats),
            "mesh_postprocess": opts.mesh_postprocess,
            "texture_baking": opts.texture_baking,
            **gen.info,
            **encoded.summary,
        }
        for name in ("session_id", "user_id"):
            if req.get(name) is not None:
                fields[name] = req.get(name)
        job.timings_ms["encode"] = elapsed_ms(started)
        if self._writes_s3(req):
            write_started = time.perf_counter()
            bucket = req.get("output_bucket") or req.image.s3.bucket
            prefix = self._prefix(req)
            keys = {name: output_key(prefix, f"3d/{generation_id}/{FILE_NAMES[name]}") for name in encoded.files}
            s3_meta = {"model-id": loaded.model_id, "preset": loaded.preset.name}

            def put(name: str) -> None:
                self.store.put_bytes(S3Location(bucket, keys[name]), encoded.files[name], CONTENT_TYPES[name], s3_meta)

            list(self._io.map(put, encoded.files))
            fields.update(outputs=keys, output_bucket=bucket)
            job.timings_ms["write"] = elapsed_ms(write_started)
        else:
            total = sum(len(data) for data in encoded.files.values())
            if total > INLINE_LIMIT_BYTES:
                raise RequestError(
                    "output_bucket",
                    f"outputs are {total / 1e6:.1f} MB, above the {INLINE_LIMIT_BYTES / 1e6:.1f} MB inline limit; "
                    "give output_bucket, user_id and session_id to have them written to S3",
                    status=413,
                )
            fields["outputs_base64"] = {name: base64.b64encode(data).decode() for name, data in encoded.files.items()}
        job.timings_ms["stages"] = gen.stages_ms
        job.timings_ms["total"] = elapsed_ms(job.started)
        job.reply = Reply(200, out.success(req.task, **fields, timings_ms=job.timings_ms))

    # -- batch ----------------------------------------------------------------------------------------
    def handle(self, raws: list[RawRequest]) -> list[Reply]:
        """Answers every request of a batch in turn; one request's error never affects the others."""
        self.metric("Batches", 1, "count")
        self.metric("BatchRequests", len(raws), "count")
        jobs = [Sam3dJob(raw) for raw in raws]
        for job in jobs:
            self._decode(job)
            if job.reply is not None:
                continue
            gen = self._generate(job)
            try:
                if gen is not None:
                    self._encode(job, gen)
                    self.metric("Generations", 1, "count")
            except RequestError as err:
                job.fail(err)
            except Exception as err:  # noqa: BLE001 - answered as this request's 5xx, never swallowed
                job.reply = server_error(job.task, "output", err)
            finally:
                del gen
                job.image = job.mask = None
                self.release_memory()
            log.info(
                "generate_3d %s in %.0f ms", job.reply.status, job.timings_ms.get("total", elapsed_ms(job.started))
            )
        for job in jobs:  # the preset (a demo or the real model) is named in every answer, errors included
            if isinstance(job.reply.body, dict):
                job.reply.body.setdefault("preset", self.preset.name)
        return [job.reply for job in jobs]
