"""Every workaround for sam3 0.1.4's hard-coded ``"cuda"`` and its global side effects, in one place.

The builder avoids two of them by constructor arguments (see ``gen3d.sam3.architecture``):
- ``PositionEmbeddingSine(precompute_resolution=None)``: the precompute allocates on ``"cuda"``; the
  encoding is then computed lazily on the input's device instead.
- ``TransformerDecoder(resolution=None, stride=None)``: ``__init__`` calls ``_get_coords(device="cuda")``;
  without them the coordinates are built lazily on the input's device.
- ``Sam3Processor`` and ``forward_text`` get ``device=`` passed explicitly (their default is ``"cuda"``).
The one left needs a patch, applied by ``apply()``. :func:`leave_tracker_autocast` undoes a side effect;
:func:`meta_init_skipped` saves start-up time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_applied = False


def apply() -> None:
    """Install the runtime patches this process needs; idempotent."""
    global _applied
    if _applied:
        return
    _applied = True
    if not torch.cuda.is_available():
        # geometry_encoders.py box pooling calls Tensor.pin_memory(), which raises without a CUDA driver;
        # pinning only speeds host-to-GPU copies, so without CUDA it is a no-op.
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self  # type: ignore[method-assign]


def leave_tracker_autocast(tracker) -> None:
    """``Sam3TrackerPredictor.__init__`` enters ``torch.autocast("cuda", bfloat16)`` for the thread that builds it
    and never leaves it ("keep using for the entire model process"): precision would then depend on which thread
    serves. Leave it here (on the building thread, right after construction, so the autocast stack unwinds in
    order); the services enter an explicit autocast of their own (``LoadedSam3.precision``)."""
    context = getattr(tracker, "bf16_context", None)
    if context is not None:
        context.__exit__(None, None, None)
        tracker.bf16_context = None


@contextmanager
def meta_init_skipped() -> Iterator[None]:
    """sam3's ViT initialises its weights with timm's ``trunc_normal_``, whose ``clamp_`` runs torch's Python
    reference kernels on meta tensors: about a second of start-up CPU for values that do not exist yet (the
    checkpoint's are assigned afterwards). While building for a checkpoint, it skips meta tensors."""
    import sam3.model.vitdet as vitdet

    original = vitdet.trunc_normal_

    def trunc_normal_unless_meta(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return tensor if tensor.is_meta else original(tensor, *args, **kwargs)

    vitdet.trunc_normal_ = trunc_normal_unless_meta
    try:
        yield
    finally:
        vitdet.trunc_normal_ = original
