"""generate_body's request model and people (no model loaded), and the OpenCV -> glTF frame map."""

from __future__ import annotations

import numpy as np
import pytest

from gen3d.errors import InvalidField
from gen3d.sam3d_body.request import body_request, decode_masks, intrinsics, mask_locations, people_of
from gen3d.serving.frames import opencv_camera_to_gltf
from gen3d.serving.masks import rle_from_mask
from gen3d.serving.schema import ParsedRequest

SIZE = (60, 80)  # h, w


def model(**fields):
    return body_request(ParsedRequest(task="generate_body", image=None, fields={"task": "generate_body", **fields}))


def refused(field: str, **fields) -> str:
    with pytest.raises(InvalidField) as err:
        people_of(m := model(**fields), decode_masks(m, [None] * len(m.masks or []), SIZE), SIZE)
    assert err.value.field == field, err.value.message
    return err.value.message


def test_no_box_and_no_mask_is_400_naming_boxes():
    assert "people are required" in refused("boxes")
    assert refused("boxes", boxes=None, masks=None)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"boxes": [[0, 0, 81, 10]]}, "boxes"),
        ({"boxes": [[-1, 0, 10, 10]]}, "boxes"),
        ({"boxes": [[10, 10, 10, 20]]}, "boxes"),
        ({"boxes": [[0, 0, 1, 1, 1]]}, "boxes"),
        ({"boxes": [[0, 0, "a", 1]]}, "boxes"),
        ({"boxes": [[0, 0, 1, 1]] * 9}, "boxes"),
        ({"boxes": []}, "boxes"),
        ({"boxes": [[0, 0, 1, 1]], "masks": [{"mask_polygon": [[1, 1], [5, 1], [5, 5]]}] * 2}, "masks"),
        ({"masks": [{"mask_polygon": [[1, 1], [5, 1], [5, 5]], "mask_rle": {"size": [6, 8], "counts": [9]}}]},
         "masks[0]"),  # fmt: skip
        ({"masks": [{}]}, "masks[0]"),
        ({"masks": [{"mask_polygon": [[1, 1], [5, 1], [5, 5]]}, {}]}, "masks[1]"),  # the entry, as generate_3d names it
        ({"masks": [{"mask_rle": {"size": [60, 80], "counts": [4800]}}]}, "masks[0]"),  # empty
        ({"masks": [{"mask_rle": {"size": [61, 80], "counts": [4880]}}]}, "masks[0]"),  # not the picture's size
        ({"masks": [{"mask_polygon": [[1, 1], [5, 1], [5, 5]], "rle": 1}]}, "masks[0]"),
        ({"masks": [{"mask_polygon": [[0, 0]] * 100_001}]}, "masks"),
        ({"boxes": [[0, 0, 1, 1]], "focal_length": 0}, "focal_length"),
        ({"boxes": [[0, 0, 1, 1]], "focal_length": 1e7}, "focal_length"),
        ({"boxes": [[0, 0, 1, 1]], "focal_length": 100, "cam_int": [[1, 0, 1], [0, 1, 1], [0, 0, 1]]}, "cam_int"),
        ({"boxes": [[0, 0, 1, 1]], "cam_int": [[1, 0.5, 1], [0, 1, 1], [0, 0, 1]]}, "cam_int"),
        ({"boxes": [[0, 0, 1, 1]], "cam_int": [[-1, 0, 1], [0, 1, 1], [0, 0, 1]]}, "cam_int"),
        ({"boxes": [[0, 0, 1, 1]], "cam_int": [[1, 0, 1], [0, 1, 1], [0, 1, 1]]}, "cam_int"),
        ({"boxes": [[0, 0, 1, 1]], "inference_type": "hand"}, "inference_type"),
        ({"boxes": [[0, 0, 1, 1]], "inference_type": "face"}, "inference_type"),
    ],
)
def test_bad_people_and_cameras_name_their_field(fields, field):
    refused(field, **fields)


def test_a_mask_alone_gets_its_tight_box_and_pairs_keep_their_order():
    mask = np.zeros(SIZE, dtype=bool)
    mask[10:20, 30:45] = True
    m = model(masks=[{"mask_rle": rle_from_mask(mask)}, {"mask_polygon": [[2, 2], [12, 2], [12, 8], [2, 8]]}])
    people = people_of(m, decode_masks(m, [None, None], SIZE), SIZE)
    assert people.boxes.tolist()[0] == [30, 10, 45, 20]
    assert people.masks.shape == (2, *SIZE) and people.masks.dtype == np.uint8
    m = model(boxes=[[1, 2, 3, 4], [5, 6, 70, 50]])
    assert people_of(m, [], SIZE).boxes.tolist() == [[1, 2, 3, 4], [5, 6, 70, 50]]
    assert people_of(m, [], SIZE).masks is None


def test_the_camera_is_the_focal_length_at_the_centre_or_cam_int_or_upstreams_default():
    assert intrinsics(model(boxes=[[0, 0, 1, 1]]), SIZE) is None
    k = intrinsics(model(boxes=[[0, 0, 1, 1]], focal_length=500), SIZE)
    assert k.tolist() == [[500, 0, 40], [0, 500, 30], [0, 0, 1]]
    given = [[400, 0, 10], [0, 410, 20], [0, 0, 1]]
    assert intrinsics(model(boxes=[[0, 0, 1, 1]], cam_int=given), SIZE).tolist() == given


def test_a_mask_in_s3_needs_the_bucket():
    with pytest.raises(InvalidField) as err:
        mask_locations(model(masks=[{"mask_s3_key": "m.png"}]))
    assert err.value.field == "bucket"
    [location] = mask_locations(model(masks=[{"mask_s3_key": "m.png"}], bucket="gen3d-data-bucket"))
    assert (location.bucket, location.key) == ("gen3d-data-bucket", "m.png")


def test_opencv_to_gltf_is_a_half_turn_about_x():
    """Against an independent rotation: 180 degrees about x (Rodrigues), which keeps handedness."""
    angle = np.pi
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    points = np.random.default_rng(0).normal(size=(50, 3))
    assert np.allclose(opencv_camera_to_gltf(points), points @ rotation.T)
    assert np.allclose(opencv_camera_to_gltf([[0.0, 0.0, 2.0]]), [[0.0, 0.0, -2.0]])  # in front: glTF's -z
    assert np.allclose(opencv_camera_to_gltf([[0.0, 1.0, 0.0]]), [[0.0, -1.0, 0.0]])  # image down: glTF's -y
