"""Builds SAM 3 image models from sam3's own classes, at the published size or a tiny one.

The composition mirrors ``sam3.model_builder.build_sam3_image_model(enable_inst_interactivity=True)``
(a test checks that preset ``sam3`` has exactly its state_dict keys and shapes) with two differences:
every width, depth and resolution comes from a :class:`Sam3Preset`, and nothing is allocated on
``"cuda"`` at construction (see ``sam3_compat``). Real checkpoints are loaded without random
initialisation: parameters are created on the meta device and the checkpoint's tensors are assigned.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from gen3d.errors import StartupError

log = logging.getLogger(__name__)

D_MODEL = 256  # SAM 3's model width; the interactive decoder's feature shapes depend on it
PATCH_SIZE = 14


@dataclass(frozen=True)
class Sam3Preset:
    """Widths, depths and resolution of one SAM 3 image model."""

    name: str
    resolution: int
    vit_dim: int
    vit_depth: int
    vit_heads: int
    vit_mlp_ratio: float
    vit_window: int
    vit_global_blocks: tuple[int, ...]
    vit_pretrain_size: int
    text_width: int
    text_heads: int
    text_layers: int
    ffn_dim: int
    fusion_layers: int
    decoder_layers: int
    num_queries: int
    geometry_layers: int
    tracker_layers: int

    @property
    def grid(self) -> int:
        """Side of the image encoder's token grid (72 at 1008 px)."""
        return self.resolution // PATCH_SIZE

    @property
    def feature_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the interactive decoder's features: high-res 4x and 2x, then the embedding."""
        g = self.grid
        return [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]


PRESETS: dict[str, Sam3Preset] = {
    # The published architecture (facebook/sam3, 860 M parameters).
    "sam3": Sam3Preset(
        name="sam3",
        resolution=1008,
        vit_dim=1024,
        vit_depth=32,
        vit_heads=16,
        vit_mlp_ratio=4.625,
        vit_window=24,
        vit_global_blocks=(7, 15, 23, 31),
        vit_pretrain_size=336,
        text_width=1024,
        text_heads=16,
        text_layers=24,
        ffn_dim=2048,
        fusion_layers=6,
        decoder_layers=6,
        num_queries=200,
        geometry_layers=3,
        tracker_layers=4,
    ),
    # Same classes, tiny widths and depths, 112 px: random-weight demo and tests (~15 M parameters).
    "tiny": Sam3Preset(
        name="tiny",
        resolution=112,
        vit_dim=64,
        vit_depth=2,
        vit_heads=2,
        vit_mlp_ratio=2.0,
        vit_window=4,
        vit_global_blocks=(1,),
        vit_pretrain_size=56,
        text_width=64,
        text_heads=2,
        text_layers=1,
        ffn_dim=128,
        fusion_layers=1,
        decoder_layers=1,
        num_queries=16,
        geometry_layers=1,
        tracker_layers=1,
    ),
}


