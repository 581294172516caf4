"""The CPU demo preset of ``sam3d_body``: upstream's own ``SAM3DBody`` at tiny size with random weights.

What stands in for the real parts, all generated at archive build time (:func:`write_demo_files`) and staged
exactly as the real ones are (checkpoint, ``model_config.yaml``, ``assets/mhr_model.pt``):
- a tiny yacs config (:data:`TINY_CONFIG`): decoder of width 32 and depth 2, 128 px crops;
- a tiny backbone: upstream's ``ViT`` class at width 64 and depth 2, registered under :data:`TINY_BACKBONE`;
- a tiny TorchScript MHR (:class:`TinyMhr`) with MHR's call signature and topology sizes (18,439 vertices,
  36,874 faces, 127 joints): a closed body-sized ellipsoid that the global rotation and shape parameters move.
Its outputs are valid meshes and numbers that mean nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

TINY_BACKBONE = "gen3d_tiny_vit"
DEMO_FORMAT = "gen3d.sam3d_body.tiny-cpu-demo/v1"
MHR_VERTICES, MHR_FACES, MHR_JOINTS = 18_439, 36_874, 127
RINGS, SEGMENTS = 103, 179  # 103 * 179 + 2 poles = 18,439 vertices; a closed genus-0 mesh has 2V - 4 = 36,874 faces
BODY_HEIGHT_CM, BODY_WIDTH_CM = 170.0, 45.0
TINY_CONFIG = {
    "TRAIN": {"USE_FP16": False},
    "MODEL": {
        "IMAGE_SIZE": [128, 128],
        "IMAGE_MEAN": [0.485, 0.456, 0.406],
        "IMAGE_STD": [0.229, 0.224, 0.225],
        "BACKBONE": {"TYPE": TINY_BACKBONE, "DROP_PATH_RATE": 0.0},
        "PERSON_HEAD": {"POSE_TYPE": "mhr", "CAMERA_TYPE": "perspective"},
        "MHR_HEAD": {"MLP_DEPTH": 2, "MLP_CHANNEL_DIV_FACTOR": 1, "MHR_MODEL_PATH": ""},
        "CAMERA_HEAD": {"MLP_DEPTH": 2, "MLP_CHANNEL_DIV_FACTOR": 1},
        "PROMPT_ENCODER": {
            "ENABLE": True,
            "MAX_NUM_CLICKS": 2,
            "PROMPT_KEYPOINTS": "mhr70",
            "MASK_EMBED_TYPE": "v1",
            "MASK_PROMPT": "v1",
        },
        "DECODER": {
            "TYPE": "sam",
            "DIM": 32,
            "DEPTH": 2,
            "HEADS": 2,
            "DIM_HEAD": 16,
            "MLP_DIM": 64,
            "LAYER_SCALE_INIT": 0.0,
            "DROP_RATE": 0.0,
            "ATTN_DROP_RATE": 0.0,
            "DROP_PATH_RATE": 0.0,
            "FFN_TYPE": "origin",
            "ENABLE_TWOWAY": False,
            "REPEAT_PE": True,
            "FROZEN": False,
            "CONDITION_TYPE": "cliff",
            "DO_INTERM_PREDS": True,
            "DO_KEYPOINT_TOKENS": True,
            "DO_KEYPOINT3D_TOKENS": True,
            "KEYPOINT_TOKEN_UPDATE": True,
            "DO_HAND_DETECT_TOKENS": True,
        },
    },
}


def register_tiny_backbone() -> None:
    """Makes ``BACKBONE.TYPE: gen3d_tiny_vit`` build upstream's ``ViT`` at tiny size (the real factories build only
    ViT-B/L/H and DINOv3). The other names still go to upstream's factory."""
    from sam_3d_body.models.backbones import vit
    from sam_3d_body.models.meta_arch import sam3d_body

    upstream = sam3d_body.create_backbone
    if getattr(upstream, "gen3d_tiny", False):
        return

    def create_backbone(name, cfg=None):
        if name != TINY_BACKBONE:
            return upstream(name, cfg)
        size = tuple(cfg.MODEL.IMAGE_SIZE)
        return vit.ViT(img_size=size, patch_size=16, embed_dim=64, depth=2, num_heads=2, qkv_bias=True)

    create_backbone.gen3d_tiny = True
    sam3d_body.create_backbone = create_backbone


