"""generate_body's answer and files: per person its numbers, its mesh as GLB (placed in the picture's camera frame,
turned to glTF's) and its params JSON; and one GLB with everyone placed.

Frames (upstream's): ``keypoints_3d`` and the mesh come in an OpenCV-style camera frame (x right, y down, z forward,
metres) centred on the person; adding ``camera.translation`` places them in the picture's camera, where
``keypoints_2d = project(keypoints_3d + translation)`` with the request's intrinsics. The GLBs hold
``opencv_camera_to_gltf(vertices + translation)``: a glTF viewer's default camera at the origin sees each person
where the picture shows them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import trimesh

from gen3d.serving.frames import opencv_camera_to_gltf

PARAMS_FORMAT = "gen3d.sam3d_body.params/v1"
CONTENT_TYPES = {"glb": "model/gltf-binary", "params": "application/json"}
FRAMES = {
    "keypoints_3d": "OpenCV camera axes (x right, y down, z forward), metres, centred on the person",
    "camera_frame": "keypoints_3d + camera.translation; keypoints_2d = K (keypoints_3d + translation), K from the "
    "request (focal_length / cam_int) or upstream's default (focal length = image diagonal, centre principal point)",
    "glb_frame": "glTF camera frame: (x, y, z)_glb = (x, -y, -z)_camera (x right, y up, the camera looks down -z)",
    "global_rotation": "MHR root rotation, Euler angles ZYX (radians, roma.rotmat_to_euler('ZYX'))",
}
# upstream's output name -> ours
PARAMS = {
    "global_rot": "global_rotation",
    "body_pose_params": "body_pose",
    "shape_params": "shape",
    "hand_pose_params": "hand_pose",
    "scale_params": "scale",
}


@dataclass
class EncodedPerson:
    """One person's answer fields (without outputs) and files (``glb``, ``params``)."""

    fields: dict[str, object]
    files: dict[str, bytes]
    mesh: trimesh.Trimesh


def finite_list(value, name: str) -> list:
    """A numpy value as (nested) lists of floats; a non-finite number is the model's fault (500), never sent."""
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"the model returned a non-finite {name}")
    return np.round(array, 6).tolist()


def person_mesh(out: dict, faces: np.ndarray) -> trimesh.Trimesh:
    """The person's MHR mesh in glTF's camera frame (see the module's docstring)."""
    placed = np.asarray(out["pred_vertices"], dtype=np.float64) + np.asarray(out["pred_cam_t"], dtype=np.float64)
    return trimesh.Trimesh(vertices=opencv_camera_to_gltf(placed), faces=faces, process=False)


def encode_person(index: int, out: dict, faces: np.ndarray, meta: dict[str, object]) -> EncodedPerson:
    """The answer fields and files of upstream's output ``out`` for person ``index``."""
    fields: dict[str, object] = {
        "index": index,
        "box": finite_list(out["bbox"], "box"),
        "keypoints_2d": finite_list(out["pred_keypoints_2d"], "keypoints_2d"),
        "keypoints_3d": finite_list(out["pred_keypoints_3d"], "keypoints_3d"),
        "camera": {
            "focal_length": finite_list(out["focal_length"], "focal_length"),
            "translation": finite_list(out["pred_cam_t"], "translation"),
        },
        **{ours: finite_list(out[theirs], ours) for theirs, ours in PARAMS.items()},
    }
    if "lhand_bbox" in out:
        fields["hand_boxes"] = {
            "left": finite_list(out["lhand_bbox"], "hand box"),
            "right": finite_list(out["rhand_bbox"], "hand box"),
        }
    mesh = person_mesh(out, faces)
    fields["mesh"] = {"vertices": len(mesh.vertices), "faces": len(mesh.faces)}
    if not math.isfinite(float(np.abs(mesh.vertices).max())):
        raise ValueError("the model returned non-finite vertices")
    params = {"format": PARAMS_FORMAT, "frames": FRAMES, **meta, **fields}
    files = {"glb": mesh.export(file_type="glb"), "params": json.dumps(params).encode()}
    return EncodedPerson(fields=fields, files=files, mesh=mesh)


def people_glb(people: list[EncodedPerson]) -> bytes:
    """One GLB with every person's mesh, each a node named ``person_<index>``, all in the same camera frame."""
    scene = trimesh.Scene()
    for person in people:
        name = f"person_{person.fields['index']}"
        scene.add_geometry(person.mesh, geom_name=name, node_name=name)
    return scene.export(file_type="glb")