def get_preset(name: str) -> Sam3Preset:
    """The preset called ``name``; a clear error listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise StartupError(f"unknown SAM 3 preset {name!r}; known presets: {sorted(PRESETS)}") from None


def _attention(dropout: float, batch_first: bool | None = None) -> nn.Module:
    from sam3.model.model_misc import MultiheadAttentionWrapper

    kwargs = {} if batch_first is None else {"batch_first": batch_first}
    return MultiheadAttentionWrapper(num_heads=8, dropout=dropout, embed_dim=D_MODEL, **kwargs)


def _vision_backbone(p: Sam3Preset) -> nn.Module:
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.vitdet import ViT

    vit = ViT(
        img_size=p.resolution,
        pretrain_img_size=p.vit_pretrain_size,
        patch_size=PATCH_SIZE,
        embed_dim=p.vit_dim,
        depth=p.vit_depth,
        num_heads=p.vit_heads,
        mlp_ratio=p.vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.1,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=p.vit_global_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=p.vit_window,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        compile_mode=None,
    )
    return Sam3DualViTDetNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=D_MODEL, normalize=True, precompute_resolution=None),
        d_model=D_MODEL,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=vit,
        add_sam2_neck=True,
    )


def _text_encoder(p: Sam3Preset, bpe_path: str) -> nn.Module:
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer

    return VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=bpe_path),
        d_model=D_MODEL,
        width=p.text_width,
        heads=p.text_heads,
        layers=p.text_layers,
    )


def _transformer(p: Sam3Preset) -> nn.Module:
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.model_misc import TransformerWrapper

    encoder = TransformerEncoderFusion(
        layer=TransformerEncoderLayer(
            activation="relu",
            d_model=D_MODEL,
            dim_feedforward=p.ffn_dim,
            dropout=0.1,
            pos_enc_at_attn=True,
            pos_enc_at_cross_attn_keys=False,
            pos_enc_at_cross_attn_queries=False,
            pre_norm=True,
            self_attention=_attention(0.1, batch_first=True),
            cross_attention=_attention(0.1, batch_first=True),
        ),
        num_layers=p.fusion_layers,
        d_model=D_MODEL,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(
            activation="relu",
            d_model=D_MODEL,
            dim_feedforward=p.ffn_dim,
            dropout=0.1,
            cross_attention=_attention(0.1),
            n_heads=8,
            use_text_cross_attention=True,
        ),
        num_layers=p.decoder_layers,
        num_queries=p.num_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=D_MODEL,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=None,
        stride=None,
        use_act_checkpoint=True,
        presence_token=True,
    )
    return TransformerWrapper(encoder=encoder, decoder=decoder, d_model=D_MODEL)


def _scoring(p: Sam3Preset) -> nn.Module:
    from sam3.model.model_misc import MLP, DotProductScoring

    prompt_mlp = MLP(
        input_dim=D_MODEL,
        hidden_dim=p.ffn_dim,
        output_dim=D_MODEL,
        num_layers=2,
        dropout=0.1,
        residual=True,
        out_norm=nn.LayerNorm(D_MODEL),
    )
    return DotProductScoring(d_model=D_MODEL, d_proj=D_MODEL, prompt_mlp=prompt_mlp)


def _segmentation_head() -> nn.Module:
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead

    return UniversalSegmentationHead(
        hidden_dim=D_MODEL,
        upsampling_stages=3,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=True,
        cross_attend_prompt=_attention(0),
        pixel_decoder=PixelDecoder(
            num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=D_MODEL, compile_mode=None
        ),
    )


def _geometry_encoder(p: Sam3Preset) -> nn.Module:
    from sam3.model.encoder import TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.position_encoding import PositionEmbeddingSine

    layer = TransformerEncoderLayer(
        activation="relu",
        d_model=D_MODEL,
        dim_feedforward=p.ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=_attention(0.1, batch_first=False),
        pos_enc_at_cross_attn_queries=False,
        pos_enc_at_cross_attn_keys=True,
        cross_attention=_attention(0.1, batch_first=False),
    )
    return SequenceGeometryEncoder(
        pos_enc=PositionEmbeddingSine(num_pos_feats=D_MODEL, normalize=True),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=D_MODEL,
        num_layers=p.geometry_layers,
        layer=layer,
        use_act_ckpt=True,
        add_cls=True,
        add_post_encode_proj=True,
    )


def _interactive_predictor(p: Sam3Preset) -> nn.Module:
    """The SAM 1-style point/box predictor: a tracker without backbone, as the stock builder makes it."""
    from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.sam.transformer import RoPEAttention

    mask_side = p.resolution * 8 // 7  # 1152 at 1008 px
    maskmem = SimpleMaskEncoder(
        out_dim=64,
        position_encoding=PositionEmbeddingSine(num_pos_feats=64, normalize=True, precompute_resolution=None),
        mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1, interpol_size=[mask_side] * 2),
        fuser=SimpleFuser(
            layer=CXBlock(dim=D_MODEL, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True),
            num_layers=2,
        ),
    )
    rope = {
        "embedding_dim": D_MODEL,
        "num_heads": 1,
        "downsample_rate": 1,
        "dropout": 0.1,
        "rope_theta": 10000.0,
        "feat_sizes": [p.grid, p.grid],
        "use_fa3": False,
        "use_rope_real": False,
    }
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=p.ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=RoPEAttention(**rope),
        d_model=D_MODEL,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(**rope, kv_in_dim=64, rope_k_repeat=True),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[],
        batch_first=True,
        d_model=D_MODEL,
        frozen=False,
        pos_enc_at_input=True,
        layer=layer,
        num_layers=p.tracker_layers,
        use_act_checkpoint=False,
    )
    tracker = Sam3TrackerPredictor(
        image_size=p.resolution,
        num_maskmem=7,
        backbone=None,
        backbone_stride=PATCH_SIZE,
        transformer=TransformerWrapper(encoder=encoder, decoder=None, d_model=D_MODEL),
        maskmem_backbone=maskmem,
        multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True,
        trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False,
        non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False,
        max_cond_frames_in_attn=4,
        offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        clear_non_cond_mem_around_input=True,
        fill_hole_area=0,
        use_memory_selection=False,
    )
    predictor = SAM3InteractiveImagePredictor(tracker)
    # sam3 0.1.4 hard-codes the 1008 px feature sizes (288/144/72); they must follow the preset.
    predictor._bb_feat_sizes = p.feature_sizes
    return predictor


def build_sam3_model(preset: Sam3Preset, bpe_path: str) -> nn.Module:
    """A ``Sam3Image`` with the interactive predictor, randomly initialised, in eval mode, on the current device."""
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.vl_combiner import SAM3VLBackbone

    if not os.path.isfile(bpe_path):
        raise StartupError(f"BPE vocabulary not found at {bpe_path} (looked for bpe_simple_vocab_16e6.txt.gz)")
    backbone = SAM3VLBackbone(visual=_vision_backbone(preset), text=_text_encoder(preset, bpe_path), scalp=1)
    model = Sam3Image(
        backbone=backbone,
        transformer=_transformer(preset),
        input_geometry_encoder=_geometry_encoder(preset),
        segmentation_head=_segmentation_head(),
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=_scoring(preset),
        use_instance_query=False,
        multimask_output=True,
        inst_interactive_predictor=_interactive_predictor(preset),
        matcher=None,
    )
    return model.eval()


def build_sam3_model_for_checkpoint(preset: Sam3Preset, bpe_path: str) -> nn.Module:
    """Like :func:`build_sam3_model` but with parameters on the meta device: no time spent on random init.

    Buffers are built for real (rotary tables, attention masks); :func:`load_sam3_weights` assigns the rest.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build_sam3_model(preset, bpe_path)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, or ``.pt/.pth/.ckpt`` read with ``weights_only=True``.

    Nested ``{"model": ...}`` / ``{"state_dict": ...}`` dicts are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise StartupError(f"SAM 3 checkpoint not found at {path} (looked for one of {', '.join(CHECKPOINT_SUFFIXES)})")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise StartupError(f"unsupported checkpoint type {path.name}; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for key in ("model", "state_dict"):
        while isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StartupError(f"{path} does not hold a state_dict of tensors")
    return state


def to_model_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps the published ``sam3.pt`` layout (``detector.*``, ``tracker.*``) onto ``Sam3Image`` keys.

    A state_dict already in model layout is returned unchanged.
    """
    if not any(k.startswith(("detector.", "tracker.")) for k in state):
        return state
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("detector."):
            mapped[key.removeprefix("detector.")] = value
        elif key.startswith("tracker."):
            mapped["inst_interactive_predictor.model." + key.removeprefix("tracker.")] = value
        else:
            mapped[key] = value  # reported as unexpected by load_sam3_weights
    return mapped


def load_sam3_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Assigns ``state`` to ``model``; any missing or unexpected key is an error that lists them."""
    state = to_model_layout(state)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise StartupError(
            f"checkpoint {source} does not match the SAM 3 model: "
            f"{len(missing)} missing keys {missing[:20]}, {len(unexpected)} unexpected keys {unexpected[:20]}"
        )
    model.load_state_dict(state, strict=True, assign=True)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class LoadedSam3:
    """A ready model and what identifies it."""

    model: nn.Module
    preset: Sam3Preset
    device: torch.device
    checkpoint_sha256: str

    @property
    def model_id(self) -> str:
        """``sam3/<preset>/<first 16 hex of the checkpoint digest>``: what embeddings and caches are keyed by."""
        return f"sam3/{self.preset.name}/{self.checkpoint_sha256[:16]}"

    def describe(self) -> dict:
        """Preset and checkpoint facts for logs and responses."""
        return {"model_id": self.model_id, "preset": asdict(self.preset), "device": str(self.device)}


def load_sam3(preset_name: str, checkpoint: str | Path, bpe_path: str, device: torch.device) -> LoadedSam3:
    """Builds the preset's model, assigns the checkpoint's weights and moves it to ``device``."""
    from gen3d import sam3_compat

    sam3_compat.apply()
    preset = get_preset(preset_name)
    state = read_state_dict(checkpoint)
    model = build_sam3_model_for_checkpoint(preset, bpe_path)
    load_sam3_weights(model, state, str(checkpoint))
    model = model.to(device).eval()
    if device.type == "cuda" and torch.cuda.get_device_properties(device).major >= 8:
        # what sam3.model_builder does at import (we do not import it): TF32 matmuls on Ampere and newer
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    digest = file_sha256(checkpoint)
    log.info("loaded SAM 3 preset %s from %s (sha256 %s) on %s", preset.name, checkpoint, digest[:16], device)
    return LoadedSam3(model=model, preset=preset, device=device, checkpoint_sha256=digest)


def random_sam3_state_dict(preset: Sam3Preset, bpe_path: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for a demo or test checkpoint, with every tensor filled (no NaN outputs).

    ``TextTransformer.positional_embedding`` and ``text_projection`` are ``torch.empty`` until a checkpoint
    fills them, so they get small normal values here.
    """
    torch.manual_seed(seed)
    model = build_sam3_model(preset, bpe_path)
    text = model.backbone.language_backbone.encoder
    nn.init.normal_(text.positional_embedding, std=0.01)
    if isinstance(text.text_projection, nn.Parameter):
        nn.init.normal_(text.text_projection, std=text.width**-0.5)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
