"""generate_body through a real TorchServe (model sam3d_body, demo preset tiny-cpu-demo) with S3 served by moto.

The demo's MHR stand-in maps keypoint k to vertex ``linspace(0, 18438, 308)[k]`` (gen3d.sam3d_body.demo), which lets
the GLB's vertices be checked against the answer's keypoints: an independent route to the glTF frame conversion.
"""

from __future__ import annotations

import base64
import io
import shutil
import time

import numpy as np
import pytest
import requests
import trimesh
from PIL import Image

from gen3d.serving.masks import box_of, rle_from_mask
from tests.conftest import BUCKET
from tests.integration import http_support

pytestmark = pytest.mark.sam3d_body

H, W = 120, 160
IDS = {"session_id": "body-001", "user_id": "user-body"}
BOXES = [[10.0, 12.0, 70.0, 110.0], [80.0, 5.0, 150.0, 118.0]]
FOCAL = 300.0
VERTICES, FACES = 18_439, 36_874


def picture_png() -> bytes:
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 90)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def inline(**fields) -> dict:
    return {"task": "generate_body", "image_base64": base64.b64encode(picture_png()).decode(), **fields}


def post(server, body) -> requests.Response:
    return http_support.post(server, body, path="/predictions/sam3d_body", timeout=300)


def answer(server, body) -> dict:
    resp = post(server, body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def glb_meshes(data: bytes) -> dict[str, trimesh.Trimesh]:
    return dict(trimesh.load(io.BytesIO(data), file_type="glb", process=False).geometry)


def geometries(data: bytes) -> list[trimesh.Trimesh]:
    return list(trimesh.load(io.BytesIO(data), file_type="glb", process=False).geometry.values())


@pytest.fixture(scope="module")
def two_people(torchserve) -> dict:
    """Two boxes, body decoder only, a focal length: every value comes back inline."""
    return answer(torchserve, inline(boxes=BOXES, focal_length=FOCAL, inference_type="body"))


def test_each_box_is_a_person_with_70_keypoints_and_the_mhr_mesh(two_people):
    assert two_people["preset"] == "tiny-cpu-demo" and two_people["demo"] is True
    names = two_people["keypoint_names"]
    assert len(names) == 70 and names[:3] == ["nose", "left-eye", "right-eye"]
    people = two_people["people"]
    assert [p["index"] for p in people] == [0, 1]
    for person, box in zip(people, BOXES, strict=True):
        assert person["box"] == box
        assert np.asarray(person["keypoints_2d"]).shape == (70, 2)
        assert np.asarray(person["keypoints_3d"]).shape == (70, 3)
        assert person["camera"]["focal_length"] == FOCAL
        assert len(person["camera"]["translation"]) == 3
        shapes = {k: len(person[k]) for k in ("global_rotation", "body_pose", "shape", "hand_pose", "scale")}
        assert shapes == {"global_rotation": 3, "body_pose": 133, "shape": 45, "hand_pose": 108, "scale": 28}
        assert person["mesh"] == {"vertices": VERTICES, "faces": FACES}
        [mesh] = geometries(base64.b64decode(person["outputs_base64"]["glb"]))
        assert (len(mesh.vertices), len(mesh.faces)) == (VERTICES, FACES)


def test_keypoints_2d_are_the_camera_projection_of_keypoints_3d(two_people):
    for person in two_people["people"]:
        placed = np.asarray(person["keypoints_3d"]) + np.asarray(person["camera"]["translation"])
        k = np.array([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]])
        projected = placed @ k.T
        assert np.allclose(projected[:, :2] / projected[:, 2:], person["keypoints_2d"], atol=1e-2)


def test_the_glb_is_the_camera_frame_turned_to_gltf(two_people):
    """Vertex picks[k] is keypoint k (the demo's mapping): in the GLB it must be (x, -y, -z) of keypoint k placed
    in the camera frame, computed here from the answer's numbers alone."""
    picks = np.linspace(0, VERTICES - 1, 308).astype(np.int64)[:70]
    for person in two_people["people"]:
        [mesh] = geometries(base64.b64decode(person["outputs_base64"]["glb"]))
        camera = np.asarray(person["keypoints_3d"]) + np.asarray(person["camera"]["translation"])
        expected = np.stack([camera[:, 0], -camera[:, 1], -camera[:, 2]], axis=1)
        assert np.allclose(np.asarray(mesh.vertices)[picks], expected, atol=1e-3)


