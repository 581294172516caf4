"""Image features shared by the workers of an instance: two tiers on disk, a device-resident LRU per worker,
writes off the request path.

- ``interactive`` tier: what a click needs (``image_embed``, ``high_res_feats.*``; 10.6 MB at 1008 px);
  ``concept`` tier: the detector's ``backbone_fpn`` levels (56 MB at 1008 px). Both float16, as every feature
  the service uses (see ``gen3d.sam3.features``). Keys are embedding ids (hash of image content and model id);
  values safetensors bytes (no pickle); diskcache (SQLite) makes several worker processes safe, evicts the least
  recently used entry by bytes, and outlives any worker.
- Each worker keeps recently used interactive features on its own device, so repeated clicks on an image read
  nothing from disk.
- ``put`` returns at once: a background thread writes to disk; until then, lookups find the entry in memory. What
  waits is a host copy (never device memory), ``write_queue_bytes`` at most: beyond that, the image's features are
  not written to disk (counted): the request path never waits for the disk, and the queue never grows.
- An entry that cannot be read back (a file cut short by a crash) is a miss: it is deleted and counted.
- The folder is this user's alone: created 0700, refused at start-up when another user owns it or may write to it
  (diskcache unpickles the rows it finds). A disk that cannot hold the tiers at start-up (read-only, full) leaves
  the worker serving without them, logged; the device tier still works.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections import OrderedDict
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import diskcache
import torch
from safetensors.torch import load, save

from gen3d.errors import StartupError
from gen3d.sam3.features import ImageFeatures

log = logging.getLogger(__name__)

Tier = Literal["interactive", "concept"]
TIERS: tuple[Tier, ...] = ("interactive", "concept")
DEFAULT_WRITE_QUEUE_BYTES = 512 * 10**6  # ~7 images at 1008 px waiting for the disk
GROUP_OR_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def tensors_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def features_bytes(features: ImageFeatures) -> int:
    """Both tiers of ``features``: what one entry of the write queue holds."""
    return tensors_bytes(features.interactive) + tensors_bytes(features.fpn_tensors())


@dataclass
class CacheStats:
    """What lookups found since the last :meth:`take` (the service turns it into metrics)."""

    device_hits: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    disk_bytes_read: int = 0
    write_errors: int = 0
    writes_skipped: int = 0  # the write queue was full: these features were not written to disk
    corrupt_entries: int = 0  # unreadable entries found (each deleted)

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


def private_folder(directory: Path) -> Path:
    """``directory`` resolved, when no other user can write to it or replace it; else :class:`StartupError` naming
    it. diskcache unpickles the rows it finds, so whoever can write there can run code in the worker."""
    me = os.geteuid()

    def refuse(why: str) -> StartupError:
        return StartupError(
            f"embedding cache folder {directory}: {why}; use a folder only this user can write to (GEN3D_CACHE_DIR)"
        )

    link = directory.lstat()
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (me, 0):
        raise refuse(f"it is a link owned by another user (uid {link.st_uid})")
    folder = directory.resolve(strict=True)
    own = folder.stat()
    if own.st_uid != me:
        raise refuse(f"{folder} belongs to uid {own.st_uid}, not to this user (uid {me})")
    if own.st_mode & GROUP_OR_OTHERS_WRITE:
        raise refuse(f"group or others may write to {folder} (mode {stat.S_IMODE(own.st_mode):o})")
    for parent in folder.parents:  # whoever may write to a parent can swap the folder (unless the parent is sticky)
        above = parent.stat()
        if above.st_uid not in (me, 0) or (above.st_mode & GROUP_OR_OTHERS_WRITE and not above.st_mode & stat.S_ISVTX):
            mode = stat.S_IMODE(above.st_mode)
            raise refuse(f"another user may replace it through {parent} (uid {above.st_uid}, mode {mode:o})")
    return folder


def open_tiers(directory: Path, limits_bytes: dict[Tier, int]) -> dict[Tier, diskcache.Cache] | None:
    """The disk tiers in ``directory`` (created 0700, checked by :func:`private_folder`), or ``None`` when its disk
    cannot hold them (read-only, full), logged: the worker then serves from its device tier and the encoder."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = private_folder(directory)
        # cull_limit=1: each write evicts the least recently used entry while over the limit; entries of one tier
        # all have the same size, so that keeps the volume under the limit (diskcache's default of 10 per write
        # evicts in chunks of 10 and can empty a cache of large entries).
        return {
            tier: diskcache.Cache(
                str(folder / tier),
                size_limit=limits_bytes[tier],
                eviction_policy="least-recently-used",
                cull_limit=1,
            )
            for tier in TIERS
        }
    except (OSError, sqlite3.Error) as err:  # a fault of the disk, not of a request: serve without the disk tiers
        log.warning(
            "embedding cache folder %s is unusable (%s: %s): this worker serves without the disk tiers, keeping "
            "features on its device only; fix the disk, then restart the workers",
            directory,
            type(err).__name__,
            err,
        )
        return None


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
        write_queue_bytes: int = DEFAULT_WRITE_QUEUE_BYTES,
    ) -> None:
        self.model_id = model_id
        self.device = device
        self._disk = open_tiers(Path(directory), limits_bytes)
        self._device = DeviceLRU(device_limit_bytes)
        self._pending: dict[str, ImageFeatures] = {}  # host copies waiting for the writer
        self._queued_bytes = 0
        self.write_queue_bytes = write_queue_bytes
        self._lock = threading.Lock()
        self._writer = writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-store-writer")
        self._writes: list[Future] = []
        self.stats = CacheStats()
        gb = {tier: f"{limit / 1e9:.1f} GB" for tier, limit in limits_bytes.items()}
        log.info("feature store at %s: %s on disk, %.0f MB on %s", directory, gb, device_limit_bytes / 1e6, device)

    @property
    def on_disk(self) -> bool:
        """Whether the disk tiers opened at start-up (see :func:`open_tiers`)."""
        return self._disk is not None

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
            return self._on_device(embedding_id, tier, pending.tier_tensors(tier), pending.original_size)
        found = self._read(embedding_id, tier) if self._disk is not None else None
        if found is None:
            self.stats.misses += 1
            return None
        self.stats.disk_hits += 1
        return found

    def put(self, embedding_id: str, features: ImageFeatures) -> None:
        """Keeps ``features`` (both tiers) for later requests: on the device (the interactive tier), and on disk
        through the write queue, as a host copy, when the queue has room; the disk write happens in the
        background."""
        self._device.put(embedding_id, features.interactive_on(self.device))
        if self._disk is None:
            return
        size = features_bytes(features)
        with self._lock:
            queued = embedding_id in self._pending
            room = not queued and self._queued_bytes + size <= self.write_queue_bytes
            if room:
                self._queued_bytes += size
        if queued:
            return
        if not room:
            self.stats.writes_skipped += 1
            log.warning(
                "cache write queue full (%.0f of %.0f MB): the features of %s are not written to disk; the disk is "
                "slower than the encoder",
                self._queued_bytes / 1e6,
                self.write_queue_bytes / 1e6,
                embedding_id,
            )
            return
        host = features.host_copy()
        with self._lock:
            self._pending[embedding_id] = host
        self._writes = [f for f in self._writes if not f.done()]
        self._writes.append(self._writer.submit(self._write, embedding_id, host, size))

    def flush(self) -> None:
        """Waits for the background writes (tests, benchmarks, shutdown)."""
        for future in list(self._writes):
            future.result()

    def close(self) -> None:
        """Finishes the background writes and closes the disk tiers (shutdown)."""
        self.flush()
        for disk in (self._disk or {}).values():
            disk.close()

    def __contains__(self, embedding_id: str) -> bool:
        return self._disk is not None and all(embedding_id in self._disk[tier] for tier in TIERS)

    def volume_bytes(self, tier: Tier) -> int:
        return self._disk[tier].volume() if self._disk is not None else 0

    @property
    def queued_bytes(self) -> int:
        """Bytes of features waiting for the disk (at most ``write_queue_bytes``)."""
        return self._queued_bytes

    # -- disk -----------------------------------------------------------------------------------------
    def _on_device(
        self, embedding_id: str, tier: Tier, tensors: dict[str, torch.Tensor], original_size: tuple[int, int]
    ) -> ImageFeatures:
        found = ImageFeatures.from_tier(tier, {k: t.to(self.device) for k, t in tensors.items()}, original_size)
        if tier == "interactive":
            self._device.put(embedding_id, found)
        return found

    def _read(self, embedding_id: str, tier: Tier) -> ImageFeatures | None:
        disk = self._disk[tier]
        try:
            data, tag = disk.get(embedding_id, tag=True)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss (the image gets encoded again), logged
            log.exception("reading %s features of %s from the cache failed", tier, embedding_id)
            return None
        if data is None:
            return None
        try:
            model_id, height, width = tag.rsplit("|", 2)
            original_size = (int(height), int(width))
            tensors = load(data)
            ImageFeatures.from_tier(tier, tensors, original_size)  # every tensor the tier needs is there
        except Exception as err:  # noqa: BLE001 - a file cut short by a crash: a miss, deleted so it stops costing
            self.stats.corrupt_entries += 1
            log.warning("cached %s features of %s are unreadable (%s); deleted", tier, embedding_id, err)
            try:
                disk.delete(embedding_id)
            except Exception:  # noqa: BLE001 - still a miss; the next write of the image replaces the entry
                log.exception("deleting the unreadable %s features of %s failed", tier, embedding_id)
            return None
        if model_id != self.model_id:  # ids embed the model id; this guards against collisions
            return None
        self.stats.disk_bytes_read += len(data)
        return self._on_device(embedding_id, tier, tensors, original_size)

    def _write(self, embedding_id: str, features: ImageFeatures, size: int) -> None:
        height, width = features.original_size
        tag = f"{self.model_id}|{height}|{width}"
        try:
            for tier in TIERS:
                self._disk[tier].set(embedding_id, save(features.tier_tensors(tier)), tag=tag)
        except Exception:  # noqa: BLE001 - a failed write (disk full, ...) costs a later re-encode; logged, counted
            self.stats.write_errors += 1
            log.exception("writing the features of %s to the cache failed; requests are still served", embedding_id)
        finally:
            with self._lock:
                self._pending.pop(embedding_id, None)
                self._queued_bytes -= size
