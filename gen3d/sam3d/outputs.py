"""generate_3d's output files: the Gaussian splat PLY (the model's own ``save_ply``), the GLB (trimesh) and
the pose JSON, with the frame conventions spelled out in the pose file itself. pose.json is also the generation's
manifest: it lists the other files (name, size, SHA-256) and is written after them, so a generation whose
pose.json exists is complete."""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass

from gen3d.sam3d.types import Generation

POSE_FORMAT = "gen3d.sam3d.pose/v1"
CONTENT_TYPES = {".ply": "application/octet-stream", ".glb": "model/gltf-binary", ".json": "application/json"}  # suffix
FILE_NAMES = {"ply": "object.ply", "glb": "object.glb", "pose": "pose.json"}
# The conventions of InferencePipelinePointMap's pose (see docs/http-api.md's generate_3d section).
FRAMES = {
    "rotation_format": "quaternion w, x, y, z (PyTorch3D quaternion_to_matrix gives R)",
    "camera_frame": "PyTorch3D camera of the input image: x left, y up, z forward (OpenCV camera: diag(-1, -1, 1))",
    "object_frame": "the PLY's coordinates: object-centred, z up, within [-0.5, 0.5]^3",
    "object_to_camera": "p_camera = (scale * p_object) @ R + translation (row vectors, as PyTorch3D's Transform3d)",
    "glb_frame": "the PLY frame turned y-up: (x, y, z)_glb = (x, z, -y)_object",
}


@dataclass
class Encoded:
    """The bytes of each output file (``ply``, ``glb``, ``pose``) and the summary the response carries."""

    files: dict[str, bytes]
    pose: dict[str, list[float]]
    summary: dict[str, object]


def ply_bytes(gaussian) -> bytes:
    """The splat as written by ``Gaussian.save_ply`` (x, y, z, normals, f_dc_*, opacity, scale_*, rot_*)."""
    buf = io.BytesIO()
    gaussian.save_ply(buf)
    return buf.getvalue()


def glb_bytes(mesh) -> bytes:
    """The trimesh mesh as binary glTF."""
    return mesh.export(file_type="glb")


def _finite(values: list[float], name: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the model returned a non-finite {name}: {values}")
    return [float(v) for v in values]


def encode_generation(gen: Generation, meta: dict[str, object]) -> Encoded:
    """PLY, GLB (when a mesh was decoded) and pose JSON of one generation; ``meta`` goes into pose.json."""
    pose = {
        "rotation": _finite(gen.rotation, "rotation"),
        "translation": _finite(gen.translation, "translation"),
        "scale": _finite(gen.scale, "scale"),
    }
    files: dict[str, bytes] = {}
    summary: dict[str, object] = {}
    if gen.gaussian is not None:
        files["ply"] = ply_bytes(gen.gaussian)
        summary["gaussians"] = int(gen.gaussian.get_xyz.shape[0])
    if gen.glb is not None:
        files["glb"] = glb_bytes(gen.glb)
        summary["mesh"] = {"vertices": int(len(gen.glb.vertices)), "faces": int(len(gen.glb.faces))}
    listed = {
        name: {"file": FILE_NAMES[name], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }
    document = {"format": POSE_FORMAT, **pose, "frames": FRAMES, **meta, "files": listed}
    files["pose"] = json.dumps(document, indent=1).encode()
    summary["sizes_mb"] = {name: round(len(data) / 1e6, 3) for name, data in files.items()}
    return Encoded(files=files, pose=pose, summary=summary)
