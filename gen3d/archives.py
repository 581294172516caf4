"""Model archives as TorchServe finds them in a model store: a ``NAME.mar`` zip or a ``NAME/`` folder with
``MAR-INF/``, each carrying the ``model-config.yaml`` gen3d-build-archives wrote."""

from __future__ import annotations

import zipfile
from pathlib import Path

import yaml


class ArchiveError(RuntimeError):
    """An archive, or the folder that should hold archives, cannot be served; the message names the path."""


def is_archive(path: Path) -> bool:
    return path.suffix == ".mar" or (path / "MAR-INF").is_dir()


def archive_name(path: Path) -> str:
    """The model an archive serves: ``sam3`` for ``sam3.mar`` and for ``sam3/``."""
    return path.stem if path.suffix == ".mar" else path.name


def archives_in(folder: Path) -> list[Path]:
    """The archives of a model store, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_archive(p))


def archive_contents(path: Path) -> tuple[set[str], dict]:
    """File names (relative) and parsed model-config.yaml of a .mar file or an archive directory."""
    if path.is_dir():
        names = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
        config_text = (path / "model-config.yaml").read_text() if "model-config.yaml" in names else None
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                config_text = zf.read("model-config.yaml").decode() if "model-config.yaml" in names else None
        except zipfile.BadZipFile as err:
            raise ArchiveError(f"{path} is not a readable model archive (.mar zip): {err}") from err
    if config_text is None:
        raise ArchiveError(f"{path} has no model-config.yaml (build it with scripts/build_archives.py)")
    return names, yaml.safe_load(config_text) or {}
