"""generate_3d with several masks (one scene) through a real TorchServe (demo preset tiny-cpu-demo), S3 by moto.

The scene's nodes and merged Gaussians are checked against PyTorch3D's own transforms (upstream's
``compose_transform`` and ``make_scene`` calls), not against gen3d.serving.frames.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData
from pytorch3d.transforms import Transform3d, quaternion_invert, quaternion_multiply, quaternion_to_matrix

from gen3d.serving.masks import mask_png, rle_from_mask
from tests.conftest import BUCKET
from tests.integration.test_generate_3d_serving import IDS, H, W, disc, picture, png, post, read

pytestmark = pytest.mark.sam3d

SEED = 11


def box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def scene_answer(torchserve, s3) -> dict:
    """Three objects, one mask of each kind, outputs to S3."""
    s3.put_object(Bucket=BUCKET, Key="test-scene/image.png", Body=png(picture()))
    s3.put_object(Bucket=BUCKET, Key="test-scene/mask0.png", Body=mask_png(disc()))
    masks = [
        {"mask_s3_key": "test-scene/mask0.png"},
        {"mask_rle": rle_from_mask(box_mask(96, 8, 124, 40))},
        {"mask_polygon": [[4, 60], [40, 60], [40, 92], [4, 92]]},
    ]
    body = {"task": "generate_3d", "bucket": BUCKET, "image_s3_key": "test-scene/image.png", "seed": SEED}
    resp = post(torchserve, {**body, **IDS, "masks": masks})
    assert resp.status_code == 200, resp.text
    return resp.json()


def glb_json(data: bytes) -> dict:
    """The JSON chunk of a binary glTF."""
    assert data[:4] == b"glTF"
    length = struct.unpack("<I", data[12:16])[0]
    return json.loads(data[20 : 20 + length])


def pose_transform(pose: dict) -> Transform3d:
    """upstream's compose_transform(scale, quaternion_to_matrix(rotation), translation): object -> camera."""
    quaternion = torch.tensor([pose["rotation"]], dtype=torch.float64)
    scale = torch.tensor([pose["scale"]], dtype=torch.float64)
    return (
        Transform3d(dtype=torch.float64)
        .scale(scale)
        .rotate(quaternion_to_matrix(quaternion))
        .translate(torch.tensor([pose["translation"]], dtype=torch.float64))
    )


def test_n_masks_give_n_objects_seeded_by_index_with_their_files_under_the_generation(scene_answer, s3):
    objects = scene_answer["objects"]
    assert [o["index"] for o in objects] == [0, 1, 2] and [o["status"] for o in objects] == ["success"] * 3
    assert [o["seed"] for o in objects] == [SEED, SEED + 1, SEED + 2]
    folder = f"3d/{scene_answer['generation_id']}/"
    for obj in objects:
        assert set(obj["outputs"]) == {"ply", "glb", "pose"} and obj["gaussians"] > 0 and obj["mesh"]["faces"] > 0
        assert all(folder + f"objects/{obj['index']}/" in key for key in obj["outputs"].values())
        manifest = json.loads(read(s3, obj["outputs"]["pose"]))
        assert manifest["object_index"] == obj["index"] and manifest["rotation"] == obj["pose"]["rotation"]
    assert set(scene_answer["outputs"]) == {"scene_glb", "scene_ply"}
    assert all(key.endswith(folder + name) for key, name in zip(scene_answer["outputs"].values(), ["scene.glb",
               "scene.ply"], strict=True))  # fmt: skip
    timings = scene_answer["timings_ms"]
    assert len(timings["objects"]) == 3 and all(t["generate"] > 0 for t in timings["objects"])
    assert all(t["stages"]["pointmap"] < 50 for t in timings["objects"])  # the picture's pointmap, computed once


