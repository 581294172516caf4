"""Scenes of several objects: the frame algebra of gen3d.serving.frames against an independent computation, and the
sam3d service's many-mask path (one pointmap, seeds, one object's failure, the time budget) with a stub generator."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gen3d.errors import StartupError
from gen3d.sam3d.loading import LoadedSam3d
from gen3d.sam3d.presets import PRESETS
from gen3d.sam3d.scene import SceneLimits, scene_limits
from gen3d.sam3d.types import Generation
from gen3d.serving.frames import sam3d_glb_to_gltf_scene, sam3d_object_to_pytorch3d_camera
from gen3d.serving.masks import rle_from_mask
from gen3d.serving.schema import RawRequest

pytestmark = pytest.mark.sam3d

REAL = PRESETS["sam3d-objects"]


def hamilton_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    """The rotation of a unit quaternion, written out (the textbook formula PyTorch3D's quaternion_to_matrix uses)."""
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_a_node_places_glb_vertices_where_the_pose_puts_them_in_gltf_frame():
    rng = np.random.default_rng(0)
    q = rng.normal(size=4)
    t, s = rng.normal(size=3), 0.7
    glb = rng.normal(size=(50, 3))
    # independently: GLB (x, z, -y) back to the object frame, the row-vector pose, then PyTorch3D camera -> glTF
    p_object = np.stack([glb[:, 0], -glb[:, 2], glb[:, 1]], axis=1)
    p_camera = (s * p_object) @ hamilton_matrix(*q) + t
    expected = p_camera * [-1, 1, -1]
    node = sam3d_glb_to_gltf_scene(list(q / np.linalg.norm(q)), list(t), s)
    got = glb @ node[:3, :3].T + node[:3, 3]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert np.linalg.det(node[:3, :3]) == pytest.approx(s**3)  # a rotation and a uniform scale: no mirror
    pose = sam3d_object_to_pytorch3d_camera(list(q / np.linalg.norm(q)), list(t), s)
    np.testing.assert_allclose(p_object @ pose[:3, :3].T + pose[:3, 3], p_camera, atol=1e-9)


class SceneStub:
    """A generator whose second object runs out of memory; the others answer a pose only."""

    def __init__(self, failing: set[int]) -> None:
        self.preset, self.device, self.renderers = REAL, torch.device("cuda"), frozenset()
        self.failing, self.pointmaps, self.calls = failing, [], []

    def picture_pointmap(self, image):
        self.pointmaps.append(torch.zeros(image.shape[0], image.shape[1], 3))
        return self.pointmaps[-1]

    def generate(self, image, mask, options, pointmap=None) -> Generation:
        self.calls.append((options.seed, pointmap, int(mask.sum())))
        if len(self.calls) - 1 in self.failing:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Generation(None, None, [1.0, 0, 0, 0], [0.0, 0, 2], [1.0, 1, 1], {"slat": 1.0}, {"voxels": 5})


def scene_request(masks: int) -> RawRequest:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, "PNG")
    body = {"task": "generate_3d", "image_base64": base64.b64encode(buf.getvalue()).decode(), "seed": 42}
    body["masks"] = [{"mask_polygon": [[0, 0], [i + 2, 0], [i + 2, 5]]} for i in range(masks)]
    return RawRequest(json.dumps(body).encode(), "application/json")


def serve(stub: SceneStub, raw: RawRequest, limits: SceneLimits | None = None):
    from gen3d.sam3d.service import Sam3dService

    limits = limits or SceneLimits(8, 1.0, 900.0, "test")
    service = Sam3dService(LoadedSam3d(stub, REAL, "0" * 64), None, "p/{user_id}", limits=limits)
    return service.handle([raw])[0]


def test_one_failing_object_gets_its_own_error_and_the_others_are_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    stub = SceneStub(failing={1})
    answer = serve(stub, scene_request(3))
    assert answer.status == 200, answer.body
    objects = answer.body["objects"]
    assert [o["status"] for o in objects] == ["success", "error", "success"]
    assert [o["seed"] for o in objects] == [42, 43, 44] and [c[0] for c in stub.calls] == [42, 43, 44]
    assert objects[1]["error"]["code"] == 507 and objects[1]["error"]["field"] == "masks[1]"
    assert objects[2]["pose"]["translation"] == [0.0, 0.0, 2.0] and objects[2]["outputs_base64"].keys() == {"pose"}
    assert len(stub.pointmaps) == 1 and all(c[1] is stub.pointmaps[0] for c in stub.calls)  # one pointmap, reused
    assert [c[2] for c in stub.calls] == [12, 15, 18]  # each object its own mask (growing triangles), in order
    assert len(answer.body["timings_ms"]["objects"]) == 3 and "pointmap" in answer.body["timings_ms"]


def test_when_every_object_fails_the_first_error_is_the_answer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    answer = serve(SceneStub(failing={0, 1}), scene_request(2))
    assert answer.status == 507 and answer.body["error"]["field"] == "masks[0]"
    assert answer.body["error"]["message"].startswith("every object failed")


