"""The ``tiny-cpu-demo`` preset's modules: sam3d_objects' real model classes at tiny size, on the CPU.

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

from functools import partial
from pathlib import Path

from torch import nn

HUB_DIR = Path(__file__).resolve().parent / "hub"
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
