"""The ``sam3d_body`` model's work, independent of TorchServe: load once, then answer generate_body requests.

``decode`` checks the request, fetches the picture and any S3 masks and turns the people into boxes and masks of
the upright picture; ``run`` runs upstream's ``SAM3DBodyEstimator.process_one_image`` (all people of a request in
one call); ``encode`` answers each person's numbers and writes their GLB and params JSON, plus one GLB with
everyone, to S3 under the request's prefix, or returns them inline when small.
"""

from __future__ import annotations

import gc
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen3d.models import SAM3D_BODY
from gen3d.sam3d_body import compat
from gen3d.sam3d_body.loading import LoadedBody, load_body
from gen3d.sam3d_body.outputs import CONTENT_TYPES, encode_person, people_glb
from gen3d.sam3d_body.request import People, body_request, decode_masks, mask_locations, people_of
from gen3d.serving.images import decode_image
from gen3d.serving.schema import require_image
from gen3d.serving.service import Job, MetricSink, ModelService, elapsed_ms, no_metrics
from gen3d.serving.storage import S3Store, prefix_template


@dataclass
class BodyJob(Job):
    """One generate_body request on its way through a batch."""

    image: np.ndarray | None = None
    people: People | None = None
    inference_type: str = "full"
    outputs: list[dict] | None = None


class BodyService(ModelService[BodyJob]):
    """Loaded SAM 3D Body plus storage (TorchServe batchSize 1)."""

    spec = SAM3D_BODY
    job_type = BodyJob
    stage_names = ("decode", "estimate", "encode")

    def __init__(self, loaded: LoadedBody, store: S3Store, prefix_template: str, metric: MetricSink = no_metrics):
        super().__init__(store, prefix_template, metric, io_threads=4)
        self.loaded = loaded
        self.oom_advice = (
            f"preset {loaded.preset.name} needs >= {loaded.preset.min_gpu_memory_gib} GiB; send fewer people"
        )

    @classmethod
    def from_model_dir(
        cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink = no_metrics
    ) -> BodyService:
        """Loads the model an archive describes: ``config`` is model-config.yaml's ``handler`` section."""
        store = S3Store.from_env()  # first: an unknown bucket owner stops start-up before the weights load
        return cls(load_body(model_dir, config, device), store, prefix_template(config), metric)

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def describe(self) -> dict[str, object]:
        return self.loaded.describe()

    def answer_fields(self) -> dict[str, object]:
        return {"preset": self.loaded.preset.name}

    def decode(self, job: BodyJob) -> None:
        req = job.request
        model = body_request(req)
        if req.writes_s3:
            self.output_prefix(req)
        source = require_image(req)
        picture = decode_image(self.fetch(source.field, source.s3, source.inline), source.field)
        size = (picture.height, picture.width)
        pngs = [self.fetch("masks", location) if location else None for location in mask_locations(model)]
        job.people = people_of(model, decode_masks(model, pngs, size), size)
        job.inference_type = model.inference_type
        job.image = np.asarray(picture, dtype=np.uint8)

    def run(self, jobs: list[BodyJob]) -> None:
        for job in jobs:
            job.outputs = self.attempt(job, "estimate", self.estimate, job)
            if job.outputs is not None:
                self.metric("People", len(job.outputs))

    def estimate(self, job: BodyJob) -> list[dict]:
        """Upstream's estimator over the job's people, its CUDA hard-codes sent to this worker's device."""
        people = job.people
        cam_int = None if people.cam_int is None else torch.from_numpy(people.cam_int)[None]
        with compat.on_device(self.device):
            return self.loaded.estimator.process_one_image(
                job.image, bboxes=people.boxes, masks=people.masks, cam_int=cam_int, inference_type=job.inference_type
            )

    def after_batch(self, jobs: list[BodyJob]) -> None:
        """Drops the batch's arrays; returns GPU memory to the driver's pool after an estimate."""
        estimated = any(job.outputs is not None for job in jobs)
        for job in jobs:
            job.image = job.people = job.outputs = None
        if estimated:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def encode(self, job: BodyJob) -> dict[str, object]:
        req, loaded = job.request, self.loaded
        generation_id = uuid.uuid4().hex
        meta = {"generation_id": generation_id, "model_id": loaded.model_id, "preset": loaded.preset.name}
        faces = loaded.estimator.faces
        people = [encode_person(i, out, faces, meta) for i, out in enumerate(job.outputs)]
        files = {f"person_{p.fields['index']}.{ext}": p.files[name] for p in people for name, ext in _EXT.items()}
        files["people.glb"] = people_glb(people)
        fields: dict[str, object] = {
            **meta,
            "demo": loaded.preset.demo,
            "inference_type": job.inference_type,
            "keypoint_names": list(loaded.keypoint_names),
            "people": [p.fields for p in people],
        }
        if req.writes_s3:
            started = time.perf_counter()
            s3_meta = {"model-id": loaded.model_id, "preset": loaded.preset.name}
            content_type = {name: CONTENT_TYPES["glb" if name.endswith(".glb") else "params"] for name in files}
            locations = self.write_outputs(req, f"body/{generation_id}", files, content_type.__getitem__, s3_meta)
            keys = {name: location.key for name, location in locations.items()}
            self._attach(fields, people, keys, "outputs")
            fields["output_bucket"] = locations["people.glb"].bucket
            job.timings_ms["write"] = elapsed_ms(started)
        else:
            self._attach(fields, people, self.inline_outputs(files), "outputs_base64")
        return fields

    @staticmethod
    def _attach(fields: dict, people: list, values: dict[str, str], key: str) -> None:
        """Each person's ``glb``/``params`` and the answer's ``people_glb`` under ``key`` (S3 keys or base64)."""
        for person in fields["people"]:
            person[key] = {name: values[f"person_{person['index']}.{ext}"] for name, ext in _EXT.items()}
        fields[key] = {"people_glb": values["people.glb"]}


_EXT = {"glb": "glb", "params": "json"}
