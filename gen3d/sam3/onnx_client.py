"""A Python client of the ONNX decoder (format v4), numpy and scikit-image only: the feeds that stand for an
embedding (:func:`embedding_feeds`), the decoder's click graph on a preparation (:func:`click_session`), and the
post-processing of ``low_res_logits``: what sam3's
``SAM2Transforms.postprocess_masks`` does, and what the page's ``web/src/postprocess.js`` does.

1. fill every 8-connected component of ``logits <= mask_threshold`` of at most ``max_hole_area`` low-res pixels
   with ``mask_threshold + 10`` (and, when ``max_sprinkle_area`` > 0, every component of ``logits > mask_threshold``
   of at most that many pixels with ``mask_threshold - 10``; both labelled on the logits as given);
2. resize bilinearly to the picture as ``F.interpolate(align_corners=False)`` does (half-pixel centres);
3. the object where the result is > ``mask_threshold``.

The decoder file's metadata records ``mask_threshold``, ``max_hole_area`` and ``max_sprinkle_area``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_TENSORS = {  # the decoder's input -> the embedding file's tensor
    "image_embed": "image_embed",
    "high_res_feats_0": "high_res_feats.0",
    "high_res_feats_1": "high_res_feats.1",
}


def embedding_feeds(session, tensors: dict | None = None, prepared: dict | None = None) -> dict[str, np.ndarray]:
    """The decoder's embedding inputs for an onnxruntime ``session``: either the embedding file's ``tensors`` (an
    embedding's first run: it prepares the embedding, whose ``prepared_*`` outputs it answers) or ``prepared``, those
    outputs by name (a later run: only the click is decoded); the other side's inputs are fed empty."""
    if (tensors is None) == (prepared is None):
        raise ValueError("give the embedding's tensors or its prepared_* outputs, not both")
    feeds = {}
    for node in session.get_inputs():
        if node.name in INPUT_TENSORS:
            empty = np.zeros((1, node.shape[1], 0, 0), np.float32)
            feeds[node.name] = empty if tensors is None else tensors[INPUT_TENSORS[node.name]].astype(np.float32)
        elif node.name.startswith("prepared_"):
            empty = np.zeros((0, node.shape[1]), np.float32)
            feeds[node.name] = empty if prepared is None else prepared[node.name.removesuffix("_in")]
    return feeds


def click_session(click_graph: str | Path, prepared: dict, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    """An onnxruntime session of the decoder's click graph (``<stem>.click.onnx``) for one embedding: ``prepared``
    its preparation, the decoder's ``prepared_*`` outputs by name, given as the graph's initializers (tensor
    ``prepared_X`` is initializer ``X``, whose external data location is ``prepared_X``). Each run then takes
    ``point_coords``, ``point_labels`` and ``orig_im_size`` only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    names = [name.removeprefix("prepared_") for name in prepared]
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value, np.float32)) for value in prepared.values()]
    options.add_external_initializers(names, values)
    return ort.InferenceSession(str(click_graph), options, providers=list(providers))


def fill_small_components(
    logits: np.ndarray, threshold: float, max_hole_area: float, max_sprinkle_area: float
) -> np.ndarray:
    """``logits`` [..., H, W] with small background components (holes) and foreground ones (sprinkles) filled."""
    from skimage.measure import label

    out = np.array(logits, dtype=np.float32, copy=True)
    planes = out.reshape(-1, *out.shape[-2:])
    originals = np.asarray(logits, np.float32).reshape(planes.shape)
    for plane, original in zip(planes, originals, strict=True):
        for max_area, selected, fill in (
            (max_hole_area, original <= threshold, threshold + 10.0),
            (max_sprinkle_area, original > threshold, threshold - 10.0),
        ):
            if max_area <= 0:
                continue
            labels = label(selected, connectivity=2)
            areas = np.bincount(labels.ravel())
            plane[(labels > 0) & (areas[labels] <= max_area)] = fill
    return out


def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear source indices and weight (align_corners=False) of each output pixel, in float32."""
    scale = np.float32(in_size / out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.floor(src).astype(np.int64)
    return i0, np.minimum(i0 + 1, in_size - 1), (src - i0).astype(np.float32)


def resize_bilinear(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """``logits`` [..., h, w] resized to [..., height, width] as ``F.interpolate(mode="bilinear",
    align_corners=False)``, to float rounding."""
    y0, y1, wy = _taps(logits.shape[-2], height)
    x0, x1, wx = _taps(logits.shape[-1], width)
    across = logits[..., x0] * (1 - wx) + logits[..., x1] * wx
    return across[..., y0, :] * (1 - wy)[:, None] + across[..., y1, :] * wy[:, None]


def logits_from_low_res(logits: np.ndarray, size: tuple[int, int], metadata: dict[str, str]) -> np.ndarray:
    """Logits [..., height, width] of the decoder's ``low_res_logits`` for a picture of ``size`` (h, w), as sam3's
    ``predict(return_logits=True)`` returns them; ``metadata``: the decoder file's."""
    threshold = float(metadata["mask_threshold"])
    filled = fill_small_components(
        logits, threshold, float(metadata["max_hole_area"]), float(metadata["max_sprinkle_area"])
    )
    return resize_bilinear(filled, *size)


def masks_from_low_res(logits: np.ndarray, size: tuple[int, int], metadata: dict[str, str]) -> np.ndarray:
    """Boolean masks [..., height, width] (the object) of the decoder's ``low_res_logits``."""
    return logits_from_low_res(logits, size, metadata) > float(metadata["mask_threshold"])
