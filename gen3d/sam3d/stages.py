"""The pipeline's stages: which upstream methods are timed, their timing (and peak GPU memory) per request, and
what a run reports besides (the production pipeline and the CPU demo both use these)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from gen3d.sam3d.types import GenerateOptions

# InferencePipelinePointMap methods timed as stages (the official ``run`` calls them in this order).
STAGES = (
    ("compute_pointmap", "pointmap"),
    ("preprocess_image", "preprocess"),
    ("sample_sparse_structure", "sparse_structure"),
    ("pose_decoder", "pose"),
    ("sample_slat", "slat"),
    ("decode_slat", "decode"),
    ("postprocess_slat_output", "glb"),
)


class StageRecorder:
    """Wall time (ms) and, on CUDA, peak allocated GPU memory (MiB) of named pipeline stages.

    :meth:`wrap` replaces an object's method by a timed one, so the official ``run`` is measured without
    being re-composed; :meth:`reset` starts a new request.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.timings_ms: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    def reset(self) -> None:
        self.timings_ms, self.peak_mib = {}, {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize(self.device)
                peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                self.peak_mib[name] = round(max(self.peak_mib.get(name, 0.0), peak), 1)
            elapsed = (time.perf_counter() - started) * 1000
            self.timings_ms[name] = round(self.timings_ms.get(name, 0.0) + elapsed, 1)

    def wrap(self, obj: object, attribute: str, name: str) -> None:
        """Times every call of ``obj.attribute`` as stage ``name`` (calls add up)."""
        original: Callable = getattr(obj, attribute)

        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(obj, attribute, timed)


@contextmanager
def inference_steps_restored(models) -> Iterator[None]:
    """Upstream's ``sample_sparse_structure`` / ``sample_slat`` set a request's step counts on the generators and
    restore them only when sampling succeeds: after a failed request, later ones would silently run with its
    steps. This puts the generators' own counts back whatever happens (upstream stays unpatched)."""
    generators = [models[name] for name in ("ss_generator", "slat_generator")]
    saved = [generator.inference_steps for generator in generators]
    try:
        yield
    finally:
        for generator, steps in zip(generators, saved, strict=True):
            generator.inference_steps = steps


def run_info(pipeline, options: GenerateOptions, voxels: int, mesh) -> dict[str, Any]:
    """``Generation.info`` of a run: its voxels, the flow steps it took (the request's, else the pipeline's) and
    whether the mesh was extracted (``None`` when no mesh was decoded)."""
    return {
        "voxels": voxels,
        "steps": {
            "sparse_structure": options.ss_steps or pipeline.ss_inference_steps,
            "slat": options.slat_steps or pipeline.slat_inference_steps,
        },
        "mesh_extracted": None if mesh is None else bool(mesh[0].success),
    }