class TinyMhr(nn.Module):
    """MHR's TorchScript interface, ``(shape (B, 45), model_params (B, 204), expr (B, 72)) -> (vertices (B, V, 3)
    in cm, skeleton state (B, 127, 8): position, quaternion x y z w, scale)``, on a fixed ellipsoid: the global
    translation (``model_params[:, 0:3]``, tenths of cm ... as upstream scales it) and rotation (XYZ Euler,
    ``model_params[:, 3:6]``) place it, the first three shape components stretch it."""

    def __init__(self, template: torch.Tensor, joints: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("template", template)
        self.register_buffer("joints", joints)

    def forward(self, shape: torch.Tensor, model_params: torch.Tensor, expr: torch.Tensor | None = None):
        stretch = 1.0 + 0.05 * torch.tanh(shape[:, :3])  # (B, 3)
        rx, ry, rz = model_params[:, 3], model_params[:, 4], model_params[:, 5]
        one, zero = torch.ones_like(rx), torch.zeros_like(rx)
        mx = torch.stack([one, zero, zero, zero, rx.cos(), -rx.sin(), zero, rx.sin(), rx.cos()], 1).view(-1, 3, 3)
        my = torch.stack([ry.cos(), zero, ry.sin(), zero, one, zero, -ry.sin(), zero, ry.cos()], 1).view(-1, 3, 3)
        mz = torch.stack([rz.cos(), -rz.sin(), zero, rz.sin(), rz.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
        rotation = mx @ my @ mz
        shift = model_params[:, None, 0:3]
        vertices = (self.template[None] * stretch[:, None]) @ rotation.transpose(1, 2) + shift
        joints = (self.joints[None] * stretch[:, None]) @ rotation.transpose(1, 2) + shift
        batch = shape.shape[0]
        quats = torch.zeros(batch, joints.shape[1], 4, dtype=joints.dtype, device=joints.device)
        quats[..., 3] = 1.0
        scales = torch.ones(batch, joints.shape[1], 1, dtype=joints.dtype, device=joints.device)
        return vertices, torch.cat([joints, quats, scales], dim=2)


def ellipsoid_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A closed body-sized ellipsoid (y up, cm) with MHR's vertex and face counts: (18,439 x 3, 36,874 x 3)."""
    theta = np.linspace(0, math.pi, RINGS + 2)[1:-1]  # latitudes without the poles
    phi = np.linspace(0, 2 * math.pi, SEGMENTS, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    half = np.array([BODY_WIDTH_CM / 2, BODY_HEIGHT_CM / 2, BODY_WIDTH_CM / 4])
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3) * half
    vertices = np.concatenate([[[0, half[1], 0]], ring, [[0, -half[1], 0]]]).astype(np.float32)
    top, bottom = 0, len(vertices) - 1

    def at(r: int, s: int) -> int:
        return 1 + r * SEGMENTS + s % SEGMENTS

    faces = [(top, at(0, s + 1), at(0, s)) for s in range(SEGMENTS)]
    for r in range(RINGS - 1):
        for s in range(SEGMENTS):
            faces += [(at(r, s), at(r, s + 1), at(r + 1, s)), (at(r, s + 1), at(r + 1, s + 1), at(r + 1, s))]
    faces += [(bottom, at(RINGS - 1, s), at(RINGS - 1, s + 1)) for s in range(SEGMENTS)]
    return vertices, np.asarray(faces, dtype=np.int64)


def write_demo_files(folder: Path, seed: int) -> dict[str, Path]:
    """Writes the demo's staged files into ``folder``: ``model_config.yaml``, ``assets/mhr_model.pt`` (TorchScript)
    and ``model.ckpt`` (random weights of the tiny SAM3DBody plus the head's MHR buffers); returns their paths."""
    from gen3d.sam3d_body import compat

    compat.import_sam_3d_body(vendored=True)
    register_tiny_backbone()
    from sam_3d_body.models.meta_arch import SAM3DBody
    from sam_3d_body.utils.config import get_config

    torch.manual_seed(seed)
    vertices, faces = ellipsoid_mesh()
    joints = vertices[np.linspace(0, len(vertices) - 1, MHR_JOINTS).astype(int)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "assets").mkdir(exist_ok=True)
    paths = {
        "config": folder / "model_config.yaml",
        "mhr": folder / "assets" / "mhr_model.pt",
        "checkpoint": folder / "model.ckpt",
    }
    torch.jit.script(TinyMhr(torch.from_numpy(vertices), torch.from_numpy(joints))).save(str(paths["mhr"]))
    paths["config"].write_text(yaml.safe_dump(TINY_CONFIG, sort_keys=False))
    cfg = get_config(str(paths["config"]))
    cfg.defrost()
    cfg.MODEL.MHR_HEAD.MHR_MODEL_PATH = str(paths["mhr"])
    cfg.freeze()
    model = SAM3DBody(cfg)
    for head in (model.head_pose, model.head_pose_hand):
        fill_mhr_buffers(head, faces)
    state = {k: v for k, v in model.state_dict().items() if ".mhr." not in k}
    torch.save({"state_dict": state, "gen3d": {"format": DEMO_FORMAT, "seed": seed}}, paths["checkpoint"])
    return paths


def fill_mhr_buffers(head: nn.Module, faces: np.ndarray) -> None:
    """The MHR buffers the real checkpoint carries, made up to fit the tiny MHR: faces, a keypoint mapping picking
    one vertex per keypoint, identity joint rotations, index sets that keep hands and body apart."""
    with torch.no_grad():
        head.faces.copy_(torch.from_numpy(faces))
        mapping = torch.zeros_like(head.keypoint_mapping)
        picks = torch.linspace(0, MHR_VERTICES - 1, mapping.shape[0]).long()
        mapping[torch.arange(mapping.shape[0]), picks] = 1.0
        head.keypoint_mapping.copy_(mapping)
        head.joint_rotation.copy_(torch.eye(3).expand_as(head.joint_rotation))
        head.scale_comps.copy_(0.01 * torch.eye(*head.scale_comps.shape))  # hand scales are divided by [8, 8], [9, 9]
        head.hand_joint_idxs_left.copy_(torch.arange(6, 33))
        head.hand_joint_idxs_right.copy_(torch.arange(33, 60))
        head.nonhand_param_idxs.copy_(torch.cat([torch.arange(0, 6), torch.arange(60, 199)]))
        head.local_to_world_wrist.copy_(torch.eye(3))
