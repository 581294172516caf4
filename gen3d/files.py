"""Large files: copying with a progress bar, digests, safetensors metadata; digests of our own source files."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

CHUNK = 16 * 1024 * 1024


def copy_with_progress(src: Path, dst: Path, progress: bool = True) -> str:
    """Copies ``src`` to ``dst`` in 16 MiB chunks, showing bytes done and speed on stderr; returns the hex SHA-256
    of what it copied (hashed in the same pass)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = src.stat().st_size
    digest = hashlib.sha256()
    with (
        open(src, "rb") as fin,
        open(dst, "wb") as fout,
        tqdm(
            total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"copy {src.name}", disable=not progress
        ) as bar,
    ):
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dst)
    return digest.hexdigest()


def copy_tree_with_progress(src: Path, dst: Path, large: int = 64 * 1024 * 1024) -> None:
    """Copies every file under ``src`` to ``dst``; those of ``large`` bytes or more with a progress bar."""
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        if path.stat().st_size >= large:
            copy_with_progress(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sources_digest(paths: Iterable[str | Path]) -> str:
    """Hex SHA-256 of the files' bytes, in the order given: names a file that code makes and caches (a demo
    checkpoint, an ONNX export) after that code, so a change to the code makes the file again."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
