"""Image features shared by the workers of an instance: two tiers on disk, a device-resident LRU per worker,
writes off the request path.

- ``interactive`` tier: what a click needs (``image_embed``, ``high_res_feats.*``; 10.6 MB at 1008 px);
  ``concept`` tier: the detector's ``backbone_fpn`` levels (56 MB at 1008 px). Both float16, as every feature
  the service uses (see ``gen3d.sam3.features``). Keys are embedding ids (hash of image content and model id);
  values safetensors bytes (no pickle); diskcache (SQLite) makes several worker processes safe, evicts the least
  recently used entry by bytes, and outlives any worker.
- Each worker keeps recently used interactive features on its own device, so repeated clicks on an image read
  nothing from disk.
- ``put`` returns at once: a background thread writes to disk; until then, lookups find the entry in memory.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import diskcache
import torch
from safetensors.torch import load, save

from gen3d.sam3.features import ImageFeatures

log = logging.getLogger(__name__)

Tier = Literal["interactive", "concept"]
TIERS: tuple[Tier, ...] = ("interactive", "concept")


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


@dataclass
class CacheStats:
    """What lookups found since the last :meth:`take` (the service turns it into metrics)."""

    device_hits: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    disk_bytes_read: int = 0
    write_errors: int = 0

    @property
    def hits(self) -> int:
        """Lookups that found the features: on the device, in memory (not yet written) or on disk."""
        return self.device_hits + self.memory_hits + self.disk_hits

    def take(self) -> CacheStats:
        taken = CacheStats(**vars(self))
        for name in vars(self):
            setattr(self, name, 0)
        return taken


@dataclass
class DeviceLRU:
    """Interactive features kept on the worker's device, least recently used dropped beyond ``limit_bytes``."""

    limit_bytes: int
    entries: OrderedDict[str, ImageFeatures] = field(default_factory=OrderedDict)
    size_bytes: int = 0

    def get(self, key: str) -> ImageFeatures | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: str, features: ImageFeatures) -> None:
        size = tensors_bytes(features.interactive)
        if key in self.entries or size > self.limit_bytes:
            return
        self.entries[key] = features
        self.size_bytes += size
        while self.size_bytes > self.limit_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.size_bytes -= tensors_bytes(dropped.interactive)


class FeatureStore:
    """``embedding_id -> ImageFeatures`` (one tier at a time) for one model."""

    def __init__(
        self,
        directory: str | Path,
        limits_bytes: dict[Tier, int],
        device_limit_bytes: int,
        model_id: str,
        device: torch.device,
        writer: Executor | None = None,
    ) -> None:
        self.model_id = model_id
        self.device = device
        # cull_limit=1: each write evicts the least recently used entry while over the limit; entries of one tier
        # all have the same size, so that keeps the volume under the limit (diskcache's default of 10 per write
        # evicts in chunks of 10 and can empty a cache of large entries).
        self._disk = {
            tier: diskcache.Cache(
                str(Path(directory) / tier),
                size_limit=limits_bytes[tier],
                eviction_policy="least-recently-used",
                cull_limit=1,
            )
            for tier in TIERS
        }
        self._device = DeviceLRU(device_limit_bytes)
        self._pending: dict[str, ImageFeatures] = {}
        self._lock = threading.Lock()
        self._writer = writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-store-writer")
        self._writes: list[Future] = []
        self.stats = CacheStats()
        gb = {tier: f"{limit / 1e9:.1f} GB" for tier, limit in limits_bytes.items()}
        log.info("feature store at %s: %s on disk, %.0f MB on %s", directory, gb, device_limit_bytes / 1e6, device)

    def get(self, embedding_id: str, tier: Tier) -> ImageFeatures | None:
        """The features of ``tier`` (``interactive`` or ``concept``) when stored for this model, else ``None``."""
        if tier == "interactive":
            found = self._device.get(embedding_id)
            if found is not None:
                self.stats.device_hits += 1
                return found
        with self._lock:
            pending = self._pending.get(embedding_id)
        if pending is not None:
            self.stats.memory_hits += 1
            return pending
        found = self._read(embedding_id, tier)
        if found is None:
            self.stats.misses += 1
            return None
        self.stats.disk_hits += 1
        if tier == "interactive":
            self._device.put(embedding_id, found)
        return found

    def put(self, embedding_id: str, features: ImageFeatures) -> None:
        """Keeps ``features`` (both tiers) for later requests; the disk write happens in the background."""
        self._device.put(embedding_id, features.interactive_on(self.device))
        with self._lock:
            self._pending[embedding_id] = features
        self._writes = [f for f in self._writes if not f.done()]
        self._writes.append(self._writer.submit(self._write, embedding_id, features))

    def flush(self) -> None:
        """Waits for the background writes (tests, benchmarks, shutdown)."""
        for future in list(self._writes):
            future.result()

    def __contains__(self, embedding_id: str) -> bool:
        return all(embedding_id in self._disk[tier] for tier in TIERS)

    def volume_bytes(self, tier: Tier) -> int:
        return self._disk[tier].volume()

    # -- disk -----------------------------------------------------------------------------------------
    def _read(self, embedding_id: str, tier: Tier) -> ImageFeatures | None:
        try:
            data, tag = self._disk[tier].get(embedding_id, tag=True)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss (the image gets encoded again), logged
            log.exception("reading %s features of %s from the cache failed", tier, embedding_id)
            return None
        if data is None:
            return None
        model_id, height, width = tag.rsplit("|", 2)
        if model_id != self.model_id:  # ids embed the model id; this guards against collisions
            return None
        self.stats.disk_bytes_read += len(data)
        tensors = {name: t.to(self.device) for name, t in load(data).items()}
        return ImageFeatures.from_tier(tier, tensors, (int(height), int(width)))

    def _write(self, embedding_id: str, features: ImageFeatures) -> None:
        height, width = features.original_size
        tag = f"{self.model_id}|{height}|{width}"
        try:
            for tier in TIERS:
                tensors = {k: v.detach().to("cpu").contiguous() for k, v in features.tier_tensors(tier).items()}
                self._disk[tier].set(embedding_id, save(tensors), tag=tag)
        except Exception:  # noqa: BLE001 - a failed write (disk full, ...) costs a later re-encode; logged, counted
            self.stats.write_errors += 1
            log.exception("writing the features of %s to the cache failed; requests are still served", embedding_id)
        finally:
            with self._lock:
                self._pending.pop(embedding_id, None)
