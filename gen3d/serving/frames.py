"""Camera frames and glTF's, written once for every model that places a mesh in the picture's camera.

glTF 2.0 is right-handed with +y up; a glTF camera looks down its -z axis with +x to the right. A viewer that puts
its camera at the origin with glTF's default orientation then sees the mesh where the picture shows it.
"""

from __future__ import annotations

import numpy as np

# OpenCV camera -> glTF camera: x stays (right), y down -> up, z forward -> backward: diag(1, -1, -1).
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])


def opencv_camera_to_gltf(points: np.ndarray) -> np.ndarray:
    """Points (..., 3) in an OpenCV camera frame (x right, y down, z forward, as SAM 3D Body's vertices plus its
    camera translation) in the glTF camera frame: ``(x, y, z)_gltf = (x, -y, -z)_opencv``, i.e. ``p @ diag(1, -1,
    -1)``. The map is a rotation (180 degrees about x, determinant +1): triangle winding, and with it the faces'
    outward side, is kept."""
    return np.asarray(points, dtype=np.float64) @ OPENCV_TO_GLTF
