"""sam3d pieces that need no TorchServe and no GPU: preset checks, the production config preparation (on a
pipeline directory shaped like the gated facebook/sam-3d-objects download), request options, out-of-memory
handling and the archive builder's sam3d paths."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from gen3d.errors import ServingError, StartupError
from gen3d.sam3d.loading import LoadedSam3d, check_archive_config, load_sam3d
from gen3d.sam3d.pipeline import PIPELINE_TARGET, dinov2_weight_file, prepare_config
from gen3d.sam3d.presets import DEMO_CHECKPOINT_FORMAT, PRESETS
from gen3d.sam3d.request import decode_mask, generate_options, mask_source
from gen3d.sam3d.stages import StageRecorder
from gen3d.sam3d.types import Generation
from gen3d.serving.schema import RawRequest, parse_request

pytestmark = pytest.mark.sam3d

DEMO, REAL = PRESETS["tiny-cpu-demo"], PRESETS["sam3d-objects"]
DINO = "sam3d_objects.model.backbone.dit.embedder.dino.Dino"


def demo_checkpoint(path: Path, preset: str = "tiny-cpu-demo") -> Path:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": DEMO_CHECKPOINT_FORMAT, "preset": preset})
    return path


def write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def fake_pipeline_dir(root: Path, **pipeline_overrides) -> Path:
    """pipeline.yaml + configs + (empty) checkpoints + staged DINOv2 and MoGe, keyed as the pipeline reads them."""
    dino = {"_target_": DINO, "dino_model": "dinov2_vitl14_reg", "repo_or_dir": "facebookresearch/dinov2"}
    fuser = {
        "_target_": "sam3d_objects.model.backbone.dit.embedder.embedder_fuser.EmbedderFuser",
        "embedder_list": [[{**dino, "source": "github"}, [["image", "cropped"]]], [dict(dino), [["mask", "cropped"]]]],
    }
    pipeline = {
        "_target_": PIPELINE_TARGET,
        "dtype": "bfloat16",
        "depth_model": {
            "_target_": "sam3d_objects.pipeline.depth_models.moge.MoGe",
            "model": {"_target_": "moge.model.v1.MoGeModel.from_pretrained", "pretrained_model_name_or_path": "x/y"},
        },
        "slat_decoder_gs_4_config_path": None,
    }
    for name in ("ss_generator", "slat_generator", "ss_decoder", "slat_decoder_gs", "slat_decoder_mesh"):
        pipeline[f"{name}_config_path"] = f"{name}.yaml"
        pipeline[f"{name}_ckpt_path"] = f"{name}.ckpt"
        sub = (
            {"module": {"condition_embedder": {"backbone": fuser}}}
            if "generator" in name
            else {"_target_": "torch.nn.Identity"}
        )
        write_yaml(root / f"{name}.yaml", sub)
        (root / f"{name}.ckpt").write_bytes(b"weights of " + name.encode())
    pipeline.update(pipeline_overrides)
    write_yaml(root / "pipeline.yaml", pipeline)
    (root / "dinov2").mkdir()
    (root / "dinov2" / "hubconf.py").write_text("dependencies = []\n")
    (root / "torch_hub" / "checkpoints").mkdir(parents=True)
    (root / "torch_hub" / "checkpoints" / "dinov2_vitl14_reg4_pretrain.pth").write_bytes(b"dino")
    (root / "moge").mkdir()
    (root / "moge" / "model.pt").write_bytes(b"moge")
    return root


# -- presets and archive configs ------------------------------------------------------------------------


def test_demo_preset_refuses_to_run_without_its_flag(tmp_path):
    ckpt = demo_checkpoint(tmp_path / "demo.safetensors")
    with pytest.raises(StartupError, match="random-weight demo; refusing to run without handler.demo_weights: true"):
        check_archive_config(tmp_path, {"preset": "tiny-cpu-demo", "checkpoint": ckpt.name})
    assert check_archive_config(tmp_path, {"preset": "tiny-cpu-demo", "checkpoint": ckpt.name, "demo_weights": True})


def test_production_preset_refuses_demo_weights(tmp_path):
    ckpt = demo_checkpoint(tmp_path / "demo.safetensors")
    with pytest.raises(StartupError, match="is a tiny-cpu-demo demo checkpoint; preset sam3d-objects refuses it"):
        check_archive_config(tmp_path, {"preset": "sam3d-objects", "checkpoint": ckpt.name})
    with pytest.raises(StartupError, match="production model; refusing handler.demo_weights"):
        check_archive_config(tmp_path, {"preset": "sam3d-objects", "checkpoint": ckpt.name, "demo_weights": True})


def test_no_fallback_preset(tmp_path):
    (tmp_path / "pipeline.yaml").write_text("{}")
    with pytest.raises(StartupError, match="lacks handler.preset"):
        check_archive_config(tmp_path, {"checkpoint": "pipeline.yaml"})
    with pytest.raises(StartupError, match="unknown SAM 3D preset 'tiny'"):
        check_archive_config(tmp_path, {"preset": "tiny", "checkpoint": "pipeline.yaml"})
    with pytest.raises(StartupError, match="checkpoint not found at .*missing.yaml"):
        check_archive_config(tmp_path, {"preset": "sam3d-objects", "checkpoint": "missing.yaml"})
    other = demo_checkpoint(tmp_path / "other.safetensors", preset="something-else")
    with pytest.raises(StartupError, match="not a tiny-cpu-demo checkpoint"):
        check_archive_config(tmp_path, {"preset": "tiny-cpu-demo", "checkpoint": other.name, "demo_weights": True})


def test_an_unreadable_safetensors_checkpoint_stops_start_up_with_its_own_error(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    for preset, flag in (("tiny-cpu-demo", True), ("sam3d-objects", False)):
        with pytest.raises(StartupError, match=r"broken.safetensors is not a readable safetensors file: .*header"):
            check_archive_config(tmp_path, {"preset": preset, "checkpoint": "broken.safetensors", "demo_weights": flag})


def test_production_preset_needs_a_gpu(tmp_path):
    root = fake_pipeline_dir(tmp_path)
    with pytest.raises(StartupError, match="needs a CUDA GPU; this worker has none"):
        load_sam3d(tmp_path, {"preset": "sam3d-objects", "checkpoint": "pipeline.yaml"}, torch.device("cpu"))
    assert (root / "pipeline.yaml").is_file()


# -- production config preparation ----------------------------------------------------------------------


def test_prepare_config_points_everything_at_staged_files(tmp_path):
    root = fake_pipeline_dir(tmp_path / "hf")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    cfg, staged, digest = prepare_config(root / "pipeline.yaml", {}, torch.device("cuda", 1), runtime)
    assert cfg.device == "cuda:1" and cfg.depth_model.device == "cuda:1"
    assert cfg.rendering_engine == "pytorch3d" and cfg.compile_model is False and cfg.workspace_dir == str(root)
    assert cfg.depth_model.model.pretrained_model_name_or_path == str(root / "moge" / "model.pt")
    assert cfg.ss_generator_ckpt_path == str(root / "ss_generator.ckpt") and cfg.slat_decoder_gs_4_config_path is None
    rewritten = yaml.safe_load(Path(cfg.ss_generator_config_path).read_text())
    for dino, _ in rewritten["module"]["condition_embedder"]["backbone"]["embedder_list"]:
        assert dino["repo_or_dir"] == str(root / "dinov2") and dino["source"] == "local"
    assert yaml.safe_load((root / "ss_generator.yaml").read_text()) != rewritten  # the archive is not modified
    assert staged["torch_hub_dir"] == root / "torch_hub" and len(digest) == 64
    (root / "ss_decoder.ckpt").write_bytes(b"other weights")
    assert prepare_config(root / "pipeline.yaml", {}, torch.device("cuda"), runtime)[2] != digest


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda r: (r / "slat_generator.ckpt").unlink(),
            r"slat_generator.ckpt not found \(named by slat_generator_ckpt",
        ),
        (lambda r: (r / "moge" / "model.pt").unlink(), r"model.pt not found \(handler.moge_checkpoint"),
        (lambda r: (r / "dinov2" / "hubconf.py").unlink(), r"hubconf.py not found \(handler.dinov2_repo"),
        (
            lambda r: (r / "torch_hub" / "checkpoints" / "dinov2_vitl14_reg4_pretrain.pth").unlink(),
            "dinov2_vitl14_reg4_pretrain.pth not found: DINOv2 weights for dinov2_vitl14_reg",
        ),
        (lambda r: write_yaml(r / "ss_decoder.yaml", {"_target_": "os.system"}), "'os.system' is outside"),
        (lambda r: write_yaml(r / "ss_decoder.yaml", {"a": [{"_target_": "builtins.exec"}]}), "'builtins.exec'"),
    ],
)
def test_prepare_config_stops_on_one_clear_line(tmp_path, breakage, message):
    root = fake_pipeline_dir(tmp_path)
    breakage(root)
    with pytest.raises(StartupError, match=message):
        prepare_config(root / "pipeline.yaml", {}, torch.device("cuda"), tmp_path)


def test_prepare_config_checks_the_pipeline_target(tmp_path):
    root = fake_pipeline_dir(tmp_path, _target_="sam3d_objects.pipeline.inference_pipeline.InferencePipeline")
    with pytest.raises(StartupError, match="expected .*InferencePipelinePointMap"):
        prepare_config(root / "pipeline.yaml", {}, torch.device("cuda"), tmp_path)


def test_dinov2_weight_names():
    assert dinov2_weight_file("dinov2_vitl14_reg") == "dinov2_vitl14_reg4_pretrain.pth"
    assert dinov2_weight_file("dinov2_vitb14") == "dinov2_vitb14_pretrain.pth"


# -- requests -------------------------------------------------------------------------------------------


def parsed(body: dict):
    """The generate_3d model of a JSON body (checked as the service does)."""
    from gen3d.sam3d.request import generate_request

    return generate_request(parse_request(RawRequest(body, "application/json"), "generate_3d"))


ALL_RENDERERS = frozenset({"nvdiffrast", "diff_gaussian_rasterization"})


def test_options_defaults_and_renderer_limits():
    none = frozenset()
    demo = generate_options(parsed({"task": "generate_3d"}), none)
    assert (demo.seed, demo.ss_steps, demo.texture_baking) == (42, None, False)
    assert demo.decode_formats == ("gaussian", "mesh")
    real = generate_options(parsed({"task": "generate_3d", "texture_baking": True, "slat_steps": 12}), ALL_RENDERERS)
    assert real.texture_baking and not real.mesh_postprocess and real.slat_steps == 12
    splat = generate_options(parsed({"task": "generate_3d", "decode_formats": ["gaussian"]}), ALL_RENDERERS)
    assert splat.decode_formats == ("gaussian",)
    assert generate_options(parsed({"task": "generate_3d", "layout_postprocess": False}), none).seed == 42
    with pytest.raises(ServingError, match="needs nvdiffrast and diff_gaussian_rasterization") as err:
        generate_options(parsed({"task": "generate_3d", "texture_baking": True}), none)
    assert err.value.field == "texture_baking" and err.value.status == 400
    with pytest.raises(ServingError, match="needs diff_gaussian_rasterization"):
        generate_options(parsed({"task": "generate_3d", "texture_baking": True}), frozenset({"nvdiffrast"}))
    mesh_only = generate_options(parsed({"task": "generate_3d", "mesh_postprocess": True}), frozenset({"nvdiffrast"}))
    assert mesh_only.mesh_postprocess
    for body, field in [
        ({"layout_postprocess": True}, "layout_postprocess"),
        ({"mesh_postprocess": True}, "mesh_postprocess"),
        ({"decode_formats": ["gaussian"], "mesh_postprocess": True}, "mesh_postprocess"),
        ({"decode_formats": ["gaussian", "gaussian"]}, "decode_formats"),
        ({"seed": True}, "seed"),
        ({"seed": -1}, "seed"),
        ({"ss_steps": 1.5}, "ss_steps"),
    ]:
        with pytest.raises(ServingError) as err:
            generate_options(parsed({"task": "generate_3d", **body}), none)
        assert err.value.field == field


def test_polygon_points_are_counted_over_all_polygons():
    from gen3d.serving.limits import MAX_POLYGON_POINTS

    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    one = square * (MAX_POLYGON_POINTS // 4)  # exactly the limit, as one polygon and as two
    two = [square * (MAX_POLYGON_POINTS // 8)] * 2
    assert len(one) == MAX_POLYGON_POINTS == sum(map(len, two))
    for polygon in (one, two):
        assert parsed({"task": "generate_3d", "mask_polygon": polygon}).mask_polygon == polygon
    for polygon in (one + [[2, 2]], two + [[[2, 2], [3, 2], [3, 3]]]):
        with pytest.raises(ServingError, match=f"at most {MAX_POLYGON_POINTS} points in all") as err:
            parsed({"task": "generate_3d", "mask_polygon": polygon})
        assert err.value.field == "mask_polygon"


def test_masks_are_bool_and_sized_like_the_image():
    from gen3d.serving.masks import rle_from_mask

    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    rle_body = {"task": "generate_3d", "mask_rle": rle_from_mask(mask)}
    source = mask_source(parse_request(RawRequest(rle_body, "application/json"), "generate_3d"), parsed(rle_body))
    decoded = decode_mask(source, None, (4, 6))
    assert decoded.dtype == np.bool_ and (decoded == mask).all()
    with pytest.raises(ServingError, match="mask is 4x6 .* image is 4x7") as err:
        decode_mask(source, None, (4, 7))
    assert err.value.field == "mask_rle"
    buf = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buf, "PNG")
    s3_body = {"task": "generate_3d", "bucket": "some-bucket", "mask_s3_key": "m.png"}
    s3_source = mask_source(parse_request(RawRequest(s3_body, "application/json"), "generate_3d"), parsed(s3_body))
    assert (decode_mask(s3_source, buf.getvalue(), (4, 6)) == mask).all()


# -- service: out of memory, preset in every answer -----------------------------------------------------


class StubGenerator:
    """Raises a CUDA out-of-memory on its first call, then answers with a pose only."""

    def __init__(self) -> None:
        self.preset, self.device, self.calls = REAL, torch.device("cuda"), 0
        self.renderers = frozenset()

    def generate(self, image, mask, options) -> Generation:
        self.calls += 1
        if self.calls == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Generation(None, None, [1.0, 0, 0, 0], [0.0, 0, 2], [1.0, 1, 1], {"slat": 1.0}, {"voxels": 5})


def test_out_of_memory_answers_507_and_the_next_request_is_served(monkeypatch):
    from gen3d.sam3d.service import Sam3dService

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    service = Sam3dService(LoadedSam3d(StubGenerator(), REAL, "0" * 64), store=None, prefix_template="p/{user_id}")
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, "PNG")
    body = {"task": "generate_3d", "image_base64": base64.b64encode(buf.getvalue()).decode()}
    body["mask_polygon"] = [[1, 1], [6, 1], [6, 5]]
    first, second = (service.handle([RawRequest(json.dumps(body).encode(), "application/json")])[0] for _ in range(2))
    assert first.status == 507 and first.body["error"]["field"] == "generate"
    assert "out of memory on cuda" in first.body["error"]["message"] and first.body["preset"] == "sam3d-objects"
    assert second.status == 200 and second.body["pose"]["translation"] == [0.0, 0.0, 2.0]
    assert (
        second.body["outputs_base64"].keys() == {"pose"}
        and second.body["model_id"] == "sam3d/sam3d-objects/" + "0" * 16
    )
    assert list(second.body["timings_ms"]) == ["decode", "generate", "stages", "encode", "total"]  # the documented keys
    assert len(emptied) == 2  # after each request


class Splat:
    """What the service reads of a Gaussian splat."""

    get_xyz = torch.zeros(5, 3)

    def save_ply(self, buf) -> None:
        buf.write(b"ply\nformat binary_little_endian 1.0\nend_header\n" + bytes(60))


class OneObject:
    """A generator answering a splat, a mesh and a pose."""

    preset, device, renderers = REAL, torch.device("cpu"), frozenset()

    def generate(self, image, mask, options) -> Generation:
        import trimesh

        return Generation(Splat(), trimesh.creation.box(), [1.0, 0, 0, 0], [0.0, 0, 2], [1.0, 1, 1], {}, {})


class FlakyS3:
    """An S3 client whose put_object fails for keys ending in ``failing``; it keeps what was written, in order."""

    def __init__(self, failing: str) -> None:
        self.failing, self.written = failing, {}

    def put_object(self, Bucket, Key, Body, **kwargs) -> None:
        from botocore.exceptions import ClientError

        if Key.endswith(self.failing):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an error"}}, "PutObject")
        self.written[Key] = Body


def test_pose_json_the_manifest_is_written_last_and_only_after_the_other_files():
    from gen3d.sam3d.service import Sam3dService
    from gen3d.serving.buckets import BucketPolicy
    from gen3d.serving.storage import S3Store

    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, "PNG")
    body = {"task": "generate_3d", "image_base64": base64.b64encode(buf.getvalue()).decode(), "user_id": "u"}
    body.update(session_id="s", output_bucket="gen3d-out", mask_polygon=[[1, 1], [6, 1], [6, 5]])
    raw = RawRequest(json.dumps(body).encode(), "application/json")

    def serve(s3: FlakyS3):
        store = S3Store(client=s3, buckets=BucketPolicy(("gen3d-out",)), owner="123456789012")
        service = Sam3dService(LoadedSam3d(OneObject(), REAL, "0" * 64), store, "p/{user_id}/{session_id}")
        reply = service.handle([raw])[0]
        service.io.shutdown(wait=True)  # every write it started has ended
        return reply

    s3 = FlakyS3("object.glb")
    failed = serve(s3)
    assert failed.status == 502 and failed.body["error"]["field"] == "output_bucket"
    folder = next(iter(s3.written)).rsplit("/", 1)[0]  # p/u/s/3d/<generation_id>
    generation_id = folder.rsplit("/", 1)[1]
    assert list(s3.written) == [f"{folder}/object.ply"]  # no pose.json: the generation is incomplete
    assert f"generation {generation_id} is incomplete" in failed.body["error"]["message"]

    s3 = FlakyS3("nothing fails")
    answer = serve(s3)
    assert answer.status == 200 and list(s3.written)[-1] == answer.body["outputs"]["pose"]
    manifest = json.loads(s3.written[answer.body["outputs"]["pose"]])
    assert manifest["generation_id"] == answer.body["generation_id"]
    for name in ("ply", "glb"):
        data = s3.written[answer.body["outputs"][name]]
        listed = manifest["files"][name]
        assert answer.body["outputs"][name].endswith("/" + listed["file"]) and listed["bytes"] == len(data)
        assert listed["sha256"] == hashlib.sha256(data).hexdigest()


def test_stage_recorder_adds_up_calls():
    class Thing:
        def work(self, x):
            return x * 2

    thing, recorder = Thing(), StageRecorder(torch.device("cpu"))
    recorder.wrap(thing, "work", "double")
    assert thing.work(2) == 4 and thing.work(3) == 6
    assert list(recorder.timings_ms) == ["double"] and recorder.peak_mib == {}


# -- archive builder ------------------------------------------------------------------------------------


def build(tmp_path: Path, *args: str) -> str:
    """gen3d-build-archives sam3d in this process; the refusal it stops with, or "" when it built."""
    from gen3d.cli.build_archives import build as build_archive
    from gen3d.cli.build_archives import parse_args

    try:
        build_archive(parse_args(["sam3d", "--work-dir", str(tmp_path / "work"), *args]))
    except SystemExit as err:
        return str(err)
    return ""


def test_production_archive_copies_the_pipeline_directory(tmp_path):
    root = fake_pipeline_dir(tmp_path / "hf")
    assert build(tmp_path, "--pipeline-dir", str(root), "--export-path", str(tmp_path / "store")) == ""
    archive = tmp_path / "store" / "sam3d"
    config = yaml.safe_load((archive / "model-config.yaml").read_text())
    assert config["batchSize"] == 1 and config["responseTimeout"] >= 600 and config["startupTimeout"] >= 1200
    assert config["handler"] == {
        "preset": "sam3d-objects",
        "demo_weights": False,
        "min_gpu_memory_gib": 32,
        "checkpoint": "pipeline/pipeline.yaml",
        "require_gpu": True,
    }
    copied = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert (
        sorted(str(p.relative_to(archive / "pipeline")) for p in (archive / "pipeline").rglob("*") if p.is_file())
        == copied
    )
    from gen3d.sagemaker.entrypoint import find_archives

    assert find_archives(tmp_path / "store")[0].gpu_memory_gib == 32


def test_builder_refuses_mixing_demo_and_production(tmp_path):
    root = fake_pipeline_dir(tmp_path / "hf")
    assert "preset tiny-cpu-demo is a demo" in build(tmp_path, "--pipeline-dir", str(root), "--preset", "tiny-cpu-demo")
    assert "--batch-size must be 1" in build(tmp_path, "--batch-size", "4")
    (root / "moge" / "model.pt").unlink()
    assert "moge/model.pt not found" in build(tmp_path, "--pipeline-dir", str(root), "--export-path", str(tmp_path))


def test_sagemaker_smoke_payload_masks_the_seed_disc():
    from gen3d.sagemaker import invoke
    from gen3d.serving.masks import mask_from_polygon

    payload = invoke.default_payload("sam3d", "bucket", "seed.png", "s1")
    assert payload["task"] == "generate_3d"
    picture = np.asarray(Image.open(io.BytesIO(invoke.seed_png())))
    mask = mask_from_polygon(payload["mask_polygon"], picture.shape[:2])
    disc = picture[..., 0] > 128
    assert mask.sum() > 0.9 * disc.sum() and (mask & ~disc).sum() < 0.01 * mask.sum()
    assert "mask_polygon" not in invoke.default_payload("sam3", "bucket", "seed.png", "s1")


class FailingPipeline:
    """Upstream's run() as far as the step counts go: sets the request's steps, then fails before restoring."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.models = {name: SimpleNamespace(inference_steps=25) for name in ("ss_generator", "slat_generator")}
        self.ss_inference_steps = self.slat_inference_steps = 25

    def __getattr__(self, name: str):  # the stage methods the generator times (never reached: run() fails first)
        return lambda *args, **kwargs: None

    def run(self, *args, stage1_inference_steps=None, stage2_inference_steps=None, **kwargs):
        self.models["ss_generator"].inference_steps = stage1_inference_steps
        self.models["slat_generator"].inference_steps = stage2_inference_steps
        raise RuntimeError("sampling failed")


