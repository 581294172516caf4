"""The ``sam3d`` model's work, independent of TorchServe: load once, then answer generate_3d requests.

``decode`` checks the options and fetches the image and the mask; ``run`` generates each object with the
preset's pipeline (one at a time; a CUDA out-of-memory is answered 507 by the service base); ``encode`` writes
PLY + GLB + pose JSON to S3 under the request's prefix, or returns them inline when small. GPU memory is
released after every batch, so the next request starts from the same state.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen3d.errors import ServingError
from gen3d.models import SAM3D
from gen3d.sam3d.loading import LoadedSam3d, load_sam3d
from gen3d.sam3d.outputs import CONTENT_TYPES, FILE_NAMES, encode_generation
from gen3d.sam3d.request import decode_mask, generate_options, generate_request, mask_source
from gen3d.sam3d.types import GenerateOptions, Generation
from gen3d.serving.images import decode_image
from gen3d.serving.schema import require_image
from gen3d.serving.service import Job, MetricSink, ModelService, elapsed_ms, no_metrics
from gen3d.serving.storage import S3Store, prefix_template

log = logging.getLogger(__name__)


@dataclass
class Sam3dJob(Job):
    """One generate_3d request on its way through a batch."""

    options: GenerateOptions | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    generation: Generation | None = None


class Sam3dService(ModelService[Sam3dJob]):
    """Loaded SAM 3D Objects plus storage (TorchServe batchSize 1)."""

    spec = SAM3D
    job_type = Sam3dJob
    stage_names = ("decode", "generate", "encode")

    def __init__(self, loaded: LoadedSam3d, store: S3Store, prefix_template: str, metric: MetricSink = no_metrics):
        super().__init__(store, prefix_template, metric, io_threads=4)
        self.loaded = loaded
        self.oom_advice = (
            f"preset {loaded.preset.name} needs >= {loaded.preset.min_gpu_memory_gib} GiB of GPU memory; retry "
            "later or with fewer steps / decode_formats ['gaussian']"
        )

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink = no_metrics
    ) -> Sam3dService:
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        store = S3Store.from_env()  # first: an unknown bucket owner stops start-up before the weights load
        return cls(load_sam3d(model_dir, config, device), store, prefix_template(config), metric)

    @property
    def preset(self):
        return self.loaded.preset

    @property
    def device(self) -> torch.device:
        return self.loaded.generator.device

    def describe(self) -> dict[str, object]:
        return self.loaded.describe()

    def answer_fields(self) -> dict[str, object]:
        # the preset (a demo or the real model) is named in every answer, errors included
        return {"preset": self.preset.name}

    # -- decode ---------------------------------------------------------------------------------------
    def decode(self, job: Sam3dJob) -> None:
        req = job.request
        model = generate_request(req)
        job.options = generate_options(model, self.loaded.generator.renderers)
        if req.writes_s3:
            self.output_prefix(req)
        source = require_image(req)
        masks = mask_source(req, model)
        data = self.fetch(source.field, source.s3, source.inline)
        picture = decode_image(data, source.field)
        mask_data = data if masks.field == "body" else None
        if masks.s3 is not None:
            mask_data = self.fetch(masks.field, masks.s3)
        job.mask = decode_mask(masks, mask_data, (picture.height, picture.width))
        job.image = np.asarray(picture, dtype=np.uint8)

    # -- run ------------------------------------------------------------------------------------------
    def run(self, jobs: list[Sam3dJob]) -> None:
        # batchSize is 1 (build_archives refuses more): the base's "generate" time is this job's
        for job in jobs:
            generator = self.loaded.generator
            job.generation = self.attempt(job, "generate", generator.generate, job.image, job.mask, job.options)
            if job.generation is not None:
                self.metric("Generations", 1)

    def after_batch(self, jobs: list[Sam3dJob]) -> None:
        """Returns the batch's GPU memory to the driver's pool: the next request starts from the same state. Only
        after a generation ran: a full collection walks the worker's ~800k objects (over a second on a busy CPU),
        which a stream of refused requests must not cost the worker each time."""
        generated = any(job.image is not None for job in jobs)  # decoded, so handed to the generator
        for job in jobs:
            job.generation = job.image = job.mask = None
        if not generated:
            return
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- encode ---------------------------------------------------------------------------------------
    def encode(self, job: Sam3dJob) -> dict[str, object]:
        req, loaded, opts, gen = job.request, self.loaded, job.options, job.generation
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
        if req.writes_s3:
            started = time.perf_counter()
            locations = {
                name: self.output_location(req, f"3d/{generation_id}/{FILE_NAMES[name]}") for name in encoded.files
            }
            s3_meta = {"model-id": loaded.model_id, "preset": loaded.preset.name}

            def put(name: str) -> None:
                self.store.put_bytes(locations[name], encoded.files[name], CONTENT_TYPES[name], s3_meta)

            try:  # pose.json, the manifest, last: only a complete generation has one
                list(self.io.map(put, [name for name in encoded.files if name != "pose"]))
                put("pose")
            except ServingError as err:
                raise type(err)(
                    err.field,
                    f"{err.message}; generation {generation_id} is incomplete: its pose.json (the manifest, written "
                    "last) was not written, and any other file under its folder is a leftover",
                ) from err
            bucket = next(iter(locations.values())).bucket
            fields.update(outputs={name: loc.key for name, loc in locations.items()}, output_bucket=bucket)
            job.timings_ms["write"] = elapsed_ms(started)
        else:
            fields["outputs_base64"] = self.inline_outputs(encoded.files)
        job.timings_ms["stages"] = gen.stages_ms
        return fields
