"""The SAM 3 builder: published shapes, strict checkpoint loading, formats."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

from gen3d.errors import StartupError
from gen3d.sam3.architecture import build_sam3_model_for_checkpoint
from gen3d.sam3.checkpoint import load_sam3_weights, read_state_dict
from gen3d.sam3.loading import load_sam3
from gen3d.sam3.presets import PRESETS

pytestmark = pytest.mark.sam3


def _stock_model_on_meta(bpe_path: str) -> torch.nn.Module:
    """sam3's own builder, parameters on meta; its two construction-time "cuda" allocations redirected."""
    import sam3.model.decoder as decoder
    import sam3.model.position_encoding as position_encoding
    from accelerate import init_empty_weights
    from sam3.model_builder import build_sam3_image_model

    zeros, get_coords = torch.zeros, decoder.TransformerDecoder._get_coords

    def zeros_not_on_cuda(*args, device=None, **kwargs):
        return zeros(*args, device=None if device == "cuda" else device, **kwargs)

    with (
        mock.patch.object(position_encoding.torch, "zeros", zeros_not_on_cuda),
        mock.patch.object(
            decoder.TransformerDecoder, "_get_coords", staticmethod(lambda h, w, device: get_coords(h, w, None))
        ),
        init_empty_weights(include_buffers=False),
    ):
        return build_sam3_image_model(
            bpe_path=bpe_path, device="cpu", load_from_HF=False, enable_inst_interactivity=True
        )


def test_published_preset_matches_stock_builder(bpe_path):
    ours = build_sam3_model_for_checkpoint(PRESETS["sam3"], bpe_path).state_dict()
    stock = _stock_model_on_meta(bpe_path).state_dict()
    assert sorted(ours) == sorted(stock)
    mismatched = {k: (tuple(ours[k].shape), tuple(stock[k].shape)) for k in ours if ours[k].shape != stock[k].shape}
    assert mismatched == {}
    assert sum(v.numel() for v in ours.values()) > 800_000_000


def test_tiny_preset_uses_the_same_classes(bpe_path):
    tiny = build_sam3_model_for_checkpoint(PRESETS["tiny"], bpe_path)
    big = build_sam3_model_for_checkpoint(PRESETS["sam3"], bpe_path)
    assert {type(m).__name__ for m in tiny.modules()} == {type(m).__name__ for m in big.modules()}
    assert tiny.inst_interactive_predictor._bb_feat_sizes == [(32, 32), (16, 16), (8, 8)]


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".safetensors"])
def test_checkpoint_formats_and_nesting(tmp_path, tiny_state, suffix):
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(tiny_state, str(path))
    else:
        torch.save({"model": {"state_dict": tiny_state}}, path)
    loaded = read_state_dict(path)
    assert sorted(loaded) == sorted(tiny_state)
    key = next(iter(tiny_state))
    assert torch.equal(loaded[key], tiny_state[key])


def test_published_key_layout_is_mapped(bpe_path, tiny_state):
    published = {}
    for key, value in tiny_state.items():
        if key.startswith("inst_interactive_predictor.model."):
            published["tracker." + key.removeprefix("inst_interactive_predictor.model.")] = value
        else:
            published["detector." + key] = value
    model = build_sam3_model_for_checkpoint(PRESETS["tiny"], bpe_path)
    load_sam3_weights(model, published, "published.pt")
    key = "backbone.vision_backbone.trunk.patch_embed.proj.weight"
    assert torch.equal(model.state_dict()[key], tiny_state[key])


def test_missing_and_unexpected_keys_are_listed(bpe_path, tiny_state):
    state = dict(tiny_state)
    state.pop("backbone.vision_backbone.trunk.patch_embed.proj.weight")
    state["not.a.real.key"] = torch.zeros(1)
    model = build_sam3_model_for_checkpoint(PRESETS["tiny"], bpe_path)
    with pytest.raises(StartupError) as err:
        load_sam3_weights(model, state, "bad.pt")
    assert "backbone.vision_backbone.trunk.patch_embed.proj.weight" in str(err.value)
    assert "not.a.real.key" in str(err.value)


def test_missing_checkpoint_names_path(tmp_path, bpe_path):
    with pytest.raises(StartupError, match=str(tmp_path / "nope.pt")):
        load_sam3("tiny", tmp_path / "nope.pt", bpe_path, torch.device("cpu"))


def test_weights_loaded_without_random_init_and_no_meta_left(tmp_path, bpe_path, tiny_state):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    loaded = load_sam3("tiny", path, bpe_path, torch.device("cpu"))
    assert not any(t.is_meta for t in loaded.model.state_dict().values())
    assert not any(b.is_meta for b in loaded.model.buffers())
    assert not any(m.training for m in loaded.model.modules())  # built in eval mode, kept through loading
    assert loaded.model_id.startswith("sam3/tiny/")


def test_random_state_has_no_empty_text_tensors(tiny_state):
    assert all(torch.isfinite(v).all() for v in tiny_state.values() if v.is_floating_point())


