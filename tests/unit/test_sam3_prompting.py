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


def concept(text: str, boxes: list[list[float]], labels: list[bool], threshold: float) -> SegmentPrompts:
    return SegmentPrompts(
        text=text,
        points=None,
        point_labels=None,
        boxes=np.array(boxes, dtype=np.float32) if boxes else None,
        box_labels=labels,
        multimask=False,
        score_threshold=threshold,
        return_png_masks=False,
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
