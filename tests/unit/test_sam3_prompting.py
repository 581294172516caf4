"""Concept prompts: one grounding pass with every exemplar box gives exactly what sam3's own processor gives
after set_text_prompt plus one add_geometric_prompt per box; masks are upsampled a few at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gen3d.sam3 import prompting
from gen3d.sam3.features import encode_images, grounding_backbone_out
from gen3d.sam3.loading import sam3_processor
from gen3d.sam3.request import SegmentPrompts
from gen3d.serving.images import decode_image
from tests.conftest import png_bytes

pytestmark = pytest.mark.sam3


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
    return tiny_loaded


def concept(
    text: str, boxes: list[list[float]], labels: list[bool], threshold: float, max_masks: int | None = None
) -> SegmentPrompts:
    return SegmentPrompts(
        text=text,
        points=None,
        point_labels=None,
        boxes=np.array(boxes, dtype=np.float32) if boxes else None,
        box_labels=labels,
        multimask=False,
        score_threshold=threshold,
        return_png_masks=False,
        max_masks=max_masks,
    )


def sequential(loaded, features, prompts: SegmentPrompts):
    """What gen3d did before: Sam3Processor.set_text_prompt, then add_geometric_prompt once per box."""
    proc = sam3_processor(loaded, confidence_threshold=prompts.score_threshold)
    height, width = features.original_size
    backbone_out = grounding_backbone_out(loaded, features)
    state = {"original_height": height, "original_width": width, "backbone_out": backbone_out}
    with torch.inference_mode():
        state = proc.set_text_prompt(prompts.text, state)
        for box, label in zip(prompting.exemplar_boxes(prompts, height, width), prompts.box_labels, strict=True):
            state = proc.add_geometric_prompt(box, label, state)
    boxes = np.clip(state["boxes"].float().numpy(), 0, [width, height, width, height])
    return state["masks"].squeeze(1).numpy(), state["scores"].float().numpy(), boxes


@pytest.mark.parametrize(
    ("boxes", "labels", "threshold"),
    [
        ([], [], 0.0),
        ([[10, 20, 60, 70]], [True], 0.0),
        ([[10, 20, 60, 70], [5, 5, 40, 30], [70, 40, 118, 88]], [True, False, True], 0.0),
        ([[10, 20, 60, 70], [5, 5, 40, 30]], [True, True], 0.3),
    ],
)
def test_one_grounding_pass_equals_the_sequential_processor(loaded, boxes, labels, threshold):
    features = encode_images(loaded, [decode_image(png_bytes(3, size=(96, 128)), "f")])[0]
    prompts = concept("a red chair", boxes, labels, threshold)
    masks, scores, ref_boxes = sequential(loaded, features, prompts)
    results = prompting.segment_concept(loaded, features, prompts)
    order = np.argsort(-scores, kind="stable")
    assert len(results) == len(order) > 0
    for result, i in zip(results, order, strict=True):
        assert result.score == pytest.approx(float(scores[i]), abs=0)
        assert np.array_equal(result.mask(), masks[i]) and result.area == int(masks[i].sum())
        assert result.box == pytest.approx([float(v) for v in ref_boxes[i]], abs=0)


def test_masks_are_upsampled_a_few_at_a_time(loaded, monkeypatch):
    from sam3.model import data_misc

    features = encode_images(loaded, [decode_image(png_bytes(4, size=(96, 128)), "f")])[0]
    prompts = concept("a cup", [], [], 0.0)
    whole = prompting.segment_concept(loaded, features, prompts)
    calls = []
    real = data_misc.interpolate
    monkeypatch.setattr(data_misc, "interpolate", lambda x, *a, **k: calls.append(x.shape[0]) or real(x, *a, **k))
    monkeypatch.setattr(prompting, "UPSAMPLE_BUDGET_BYTES", 3 * 4 * 96 * 128)  # three masks at a time
    chunked = prompting.segment_concept(loaded, features, prompts)
    assert max(calls) == 3 and sum(calls) == len(whole)
    assert [r.rle for r in chunked] == [r.rle for r in whole]


def test_max_masks_keeps_the_best_and_upsamples_only_those(loaded, monkeypatch):
    from sam3.model import data_misc

    features = encode_images(loaded, [decode_image(png_bytes(5, size=(96, 128)), "f")])[0]
    every = prompting.segment(loaded, features, concept("a lamp", [], [], 0.0))
    assert len(every.masks) == every.total == loaded.preset.num_queries and not every.truncated
    upsampled = []
    real = data_misc.interpolate
    monkeypatch.setattr(data_misc, "interpolate", lambda x, *a, **k: upsampled.append(x.shape[0]) or real(x, *a, **k))
    capped = prompting.segment(loaded, features, concept("a lamp", [], [], 0.0, max_masks=5))
    assert sum(upsampled) == 5  # the other queries' masks were never computed
    assert (capped.total, capped.truncated) == (every.total, True)
    assert [(r.rle, r.score, r.box) for r in capped.masks] == [(r.rle, r.score, r.box) for r in every.masks[:5]]
    cutoff = every.masks[3].score  # a threshold keeping 3 (strict >): the cap does not apply
    three = prompting.segment(loaded, features, concept("a lamp", [], [], cutoff, max_masks=5))
    assert (len(three.masks), three.total, three.truncated) == (3, 3, False)


def test_interactive_max_masks_keeps_the_best_scores_in_prompt_order(loaded):
    features = encode_images(loaded, [decode_image(png_bytes(6, size=(96, 128)), "f")])[0]
    prompts = SegmentPrompts(
        text=None,
        points=None,
        point_labels=None,
        boxes=np.array([[10, 10, 60, 50], [70, 30, 120, 90]], dtype=np.float32),
        box_labels=[True, True],
        multimask=True,
        score_threshold=0.5,
        return_png_masks=False,
    )
    every = prompting.segment(loaded, features, prompts)
    assert len(every.masks) == every.total == 6 and [r.prompt_index for r in every.masks] == [0, 0, 0, 1, 1, 1]
    prompts.max_masks = 4
    capped = prompting.segment(loaded, features, prompts)
    best4 = sorted(range(6), key=lambda i: -every.masks[i].score)[:4]
    assert [r.rle for r in capped.masks] == [every.masks[i].rle for i in sorted(best4)]
    assert (capped.total, capped.truncated) == (6, True)


def test_masks_rle_area_and_box_equal_the_masks_own(loaded):
    """Areas and interactive boxes are read from the RLE's runs, and concept masks leave the device transposed:
    both equal what the decoded mask gives."""
    from gen3d.serving.masks import box_of, rle_from_mask

    features = encode_images(loaded, [decode_image(png_bytes(7, size=(96, 128)), "f")])[0]
    prompts = SegmentPrompts.one_click(40, 30, score_threshold=0.5, multimask=True)
    interactive = prompting.segment(loaded, features, prompts).masks
    for result in interactive + prompting.segment_concept(loaded, features, concept("a cup", [], [], 0.0)):
        mask = result.mask()
        assert mask.shape == (96, 128) and result.area == int(mask.sum()) and rle_from_mask(mask) == result.rle
    assert all(r.box == box_of(r.mask()) for r in interactive)