def test_tracker_autocast_is_left_and_precision_is_explicit(bpe_path):
    from gen3d.sam3.loading import LoadedSam3

    model = build_sam3_model_for_checkpoint(PRESETS["tiny"], bpe_path)
    assert model.inst_interactive_predictor.model.bf16_context is None  # sam3's never-left autocast is left
    assert not torch.is_autocast_enabled("cuda")
    on_gpu = LoadedSam3(model=model, preset=PRESETS["tiny"], device=torch.device("cuda", 1), checkpoint_sha256="0" * 64)
    context = on_gpu.precision()
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert on_gpu.compute_dtype == torch.bfloat16 and on_gpu.describe()["compute_dtype"] == "bfloat16"
    on_cpu = LoadedSam3(model=model, preset=PRESETS["tiny"], device=torch.device("cpu"), checkpoint_sha256="0" * 64)
    assert not isinstance(on_cpu.precision(), torch.autocast) and on_cpu.compute_dtype == torch.float32


def test_half_precision_checkpoint_is_converted_to_float32_and_logged(tmp_path, bpe_path, tiny_state, caplog):
    path = tmp_path / "bf16.safetensors"
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in tiny_state.items()}, str(path))
    with caplog.at_level("WARNING"):
        loaded = load_sam3("tiny", path, bpe_path, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert "converted from bfloat16 to float32" in caplog.text


def test_warm_up_runs_the_post_processing_or_stops_start_up(tmp_path, bpe_path, tiny_state, monkeypatch):
    import sam3.perflib.connected_components as components

    from gen3d.sam3.warmup import warm_up

    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    loaded = load_sam3("tiny", path, bpe_path, torch.device("cpu"))
    assert warm_up(loaded) > 0

    def broken(*args, **kwargs):
        raise RuntimeError("Triton could not compile its helper: no C compiler")

    monkeypatch.setattr(components, "connected_components", broken)
    with pytest.raises(StartupError, match=r"hole filling\) cannot run on cpu \(Triton could not .*scikit-image"):
        warm_up(loaded)


def test_recorded_digest_is_used_without_reading_the_file_again(tmp_path, monkeypatch):
    import gen3d.sam3.loading as loading

    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(b"weights")
    monkeypatch.setattr(loading, "file_sha256", lambda p: pytest.fail("the checkpoint was hashed again"))
    assert loading.checkpoint_digest(path, "a" * 64, 7) == "a" * 64
    with pytest.raises(StartupError, match="has 7 bytes; the archive recorded 8"):
        loading.checkpoint_digest(path, "a" * 64, 8)
    monkeypatch.setattr(loading, "file_sha256", lambda p: "b" * 64)
    assert loading.checkpoint_digest(path) == "b" * 64  # nothing recorded: computed
    monkeypatch.setenv("GEN3D_VERIFY_CHECKPOINT", "1")
    with pytest.raises(StartupError, match="has sha256 b+; the archive recorded a+"):
        loading.checkpoint_digest(path, "a" * 64, 7)


def test_archive_records_the_checkpoint_digest_while_copying(tmp_path):
    import zipfile

    import yaml

    from gen3d.cli.build_archives import build, parse_args
    from gen3d.files import file_sha256
    from tests.conftest import REPO

    archive = build(parse_args(["sam3", "--export-path", str(tmp_path), "--work-dir", str(REPO / "build")]))
    with zipfile.ZipFile(archive) as zf:
        handler = yaml.safe_load(zf.read("model-config.yaml"))["handler"]
        checkpoint = tmp_path / handler["checkpoint"]
        checkpoint.write_bytes(zf.read(handler["checkpoint"]))
    assert handler["checkpoint_sha256"] == file_sha256(checkpoint)
    assert handler["checkpoint_bytes"] == checkpoint.stat().st_size
    assert handler["assets"] == ["bpe_simple_vocab_16e6.txt.gz"]
    assert handler["min_gpu_memory_gib"] == 0 and PRESETS["sam3"].min_gpu_memory_gib == 16  # tiny runs anywhere


def test_demo_checkpoint_is_made_again_after_a_change_to_the_model_code(tmp_path, bpe_path, monkeypatch):
    """build/ keeps demo checkpoints across builds: one made by other architecture or preset code is not reused."""
    from gen3d.sam3 import demo_weights

    made = []
    monkeypatch.setattr(demo_weights, "random_sam3_state_dict", lambda *a, **k: made.append(1) or {"x": torch.zeros(1)})
    first = demo_weights.demo_checkpoint(tmp_path, PRESETS["tiny"], bpe_path)
    assert demo_weights.demo_checkpoint(tmp_path, PRESETS["tiny"], bpe_path) == first and len(made) == 1
    monkeypatch.setattr(demo_weights, "sources_digest", lambda paths: "0" * 64)
    again = demo_weights.demo_checkpoint(tmp_path, PRESETS["tiny"], bpe_path)
    assert again != first and again.name == "sam3-tiny-demo-000000000000-seed0.safetensors" and len(made) == 2
