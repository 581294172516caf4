"""`make check-locks` against PyPI: an unchanged input resolves to the committed lock (although the registry
keeps gaining releases dated before LOCK_DATE), and a changed input fails the check. Runs the project's own
Makefile on a copy of the lock inputs, so the committed locks are never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_image_locks import IMAGE_LOCKS

# what `make locks` reads: the Makefile, the lock inputs, the requirement files they include and sam-3d-objects'
INPUTS = ("Makefile", "pyproject.toml", "locks", "third_party", *(p.name for p in REPO.glob("requirements*.txt")))


@pytest.fixture
def lock_inputs(tmp_path) -> Path:
    for name in INPUTS:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp_path / name)
    # dated 1970: check-locks depends on setup, which reinstalls the venv (its editable gen3d from this copy, which
    # has no gen3d: every later import fails) when a requirement file is newer than the venv's stamp, as a fresh
    # checkout's are when pytest runs without `make test`'s own setup first
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.utime(path, (0, 0), follow_symlinks=False)
    return tmp_path


def check_locks(root: Path, *names: str) -> subprocess.CompletedProcess:
    """`make check-locks` in root with this environment's venv (its uv), for the named locks only."""
    variables = [f"VENV={sys.prefix}", f"LOCK_NAMES={' '.join(names)}"]
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(root), "check-locks", *variables],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_unchanged_inputs_pass(lock_inputs):
    result = check_locks(lock_inputs, *IMAGE_LOCKS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"check-locks: {' '.join(IMAGE_LOCKS)} resolve unchanged from their inputs" in result.stdout


def test_a_new_pin_in_an_input_fails(lock_inputs):
    tools = lock_inputs / "locks" / "image-tools.in"
    tools.write_text(tools.read_text() + "packaging==24.2\n")
    result = check_locks(lock_inputs, "image-tools")
    assert result.returncode != 0
    assert "locks/image-tools.lock is not what its inputs resolve to: run make locks" in result.stderr
    assert "+packaging==24.2" in result.stderr


def test_a_changed_pin_fails(lock_inputs):
    tools = lock_inputs / "locks" / "image-tools.in"
    tools.write_text(tools.read_text().replace("wheel==0.45.1", "wheel==0.44.0"))
    result = check_locks(lock_inputs, "image-tools")
    assert result.returncode != 0
    assert "-wheel==0.45.1" in result.stderr and "+wheel==0.44.0" in result.stderr
