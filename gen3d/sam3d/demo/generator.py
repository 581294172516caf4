"""Running the demo preset: the ``InferencePipeline`` methods unchanged, on an instance whose ``__init__`` is
skipped (it loads CUDA checkpoints), with a pinhole plane pointmap standing in for MoGe."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gen3d.checks import check_keys
from gen3d.errors import OutOfResources, StartupError, Unprocessable
from gen3d.sam3d.demo import compat
from gen3d.sam3d.demo.models import COMPONENTS, MAX_VOXELS, PREPROCESS_SIZE, build_tiny_models
from gen3d.sam3d.presets import Sam3dPreset
from gen3d.sam3d.stages import STAGES, StageRecorder, inference_steps_restored, run_info
from gen3d.sam3d.types import GenerateOptions, Generation, merge_mask_to_rgba

log = logging.getLogger(__name__)


def plane_pointmap(height: int, width: int, depth: float = 2.0) -> torch.Tensor:
    """3xHxW points of a fronto-parallel plane seen by a pinhole camera (fx = fy = width, principal point at
    the centre) in the PyTorch3D camera frame (x left, y up, z forward): the demo's stand-in for MoGe."""
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    x = -(u - width / 2) / width * depth
    y = -(v - height / 2) / width * depth
    return torch.stack([x, y, torch.full_like(x, depth)]).float()