def test_a_failed_request_leaves_the_step_counts_as_configured():
    from gen3d.sam3d.pipeline import OfficialGenerator

    pipeline = FailingPipeline()
    generator = OfficialGenerator(REAL, pipeline, torch.device("cpu"))
    options = generate_options(parsed({"task": "generate_3d", "ss_steps": 3, "slat_steps": 4}), frozenset())
    image, mask = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool)
    with pytest.raises(RuntimeError, match="sampling failed"):
        generator.generate(image, mask, options)
    assert [m.inference_steps for m in pipeline.models.values()] == [25, 25]


def test_production_preset_refuses_a_small_gpu(monkeypatch):
    from types import SimpleNamespace

    from gen3d.sam3d.pipeline import check_gpu_memory

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=24 * 2**30))
    with pytest.raises(StartupError, match=r"cuda:0 has 24.0 GiB; preset sam3d-objects needs >= 32 GiB"):
        check_gpu_memory(REAL, torch.device("cuda", 0), {})
    check_gpu_memory(REAL, torch.device("cuda", 0), {"allow_small_gpu": True})
    monkeypatch.setenv("GEN3D_ALLOW_SMALL_GPU", "1")
    check_gpu_memory(REAL, torch.device("cuda", 0), {})


def test_gpu_bench_runs_the_demo_preset_on_the_cpu(tmp_path, capsys):
    """gen3d-bench-sam3d-gpu --demo end to end: its options come from a validated Generate3dRequest (as the
    service's), every pipeline stage is timed and the last run's files are written."""
    from plyfile import PlyData

    from gen3d.cli.bench_sam3d_gpu import main
    from gen3d.sam3d.stages import STAGES

    picture = np.zeros((48, 64, 3), np.uint8)
    picture[8:40, 16:48] = (200, 50, 50)
    Image.fromarray(picture).save(tmp_path / "image.png")
    Image.fromarray((picture[..., 0] > 0).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    argv = ["--demo", "--image", str(tmp_path / "image.png"), "--mask", str(tmp_path / "mask.png")]
    argv += ["--ss-steps", "1", "--slat-steps", "1", "--decode-formats", "gaussian", "--seed", "7"]
    assert main([*argv, "--json", "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_id"].startswith("sam3d/tiny-cpu-demo/") and report["device"] == "cpu"
    assert report["image"] == [48, 64] and report["gpu"] is None
    assert report["options"] == {
        "seed": 7,
        "ss_steps": 1,
        "slat_steps": 1,
        "decode_formats": ["gaussian"],
        "mesh_postprocess": False,
        "texture_baking": False,
    }
    (run,) = report["runs"]
    assert list(run["stages"]) == [stage for _, stage in STAGES] and run["peak_gpu_mib"] is None
    assert run["voxels"] > 0 and all(stage["ms"] >= 0 for stage in run["stages"].values())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["object.ply", "pose.json"]
    gaussians = PlyData.read(str(tmp_path / "out" / "object.ply"))["vertex"].count
    assert gaussians > 0 and gaussians % run["voxels"] == 0
    assert main([*argv, "--decode-formats", "mesh"]) == 2
    assert "cannot run: " in capsys.readouterr().out


def test_compile_without_a_c_compiler_stops_start_up(monkeypatch):
    from gen3d.errors import StartupError
    from gen3d.sam3d.pipeline import compile_requested

    assert compile_requested({}) is False
    monkeypatch.setenv("PATH", "")  # the sam3d runtime image: no compiler
    assert compile_requested({"compile": False}) is False
    with pytest.raises(StartupError, match="handler.compile: true needs a C compiler"):
        compile_requested({"compile": True})
