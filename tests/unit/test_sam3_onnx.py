"""The ONNX decoder's parts that need no server: the client's post-processing against sam3's own,
reading archives, the cache key, and the CLI's refusals."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from gen3d.errors import StartupError
from gen3d.sam3.onnx_client import fill_small_components, masks_from_low_res, resize_bilinear
from gen3d.sam3.onnx_export import archive_handler_config, cached_decoder_path, load_archive_model, model_digest
from tests.conftest import REPO

pytestmark = pytest.mark.sam3


def smooth_fields(size: int, count: int, seed: int) -> list[torch.Tensor]:
    """Random logit fields [1, 3, size, size]: noise blurred at several scales, some with speckle, shifted so that
    holes of every size appear."""
    generator = torch.Generator().manual_seed(seed)
    fields = []
    for i in range(count):
        scale = (1, 2, 4, 8)[i % 4]
        x = torch.randn(1, 3, size // scale + 1, size // scale + 1, generator=generator)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if i % 3 == 0:
            x = x + 0.3 * torch.randn(1, 3, size, size, generator=generator)
        fields.append(x + (i % 5 - 2) * 0.3)
    return fields


@pytest.mark.parametrize("max_sprinkle_area", [0.0, 30.0])
def test_client_post_processing_equals_sam3s(max_sprinkle_area):
    """sam3 fills 8-connected background components of <= max_hole_area low-res pixels (skimage on the CPU), then
    resizes bilinearly: the client's fill must give exactly sam3's logits, its masks sam3's masks except where the
    resized logit is a float-rounding tie."""
    from sam3.model.utils.sam1_utils import SAM2Transforms

    transforms = SAM2Transforms(112, 0.0, max_hole_area=256.0, max_sprinkle_area=max_sprinkle_area)
    metadata = {"mask_threshold": "0.0", "max_hole_area": "256.0", "max_sprinkle_area": str(max_sprinkle_area)}
    filled = 0
    for size, count in ((32, 30), (64, 6)):
        for x in smooth_fields(size, count, seed=size):
            expected = transforms.postprocess_masks(x, x.shape[-2:])  # resize to its own size: the fill alone
            ours = fill_small_components(x.numpy(), 0.0, 256.0, max_sprinkle_area)
            np.testing.assert_array_equal(ours, expected.numpy())
            filled += int((expected != x).sum())
            upscaled = transforms.postprocess_masks(x, (3 * size + 5, 5 * size - 3)).numpy()
            np.testing.assert_allclose(resize_bilinear(ours, *upscaled.shape[-2:]), upscaled, rtol=0, atol=5e-5)
            differ = masks_from_low_res(x.numpy(), upscaled.shape[-2:], metadata) != (upscaled > 0)
            assert np.abs(upscaled[differ]).max(initial=0) < 1e-4
    assert filled > 1000  # the fields had holes to fill


def test_components_larger_than_the_area_or_touching_others_stay():
    x = np.full((1, 1, 40, 40), 5.0, np.float32)
    x[..., 5:10, 5:10] = -1.0  # 25 px hole: filled
    x[..., 20:40, 0:40] = -1.0  # 800 px background: kept
    out = fill_small_components(x, 0.0, 256.0, 0.0)
    assert (out[..., 5:10, 5:10] == 10.0).all()
    assert (out[..., 20:40, :] == -1.0).all()
    np.testing.assert_array_equal(fill_small_components(x, 0.0, 0.0, 0.0), x)  # max_area 0: nothing to do


def _decoder_case(points: int, offset: float):
    """sam3's mask decoder (tiny preset, weights of a trained model's scale, not init's) and random inputs; up to
    ``offset`` is added to each image token (a mean far from its spread, which the factored LayerNorms must not
    lose)."""
    from gen3d.sam3.architecture import interactive_predictor
    from gen3d.sam3.presets import get_preset

    torch.manual_seed(points)
    preset = get_preset("tiny")
    decoder = interactive_predictor(preset).eval().model.sam_mask_decoder
    for parameter in decoder.parameters():
        parameter.data.normal_(0, 0.2)
    g = preset.grid
    image, pe, dense = (torch.randn(1, 256, g, g) for _ in range(3))
    sparse = torch.randn(1, points + 1, 256)
    high_res = [torch.randn(1, 32, 4 * g, 4 * g), torch.randn(1, 64, 2 * g, 2 * g)]
    return decoder, (image + offset * torch.rand(1, 1, g, g), pe, dense, sparse, high_res)


def _both(decoder, inputs):
    """sam3's predict_masks and onnx_transformer's prepare_image + predict_masks on the same inputs."""
    from gen3d.sam3.onnx_transformer import predict_masks, prepare_image

    image, pe, dense, sparse, high_res = inputs
    with torch.no_grad():
        masks, scores, _, _ = decoder.predict_masks(
            image, pe, sparse, dense, repeat_image=False, high_res_features=high_res
        )
        ours = predict_masks(decoder, prepare_image(decoder, image, dense, pe, high_res), sparse)
    return (masks, scores), ours


# 20 points: more tokens than the factoring saves on; offset 300: tokens' means ~100x their spread (without the
# centring of onnx_image_tokens, ~1e-3 off)
@pytest.mark.parametrize(("points", "offset"), [(1, 0.0), (3, 0.0), (20, 0.0), (3, 300.0)])
def test_factored_mask_decoder_equals_sam3s(points, offset, monkeypatch):
    """With erf's GELU (sam3's), the split, factored decoder is sam3's function up to float rounding."""
    import gen3d.sam3.onnx_transformer as onnx_transformer

    monkeypatch.setattr(onnx_transformer, "GELU_APPROXIMATION", "none")
    (masks, scores), (ours, our_scores) = _both(*_decoder_case(points, offset))
    assert masks.abs().max() > 1  # logits of some size, so that 1e-4 means something
    torch.testing.assert_close(ours, masks, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(our_scores, scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("points", [1, 3])
def test_tanh_gelu_moves_logits_by_a_small_fraction(points):
    """The exported GELUs are tanh's form: logits move by < 1e-3 of their range, and signs flip only next to 0;
    the scores (from the tokens, no GELU of the upscaling) are unchanged."""
    from gen3d.sam3.onnx_transformer import GELU_APPROXIMATION

    assert GELU_APPROXIMATION == "tanh"
    (masks, scores), (ours, our_scores) = _both(*_decoder_case(points, 0.0))
    moved = (ours - masks).abs()
    assert 0 < moved.max() < 1e-3 * masks.abs().max()
    flipped = (ours > 0) != (masks > 0)
    assert flipped.float().mean() < 1e-3 and (masks[flipped].abs() <= moved[flipped]).all()
    torch.testing.assert_close(our_scores, scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("multimask", "threshold"), [(False, 0.0), (False, 1.1), (True, 0.98)])
def test_click_decoder_makes_only_the_planes_sam3s_choice_reads(multimask, threshold):
    """ClickDecoder makes plane 0 and the best multimask plane only (K=1) or planes 1..3 (K=3): its answer is sam3's
    choice among all four planes, on both sides of the stability rule (threshold 0: plane 0 always stable; 1.1:
    never, so the best multimask plane by IoU)."""
    from gen3d.sam3.architecture import interactive_predictor
    from gen3d.sam3.onnx_decoder import ClickDecoder, PrepareEmbedding
    from gen3d.sam3.onnx_transformer import predict_masks
    from gen3d.sam3.presets import get_preset

    torch.manual_seed(7)
    preset = get_preset("tiny")
    predictor = interactive_predictor(preset).eval()
    decoder = predictor.model.sam_mask_decoder
    for parameter in decoder.parameters():
        parameter.data.normal_(0, 0.2)
    decoder.dynamic_multimask_stability_thresh = threshold
    g = preset.grid
    size = torch.tensor([90, 120])
    coords, labels = torch.tensor([[[40.0, 30.0], [70.0, 50.0]]]), torch.tensor([[1.0, 0.0]])
    click = ClickDecoder(predictor, multimask)
    with torch.no_grad():
        embedding = (torch.randn(1, 256, g, g), torch.randn(1, 32, 4 * g, 4 * g), torch.randn(1, 64, 2 * g, 2 * g))
        prepared = PrepareEmbedding(predictor)(*embedding, torch.zeros(1, 1, 4 * g, 4 * g), torch.zeros(1))
        masks, scores, _ = click(*prepared, coords, labels, size)
        sparse = click._embed_points(coords / torch.tensor([120.0, 90.0]) * click.image_size, labels)
        all_masks, all_scores = predict_masks(decoder, prepared, sparse)
    if multimask:
        expected, expected_scores = all_masks[:, 1:], all_scores[:, 1:]
    else:
        expected, expected_scores = decoder._dynamic_multimask_via_stability(all_masks, all_scores)
        best = 1 + int(all_scores[0, 1:].argmax())
        chosen = 0 if threshold == 0.0 else best
        assert best != 0 and not torch.equal(all_masks[:, 0], all_masks[:, best])
        torch.testing.assert_close(expected[:, 0], all_masks[:, chosen], rtol=0, atol=0)
    torch.testing.assert_close(masks, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=0)


def fake_mar(path, handler: dict, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr("model-config.yaml", yaml.safe_dump({"batchSize": 1, "handler": handler}))
        for name, data in files.items():
            mar.writestr(name, data)


def test_archive_config_from_a_mar_or_a_directory(tmp_path):
    handler = {"preset": "tiny", "checkpoint": "w.safetensors"}
    fake_mar(tmp_path / "sam3.mar", handler, {})
    assert archive_handler_config(tmp_path / "sam3.mar") == handler
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "model-config.yaml").write_text(yaml.safe_dump({"handler": handler}))
    assert archive_handler_config(folder) == handler


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "model archive not found"),
        (lambda p: p.write_text("not a zip"), "model archive not found"),
        (lambda p: fake_mar(p, {"preset": "tiny"}, {}), "lacks handler.checkpoint: not a sam3 archive"),
    ],
)
def test_archive_refusals_name_the_path(tmp_path, make, message):
    path = tmp_path / "sam3.mar"
    make(path)
    with pytest.raises(StartupError, match=message) as err:
        archive_handler_config(path)
    assert str(path) in str(err.value)


