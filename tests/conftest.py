"""Shared fixtures: the BPE vocab and a tiny random SAM 3 state."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def bpe_path() -> str:
    from gen3d.assets import bpe_vocab_path

    return str(bpe_vocab_path())


@pytest.fixture(scope="session")
def tiny_state(bpe_path):
    from gen3d.sam3_builder import PRESETS, random_sam3_state_dict

    return random_sam3_state_dict(PRESETS["tiny"], bpe_path, seed=0)
