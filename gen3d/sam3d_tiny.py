"""The ``tiny-cpu-demo`` preset: sam3d_objects' real model classes at tiny size with random weights, on the CPU.

Composition (production sizes in brackets; the classes and the stage order are those of the official
pipeline.yaml / ``InferencePipelinePointMap``):
- condition embedders: ``EmbedderFuser`` of ``Dino`` (a tiny DINOv2-shaped ViT, 32 wide, 28 px [ViT-L/14 reg,
  518 px]) for image and mask, plus ``PointPatchEmbed`` for the pointmap (stage 1 only);
- stage 1: ``ShortCut(ClassifierFreeGuidanceWithExternalUnconditionalProbability(SparseStructureFlowTdfyWrapper))``
  with the five latents (6D rotation, scale, 16^3x8 shape, translation, translation scale), 64 wide, 1 block
  [1024, 24], then ``SparseStructureDecoderTdfyWrapper`` from 16^3 to 32^3 [64^3];
- stage 2: ``FlowMatching(ClassifierFreeGuidance(SLatFlowModelTdfyWrapper))`` at resolution 32 [64];
- decoders: ``SLatGaussianDecoderTdfyWrapper`` (4 Gaussians per voxel [32]) and ``SLatMeshDecoderTdfyWrapper``
  (FlexiCubes on a 128 grid [256]).
The ``InferencePipeline`` methods run unchanged (``sample_sparse_structure``, ``pose_decoder``,
``sample_slat``, ``decode_slat``, ``postprocess_slat_output`` with the official ``to_glb``) on an instance
whose ``__init__`` is skipped (it loads CUDA checkpoints). What stands in for the GPU-only parts:
MoGe -> a pinhole plane pointmap in the PyTorch3D camera frame; the pointmap preprocessing of
``InferencePipelinePointMap`` (whose module imports pytorch3d's renderer) -> :func:`preprocess`, the same
calls. Mesh postprocess, texture baking and layout post-optimisation need CUDA rendering: refused.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gen3d import sam3d_compat
from gen3d.errors import RequestError, StartupError
from gen3d.sam3d_builder import (
    DEMO_CHECKPOINT_FORMAT,
    GenerateOptions,
    Generation,
    Sam3dPreset,
    StageRecorder,
    merge_mask_to_rgba,
)

log = logging.getLogger(__name__)

HUB_DIR = Path(__file__).resolve().parent / "sam3d_tiny_hub"
RESOLUTION = 32  # sparse-structure grid side [64]; the mesh decoder's FlexiCubes grid is 4x this
COND_WIDTH = 32  # condition token width [1024]
FLOW_WIDTH = 64  # flow transformer width [1024]
MESH_WIDTH = 256  # the smallest the mesh decoder allows: its subdivide GroupNorm needs width/8 % 32 == 0
PREPROCESS_SIZE = 56  # [518]; the Dino wrapper resizes to its own input size anyway
DINO_SIZE = 28
SS_OCCUPANCY = 0.01  # fraction of the grid the random SS decoder marks occupied (see random_tiny_state_dict)
# The CPU "sdpa" sparse attention builds a dense [N, N] mask: more voxels than this would not fit in memory.
MAX_VOXELS = 6000
COMPONENTS = (
    "ss_condition_embedder",
    "slat_condition_embedder",
    "ss_generator",
    "slat_generator",
    "ss_decoder",
    "slat_decoder_gs",
    "slat_decoder_mesh",
)


def _dino(prenorm: bool) -> nn.Module:
    from sam3d_objects.model.backbone.dit.embedder.dino import Dino

    return Dino(
        input_size=DINO_SIZE,
        repo_or_dir=str(HUB_DIR),
        source="local",
        dino_model="tiny_dinov2",
        backbone_kwargs={"embed_dim": COND_WIDTH, "img_size": DINO_SIZE},
        normalize_images=True,
        prenorm_features=prenorm,
    )


def build_tiny_models() -> dict[str, nn.Module]:
    """The demo's modules with their constructors' random initialisation (weights come from a checkpoint)."""
    from sam3d_objects.model.backbone.dit.embedder.embedder_fuser import EmbedderFuser
    from sam3d_objects.model.backbone.dit.embedder.pointmap import PointPatchEmbed
    from sam3d_objects.model.backbone.generator.classifier_free_guidance import (
        ClassifierFreeGuidance,
        ClassifierFreeGuidanceWithExternalUnconditionalProbability,
    )
    from sam3d_objects.model.backbone.generator.flow_matching.model import FlowMatching, lognorm_sampler
    from sam3d_objects.model.backbone.generator.shortcut.model import ShortCut
    from sam3d_objects.model.backbone.tdfy_dit.models.mm_latent import (
        Latent,
        LearntPositionEmbedder,
        ShapePositionEmbedder,
    )
    from sam3d_objects.model.backbone.tdfy_dit.models.mot_sparse_structure_flow import (
        SparseStructureFlowTdfyWrapper,
    )
    from sam3d_objects.model.backbone.tdfy_dit.models.sparse_structure_vae import SparseStructureDecoderTdfyWrapper
    from sam3d_objects.model.backbone.tdfy_dit.models.structured_latent_flow import SLatFlowModelTdfyWrapper
    from sam3d_objects.model.backbone.tdfy_dit.models.structured_latent_vae.decoder_gs import (
        SLatGaussianDecoderTdfyWrapper,
    )
    from sam3d_objects.model.backbone.tdfy_dit.models.structured_latent_vae.decoder_mesh import (
        SLatMeshDecoderTdfyWrapper,
    )

    image_keys = [["image", "cropped"], ["rgb_image", "full"]]
    mask_keys = [["mask", "cropped"], ["rgb_image_mask", "full"]]
    pointmap = PointPatchEmbed(embed_dim=COND_WIDTH, input_size=32, patch_size=8, remap_output="linear")
    fuser = partial(EmbedderFuser, projection_net_hidden_dim_multiplier=2.0, use_pos_embedding="learned", freeze=True)
    ss_cond = fuser(
        embedder_list=[
            (_dino(False), image_keys),
            (_dino(False), mask_keys),
            (pointmap, [["pointmap", "cropped"], ["rgb_pointmap", "full"]]),
        ]
    )
    slat_cond = fuser(embedder_list=[(_dino(True), image_keys), (_dino(True), mask_keys)])

    def token(n: int) -> nn.Module:
        return LearntPositionEmbedder(model_channels=FLOW_WIDTH, token_len=n)

    pose = ["6drotation_normalized", "translation", "scale", "translation_scale"]
    ss_flow = SparseStructureFlowTdfyWrapper(
        latent_mapping={
            "6drotation_normalized": Latent(6, FLOW_WIDTH, token(1)),
            "scale": Latent(3, FLOW_WIDTH, token(1)),
            "shape": Latent(
                8, FLOW_WIDTH, ShapePositionEmbedder(model_channels=FLOW_WIDTH, patch_size=1, resolution=16)
            ),
            "translation": Latent(3, FLOW_WIDTH, token(1)),
            "translation_scale": Latent(1, FLOW_WIDTH, token(1)),
        },
        latent_share_transformer={"6drotation_normalized": pose},
        in_channels=8,
        model_channels=FLOW_WIDTH,
        cond_channels=COND_WIDTH,
        out_channels=8,
        num_blocks=1,
        num_heads=2,
        mlp_ratio=2,
        pe_mode="ape",
        qk_rms_norm=True,
        resolution=16,
        patch_size=1,
        is_shortcut_model=True,
        force_zeros_cond=True,
        condition_embedder=None,
        use_fp16=False,
    )
    ss_generator = ShortCut(
        reverse_fn=ClassifierFreeGuidanceWithExternalUnconditionalProbability(
            backbone=ss_flow,
            interval=[0, 500],
            p_unconditional=0.1,
            strength=2.0,
            unconditional_handling="add_flag",
        ),
        batch_mode=True,
        cfg_modalities=["shape"],
        inference_steps=2,
        rescale_t=3,
        sigma_min=0.0,
        time_scale=1000.0,
        training_time_sampler_fn=partial(lognorm_sampler, mean=-1.0, std=1.0),
    )
    slat_generator = FlowMatching(
        reverse_fn=ClassifierFreeGuidance(
            backbone=SLatFlowModelTdfyWrapper(
                resolution=RESOLUTION,
                in_channels=8,
                model_channels=FLOW_WIDTH,
                cond_channels=COND_WIDTH,
                out_channels=8,
                num_blocks=1,
                num_heads=2,
                mlp_ratio=2,
                patch_size=2,
                num_io_res_blocks=1,
                io_block_channels=[32],
                pe_mode="ape",
                qk_rms_norm=True,
                use_fp16=False,
                condition_embedder=None,
                force_zeros_cond=True,
            ),
            p_unconditional=0.0,
            strength=5.0,
            interval=[0, 500],
            unconditional_handling="add_flag",
        ),
        inference_steps=2,
        rescale_t=3,
        sigma_min=0.0,
        time_scale=1000.0,
    )
    # One upsampling block per channel step: [32, 32] goes 16^3 -> 32^3 (production [512, 128, 32]: -> 64^3).
    ss_decoder = SparseStructureDecoderTdfyWrapper(
        out_channels=1, latent_channels=8, num_res_blocks=1, channels=[32, 32], num_res_blocks_middle=1
    )
    gaussians = {
        "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
        "perturb_offset": True,
        "voxel_size": 1.5,
        "num_gaussians": 4,
        "2d_filter_kernel_size": 0.1,
        "3d_filter_kernel_size": 0.0009,
        "scaling_bias": 0.004,
        "opacity_bias": 0.1,
        "scaling_activation": "softplus",
    }
    decoder = {"resolution": RESOLUTION, "latent_channels": 8, "num_blocks": 1, "attn_mode": "swin", "window_size": 8}
    slat_decoder_gs = SLatGaussianDecoderTdfyWrapper(
        model_channels=FLOW_WIDTH, num_heads=2, mlp_ratio=2, representation_config=gaussians, use_fp16=False, **decoder
    )
    slat_decoder_mesh = SLatMeshDecoderTdfyWrapper(
        model_channels=MESH_WIDTH,
        num_heads=4,
        mlp_ratio=1,
        representation_config={"use_color": True},
        use_fp16=False,
        device="cpu",
        **decoder,
    )
    return {
        "ss_condition_embedder": ss_cond,
        "slat_condition_embedder": slat_cond,
        "ss_generator": ss_generator,
        "slat_generator": slat_generator,
        "ss_decoder": ss_decoder,
        "slat_decoder_gs": slat_decoder_gs,
        "slat_decoder_mesh": slat_decoder_mesh,
    }


@torch.no_grad()
def random_tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random demo weights (``<component>.<parameter>``), seeded, made so the random model yields non-empty
    outputs through the official code:
    - the sparse-structure decoder's output bias is shifted so that ``ss > 0`` (the pipeline's own occupancy
      test) holds for about ``SS_OCCUPANCY`` of a probe's grid, not half of it;
    - tensors the decoders zero-initialise (output layers, the subdivide blocks' last convolutions) are
      re-drawn: zeros would give a constant SDF (no surface) and identical Gaussians.
    """
    sam3d_compat.apply()
    torch.manual_seed(seed)
    models = build_tiny_models()
    ss_decoder = models["ss_decoder"].eval()
    probe = ss_decoder(torch.randn(1, 8, 16, 16, 16, generator=torch.Generator().manual_seed(seed + 1)))
    ss_decoder.out_layer[-1].bias -= torch.quantile(probe.flatten(), 1 - SS_OCCUPANCY)
    redraw = torch.Generator().manual_seed(seed + 2)
    for name in ("slat_decoder_gs", "slat_decoder_mesh"):
        for pname, param in models[name].named_parameters():
            if param.dim() >= 1 and "norm" not in pname and not param.any():
                param.copy_(torch.randn(param.shape, generator=redraw) * 0.3)
    return {
        f"{name}.{key}": value.detach().clone().contiguous()
        for name, model in models.items()
        for key, value in model.state_dict().items()
    }


