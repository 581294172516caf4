"""Start-up checks both models make: an archive's handler settings present, a preset looked up by name, a
checkpoint's keys matched strictly."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from gen3d.errors import StartupError

T = TypeVar("T")


def require_handler_keys(handler: Mapping[str, object], keys: Iterable[str], archive: object, note: str = "") -> None:
    """Raises naming the first of ``keys`` the archive's model-config.yaml ``handler`` section lacks."""
    for key in keys:
        if not handler.get(key):
            raise StartupError(f"model-config.yaml in {archive} lacks handler.{key}{note}")


def preset_named(presets: Mapping[str, T], name: object, kind: str) -> T:
    """The preset called ``name``; a clear error listing the known ones otherwise (never a fallback)."""
    if not isinstance(name, str) or name not in presets:
        raise StartupError(f"unknown {kind} preset {name!r}; known presets: {sorted(presets)}")
    return presets[name]


def check_keys(expected: Iterable[str], given: Iterable[str], what: str, limit: int = 20) -> None:
    """Raises naming the missing and unexpected keys when ``given`` is not exactly ``expected``."""
    expected, given = set(expected), set(given)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise StartupError(
            f"{what}: {len(missing)} missing keys {missing[:limit]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:limit]}"
        )
