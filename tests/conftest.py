"""Fixtures of every test: paths, free ports, pictures, tiny SAM 3 weights. Integration fixtures (moto's S3
server, demo archives, a real TorchServe) are in tests/integration/conftest.py."""

from __future__ import annotations

import io
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parent.parent
BUCKET = "gen3d-data-bucket"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(seed: int, size: tuple[int, int] = (120, 160), mode: str = "RGB") -> bytes:
    """A random picture of ``size`` (h, w) as PNG."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def bpe_path() -> str:
    from gen3d.sam3.assets import bpe_vocab_path

    return str(bpe_vocab_path())


@pytest.fixture(scope="session")
def tiny_state(bpe_path):
    from gen3d.sam3.demo_weights import random_sam3_state_dict
    from gen3d.sam3.presets import PRESETS

    return random_sam3_state_dict(PRESETS["tiny"], bpe_path, seed=0)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_state, bpe_path, tmp_path_factory):
    """The tiny SAM 3 with random weights, loaded once for the session by the project's loader (CPU)."""
    import torch
    from safetensors.torch import save_file

    from gen3d.sam3.loading import load_sam3

    path = tmp_path_factory.mktemp("tiny-checkpoint") / "tiny.safetensors"
    save_file(tiny_state, str(path))
    return load_sam3("tiny", path, bpe_path, torch.device("cpu"))


def pytest_collection_modifyitems(items) -> None:
    """Tests under tests/integration/ carry the ``integration`` marker (`-m "not integration"` skips them)."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