def test_masks_beyond_the_time_budget_or_the_count_are_refused_before_any_work():
    stub = SceneStub(failing=set())
    limits = SceneLimits(max_objects=4, object_seconds=10.0, response_timeout_s=25.0, where="preset x on cuda")
    too_slow = serve(stub, scene_request(3), limits)
    assert too_slow.status == 422 and too_slow.body["error"]["field"] == "masks"
    assert "send at most 2 masks" in too_slow.body["error"]["message"] and "async" in too_slow.body["error"]["message"]
    too_many = serve(stub, scene_request(5), limits)
    assert too_many.status == 400 and too_many.body["error"]["field"] == "masks"
    assert stub.calls == [] and stub.pointmaps == []
    assert serve(stub, scene_request(2), limits).status == 200


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"max_scene_objects": 0}, "max_scene_objects"),
        ({"max_scene_objects": 1000}, "max_scene_objects"),
        ({"object_seconds": -1}, "object_seconds"),
        ({"object_seconds": "fast"}, "object_seconds"),
    ],
)
def test_bad_scene_settings_stop_start_up(config, words):
    with pytest.raises(StartupError, match=words):
        scene_limits(config, REAL, torch.device("cuda"))


def test_scene_limits_come_from_the_preset_and_the_archive():
    limits = scene_limits({"response_timeout_s": 600}, REAL, torch.device("cuda"))
    assert (limits.max_objects, limits.object_seconds, limits.response_timeout_s) == (32, 30.0, 600.0)
    with pytest.raises(StartupError, match="runs on cpu"):  # the production preset has no CPU time: no guess
        scene_limits({}, REAL, torch.device("cpu"))


def test_object_files_false_leaves_the_objects_files_out_and_applies_to_scenes_only():
    raw = scene_request(2)
    body = json.loads(raw.body)
    raw = RawRequest(json.dumps({**body, "object_files": False}).encode(), "application/json")
    answer = serve(SceneStub(failing=set()), raw)
    assert answer.status == 200 and answer.body["object_files"] is False
    objects = answer.body["objects"]
    assert all("outputs_base64" not in o and o["pose"]["translation"] == [0.0, 0.0, 2.0] for o in objects)
    single = {**body, "object_files": False, "mask_polygon": body["masks"][0]["mask_polygon"]}
    del single["masks"]
    refused = serve(SceneStub(failing=set()), RawRequest(json.dumps(single).encode(), "application/json"))
    assert refused.status == 400 and refused.body["error"]["field"] == "object_files"


@pytest.mark.parametrize("box", [(3, 2, 4, 5), (1, 1, 6, 2)])
def test_a_mask_thinner_than_2_pixels_is_refused_before_upstream_raises_on_it(box):
    from gen3d.errors import InvalidField
    from gen3d.sam3d.request import MaskSource, decode_mask

    mask = np.zeros((6, 8), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    source = MaskSource(field="mask_rle", value=rle_from_mask(mask), name="masks[3]")
    with pytest.raises(InvalidField, match="at least 2x2") as refused:
        decode_mask(source, None, (6, 8))
    assert refused.value.field == "masks[3]"
    mask[y0 : y0 + 2, x0 : x0 + 2] = True
    assert decode_mask(MaskSource(field="mask_rle", value=rle_from_mask(mask)), None, (6, 8)).sum() == mask.sum()


class FakeOfficialPipeline:
    """What OfficialGenerator calls of InferencePipelinePointMap, recording it."""

    def __init__(self) -> None:
        steps = type("Generator", (), {"inference_steps": 25})
        self.models = {"ss_generator": steps(), "slat_generator": steps()}
        self.clip_pointmap_beyond_scale, self.ss_inference_steps, self.slat_inference_steps = 3.0, 25, 25
        self.clipping_seen, self.runs = [], []
        for attribute in ("preprocess_image", "sample_sparse_structure", "pose_decoder", "sample_slat"):
            setattr(self, attribute, lambda *a, **k: None)
        self.decode_slat = self.postprocess_slat_output = lambda *a, **k: None

    def compute_pointmap(self, rgba, pointmap=None):
        self.clipping_seen.append((self.clip_pointmap_beyond_scale, bool(rgba[..., 3].all())))
        height, width = rgba.shape[:2]
        return {"pointmap": torch.arange(3 * height * width, dtype=torch.float32).reshape(3, height, width)}

    def run(self, rgba, mask, seed, **options):
        self.runs.append((seed, options["pointmap"]))
        one = torch.ones(1, 3)
        return {"rotation": torch.tensor([[1.0, 0, 0, 0]]), "translation": one, "scale": one,
                "coords": torch.zeros(4, 4)}  # fmt: skip


def test_the_official_pipeline_computes_the_pictures_pointmap_unclipped_and_passes_it_to_each_run():
    from gen3d.sam3d.pipeline import OfficialGenerator
    from gen3d.sam3d.types import GenerateOptions

    pipeline = FakeOfficialPipeline()
    generator = OfficialGenerator(REAL, pipeline, torch.device("cpu"))
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    pointmap = generator.picture_pointmap(image)
    assert pointmap.shape == (6, 8, 3) and float(pointmap[1, 2, 0]) == 1 * 8 + 2  # HxWx3 of compute_pointmap's 3xHxW
    assert pipeline.clipping_seen == [(None, True)] and pipeline.clip_pointmap_beyond_scale == 3.0  # put back
    options = GenerateOptions(7, None, None, ("gaussian",), False, False)
    generator.generate(image, np.ones((6, 8), dtype=bool), options, pointmap)
    assert pipeline.runs == [(7, pointmap)]
