"""Image features shared by all workers of an instance: on disk, bounded by bytes, least-recently-used.

Keys are embedding ids (hash of image content and model id), so one model never gets another's features.
Values are safetensors files (no pickle). diskcache (SQLite) makes concurrent readers and writers from
several worker processes safe, and the cache outlives any worker.
"""

from __future__ import annotations

import logging
from pathlib import Path

import diskcache
from safetensors.torch import load, save

from gen3d.sam3.features import ImageFeatures

log = logging.getLogger(__name__)


class EmbeddingCache:
    """``embedding_id -> ImageFeatures`` on disk, at most ``size_limit_bytes``."""

    def __init__(self, directory: str | Path, size_limit_bytes: int, model_id: str) -> None:
        self.model_id = model_id
        # cull_limit=1: each write evicts the single least recently used entry while over the limit; entries of
        # one model all have the same size, so that keeps the volume under the limit (diskcache's default of 10
        # per write, and its cull(), evict in chunks of 10 and can empty a cache of large entries).
        self._cache = diskcache.Cache(
            str(directory), size_limit=size_limit_bytes, eviction_policy="least-recently-used", cull_limit=1
        )
        log.info("embedding cache at %s, limit %.1f GB", directory, size_limit_bytes / 1e9)

    def get(self, embedding_id: str) -> ImageFeatures | None:
        """Features of ``embedding_id`` when cached (for this model), else ``None``."""
        data, tag = self._cache.get(embedding_id, tag=True)
        if data is None:
            return None
        model_id, height, width = tag.rsplit("|", 2)
        if model_id != self.model_id:  # ids embed the model id; this guards against collisions
            return None
        return ImageFeatures.from_tensors(load(data), (int(height), int(width)))

    def put(self, embedding_id: str, features: ImageFeatures) -> None:
        """Stores ``features`` (moved to the CPU, float32 as computed)."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in features.tensors().items()}
        height, width = features.original_size
        self._cache.set(embedding_id, save(tensors), tag=f"{self.model_id}|{height}|{width}")

    def __contains__(self, embedding_id: str) -> bool:
        return embedding_id in self._cache

    @property
    def volume_bytes(self) -> int:
        return self._cache.volume()
