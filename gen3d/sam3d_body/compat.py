"""Every workaround ``sam_3d_body`` needs to be served, in one place, each with its reason.

Upstream (facebookresearch/sam-3d-body; its open PR 81 lists the CUDA hard-codes) assumes one CUDA device and a
network: ``recursive_to(batch, "cuda")`` in the estimator and in ``SAM3DBody.run_inference``, ``.cuda()`` in
``get_ray_condition`` and on two index tensors of ``run_inference``, and ``torch.hub.load`` of DINOv3's code
from GitHub. :func:`on_device` sends those to the model's own device (the worker's GPU, or the CPU demo);
:func:`local_dinov3` loads the staged DINOv3 code instead of fetching it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from gen3d.errors import StartupError

PACKAGE = "sam_3d_body"
_MODULES_WITH_CUDA_RECURSIVE_TO = ("sam_3d_body.sam_3d_body_estimator", "sam_3d_body.models.meta_arch.sam3d_body")
_lock = threading.Lock()


def vendored_root() -> Path:
    """The folder of PyPI ``sam3d`` 0.1.2's copy of ``sam_3d_body`` (byte-identical to upstream at b5c765a),
    found without importing ``sam3d`` (whose ``__init__`` starts an API server's imports)."""
    spec = importlib.util.find_spec("sam3d")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("package sam3d (0.1.2) not installed; the demo preset needs requirements-sam3d-cpu.txt")
    root = Path(spec.submodule_search_locations[0]) / "third_party" / "meta"
    if not (root / PACKAGE / "__init__.py").is_file():
        raise StartupError(f"sam_3d_body not found in the sam3d package (looked for {root}/{PACKAGE})")
    return root


def import_sam_3d_body(vendored: bool) -> None:
    """Makes ``import sam_3d_body`` work: the installed package (production image), or PyPI ``sam3d``'s copy
    (``vendored``: the CPU demo), loaded as a package from that folder so the rest of sys.path stays as it is."""
    loaded = sys.modules.get(PACKAGE)
    if not vendored:
        if loaded is None and importlib.util.find_spec(PACKAGE) is None:
            raise StartupError("package sam_3d_body not installed (facebookresearch/sam-3d-body at the pinned commit)")
        return
    root = vendored_root() / PACKAGE
    if loaded is not None:
        if not str(getattr(loaded, "__file__", "")).startswith(str(root)):
            raise StartupError(f"another sam_3d_body is already imported ({loaded.__file__}); the demo needs {root}")
        return
    spec = importlib.util.spec_from_file_location(PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise


@contextlib.contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Runs upstream's inference with its CUDA hard-codes pointing at ``device``.

    1. ``recursive_to(x, "cuda")`` (estimator and ``run_inference``): the modules' ``recursive_to`` is swapped for
       one that reads ``"cuda"`` as ``device``; "cpu" and "numpy" keep their meaning.
    2. ``Tensor.cuda()`` (``get_ray_condition``'s meshgrid, ``run_inference``'s joint indices): ``.cuda()`` becomes
       ``.to(device)`` for the call. It is process-wide, so calls are serialised by a lock; the worker runs one batch
       at a time anyway, and nothing else in it calls ``.cuda()``.
    On a CUDA device both are what upstream does on its current device; the swap keeps one code path."""
    from sam_3d_body.utils import dist

    original = dist.recursive_to

    def recursive_to_device(x, target):
        return original(x, device if target == "cuda" else target)

    real_cuda = torch.Tensor.cuda
    with _lock:
        modules = [sys.modules[name] for name in _MODULES_WITH_CUDA_RECURSIVE_TO]
        for module in modules:
            module.recursive_to = recursive_to_device
        torch.Tensor.cuda = lambda t, *a, **k: t.to(device)  # type: ignore[method-assign]
        try:
            yield
        finally:
            torch.Tensor.cuda = real_cuda  # type: ignore[method-assign]
            for module in modules:
                module.recursive_to = original


def local_dinov3(code_dir: Path) -> None:
    """3. ``Dinov3Backbone`` calls ``torch.hub.load("facebookresearch/dinov3", name, source="github")``, which
    downloads DINOv3's code at start-up; the image has no network, so the staged copy (``code_dir``, a checkout
    with ``hubconf.py``) is loaded with ``source="local"``. The weights come from the SAM 3D Body checkpoint
    (upstream passes ``pretrained=False``)."""
    if not (code_dir / "hubconf.py").is_file():
        raise StartupError(f"DINOv3 code not staged: {code_dir}/hubconf.py not found (the dinov3 preset needs it)")
    from sam_3d_body.models.backbones import dinov3

    class HubFromStagedCode:
        @staticmethod
        def load(repo, model, *args, source="github", **kwargs):
            return torch.hub.load(str(code_dir), model, *args, source="local", **kwargs)

    dinov3.torch = _TorchWithHub(HubFromStagedCode)


class _TorchWithHub:
    """``torch`` as ``dinov3`` sees it: everything is torch's, but ``hub`` loads from the staged code."""

    def __init__(self, hub) -> None:
        self.hub = hub

    def __getattr__(self, name: str):
        return getattr(torch, name)
