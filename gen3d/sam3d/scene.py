"""Several objects of one picture as one scene: the glTF scene placing each object's mesh by its pose, and every
object's Gaussians merged in the camera frame (upstream ``notebook/inference.py::make_scene``, re-done on the
PLY's arrays: that file is not importable here), plus the time budget a many-object request must fit."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from plyfile import PlyData, PlyElement

from gen3d.errors import InvalidField, StartupError, Unprocessable
from gen3d.models import SAM3D
from gen3d.sam3d.presets import Sam3dPreset
from gen3d.serving.frames import quaternions_wxyz_composed, rotation_matrix_wxyz, sam3d_glb_to_gltf_scene
from gen3d.serving.limits import SCENE_OBJECTS, SCENE_OBJECTS_CAP

# make_scene keeps every Gaussian at least 1.1 x the object's minimum kernel size, scaled with the object
KERNEL_MARGIN = 1.1


@dataclass(frozen=True)
class PlacedObject:
    """One object of a scene: its index in the request, its pose and what was decoded of it."""

    index: int
    pose: dict[str, list[float]]  # rotation (w, x, y, z), translation, scale: the object's answer
    mesh: object | None  # trimesh of the object's GLB (y up)
    ply: bytes | None  # the object's Gaussian splat PLY (object frame)
    min_kernel_size: float  # the splat's ``mininum_kernel_size``

    @property
    def scale(self) -> float:
        return uniform_scale(self.pose["scale"])


def uniform_scale(scale: list[float]) -> float:
    """The pose's scale, which SAM 3D's pose decoder gives uniform (make_scene asserts it): one number."""
    if not all(math.isclose(value, scale[0], rel_tol=1e-5) for value in scale):
        raise ValueError(f"the model returned a non-uniform scale {scale}; a scene needs a uniform one")
    return float(scale[0])


def scene_glb(objects: list[PlacedObject]) -> bytes:
    """Binary glTF with one node per object holding its mesh, the node's matrix placing it by its pose in glTF's
    frame (origin at the picture's camera, which looks down -z)."""
    scene = trimesh.Scene()
    for obj in objects:
        if obj.mesh is None:
            continue
        pose = obj.pose
        matrix = sam3d_glb_to_gltf_scene(pose["rotation"], pose["translation"], obj.scale)
        name = f"object_{obj.index}"
        scene.add_geometry(obj.mesh, node_name=name, geom_name=name, transform=matrix)
    return scene.export(file_type="glb")


def gaussians_in_camera_frame(obj: PlacedObject) -> np.ndarray:
    """The object's PLY vertices (``Gaussian.save_ply``'s fields) moved to the PyTorch3D camera frame as
    make_scene moves them: centres by the pose, orientations composed with the pose's rotation, scales times
    the pose's scale and at least 1.1 x the scaled minimum kernel size. Opacity and colour stay."""
    vertices = PlyData.read(io.BytesIO(obj.ply))["vertex"].data.copy()
    pose, scale = obj.pose, obj.scale
    rotation = rotation_matrix_wxyz(pose["rotation"])  # p_camera = (s * p) @ R + t, as PyTorch3D
    xyz = np.stack([vertices[axis] for axis in "xyz"], axis=1).astype(np.float64)
    xyz = (scale * xyz) @ rotation + np.asarray(pose["translation"])
    w, x, y, z = pose["rotation"]
    orientations = np.stack([vertices[f"rot_{i}"] for i in range(4)], axis=1)
    orientations = quaternions_wxyz_composed([w, -x, -y, -z], orientations)  # q^-1 * g
    floor = math.log(KERNEL_MARGIN * obj.min_kernel_size * scale) if obj.min_kernel_size > 0 else -math.inf
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
        vertices[f"scale_{i}"] = np.maximum(vertices[f"scale_{i}"] + math.log(scale), floor)
    for i in range(4):
        vertices[f"rot_{i}"] = orientations[:, i]
    return vertices


def scene_ply(objects: list[PlacedObject]) -> bytes:
    """Every object's Gaussians in the camera frame, in one PLY of the objects' own format (no display
    normalisation: coordinates are the pointmap's, in metres when the pointmap is metric)."""
    parts = [gaussians_in_camera_frame(obj) for obj in objects if obj.ply is not None]
    buf = io.BytesIO()
    PlyData([PlyElement.describe(np.concatenate(parts), "vertex")]).write(buf)
    return buf.getvalue()


def check_time_budget(objects: int, object_seconds: float, budget_s: float, where: str) -> None:
    """422 naming ``masks`` when ``objects`` at ``object_seconds`` each cannot finish within ``budget_s``."""
    expected = objects * object_seconds
    if expected > budget_s:
        fitting = max(1, int(budget_s // object_seconds))
        raise Unprocessable(
            "masks",
            f"{objects} objects take about {expected:.0f} s on {where} ({object_seconds:g} s each), above the "
            f"{budget_s:g} s response timeout; send at most {fitting} masks per request, or use an async "
            "endpoint serving an archive built with a longer responseTimeout (build_archives --response-timeout, "
            "async requests may run up to 3600 s)",
        )


@dataclass(frozen=True)
class SceneLimits:
    """What bounds a many-mask request on this worker: how many masks, and the time they must fit in."""

    max_objects: int
    object_seconds: float  # expected per object on this preset and device
    response_timeout_s: float  # the archive's responseTimeout
    where: str  # the preset and device, for the refusal's message

    def check(self, objects: int) -> None:
        """400 naming ``masks`` above :attr:`max_objects`; 422 when the objects cannot fit the time."""
        if objects > self.max_objects:
            raise InvalidField("masks", f"at most {self.max_objects} masks per request on this server, not {objects}")
        check_time_budget(objects, self.object_seconds, self.response_timeout_s, self.where)


def scene_limits(config: dict, preset: Sam3dPreset, device: torch.device) -> SceneLimits:
    """The limits an archive's ``handler`` section sets (``max_scene_objects``, ``object_seconds``, and
    ``response_timeout_s``: the archive's responseTimeout) over the preset's defaults; a bad value stops start-up."""
    max_objects = config.get("max_scene_objects", SCENE_OBJECTS)
    if type(max_objects) is not int or not 1 <= max_objects <= SCENE_OBJECTS_CAP:
        raise StartupError(f"handler.max_scene_objects must be an integer 1-{SCENE_OBJECTS_CAP}, not {max_objects!r}")
    seconds = config.get("object_seconds", preset.object_seconds.get(device.type))
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < math.inf:
        raise StartupError(
            f"handler.object_seconds must be a positive number of seconds per object, not {seconds!r} (preset "
            f"{preset.name} knows {preset.object_seconds} by device type; this worker runs on {device.type})"
        )
    timeout = config.get("response_timeout_s", SAM3D.response_timeout_s)
    return SceneLimits(max_objects, float(seconds), float(timeout), f"preset {preset.name} on {device.type}")