def demo_checkpoint_bytes(preset: Sam3dPreset, seed: int = 0) -> bytes:
    """The demo checkpoint file: safetensors with metadata naming its format, preset and seed."""
    from safetensors.torch import save

    meta = {"format": DEMO_CHECKPOINT_FORMAT, "preset": preset.name, "demo": "true", "seed": str(seed)}
    return save(random_tiny_state_dict(seed), metadata=meta)


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
        self.pipe = official_pipeline(models, preset.default_steps)
        self.ss_preprocessor, self.slat_preprocessor = preprocessors()
        self.recorder = StageRecorder(self.device)
        for attribute, stage in (
            ("sample_sparse_structure", "sparse_structure"),
            ("pose_decoder", "pose"),
            ("sample_slat", "slat"),
            ("decode_slat", "decode"),
            ("postprocess_slat_output", "glb"),
        ):
            self.recorder.wrap(self.pipe, attribute, stage)

    @torch.no_grad()
    def generate(self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions) -> Generation:
        pipe, rec = self.pipe, self.recorder
        rec.reset()
        rgba = merge_mask_to_rgba(image, mask)
        with rec.stage("pointmap"):
            pointmap = plane_pointmap(*rgba.shape[:2])
        with rec.stage("preprocess"):
            ss_input = preprocess(rgba, self.ss_preprocessor, pointmap)
            slat_input = preprocess(rgba, self.slat_preprocessor)
        torch.manual_seed(options.seed)
        ss = pipe.sample_sparse_structure(ss_input, inference_steps=options.ss_steps)
        voxels = int(ss["coords"].shape[0])
        if voxels == 0:
            raise RequestError("generate", "the model found no occupied voxel for this object", status=422)
        if voxels > MAX_VOXELS:
            raise RequestError("generate", f"{voxels} voxels exceed the CPU demo's limit of {MAX_VOXELS}", status=507)
        ss.update(pipe.pose_decoder(ss, scene_scale=ss_input["pointmap_scale"], scene_shift=ss_input["pointmap_shift"]))
        ss["scale"] = ss["scale"] * ss["downsample_factor"]
        slat = pipe.sample_slat(slat_input, ss["coords"], inference_steps=options.slat_steps)
        outputs = pipe.decode_slat(slat, list(options.decode_formats))
        outputs = pipe.postprocess_slat_output(outputs, False, False, True)
        mesh = outputs.get("mesh")
        return Generation(
            gaussian=outputs.get("gs"),
            glb=outputs.get("glb"),
            rotation=ss["rotation"][0].tolist(),
            translation=ss["translation"][0].tolist(),
            scale=ss["scale"][0].tolist(),
            stages_ms=dict(rec.timings_ms),
            info={
                "voxels": voxels,
                "steps": {
                    "sparse_structure": options.ss_steps or pipe.ss_inference_steps,
                    "slat": options.slat_steps or pipe.slat_inference_steps,
                },
                "mesh_extracted": None if mesh is None else bool(mesh[0].success),
                "layout_postprocess": False,
            },
        )


def load_tiny_demo(preset: Sam3dPreset, checkpoint: Path) -> TinyDemoGenerator:
    """Builds the demo modules and assigns the checkpoint's weights (every key must match)."""
    from safetensors.torch import load_file

    sam3d_compat.apply()
    models = build_tiny_models()
    state = load_file(str(checkpoint), device="cpu")
    for name in COMPONENTS:
        prefix = f"{name}."
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        expected = set(models[name].state_dict())
        missing, unexpected = sorted(expected - set(part)), sorted(set(part) - expected)
        if missing or unexpected:
            raise StartupError(
                f"{checkpoint} does not match the {preset.name} {name}: "
                f"missing {missing[:10]}, unexpected {unexpected[:10]}"
            )
        models[name].load_state_dict(part, strict=True)
        models[name].eval()
        sam3d_compat.unfuse_spconv_bias(models[name])
    extra = sorted(k for k in state if k.split(".", 1)[0] not in COMPONENTS)
    if extra:
        raise StartupError(f"{checkpoint} holds tensors of no {preset.name} component: {extra[:10]}")
    log.info(
        "demo preset %s: %d parameters", preset.name, sum(p.numel() for m in models.values() for p in m.parameters())
    )
    return TinyDemoGenerator(preset, models)
