"""Fixtures of every test: paths, pictures, tiny SAM 3 weights. Integration fixtures (moto's S3
server, demo archives, a real TorchServe) are in tests/integration/conftest.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from gen3d.bench.serving import png_bytes  # noqa: F401 - the tests' pictures (the bench's and load test's too)

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parent.parent
BUCKET = "gen3d-data-bucket"


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


MODELS = ("sam3", "sam3d", "sam3d_body")


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--models",
        default=",".join(MODELS),
        help="comma-separated models whose packages this environment has (default: all). Tests marked with another "
        "model are skipped, each with a reason naming this option, and the integration fixtures build and serve "
        "only these. `make check-images` runs the sam3 tests with --models sam3 in the sam3 image's environment, "
        "which has no sam3d CPU demo stack.",
    )


def selected_models(config) -> tuple[str, ...]:
    """The models named by --models, in MODELS order; an unknown name is a usage error."""
    names = [name.strip() for name in config.getoption("--models").split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown or not names:
        raise pytest.UsageError(f"--models takes a comma-separated subset of {', '.join(MODELS)}, got {names}")
    return tuple(model for model in MODELS if model in names)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests under tests/integration/ carry the ``integration`` marker (`-m "not integration"` skips them);
    tests marked with a model left out by --models are skipped with a reason that says so."""
    models = selected_models(config)
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        for model in MODELS:
            if model not in models and item.get_closest_marker(model):
                item.add_marker(pytest.mark.skip(reason=f"--models {','.join(models)}: needs model {model}'s packages"))


@pytest.fixture(scope="session")
def models(request) -> tuple[str, ...]:
    """The models this run serves (--models)."""
    return selected_models(request.config)