def test_a_missing_checkpoint_in_the_archive_is_named(tmp_path):
    fake_mar(tmp_path / "sam3.mar", {"preset": "tiny", "checkpoint": "w.safetensors"}, {})
    with pytest.raises(StartupError, match=r"w\.safetensors not found in .*sam3\.mar"):
        load_archive_model(tmp_path / "sam3.mar", tmp_path / "work")


def test_cache_key_follows_the_model_not_the_archive_file(tmp_path):
    """A rebuilt .mar differs in its manifest's time stamp: same preset and checkpoint, same cached decoder."""
    handler = {"preset": "tiny", "checkpoint": "w", "checkpoint_sha256": "ab" * 32}
    fake_mar(tmp_path / "a.mar", handler, {"w": b"1", "MAR-INF/MANIFEST.json": b'{"createdOn": "1"}'})
    fake_mar(tmp_path / "b.mar", handler, {"w": b"1", "MAR-INF/MANIFEST.json": b'{"createdOn": "2"}'})
    fake_mar(tmp_path / "c.mar", {**handler, "checkpoint_sha256": "cd" * 32}, {"w": b"2"})
    cache = tmp_path / "cache"
    first = cached_decoder_path(cache, tmp_path / "a.mar")
    assert first == cached_decoder_path(cache, tmp_path / "b.mar") != cached_decoder_path(cache, tmp_path / "c.mar")
    assert first.name.startswith("sam3-decoder-k1-") and first.parent == cache
    # no recorded digest: the checkpoint itself is hashed, in a .mar or a directory alike
    unrecorded = {"preset": "tiny", "checkpoint": "w"}
    fake_mar(tmp_path / "d.mar", unrecorded, {"w": b"1"})
    fake_mar(tmp_path / "e.mar", unrecorded, {"w": b"2"})
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "model-config.yaml").write_text(yaml.safe_dump({"handler": unrecorded}))
    (folder / "w").write_bytes(b"1")
    assert model_digest(tmp_path / "d.mar") == model_digest(folder) != model_digest(tmp_path / "e.mar")


def test_cli_help_and_one_line_refusal(tmp_path):
    script = [str(REPO / "scripts" / "export_decoder_onnx.py")]
    helped = subprocess.run([sys.executable, *script, "--help"], capture_output=True, text=True, check=True)
    assert "--archive" in helped.stdout and "--multimask-out" in helped.stdout and "orig_im_size" in helped.stdout
    refused = subprocess.run(
        [sys.executable, *script, "--archive", str(tmp_path / "none.mar"), "--out", str(tmp_path / "d.onnx")],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"gen3d-export-onnx: model archive not found: {tmp_path / 'none.mar'} (a .mar file or an archive directory)"
    )
