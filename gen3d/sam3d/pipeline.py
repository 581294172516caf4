"""The ``sam3d-objects`` preset: Meta's official ``InferencePipelinePointMap`` on the worker's GPU.

The archive holds the checkpoint directory of the gated ``facebook/sam-3d-objects`` download (``pipeline.yaml``,
its sub-configs and checkpoints) plus what the pipeline would otherwise fetch at run time, staged next to
``pipeline.yaml`` (paths relative to it, overridable in model-config.yaml's ``handler`` section):
- ``dinov2_repo`` (default ``dinov2``): a copy of github.com/facebookresearch/dinov2 (its ``hubconf.py``);
- ``torch_hub_dir`` (default ``torch_hub``): a torch.hub directory whose ``checkpoints/`` holds the DINOv2
  weights that hubconf would download (e.g. ``dinov2_vitl14_reg4_pretrain.pth``);
- ``moge_checkpoint`` (default ``moge/model.pt``): MoGe's ``model.pt`` (HF ``Ruicheng/moge-vitl``).
The configs are rewritten (into a temporary folder, the archive stays read-only) so that every ``Dino`` loads
the staged hubconf with ``source="local"`` and MoGe's ``from_pretrained`` gets the staged file; every hydra
``_target_`` must live in sam3d_objects/torch/torchvision/moge (upstream's own whitelist), and Hugging Face
is switched offline, so nothing is downloaded. ``notebook/inference.py`` is not imported (it reads
``CONDA_PREFIX`` and imports gradio at import); :class:`OfficialGenerator` makes the call its ``Inference``
makes, with the request's options.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from gen3d.errors import StartupError
from gen3d.sam3d.presets import Sam3dPreset
from gen3d.sam3d.stages import STAGES, StageRecorder, inference_steps_restored, run_info
from gen3d.sam3d.types import GenerateOptions, Generation, importable_renderers, merge_mask_to_rgba

log = logging.getLogger(__name__)

PIPELINE_TARGET = "sam3d_objects.pipeline.inference_pipeline_pointmap.InferencePipelinePointMap"
ALLOWED_TARGET_ROOTS = ("sam3d_objects", "torch", "torchvision", "moge")
DINO_TARGET = "sam3d_objects.model.backbone.dit.embedder.dino.Dino"
STAGING_DEFAULTS = {"dinov2_repo": "dinov2", "torch_hub_dir": "torch_hub", "moge_checkpoint": "moge/model.pt"}


def _omegaconf():
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError as err:
        raise StartupError("package omegaconf not installed (sam3d_objects' configs are read with it)") from err
    return OmegaConf, DictConfig, ListConfig


def config_nodes(node) -> list:
    """Every mapping node of an OmegaConf tree (the node itself first)."""
    _, DictConfig, ListConfig = _omegaconf()
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, DictConfig):
            found.append(item)
            stack.extend(item[k] for k in item if not _is_interpolation(item, k))
        elif isinstance(item, ListConfig):
            stack.extend(item[i] for i in range(len(item)) if not _is_interpolation(item, i))
    return found


def _is_interpolation(container, key) -> bool:
    OmegaConf, _, _ = _omegaconf()
    return OmegaConf.is_interpolation(container, key)


def check_targets(cfg, source: Path) -> None:
    """Refuses any hydra ``_target_`` outside sam3d_objects/torch/torchvision/moge (upstream's whitelist)."""
    for node in config_nodes(cfg):
        if "_target_" not in node:
            continue
        target = node.get("_target_")
        if not isinstance(target, str) or target.split(".", 1)[0] not in ALLOWED_TARGET_ROOTS:
            raise StartupError(f"{source}: _target_ {target!r} is outside {list(ALLOWED_TARGET_ROOTS)}; refusing it")


def staged_paths(workspace: Path, config: dict) -> dict[str, Path]:
    """The staged DINOv2 repository, torch.hub directory and MoGe checkpoint, each checked to exist."""
    paths = {key: workspace / str(config.get(key) or default) for key, default in STAGING_DEFAULTS.items()}
    expected = {
        "dinov2_repo": paths["dinov2_repo"] / "hubconf.py",
        "torch_hub_dir": paths["torch_hub_dir"] / "checkpoints",
        "moge_checkpoint": paths["moge_checkpoint"],
    }
    for key, path in expected.items():
        if not path.exists():
            raise StartupError(f"{path} not found (handler.{key}: staged so that nothing is downloaded at run time)")
    return paths


def dinov2_weight_file(dino_model: str) -> str:
    """The file dinov2's hubconf downloads for ``dino_model`` (``dinov2_vitl14_reg`` ->
    ``dinov2_vitl14_reg4_pretrain.pth``), as its ``_make_dinov2_model`` names it."""
    base, _, reg = dino_model.partition("_reg")
    return f"{base}_reg4_pretrain.pth" if dino_model.endswith("_reg") and not reg else f"{dino_model}_pretrain.pth"


def _rewrite_dino(cfg, staged: dict[str, Path], source: Path) -> list[str]:
    """Points every ``Dino`` node at the staged hubconf (``source: local``); returns the DINOv2 models named."""
    models = []
    for node in config_nodes(cfg):
        if node.get("_target_") == DINO_TARGET:
            node["repo_or_dir"] = str(staged["dinov2_repo"])
            node["source"] = "local"
            model = node.get("dino_model", "dinov2_vitb14")
            weights = staged["torch_hub_dir"] / "checkpoints" / dinov2_weight_file(model)
            if not weights.is_file():
                raise StartupError(f"{weights} not found: DINOv2 weights for {model} (named in {source})")
            models.append(model)
    return models


def _rewrite_moge(cfg, moge_checkpoint: Path, source: Path) -> None:
    """Gives MoGe's ``from_pretrained`` node the staged checkpoint instead of a Hugging Face repo id."""
    depth = cfg.get("depth_model")
    nodes = [n for n in config_nodes(depth) if str(n.get("_target_", "")).endswith(".from_pretrained")] if depth else []
    if len(nodes) != 1:
        raise StartupError(f"{source}: expected one depth_model ... MoGeModel.from_pretrained node, found {len(nodes)}")
    node = nodes[0]
    if "pretrained_model_name_or_path" in node:
        node["pretrained_model_name_or_path"] = str(moge_checkpoint)
    elif "_args_" in node and len(node["_args_"]) >= 1:
        node["_args_"][0] = str(moge_checkpoint)
    else:
        raise StartupError(f"{source}: MoGe from_pretrained node names no pretrained_model_name_or_path or _args_")


def compile_requested(config: dict) -> bool:
    """``handler.compile``; true stops start-up unless a C compiler is on PATH: torch.compile builds its kernels
    when the first request runs (the sam3d runtime image ships no compiler), which would fail every request."""
    wanted = bool(config.get("compile", False))
    if wanted and not (shutil.which("cc") or shutil.which("gcc")):
        raise StartupError("handler.compile: true needs a C compiler on PATH (cc or gcc; none found): set it false")
    return wanted


def prepare_config(pipeline_yaml: Path, config: dict, device: torch.device, runtime_dir: Path):
    """pipeline.yaml made ready to instantiate offline: checked, with absolute paths and staged weights.

    Returns the config and a digest of every config text plus each checkpoint's name and size.
    """
    OmegaConf, _, _ = _omegaconf()
    workspace = pipeline_yaml.parent
    cfg = OmegaConf.load(pipeline_yaml)
    if cfg.get("_target_") != PIPELINE_TARGET:
        raise StartupError(f"{pipeline_yaml}: _target_ is {cfg.get('_target_')!r}, expected {PIPELINE_TARGET}")
    check_targets(cfg, pipeline_yaml)
    staged = staged_paths(workspace, config)
    digest = hashlib.sha256(pipeline_yaml.read_bytes())
    dino_models: list[str] = []
    for key in sorted(k for k in cfg if k.endswith(("_config_path", "_ckpt_path"))):
        value = cfg[key]
        if value is None:
            continue
        path = workspace / str(value)
        if not path.is_file():
            raise StartupError(f"{path} not found (named by {key} in {pipeline_yaml})")
        if key.endswith("_ckpt_path"):
            digest.update(f"{value}:{path.stat().st_size}".encode())
            cfg[key] = str(path)
            continue
        sub = OmegaConf.load(path)
        check_targets(sub, path)
        dino_models += _rewrite_dino(sub, staged, path)
        digest.update(path.read_bytes())
        rewritten = runtime_dir / f"{key}.yaml"
        OmegaConf.save(sub, rewritten)
        cfg[key] = str(rewritten)
    if not dino_models:
        raise StartupError(f"no {DINO_TARGET} in the configs named by {pipeline_yaml}")
    _rewrite_moge(cfg, staged["moge_checkpoint"], pipeline_yaml)
    cfg.depth_model.device = str(device)
    cfg.device = str(device)
    cfg.rendering_engine = "pytorch3d"  # as notebook/inference.py: nvdiffrast is not installed
    cfg.compile_model = compile_requested(config)
    cfg.workspace_dir = str(workspace)
    return cfg, staged, digest.hexdigest()


class OfficialGenerator:
    """``InferencePipelinePointMap.run`` as notebook/inference.py's ``Inference.__call__`` calls it, with the
    request's seed, step counts, decode formats and postprocessing switches; stages timed per request."""

    def __init__(self, preset: Sam3dPreset, pipeline, device: torch.device) -> None:
        self.preset = preset
        self.pipeline = pipeline
        self.device = device
        self.renderers = importable_renderers()
        self.recorder = StageRecorder(device)
        for attribute, stage in STAGES:
            self.recorder.wrap(pipeline, attribute, stage)

    def picture_pointmap(self, image: np.ndarray) -> torch.Tensor:
        """The picture's pointmap (HxWx3, PyTorch3D camera frame: MoGe's, turned as ``compute_pointmap`` turns it),
        for ``run(..., pointmap=...)``. ``compute_pointmap`` clips points far behind the mask's; here there is no
        object yet, so clipping is switched off for this call: each object's ``run`` clips by its own mask."""
        saved = self.pipeline.clip_pointmap_beyond_scale
        self.pipeline.clip_pointmap_beyond_scale = None
        try:
            with self.device, torch.no_grad():
                rgba = merge_mask_to_rgba(image, np.ones(image.shape[:2], dtype=bool))
                return self.pipeline.compute_pointmap(rgba)["pointmap"].permute(1, 2, 0)
        finally:
            self.pipeline.clip_pointmap_beyond_scale = saved

    def generate(
        self, image: np.ndarray, mask: np.ndarray, options: GenerateOptions, pointmap: torch.Tensor | None = None
    ) -> Generation:
        self.recorder.reset()
        rgba = merge_mask_to_rgba(image, mask)
        with inference_steps_restored(self.pipeline.models):
            out = self.pipeline.run(
                rgba,
                None,
                options.seed,
                stage1_only=False,
                with_mesh_postprocess=options.mesh_postprocess,
                with_texture_baking=options.texture_baking,
                with_layout_postprocess=False,  # not wired at the pinned commit (request.LAYOUT_UNAVAILABLE)
                use_vertex_color=True,
                stage1_inference_steps=options.ss_steps,
                stage2_inference_steps=options.slat_steps,
                decode_formats=list(options.decode_formats),
                pointmap=pointmap,
            )
        return Generation(
            gaussian=out.get("gs"),
            glb=out.get("glb"),
            rotation=out["rotation"][0].float().tolist(),
            translation=out["translation"][0].float().tolist(),
            scale=out["scale"][0].float().tolist(),
            stages_ms=dict(self.recorder.timings_ms),
            info={
                **run_info(self.pipeline, options, int(out["coords"].shape[0]), out.get("mesh")),
                "gpu_peak_mib": dict(self.recorder.peak_mib),
            },
        )


def check_gpu_memory(preset: Sam3dPreset, device: torch.device, config: dict) -> None:
    """Refuses a GPU below the preset's memory need (it would answer 507 to every request), unless the archive's
    ``handler.allow_small_gpu`` or ``GEN3D_ALLOW_SMALL_GPU=1`` says to try anyway."""
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    if total_gib >= preset.min_gpu_memory_gib:
        return
    message = f"{device} has {total_gib:.1f} GiB; preset {preset.name} needs >= {preset.min_gpu_memory_gib} GiB"
    if config.get("allow_small_gpu") is True or os.environ.get("GEN3D_ALLOW_SMALL_GPU") == "1":
        log.warning("%s; starting anyway (allow_small_gpu): expect 507 answers", message)
        return
    raise StartupError(f"{message} (set handler.allow_small_gpu or GEN3D_ALLOW_SMALL_GPU=1 to try anyway)")


def load_official_pipeline(
    preset: Sam3dPreset, model_dir: Path, pipeline_yaml: Path, config: dict, device: torch.device
) -> tuple[OfficialGenerator, str]:
    """Instantiates the archive's pipeline.yaml on ``device`` (a CUDA GPU); returns it and its digest."""
    if device.type != "cuda":
        raise StartupError(f"preset {preset.name} needs a CUDA GPU; this worker has none (device {device})")
    check_gpu_memory(preset, device, config)
    runtime_dir = Path(tempfile.mkdtemp(prefix="sam3d-configs-"))
    cfg, staged, digest = prepare_config(pipeline_yaml, config, device, runtime_dir)
    os.environ["LIDRA_SKIP_INIT"] = "true"  # as notebook/inference.py: sam3d_objects.init is not shipped
    os.environ["HF_HUB_OFFLINE"] = "1"  # anything Hugging Face fails instead of downloading
    if "huggingface_hub" in sys.modules:  # it reads the variable at import
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    torch.hub.set_dir(str(staged["torch_hub_dir"]))  # DINOv2 weights: checkpoints/ there, never fetched
    try:
        import sam3d_objects  # noqa: F401
        from hydra.utils import instantiate
    except ImportError as err:
        raise StartupError(
            f"cannot import {err.name} (sam3d_objects and hydra-core come with the sam3d image)"
        ) from err
    log.info("instantiating %s from %s on %s", PIPELINE_TARGET, pipeline_yaml, device)
    pipeline = instantiate(cfg)
    return OfficialGenerator(preset, pipeline, device), digest
