"""Coordinate frames and the conversions between them, each written once and named by the frames it converts.

Frames (right-handed; a camera's frames have their origin at the camera centre)::

    PyTorch3D camera   x left,  y up,   z forward (into the scene)     SAM 3D Objects' poses and pointmaps
    OpenCV camera      x right, y down, z forward                      pinhole intrinsics, most estimators
    glTF               x right, y up,   z backward (towards the viewer) glTF 2.0 scenes; a glTF camera looks down -z

                 y (PyTorch3D, glTF)
                 |
    x (PyTorch3D)<---+---> x (OpenCV, glTF)        z forward (PyTorch3D, OpenCV) goes into the page;
                 |                                  z of glTF comes out of it, towards the viewer
                 v y (OpenCV)

A change of frame is a diagonal of +-1 (column vectors, ``p_to = B @ p_from``)::

    PyTorch3D camera -> glTF:  (x, y, z) -> (-x,  y, -z)   B = diag(-1,  1, -1)   (a half turn about y)
    OpenCV camera    -> glTF:  (x, y, z) -> ( x, -y, -z)   B = diag( 1, -1, -1)   (a half turn about x)

Both have determinant +1, so they are rotations: a placement composed with them stays a rotation, never a mirror.

SAM 3D Objects' object frame is z up; its GLB (upstream ``to_glb``: ``vertices @ [[1,0,0],[0,0,-1],[0,1,0]]``)
turns it y up::

    p_glb = Y @ p_object,   Y = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]   ((x, y, z) -> (x, z, -y))

A SAM 3D pose (``rotation`` quaternion w, x, y, z; ``translation``; ``scale``) maps the object frame to the
PyTorch3D camera frame with row vectors, as PyTorch3D's ``Transform3d`` (scale, then rotate, then translate)::

    p_camera = (s * p_object) @ R + t        R = quaternion_to_matrix(q)

in column vectors ``p_camera = s * R^T @ p_object + t``. Placing the object's GLB in a glTF scene therefore takes
the node matrix (4x4, column vectors, what a glTF node's ``matrix`` holds column-major)::

    p_gltf = B @ p_camera = B @ (s * R^T @ Y^T @ p_glb + t)
    node   = [[s * B @ R^T @ Y^T, B @ t], [0, 0, 0, 1]]

``B @ R^T @ Y^T`` is a rotation (all three are): the node is a uniform scale, a rotation and a translation.
A Gaussian's orientation quaternion ``g`` (object frame) becomes ``q^-1 * g`` in the camera frame, the
quaternion of ``R^T @ G`` (upstream ``make_scene``: ``quaternion_multiply(quaternion_invert(q), g)``).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

PYTORCH3D_CAMERA_TO_GLTF = np.diag([-1.0, 1.0, -1.0])
OPENCV_CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0])
SAM3D_OBJECT_TO_GLB = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def homogeneous(linear: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
    """The 4x4 matrix of ``p -> linear @ p + translation`` (column vectors)."""
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    if translation is not None:
        matrix[:3, 3] = translation
    return matrix


def rotation_matrix_wxyz(quaternion_wxyz: list[float]) -> np.ndarray:
    """The 3x3 rotation (column vectors) of a unit quaternion given w, x, y, z: PyTorch3D's
    ``quaternion_to_matrix`` (the quaternion is normalised first)."""
    w, x, y, z = quaternion_wxyz
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def quaternions_wxyz_composed(first_wxyz: list[float], then_wxyz: np.ndarray) -> np.ndarray:
    """``first * then`` for each of N quaternions ``then_wxyz`` (Nx4, w first, normalised here): the rotation
    that applies ``then`` and afterwards ``first``, as PyTorch3D's ``quaternion_multiply(first, then)``."""
    w, x, y, z = first_wxyz
    then = Rotation.from_quat(np.asarray(then_wxyz, dtype=np.float64)[:, [1, 2, 3, 0]])
    composed = (Rotation.from_quat([x, y, z, w]) * then).as_quat()
    return composed[:, [3, 0, 1, 2]]


def sam3d_object_to_pytorch3d_camera(rotation_wxyz: list[float], translation: list[float], scale: float) -> np.ndarray:
    """4x4 (column vectors) of a SAM 3D pose: ``p_camera = s * R^T @ p_object + t``."""
    return homogeneous(scale * rotation_matrix_wxyz(rotation_wxyz).T, np.asarray(translation, dtype=np.float64))


def sam3d_glb_to_gltf_scene(rotation_wxyz: list[float], translation: list[float], scale: float) -> np.ndarray:
    """4x4 glTF node matrix (column vectors) placing a SAM 3D object's GLB by its pose in a glTF scene whose
    origin is the picture's camera: ``B @ pose @ Y^T`` (see the module docstring)."""
    glb_to_object = homogeneous(SAM3D_OBJECT_TO_GLB.T)
    camera_to_gltf = homogeneous(PYTORCH3D_CAMERA_TO_GLTF)
    return camera_to_gltf @ sam3d_object_to_pytorch3d_camera(rotation_wxyz, translation, scale) @ glb_to_object


def opencv_camera_to_gltf(points: np.ndarray) -> np.ndarray:
    """Points (..., 3) in an OpenCV camera frame (SAM 3D Body's vertices plus its camera translation) in the glTF
    frame: ``(x, y, z) -> (x, -y, -z)``, row vectors times :data:`OPENCV_CAMERA_TO_GLTF` (a half turn about x, so
    triangle winding, and with it the faces' outward side, is kept)."""
    return np.asarray(points, dtype=np.float64) @ OPENCV_CAMERA_TO_GLTF
