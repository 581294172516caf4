"""generate_3d through a real TorchServe (model sam3d, demo preset tiny-cpu-demo) with S3 served by moto.

Each generation costs seconds on a CPU, so a handful of module-scoped results serve all assertions.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pytest
import requests
import trimesh
from PIL import Image
from plyfile import PlyData

from gen3d.serving.masks import mask_png, rle_from_mask
from tests.conftest import BUCKET
from tests.integration import http_support

pytestmark = pytest.mark.sam3d

PRESET = "tiny-cpu-demo"
IDS = {"session_id": "s3d-001", "user_id": "user-3d"}
H, W = 96, 128
SPLAT_FIELDS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
SPLAT_FIELDS += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def picture() -> np.ndarray:
    """A coloured disc on a gradient: the object the mask selects."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 90)], -1).astype(np.uint8)
    img[disc()] = (220, 40, 40)
    return img


def disc() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - 48) ** 2 + (xx - 60) ** 2 < 30**2


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def post(server, body, headers=None) -> requests.Response:
    return http_support.post(server, body, headers, path="/predictions/sam3d", timeout=300)


def read(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def scene(s3) -> dict:
    s3.put_object(Bucket=BUCKET, Key="test-3d/image.png", Body=png(picture()))
    s3.put_object(Bucket=BUCKET, Key="test-3d/mask.png", Body=mask_png(disc()))
    return {"task": "generate_3d", "bucket": BUCKET, "image_s3_key": "test-3d/image.png", "seed": 7, **IDS}


def generate(server, payload: dict) -> dict:
    resp = post(server, payload)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["task"] == "generate_3d"
    return body


@pytest.fixture(scope="module")
def from_png_mask(torchserve, scene) -> dict:
    """Gaussian splat and mesh, mask as a PNG in S3."""
    return generate(torchserve, {**scene, "mask_s3_key": "test-3d/mask.png"})


@pytest.fixture(scope="module")
def from_rle(torchserve, scene) -> dict:
    """The same mask as COCO RLE, same seed, splat only."""
    return generate(torchserve, {**scene, "mask_rle": rle_from_mask(disc()), "decode_formats": ["gaussian"]})


@pytest.fixture(scope="module")
def from_polygon(torchserve, scene) -> dict:
    """Another object (a polygon), same seed, splat only."""
    polygon = [[20, 20], [100, 24], [90, 80], [30, 70]]
    return generate(torchserve, {**scene, "mask_polygon": polygon, "decode_formats": ["gaussian"]})


def test_outputs_go_to_s3_under_the_request_prefix(from_png_mask, s3):
    body = from_png_mask
    prefix = f"gen3d-outputs/user-3d/s3d-001/3d/{body['generation_id']}/"
    assert body["outputs"] == {"ply": prefix + "object.ply", "glb": prefix + "object.glb", "pose": prefix + "pose.json"}
    assert body["output_bucket"] == BUCKET and body["session_id"] == "s3d-001" and body["user_id"] == "user-3d"
    assert body["preset"] == PRESET and body["demo"] is True
    assert body["model_id"].startswith(f"sam3d/{PRESET}/")
    assert body["seed"] == 7 and body["decode_formats"] == ["gaussian", "mesh"]
    assert body["steps"] == {"sparse_structure": 2, "slat": 2} and body["voxels"] > 0
    for stage in ("pointmap", "preprocess", "sparse_structure", "pose", "slat", "decode", "glb"):
        assert body["timings_ms"]["stages"][stage] >= 0
    for name, key in body["outputs"].items():
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["Metadata"]["preset"] == PRESET
        assert round(head["ContentLength"] / 1e6, 3) == body["sizes_mb"][name]


def test_ply_is_a_gaussian_splat(from_png_mask, s3):
    vertices = PlyData.read(io.BytesIO(read(s3, from_png_mask["outputs"]["ply"])))["vertex"].data
    assert set(SPLAT_FIELDS) <= set(vertices.dtype.names)
    assert len(vertices) == from_png_mask["gaussians"] > 0
    for name in SPLAT_FIELDS:
        assert np.isfinite(vertices[name]).all(), name
    assert np.ptp(vertices["x"]) > 0 and np.ptp(vertices["f_dc_0"]) > 0  # not one repeated Gaussian


def test_glb_loads_with_trimesh(from_png_mask, s3):
    mesh = trimesh.load(io.BytesIO(read(s3, from_png_mask["outputs"]["glb"])), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0 and len(mesh.vertices) > 0
    assert from_png_mask["mesh"] == {"vertices": len(mesh.vertices), "faces": len(mesh.faces)}
    assert from_png_mask["mesh_extracted"] is True
    assert np.isfinite(mesh.vertices).all()


def test_pose_is_a_unit_quaternion_translation_and_scale(from_png_mask, s3):
    pose = from_png_mask["pose"]
    assert len(pose["rotation"]) == 4 and len(pose["translation"]) == 3 and len(pose["scale"]) == 3
    assert np.linalg.norm(pose["rotation"]) == pytest.approx(1.0, abs=1e-4)
    assert all(np.isfinite(v) for values in pose.values() for v in values) and min(pose["scale"]) > 0
    document = json.loads(read(s3, from_png_mask["outputs"]["pose"]))
    assert {k: document[k] for k in pose} == pose
    assert document["preset"] == PRESET and document["generation_id"] == from_png_mask["generation_id"]
    assert "x left, y up, z forward" in document["frames"]["camera_frame"]
    for name in ("ply", "glb"):  # pose.json is the manifest of the generation's other files
        data, key = read(s3, from_png_mask["outputs"][name]), from_png_mask["outputs"][name]
        listed = {"file": key.rsplit("/", 1)[1], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert document["files"][name] == listed


def test_same_mask_and_seed_give_the_same_splat_bytes(from_png_mask, from_rle, s3):
    assert from_rle["outputs"]["ply"] != from_png_mask["outputs"]["ply"]
    assert "glb" not in from_rle["outputs"] and "mesh" not in from_rle
    assert read(s3, from_rle["outputs"]["ply"]) == read(s3, from_png_mask["outputs"]["ply"])
    assert from_rle["pose"] == from_png_mask["pose"] and from_rle["preset"] == PRESET


def test_polygon_mask_is_another_object(from_png_mask, from_polygon, s3):
    data = read(s3, from_polygon["outputs"]["ply"])
    vertices = PlyData.read(io.BytesIO(data))["vertex"].data
    assert len(vertices) > 0 and all(np.isfinite(vertices[n]).all() for n in SPLAT_FIELDS)
    assert data != read(s3, from_png_mask["outputs"]["ply"])
    assert from_polygon["preset"] == PRESET


def test_inline_outputs_without_s3(torchserve):
    payload = {
        "task": "generate_3d",
        "image_base64": base64.b64encode(png(picture())).decode(),
        "mask_rle": rle_from_mask(disc()),
        "seed": 7,
        "decode_formats": ["gaussian"],
    }
    body = generate(torchserve, payload)
    assert "outputs" not in body and body["preset"] == PRESET
    assert sorted(body["outputs_base64"]) == ["ply", "pose"]
    vertices = PlyData.read(io.BytesIO(base64.b64decode(body["outputs_base64"]["ply"])))["vertex"].data
    assert len(vertices) == body["gaussians"] > 0
    assert json.loads(base64.b64decode(body["outputs_base64"]["pose"]))["rotation"] == body["pose"]["rotation"]


def test_raw_rgba_body_carries_the_mask_in_alpha(torchserve):
    rgba = np.concatenate([picture(), (disc() * 255).astype(np.uint8)[..., None]], -1)
    resp = post(torchserve, png(rgba), {"Content-Type": "image/png"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task"] == "generate_3d" and body["preset"] == PRESET and body["seed"] == 42
    mesh = trimesh.load(io.BytesIO(base64.b64decode(body["outputs_base64"]["glb"])), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0


def rle_of(mask: np.ndarray) -> dict:
    return rle_from_mask(mask)


BAD_REQUESTS = [
    ({"mask_rle": rle_of(np.ones((H, W + 1), bool))}, 400, "mask_rle", "is 96x129"),
    ({"mask_rle": rle_of(np.zeros((H, W), bool))}, 400, "mask_rle", "empty"),
    ({"mask_rle": {"size": [H, W], "counts": "#not-rle!"}}, 400, "mask_rle", "RLE"),
    ({"mask_rle": {"size": [H], "counts": "x"}}, 400, "mask_rle", "size"),
    ({"mask_polygon": [[1, 1], [2, 2]]}, 400, "mask_polygon", "3"),
    ({}, 400, "mask_s3_key", "mask is required"),
    ({"mask_s3_key": "test-3d/missing.png"}, 404, "mask_s3_key", "does not exist"),
    ({"mask_s3_key": "test-3d/image.png", "mask_rle": rle_of(disc())}, 400, "mask_rle", "exactly one"),
    ({"mask_s3_key": "test-3d/mask.png", "task": "get_embedding"}, 400, "task", "model sam3"),
    ({"mask_s3_key": "test-3d/mask.png", "task": "segment"}, 400, "task", "model sam3"),
    ({"mask_s3_key": "test-3d/mask.png", "task": "explode"}, 400, "task", "generate_3d"),
    ({"mask_s3_key": "test-3d/mask.png", "decode_formats": ["mesh"]}, 400, "decode_formats", "gaussian"),
    ({"mask_s3_key": "test-3d/mask.png", "decode_formats": ["voxels"]}, 400, "decode_formats", "gaussian"),
    ({"mask_s3_key": "test-3d/mask.png", "texture_baking": True}, 400, "texture_baking", "needs nvdiffrast"),
    ({"mask_s3_key": "test-3d/mask.png", "layout_postprocess": True}, 400, "layout_postprocess", "pinned commit"),
    ({"mask_s3_key": "test-3d/mask.png", "mesh_postprocess": "yes"}, 400, "mesh_postprocess", "true or false"),
    ({"mask_s3_key": "test-3d/mask.png", "seed": "7"}, 400, "seed", "integer"),
    ({"mask_s3_key": "test-3d/mask.png", "ss_steps": 0}, 400, "ss_steps", "greater than or equal to 1"),
    ({"mask_s3_key": "test-3d/mask.png", "user_id": None}, 400, "user_id", "required"),
    ({"mask_s3_key": "test-3d/mask.png", "image_s3_key": "test-3d/nope.png"}, 404, "image_s3_key", "does not exist"),
]


@pytest.mark.parametrize(("change", "status", "field", "words"), BAD_REQUESTS)
def test_bad_request_names_the_field(torchserve, scene, change, status, field, words):
    payload = {k: v for k, v in {**scene, **change}.items() if v is not None}
    resp = post(torchserve, payload)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "error" and body["error"]["field"] == field and body["error"]["code"] == status
    assert words in body["error"]["message"], body
    assert body["preset"] == PRESET


def test_raw_body_without_alpha_is_refused(torchserve):
    resp = post(torchserve, png(picture()), {"Content-Type": "image/png"})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "body"
    assert "alpha" in resp.json()["error"]["message"]


def test_worker_keeps_serving_after_bad_requests(torchserve, scene):
    for change, _, _, _ in BAD_REQUESTS[:3]:
        assert post(torchserve, {**scene, **change}).status_code == 400
    assert requests.get(torchserve.inference_url + "/ping", timeout=5).json()["status"] == "Healthy"
    body = generate(torchserve, {**scene, "mask_rle": rle_from_mask(disc()), "decode_formats": ["gaussian"]})
    assert body["gaussians"] > 0 and body["preset"] == PRESET
