"""Files the archives carry that come from installed packages."""

from __future__ import annotations

from pathlib import Path

from gen3d.errors import StartupError

BPE_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"


def bpe_vocab_path() -> Path:
    """SAM 3's BPE vocabulary as shipped by ``open_clip_torch`` (the sam3 wheel ships none)."""
    try:
        import open_clip
    except ImportError as err:
        raise StartupError(f"package open_clip_torch not installed; it provides {BPE_VOCAB_NAME}") from err
    path = Path(open_clip.__file__).parent / BPE_VOCAB_NAME
    if not path.is_file():
        raise StartupError(f"{BPE_VOCAB_NAME} not found at {path}")
    return path
