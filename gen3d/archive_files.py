"""Copying large files (checkpoints, archives) with a progress bar."""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm import tqdm

CHUNK = 16 * 1024 * 1024


def copy_with_progress(src: Path, dst: Path) -> None:
    """Copies ``src`` to ``dst`` in 16 MiB chunks, showing bytes done and speed on stderr."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    with (
        open(src, "rb") as fin,
        open(dst, "wb") as fout,
        tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"copy {src.name}") as bar,
    ):
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dst)
