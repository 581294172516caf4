"""sam3d_body's start-up checks, before any model is built: staged files named, demo and production kept apart."""

from __future__ import annotations

import pytest
import torch

from gen3d.errors import StartupError
from gen3d.sam3d_body.demo import DEMO_FORMAT, MHR_FACES, MHR_VERTICES, ellipsoid_mesh
from gen3d.sam3d_body.loading import check_loaded_keys, read_checkpoint, staged_files
from gen3d.sam3d_body.presets import get_preset

HANDLER = {
    "preset": "sam3d-body-vith",
    "checkpoint": "model.ckpt",
    "model_config": "model_config.yaml",
    "mhr_model": "assets/mhr_model.pt",
}


@pytest.mark.parametrize(
    ("missing", "says"),
    [
        ("model.ckpt", "the SAM 3D Body checkpoint not found at"),
        ("model_config.yaml", "model_config.yaml not found at"),
        ("assets/mhr_model.pt", "MHR not found at"),
    ],
)
def test_each_missing_staged_file_stops_start_up_naming_it(tmp_path, missing, says):
    for name in HANDLER.values():
        if name.startswith(("model", "assets")) and name != missing:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"x")
    with pytest.raises(StartupError) as err:
        staged_files(tmp_path, HANDLER)
    message = str(err.value)
    assert says in message and missing in message and "nothing is downloaded" in message


def test_a_handler_section_without_a_file_key_is_refused(tmp_path):
    with pytest.raises(StartupError, match="lacks handler.mhr_model"):
        staged_files(tmp_path, {k: v for k, v in HANDLER.items() if k != "mhr_model"})


def test_demo_and_production_checkpoints_never_mix(tmp_path):
    demo, real = tmp_path / "demo.ckpt", tmp_path / "real.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "gen3d": {"format": DEMO_FORMAT}}, demo)
    torch.save({"state_dict": {"a": torch.zeros(1)}}, real)
    vith, tiny = get_preset("sam3d-body-vith"), get_preset("tiny-cpu-demo")
    assert set(read_checkpoint(real, vith, demo_flag=False)) == {"a"}
    assert set(read_checkpoint(demo, tiny, demo_flag=True)) == {"a"}
    for path, preset, flag, says in [
        (demo, vith, False, "is a demo checkpoint"),
        (real, tiny, True, "is not a demo checkpoint"),
        (real, vith, True, "refusing handler.demo_weights: true"),
        (demo, tiny, False, "refusing without handler.demo_weights: true"),
    ]:
        with pytest.raises(StartupError, match=says):
            read_checkpoint(path, preset, flag)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(StartupError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt", vith, demo_flag=False)


def test_the_demo_mesh_has_mhr_counts_and_is_closed():
    import trimesh

    vertices, faces = ellipsoid_mesh()
    assert (len(vertices), len(faces)) == (MHR_VERTICES, MHR_FACES) == (18_439, 36_874)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0  # outward faces


def test_a_checkpoint_missing_model_weights_stops_start_up(tmp_path, caplog):
    """Random weights never answer: a weight the checkpoint lacks (other than MHR's own, from mhr_model.pt) stops
    start-up naming the file; extra keys are only logged."""
    ckpt = tmp_path / "model.ckpt"
    with pytest.raises(StartupError, match=r"model.ckpt does not fit preset sam3d-body-vith: 1 of .*decoder.proj"):
        check_loaded_keys(["decoder.proj.weight", "head_pose.mhr.faces"], [], ckpt, "sam3d-body-vith")
    check_loaded_keys(["head_pose.mhr.faces"], ["trainer.ema"], ckpt, "sam3d-body-vith")
    assert "trainer.ema" in caplog.text
