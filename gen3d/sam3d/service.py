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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gen3d.errors import ServingError
from gen3d.models import SAM3D
from gen3d.sam3d.loading import LoadedSam3d, load_sam3d
from gen3d.sam3d.outputs import CONTENT_TYPES, FILE_NAMES, encode_generation
from gen3d.sam3d.request import decode_mask, generate_options, generate_request, mask_source, scene_mask_sources
from gen3d.sam3d.scene import PlacedObject, SceneLimits, scene_glb, scene_limits, scene_ply
from gen3d.sam3d.types import GenerateOptions, Generation
from gen3d.serving.images import decode_image
from gen3d.serving.replies import Reply
from gen3d.serving.request_log import in_request
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
    scene_masks: list[np.ndarray] | None = None  # a request with ``masks``: one scene of several objects
    object_files: bool = True  # a scene's answer carries each object's files too
    objects: list[SceneObject] = field(default_factory=list)


@dataclass
class SceneObject:
    """One object of a scene request once it ran: its generation, or the error answer it got alone."""

    index: int
    seed: int
    generate_ms: float
    generation: Generation | None = None
    error: dict | None = None


class Sam3dService(ModelService[Sam3dJob]):
    """Loaded SAM 3D Objects plus storage (TorchServe batchSize 1)."""

    spec = SAM3D
    job_type = Sam3dJob
    stage_names = ("decode", "generate", "encode")

    def __init__(
        self,
        loaded: LoadedSam3d,
        store: S3Store,
        prefix_template: str,
        metric: MetricSink = no_metrics,
        limits: SceneLimits | None = None,
    ):
        super().__init__(store, prefix_template, metric, io_threads=4)
        self.loaded = loaded
        self._scene_limits = limits
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
        loaded = load_sam3d(model_dir, config, device)
        limits = scene_limits(config, loaded.preset, loaded.generator.device)
        return cls(loaded, store, prefix_template(config), metric, limits)

    @property
    def scene_limits(self) -> SceneLimits:
        """The archive's (``from_model_dir``), else the preset's defaults for this device."""
        if self._scene_limits is None:
            self._scene_limits = scene_limits({}, self.loaded.preset, self.loaded.generator.device)
        return self._scene_limits

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
        if model.masks is not None:  # a scene: every mask is checked before any is fetched or the image read
            self.scene_limits.check(len(model.masks))
            sources = scene_mask_sources(model)
        else:
            sources = [mask_source(req, model)]
        data = self.fetch(source.field, source.s3, source.inline)
        picture = decode_image(data, source.field)
        size = (picture.height, picture.width)
        masks = []
        for mask in sources:
            mask_data = data if mask.field == "body" else None
            if mask.s3 is not None:
                mask_data = self.fetch(mask.label, mask.s3)
            masks.append(decode_mask(mask, mask_data, size))
        if model.masks is not None:
            job.scene_masks, job.object_files = masks, model.object_files
        else:
            job.mask = masks[0]
        job.image = np.asarray(picture, dtype=np.uint8)

    # -- run ------------------------------------------------------------------------------------------
    def run(self, jobs: list[Sam3dJob]) -> None:
        # batchSize is 1 (build_archives refuses more): the base's "generate" time is this job's
        for job in jobs:
            if job.scene_masks is not None:
                self.run_scene(job)
                continue
            generator = self.loaded.generator
            job.generation = self.attempt(job, "generate", generator.generate, job.image, job.mask, job.options)
            if job.generation is not None:
                self.metric("Generations", 1)

    def run_scene(self, job: Sam3dJob) -> None:
        """Every object of a scene on one pointmap of the picture, object ``i`` seeded ``seed + i``; an object
        that fails gets its own error and the others go on. Each object is logged as it finishes."""
        generator, count = self.loaded.generator, len(job.scene_masks)
        started = time.perf_counter()
        pointmap = self.attempt(job, "pointmap", generator.picture_pointmap, job.image)
        if pointmap is None:
            return
        job.timings_ms["pointmap"] = elapsed_ms(started)
        for index, mask in enumerate(job.scene_masks):
            options = replace(job.options, seed=job.options.seed + index)
            started = time.perf_counter()
            with in_request(job.raw.request_id):
                try:
                    generation = generator.generate(job.image, mask, options, pointmap)
                    error = None
                except Exception as err:  # noqa: BLE001 - this object's error; the scene's others go on
                    generation = None
                    error = {**self.reply_for(job, "generate", err).body["error"], "field": f"masks[{index}]"}
                    self.release_memory()
                result = SceneObject(index, options.seed, elapsed_ms(started), generation, error)
                job.objects.append(result)
                log.info(
                    "object %d/%d %s in %.0f ms", index + 1, count, "failed" if error else "done", result.generate_ms
                )
            if generation is not None:
                self.metric("Generations", 1)
        failed = [obj for obj in job.objects if obj.error is not None]
        if len(failed) == count:  # nothing to answer but errors: the first one is the answer
            first = failed[0].error
            error = {**first, "message": f"every object failed; masks[0]: {first['message']}"}
            job.reply = Reply(first["code"], {"status": "error", "task": job.task, "error": error})

    def after_batch(self, jobs: list[Sam3dJob]) -> None:
        """Returns the batch's GPU memory to the driver's pool: the next request starts from the same state. Only
        after a generation ran: a full collection walks the worker's ~800k objects (over a second on a busy CPU),
        which a stream of refused requests must not cost the worker each time."""
        generated = any(job.image is not None for job in jobs)  # decoded, so handed to the generator
        for job in jobs:
            job.generation = job.image = job.mask = job.scene_masks = None
            job.objects = []
        if generated:
            self.release_memory()

    def release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- encode ---------------------------------------------------------------------------------------
    def meta(self, generation_id: str, seed: int) -> dict[str, object]:
        loaded = self.loaded
        return {
            "generation_id": generation_id,
            "model_id": loaded.model_id,
            "preset": loaded.preset.name,
            "demo": loaded.preset.demo,
            "seed": seed,
        }

    def encode(self, job: Sam3dJob) -> dict[str, object]:
        if job.scene_masks is not None:
            return self.encode_scene(job)
        opts, gen = job.options, job.generation
        generation_id = uuid.uuid4().hex
        meta = self.meta(generation_id, opts.seed)
        encoded = encode_generation(gen, meta)
        fields: dict[str, object] = {
            **meta,
            "pose": encoded.pose,
            **self.option_fields(opts),
            **gen.info,
            **encoded.summary,
        }
        files = {FILE_NAMES[name]: data for name, data in encoded.files.items()}
        delivered = self.deliver(job, generation_id, files, last=[FILE_NAMES["pose"]])
        fields.update(outputs_of(delivered, {name: FILE_NAMES[name] for name in encoded.files}, job))
        job.timings_ms["stages"] = gen.stages_ms
        return fields

    @staticmethod
    def option_fields(opts: GenerateOptions) -> dict[str, object]:
        return {
            "decode_formats": list(opts.decode_formats),
            "mesh_postprocess": opts.mesh_postprocess,
            "texture_baking": opts.texture_baking,
        }

    def encode_scene(self, job: Sam3dJob) -> dict[str, object]:
        """Each object's files under ``objects/<i>/``, then ``scene.glb`` and ``scene.ply`` beside them."""
        opts = job.options
        generation_id = uuid.uuid4().hex
        files: dict[str, bytes] = {}
        entries: list[dict[str, object]] = []
        placed: list[PlacedObject] = []
        names: dict[int, dict[str, str]] = {}
        for obj in job.objects:
            timings: dict[str, object] = {"generate": obj.generate_ms}
            entry: dict[str, object] = {"index": obj.index, "seed": obj.seed}
            if obj.error is not None:
                entries.append({**entry, "status": "error", "error": obj.error, "timings_ms": timings})
                continue
            gen = obj.generation
            encoded = encode_generation(gen, {**self.meta(generation_id, obj.seed), "object_index": obj.index})
            if job.object_files:
                names[obj.index] = {name: f"objects/{obj.index}/{FILE_NAMES[name]}" for name in encoded.files}
                files.update({names[obj.index][name]: data for name, data in encoded.files.items()})
            timings["stages"] = gen.stages_ms
            entries.append({**entry, "status": "success", "pose": encoded.pose, **gen.info, **encoded.summary})
            entries[-1]["timings_ms"] = timings
            kernel = float(getattr(gen.gaussian, "mininum_kernel_size", 0.0)) if gen.gaussian is not None else 0.0
            placed.append(PlacedObject(obj.index, encoded.pose, gen.glb, encoded.files.get("ply"), kernel))
        scene_names = {}
        if any(obj.mesh is not None for obj in placed):
            scene_names["scene_glb"] = "scene.glb"
            files["scene.glb"] = scene_glb(placed)
        if any(obj.ply is not None for obj in placed):
            scene_names["scene_ply"] = "scene.ply"
            files["scene.ply"] = scene_ply(placed)
        poses = [paths["pose"] for paths in names.values()]
        delivered = self.deliver(job, generation_id, files, last=poses)
        for entry in entries:
            if entry["index"] in names:
                entry.update(outputs_of(delivered, names[entry["index"]], job))
        fields = {**self.meta(generation_id, opts.seed), **self.option_fields(opts), "object_files": job.object_files}
        fields["objects"] = entries
        fields.update(outputs_of(delivered, scene_names, job))
        job.timings_ms["objects"] = [entry["timings_ms"] for entry in entries]
        return fields

    def deliver(self, job: Sam3dJob, generation_id: str, files: dict[str, bytes], last: list[str]) -> dict:
        """Writes ``files`` (paths under the generation's folder) to S3, those of ``last`` (the manifests) after the
        others, and returns their keys; or returns them as base64 when the request writes no S3 and they fit the
        inline limit (413 otherwise)."""
        req, loaded = job.request, self.loaded
        if not req.writes_s3:
            return {"base64": self.inline_outputs(files)}
        started = time.perf_counter()
        s3_meta = {"model-id": loaded.model_id, "preset": loaded.preset.name}
        try:  # pose.json, the manifest, last: only a complete generation has one
            locations = self.write_outputs(
                req, f"3d/{generation_id}", files, lambda path: CONTENT_TYPES[Path(path).suffix], s3_meta, tuple(last)
            )
        except ServingError as err:
            raise type(err)(
                err.field,
                f"{err.message}; generation {generation_id} is incomplete: its pose.json (the manifest, written "
                "last) was not written, and any other file under its folder is a leftover",
            ) from err
        job.timings_ms["write"] = elapsed_ms(started)
        bucket = next(iter(locations.values())).bucket
        return {"keys": {path: loc.key for path, loc in locations.items()}, "bucket": bucket}


def outputs_of(delivered: dict, names: dict[str, str], job: Sam3dJob) -> dict[str, object]:
    """The answer's ``outputs`` (S3 keys, with ``output_bucket``) or ``outputs_base64`` for the files ``names``
    maps (answer name -> path under the generation's folder)."""
    if "keys" in delivered:
        return {"outputs": {name: delivered["keys"][path] for name, path in names.items()},
                "output_bucket": delivered["bucket"]}  # fmt: skip
    return {"outputs_base64": {name: delivered["base64"][path] for name, path in names.items()}}
