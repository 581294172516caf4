"""Builds SAM 3 image models from sam3's own classes, at the published size or a tiny one.

The composition mirrors ``sam3.model_builder.build_sam3_image_model(enable_inst_interactivity=True)``
(a test checks that preset ``sam3`` has exactly its state_dict keys and shapes) with two differences:
every width, depth and resolution comes from a :class:`Sam3Preset`, and nothing is allocated on
``"cuda"`` at construction (see ``gen3d.sam3.compat``). Real checkpoints are built without random
initialisation: parameters are created on the meta device and the checkpoint's tensors are assigned.
"""

from __future__ import annotations

from torch import nn

from gen3d.sam3 import compat
from gen3d.sam3.presets import D_MODEL, PATCH_SIZE, Sam3Preset


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


def interactive_predictor(p: Sam3Preset) -> nn.Module:
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
    compat.leave_tracker_autocast(tracker)
    predictor = SAM3InteractiveImagePredictor(tracker)
    # sam3 0.1.4 hard-codes the 1008 px feature sizes (288/144/72); they must follow the preset.
    predictor._bb_feat_sizes = p.feature_sizes
    return predictor


def build_sam3_model(preset: Sam3Preset, bpe_path: str) -> nn.Module:
    """A ``Sam3Image`` with the interactive predictor, randomly initialised, in eval mode, on the current device.

    ``bpe_path`` is checked by the callers, each with its own message: the archive's vocabulary by
    ``Sam3Service.from_model_dir`` (before the checkpoint is read), the installed one by ``bpe_vocab_path``."""
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.vl_combiner import SAM3VLBackbone

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
        inst_interactive_predictor=interactive_predictor(preset),
        matcher=None,
    )
    return model.eval()


def build_sam3_model_for_checkpoint(preset: Sam3Preset, bpe_path: str) -> nn.Module:
    """Like :func:`build_sam3_model` but with parameters on the meta device: no time spent on random init.

    Buffers are built for real (rotary tables, attention masks); :func:`load_sam3_weights` assigns the rest.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False), compat.meta_init_skipped():
        return build_sam3_model(preset, bpe_path)