def preprocess(rgba: np.ndarray, preprocessor, pointmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The calls of ``InferencePipelinePointMap.preprocess_image``: alpha -> mask, then the preprocessor."""
    from sam3d_objects.data.dataset.tdfy.img_and_mask_transforms import get_mask

    rgba_t = torch.from_numpy(rgba.astype(np.float32) / 255).permute(2, 0, 1).contiguous()
    out = preprocessor._process_image_mask_pointmap_mess(rgba_t[:3], get_mask(rgba_t, None, "ALPHA_CHANNEL"), pointmap)
    keys = ["mask", "image", "rgb_image", "rgb_image_mask"]
    if pointmap is not None:
        keys += ["pointmap", "rgb_pointmap", "pointmap_scale", "pointmap_shift", "rgb_pointmap_scale"]
        keys += ["rgb_pointmap_shift"]
    return {k: out[k][None] for k in keys}


def preprocessors() -> tuple[object, object]:
    """(stage 1, stage 2) ``PreProcessor``s with the official transforms at the demo's input size."""
    from sam3d_objects.data.dataset.tdfy.img_and_mask_transforms import (
        ObjectCentricSSI,
        crop_around_mask_with_padding,
        rembg,
    )
    from sam3d_objects.data.dataset.tdfy.img_processing import pad_to_square_centered
    from sam3d_objects.data.dataset.tdfy.preprocessor import PreProcessor
    from torchvision.transforms import Compose, InterpolationMode, Resize

    image = Compose([partial(pad_to_square_centered), Resize(PREPROCESS_SIZE, InterpolationMode.BICUBIC)])
    nearest = Compose([partial(pad_to_square_centered), Resize(PREPROCESS_SIZE, InterpolationMode.NEAREST)])
    joint = [partial(crop_around_mask_with_padding, box_size_factor=1.0, padding_factor=0.1), rembg]
    ss = PreProcessor(
        img_transform=image,
        mask_transform=nearest,
        pointmap_transform=nearest,
        img_mask_pointmap_joint_transform=joint,
        normalize_pointmap=True,
        pointmap_normalizer=ObjectCentricSSI(),
    )
    slat = PreProcessor(img_transform=image, mask_transform=nearest, img_mask_joint_transform=joint)
    return ss, slat


def official_pipeline(models: dict[str, nn.Module], steps: tuple[int, int]):
    """An ``InferencePipeline`` with the attributes its ``__init__`` sets from pipeline.yaml, minus the CUDA
    checkpoint loading; ``override_*_generator_cfg_config`` run for real."""
    from sam3d_objects.pipeline.inference_pipeline import InferencePipeline
    from sam3d_objects.pipeline.inference_utils import SLAT_MEAN, SLAT_STD, get_pose_decoder

    pipe = object.__new__(InferencePipeline)
    pipe.device = torch.device("cpu")
    pipe.rendering_engine = "pytorch3d"
    pipe.dtype = pipe.shape_model_dtype = torch.float32
    pipe.decode_formats = ["gaussian", "mesh"]
    pipe.ss_condition_input_mapping = []  # the EmbedderFuser takes every input by keyword
    pipe.slat_condition_input_mapping = []
    pipe.downsample_ss_dist = 0
    pipe.ss_inference_steps, pipe.slat_inference_steps = steps
    pipe.ss_rescale_t = pipe.slat_rescale_t = 3
    pipe.ss_cfg_strength, pipe.ss_cfg_strength_pm, pipe.ss_cfg_interval = 7, 0.0, [0, 500]
    pipe.slat_cfg_strength, pipe.slat_cfg_interval = 5, [0, 500]
    pipe.pose_decoder = get_pose_decoder("ScaleShiftInvariant")
    pipe.slat_mean, pipe.slat_std = torch.as_tensor(SLAT_MEAN).clone(), torch.as_tensor(SLAT_STD).clone()
    pipe.condition_embedders = {k: models[k] for k in ("ss_condition_embedder", "slat_condition_embedder")}
    pipe.models = nn.ModuleDict({k: models[k] for k in COMPONENTS if "condition" not in k})
    pipe.override_ss_generator_cfg_config(
        models["ss_generator"], cfg_strength=7, inference_steps=steps[0], rescale_t=3, cfg_interval=[0, 500]
    )
    pipe.override_slat_generator_cfg_config(
        models["slat_generator"], cfg_strength=5, inference_steps=steps[1], rescale_t=3, cfg_interval=[0, 500]
    )
    return pipe


class TinyDemoGenerator:
    """Runs the demo preset, stage by stage in the order of ``InferencePipelinePointMap.run``."""

    def __init__(self, preset: Sam3dPreset, models: dict[str, nn.Module]) -> None:
        self.preset = preset
        self.device = torch.device("cpu")
        self.renderers: frozenset[str] = frozenset()  # the CPU demo renders nothing: no optional postprocessing
        self.pipe = official_pipeline(models, preset.default_steps)
        self.ss_preprocessor, self.slat_preprocessor = preprocessors()
        self.recorder = StageRecorder(self.device)
        for attribute, stage in STAGES[2:]:  # pointmap and preprocess: timed inline (no MoGe, own preprocessing)
            self.recorder.wrap(self.pipe, attribute, stage)

    def picture_pointmap(self, image: np.ndarray) -> torch.Tensor:
        """HxWx3, as upstream's ``run(pointmap=...)`` takes one."""
        return plane_pointmap(*image.shape[:2]).permute(1, 2, 0)

    @torch.no_grad()
    def generate(
        self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions, pointmap: torch.Tensor | None = None
    ) -> Generation:
        with inference_steps_restored(self.pipe.models):
            return self._generate(image, mask, options, pointmap)

    def _generate(
        self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions, given: torch.Tensor | None
    ) -> Generation:
        pipe, rec = self.pipe, self.recorder
        rec.reset()
        rgba = merge_mask_to_rgba(image, mask)
        with rec.stage("pointmap"):
            pointmap = plane_pointmap(*rgba.shape[:2]) if given is None else given.permute(2, 0, 1)
        with rec.stage("preprocess"):
            ss_input = preprocess(rgba, self.ss_preprocessor, pointmap)
            slat_input = preprocess(rgba, self.slat_preprocessor)
        torch.manual_seed(options.seed)
        ss = pipe.sample_sparse_structure(ss_input, inference_steps=options.ss_steps)
        voxels = int(ss["coords"].shape[0])
        if voxels == 0:
            raise Unprocessable("generate", "the model found no occupied voxel for this object")
        if voxels > MAX_VOXELS:
            raise OutOfResources("generate", f"{voxels} voxels exceed the CPU demo's limit of {MAX_VOXELS}")
        ss.update(pipe.pose_decoder(ss, scene_scale=ss_input["pointmap_scale"], scene_shift=ss_input["pointmap_shift"]))
        ss["scale"] = ss["scale"] * ss["downsample_factor"]
        slat = pipe.sample_slat(slat_input, ss["coords"], inference_steps=options.slat_steps)
        outputs = pipe.decode_slat(slat, list(options.decode_formats))
        outputs = pipe.postprocess_slat_output(outputs, False, False, True)
        return Generation(
            gaussian=outputs.get("gs"),
            glb=outputs.get("glb"),
            rotation=ss["rotation"][0].tolist(),
            translation=ss["translation"][0].tolist(),
            scale=ss["scale"][0].tolist(),
            stages_ms=dict(rec.timings_ms),
            info=run_info(pipe, options, voxels, outputs.get("mesh")),
        )


def load_tiny_demo(preset: Sam3dPreset, checkpoint: Path) -> TinyDemoGenerator:
    """Builds the demo modules and assigns the checkpoint's weights (every key must match)."""
    from safetensors.torch import load_file

    compat.apply()
    models = build_tiny_models()
    state = load_file(str(checkpoint), device="cpu")
    for name in COMPONENTS:
        prefix = f"{name}."
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        check_keys(models[name].state_dict(), part, f"{checkpoint} does not match the {preset.name} {name}", limit=10)
        models[name].load_state_dict(part, strict=True)
        models[name].eval()
        compat.unfuse_spconv_bias(models[name])
    extra = sorted(k for k in state if k.split(".", 1)[0] not in COMPONENTS)
    if extra:
        raise StartupError(f"{checkpoint} holds tensors of no {preset.name} component: {extra[:10]}")
    log.info(
        "demo preset %s: %d parameters", preset.name, sum(p.numel() for m in models.values() for p in m.parameters())
    )
    return TinyDemoGenerator(preset, models)