def test_each_scene_node_places_its_object_where_upstreams_transforms_put_it(scene_answer, s3):
    data = read(s3, scene_answer["outputs"]["scene_glb"])
    nodes = [node for node in glb_json(data)["nodes"] if "mesh" in node]
    assert [node["name"] for node in nodes] == ["object_0", "object_1", "object_2"]
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    for obj in scene_answer["objects"]:
        mesh = trimesh.load(io.BytesIO(read(s3, obj["outputs"]["glb"])), file_type="glb", force="mesh")
        glb = mesh.vertices
        object_frame = np.stack([glb[:, 0], -glb[:, 2], glb[:, 1]], axis=1)  # to_glb's (x, z, -y), undone
        camera = pose_transform(obj["pose"]).transform_points(torch.from_numpy(object_frame)[None])[0].numpy()
        expected = camera * [-1, 1, -1]  # PyTorch3D camera (x left, y up, z forward) -> glTF (x right, z back)
        matrix, geometry = scene.graph[f"object_{obj['index']}"]
        placed = trimesh.transform_points(scene.geometry[geometry].vertices, matrix)
        assert len(placed) == len(expected)
        np.testing.assert_allclose(placed, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_the_scene_ply_merges_every_objects_gaussians_as_make_scene_does(scene_answer, s3):
    scene = PlyData.read(io.BytesIO(read(s3, scene_answer["outputs"]["scene_ply"])))["vertex"]
    objects = [PlyData.read(io.BytesIO(read(s3, o["outputs"]["ply"])))["vertex"] for o in scene_answer["objects"]]
    assert scene.count == sum(o.count for o in objects) == sum(o["gaussians"] for o in scene_answer["objects"])
    start = 0
    for obj, ply in zip(scene_answer["objects"], objects, strict=True):
        part = scene.data[start : start + ply.count]
        start += ply.count
        xyz = torch.tensor(np.stack([ply[a] for a in "xyz"], 1), dtype=torch.float64)[None]
        expected = pose_transform(obj["pose"]).transform_points(xyz)[0].numpy()
        np.testing.assert_allclose(np.stack([part[a] for a in "xyz"], 1), expected, atol=1e-4)
        gaussian = torch.nn.functional.normalize(torch.tensor(np.stack([ply[f"rot_{i}"] for i in range(4)], 1)), dim=1)
        quaternion = torch.tensor([obj["pose"]["rotation"]], dtype=torch.float32)
        rotated = quaternion_multiply(quaternion_invert(quaternion), gaussian).numpy()
        got = np.stack([part[f"rot_{i}"] for i in range(4)], 1)
        signs = np.sign((got * rotated).sum(1, keepdims=True))  # q and -q are the same rotation
        np.testing.assert_allclose(got * signs, rotated, atol=1e-4)
        scaled = np.stack([ply[f"scale_{i}"] for i in range(3)], 1) + np.log(obj["pose"]["scale"][0])
        assert np.all(np.stack([part[f"scale_{i}"] for i in range(3)], 1) >= scaled - 1e-5)
        np.testing.assert_array_equal(part["opacity"], ply["opacity"])


def test_a_bad_mask_among_good_ones_is_refused_naming_it_before_any_work(torchserve):
    image = {"task": "generate_3d", "image_base64": __import__("base64").b64encode(png(picture())).decode()}
    good = {"mask_polygon": [[4, 4], [40, 4], [40, 40]]}
    cases = [
        ({"mask_rle": {"size": [H + 1, W], "counts": "abc"}}, "masks[1]"),  # another size than the picture's
        ({"mask_polygon": [[4, 4], [4000, 4], [40, 40]]}, "masks[1]"),  # outside the picture
        ({"mask_polygon": [[4, 4], [40, 4], [40, 40]], "mask_rle": rle_from_mask(disc())}, "masks[1]"),
        ({"mask_rle": rle_from_mask(np.zeros((H, W), dtype=bool))}, "masks[1]"),  # empty
        ({"mask_polygon": [[4, 4], [4, 4], [4, 4]]}, "masks[1]"),  # one pixel: upstream needs a 2x2 box
    ]
    for bad, field in cases:
        resp = post(torchserve, {**image, "masks": [good, bad, good]})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["field"] == field
        assert "timings_ms" not in resp.json()


def test_more_objects_than_the_response_timeout_fits_are_refused_with_422_naming_masks(torchserve):
    image = {"task": "generate_3d", "image_base64": __import__("base64").b64encode(png(picture())).decode()}
    masks = [{"mask_polygon": [[4, 4], [40, 4], [40, 40]]}] * 31  # 31 x 30 s > the 900 s responseTimeout
    resp = post(torchserve, {**image, "masks": masks})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == "masks" and "send at most 30 masks" in error["message"] and "async" in error["message"]
    resp = post(torchserve, {**image, "masks": masks * 2})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "masks"  # above max_scene_objects (32)
