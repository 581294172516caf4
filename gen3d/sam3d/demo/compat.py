"""Every workaround the CPU demo preset of ``sam3d`` needs, in one place (never used by the production path).

The demo runs Meta's ``sam3d_objects`` classes from PyPI's ``sam3d`` 0.1.2, a third-party copy of the tree
(model code byte-identical to facebookresearch/sam-3d-objects@cf066761), on a machine without CUDA.
``import_vendored_tree()`` makes ``import sam3d_objects`` resolve to that copy; ``apply()`` installs the
patches below, each with the reason it is needed. The production image installs the real package and
runs on a GPU, where none of this applies.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

from gen3d.errors import StartupError

# Read by sam3d_objects at import: skip its (absent) init module, and use the attention/sparse backends
# that exist on a CPU (flash_attn/xformers are CUDA-only; spconv 2.3.8 from PyPI has a CPU path).
DEMO_ENV = {
    "LIDRA_SKIP_INIT": "true",
    "ATTN_BACKEND": "sdpa",
    "SPARSE_ATTN_BACKEND": "sdpa",
    "SPARSE_BACKEND": "spconv",
}
LAYOUT_MODULE = "sam3d_objects.pipeline.layout_post_optimization_utils"

_applied = False


def vendored_root() -> Path:
    """The directory holding PyPI ``sam3d``'s copy of ``sam3d_objects`` (found without importing ``sam3d``,
    whose ``__init__`` pulls in an API server)."""
    spec = importlib.util.find_spec("sam3d")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError("package sam3d (0.1.2) not installed; the demo preset needs requirements-sam3d-cpu.txt")
    root = Path(spec.submodule_search_locations[0]) / "third_party" / "meta"
    if not (root / "sam3d_objects" / "__init__.py").is_file():
        raise StartupError(f"sam3d_objects not found in the sam3d package (looked for {root}/sam3d_objects)")
    return root


def import_vendored_tree() -> None:
    """Makes ``import sam3d_objects`` load PyPI ``sam3d``'s copy; refuses if another copy is already loaded."""
    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    root = vendored_root()
    loaded = sys.modules.get("sam3d_objects")
    if loaded is not None:
        if not str(getattr(loaded, "__file__", "")).startswith(str(root)):
            raise StartupError(f"another sam3d_objects is already imported ({loaded.__file__}); the demo needs {root}")
        return
    # Loaded as a package from that folder (its submodules resolve through the package's __path__), so the
    # rest of sys.path, and any other sam3d_objects installed, stay as they are.
    package = root / "sam3d_objects"
    spec = importlib.util.spec_from_file_location(
        "sam3d_objects", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["sam3d_objects"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["sam3d_objects"]
        raise


class _Unavailable(types.ModuleType):
    """A module that imports but raises on any use: for code the demo imports and never calls."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise NotImplementedError(f"{self.__name__}.{name} is not available in the CPU demo environment")

        return unavailable


def _check_tensor(tensor: torch.Tensor, shape=None, dtype=None, device=None, throw: bool = True) -> bool:
    """kaolin.utils.testing.check_tensor: shape/dtype/device assertion used by FlexiCubes."""
    ok = shape is None or (
        len(shape) == tensor.dim() and all(s is None or s == d for s, d in zip(shape, tensor.shape, strict=True))
    )
    ok = ok and (dtype is None or tensor.dtype == dtype)
    ok = ok and (device is None or tensor.device == torch.device(device))
    if not ok and throw:
        raise ValueError(f"tensor check failed: {tuple(tensor.shape)} {tensor.dtype} vs {shape} {dtype}")
    return ok


def apply() -> None:
    """Installs the demo's patches; idempotent. Call after :func:`import_vendored_tree`, before building."""
    global _applied
    if _applied:
        return
    import_vendored_tree()

    # 1. FlexiCubes imports kaolin only for check_tensor (a shape assert); kaolin has no CPU/PyPI build.
    if importlib.util.find_spec("kaolin") is None:
        for name in ("kaolin", "kaolin.utils", "kaolin.utils.testing"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["kaolin.utils.testing"].check_tensor = _check_tensor

    # 2. The layout post-optimisation imports pytorch3d.renderer, whose compiled _C does not load against
    #    this torch; the demo never runs it (it needs CUDA rendering), so it only has to import.
    sys.modules.setdefault(LAYOUT_MODULE, _Unavailable(LAYOUT_MODULE))

    # 3. Gaussian defaults to device="cuda" (the decoder passes none) and setup_functions calls .cuda();
    #    the demo always runs on the CPU, so its Gaussians live there.
    from sam3d_objects.model.backbone.tdfy_dit.representations.gaussian import gaussian_model

    gaussian = gaussian_model.Gaussian
    defaults = list(gaussian.__init__.__defaults__)
    defaults[-1] = "cpu"
    gaussian.__init__.__defaults__ = tuple(defaults)
    setup_functions = gaussian.setup_functions

    def setup_functions_on_own_device(self) -> None:
        real_cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda t, *a, **k: t.to(self.device)  # type: ignore[method-assign]
        try:
            setup_functions(self)
        finally:
            torch.Tensor.cuda = real_cuda  # type: ignore[method-assign]

    gaussian.setup_functions = setup_functions_on_own_device
    _applied = True


def unfuse_spconv_bias(model: torch.nn.Module) -> int:
    """4. spconv 2.3.8's CPU kernels reject a bias fused into the convolution, which it does in eval mode
    (``cpu don't support act and bias``). In train mode it adds the bias afterwards; its conv layers have
    no dropout or batch norm, so under ``no_grad`` the result is the same. Returns the layers switched."""
    import spconv.pytorch as spconv

    convs = [m for m in model.modules() if isinstance(m, spconv.conv.SparseConvolution)]
    for conv in convs:
        conv.train()
    return len(convs)