def test_people_glb_places_everyone(two_people):
    data = base64.b64decode(two_people["outputs_base64"]["people_glb"])
    meshes = glb_meshes(data)
    assert sorted(meshes) == ["person_0", "person_1"]
    for i, person in enumerate(two_people["people"]):
        alone = geometries(base64.b64decode(person["outputs_base64"]["glb"]))[0]
        assert np.allclose(meshes[f"person_{i}"].vertices, alone.vertices)
    params = [base64.b64decode(p["outputs_base64"]["params"]) for p in two_people["people"]]
    assert all(b'"format": "gen3d.sam3d_body.params/v1"' in p for p in params)


def test_a_mask_alone_gives_its_tight_box_and_full_inference_adds_hands(torchserve):
    mask = np.zeros((H, W), dtype=bool)
    mask[30:90, 40:75] = True
    body = answer(torchserve, inline(masks=[{"mask_rle": rle_from_mask(mask)}]))
    [person] = body["people"]
    assert person["box"] == box_of(mask) == [40.0, 30.0, 75.0, 90.0]
    assert body["inference_type"] == "full" and set(person["hand_boxes"]) == {"left", "right"}


def test_outputs_go_to_s3_under_the_request_prefix(torchserve, s3):
    s3.put_object(Bucket=BUCKET, Key="test-body/picture.png", Body=picture_png())
    body = answer(
        torchserve,
        {"task": "generate_body", "bucket": BUCKET, "image_s3_key": "test-body/picture.png", "boxes": BOXES[:1],
         "inference_type": "body", **IDS},
    )  # fmt: skip
    keys = body["people"][0]["outputs"]
    assert all(IDS["user_id"] in key and IDS["session_id"] in key for key in [*keys.values()])
    data = s3.get_object(Bucket=BUCKET, Key=body["outputs"]["people_glb"])["Body"].read()
    assert [len(m.vertices) for m in geometries(data)] == [VERTICES]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({}, "boxes", "people are required"),
        ({"boxes": [[0, 0, W + 1, 10]]}, "boxes", "outside"),
        ({"boxes": [[5, 5, 1, 1]]}, "boxes", "x0 < x1"),
        ({"boxes": [[1, 2, 3]]}, "boxes", "[x0, y0, x1, y1]"),
        ({"boxes": [BOXES[0]] * 9}, "boxes", "at most 8"),
        ({"boxes": BOXES, "masks": [{"mask_polygon": [[1, 1], [9, 1], [9, 9]]}]}, "masks", "pair up"),
        ({"masks": [{"mask_rle": {"size": [H + 1, W], "counts": "0"}}]}, "masks[0]", "image is"),
        ({"boxes": BOXES, "cam_int": [[1, 0, 0], [0, 1, 0]]}, "cam_int", "3x3"),
        ({"boxes": BOXES, "focal_length": -3}, "focal_length", "greater than 0"),
        ({"boxes": BOXES, "inference_type": "hand"}, "inference_type", "not served"),
    ],
)
def test_bad_people_and_cameras_are_400_naming_the_field(torchserve, fields, field, words):
    resp = post(torchserve, inline(**fields))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["field"] == field and words in error["message"], error


def test_a_missing_mhr_file_stops_start_up_naming_it(model_store, aws_env, tmp_path):
    """The worker refuses within seconds, naming the file; the model never gets a READY worker (polled for the
    refusal in the logs rather than waiting out a start-up timeout)."""
    from gen3d.bench.serving import loopback_torchserve

    store = tmp_path / "store"
    shutil.copytree(model_store / "sam3d_body", store / "sam3d_body")
    (store / "sam3d_body" / "assets" / "mhr_model.pt").unlink()

    def logs() -> str:
        return "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))

    with loopback_torchserve(store, tmp_path, aws_env, [], timeout=0) as server:  # no model: yields once started
        deadline = time.monotonic() + 180
        while "MHR not found at" not in logs():
            assert server.process.poll() is None and time.monotonic() < deadline, logs()[-3000:]
            time.sleep(0.5)
        assert "READY" not in server.model_status("sam3d_body")
    assert "assets/mhr_model.pt (handler.mhr_model)" in logs()
