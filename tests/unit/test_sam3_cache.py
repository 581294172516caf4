"""The feature store: two tiers on disk shared by processes, keyed by model, bounded; a device LRU per worker;
writes off the request path through a queue bounded in bytes; a failed write, an unreadable entry or an unusable
disk costs a re-encode, never a request; a cache folder another user may write to stops start-up."""

from __future__ import annotations

import gc
import multiprocessing
import os
import stat
import subprocess
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import yaml

from gen3d.errors import StartupError
from gen3d.sam3.cache import FeatureStore, features_bytes, tensors_bytes
from gen3d.sam3.features import ImageFeatures
from gen3d.serving.images import decode_image
from tests.conftest import REPO, png_bytes

pytestmark = pytest.mark.sam3

CPU = torch.device("cpu")
ID = "f" * 32


@pytest.fixture(scope="module")
def features(tiny_loaded) -> ImageFeatures:
    from gen3d.sam3.features import encode_images

    return encode_images(tiny_loaded, [decode_image(png_bytes(9), "f")])[0]


def store(directory, model_id="model-a", limit=10**9, device_limit=10**9, writer=None, **options) -> FeatureStore:
    limits = {"interactive": limit, "concept": limit}
    return FeatureStore(directory, limits, device_limit, model_id, CPU, writer, **options)


def _put_from_another_process(directory: str, features: ImageFeatures) -> None:
    writing = store(directory)
    writing.put(ID, features)
    writing.flush()


def test_the_preset_names_the_interactive_shapes_the_encoder_gives(features, tiny_loaded):
    """Sam3Preset.interactive_shapes (the warm-up's, the ONNX export's and the benchmark's inputs), in order."""
    shapes = {name: tuple(t.shape) for name, t in features.interactive.items()}
    assert list(shapes.items()) == list(tiny_loaded.preset.interactive_shapes.items())


def test_tiers_are_shared_between_processes_and_keyed_by_model(features, tmp_path):
    assert all(t.dtype == torch.float16 for t in [*features.interactive.values(), *features.backbone_fpn])
    spawn = multiprocessing.get_context("spawn")
    writer = spawn.Process(target=_put_from_another_process, args=(str(tmp_path), features))
    writer.start()
    writer.join(120)
    reading = store(tmp_path)
    clicks = reading.get(ID, "interactive")
    assert clicks.original_size == features.original_size and clicks.backbone_fpn == []
    assert all(torch.equal(clicks.interactive[k], v) for k, v in features.interactive.items())
    concept = reading.get(ID, "concept")
    assert concept.interactive == {} and all(map(torch.equal, concept.backbone_fpn, features.backbone_fpn))
    stats = reading.stats.take()
    assert stats.disk_hits == 2 and stats.disk_bytes_read > tensors_bytes(features.interactive)
    assert store(tmp_path, model_id="model-b").get(ID, "interactive") is None


def test_a_click_reads_only_its_tier_and_then_nothing(features, tmp_path):
    first = store(tmp_path)
    first.put(ID, features)
    first.flush()
    worker = store(tmp_path)  # another worker: its device LRU starts empty
    worker.get(ID, "interactive")
    read = worker.stats.take().disk_bytes_read
    assert tensors_bytes(features.interactive) <= read < tensors_bytes(features.interactive) + 4096  # + header
    for _ in range(3):
        assert worker.get(ID, "interactive") is not None
    again = worker.stats.take()
    assert again.device_hits == 3 and again.disk_bytes_read == 0


class HeldWriter:
    """An executor whose jobs run only when released: shows that put() does not wait for the disk."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inner = ThreadPoolExecutor(max_workers=1)

    def submit(self, fn, *args):
        return self.inner.submit(lambda: (self.release.wait(30), fn(*args)))


def test_put_returns_before_the_disk_write_and_lookups_see_the_entry(features, tmp_path):
    writer = HeldWriter()
    cache = store(tmp_path, device_limit=0, writer=writer)  # no device LRU: a hit must come from the pending write
    cache.put(ID, features)
    assert ID not in cache
    assert cache.get(ID, "concept") is not None and cache.stats.take().memory_hits == 1
    writer.release.set()
    cache.flush()
    assert ID in cache and cache.get(ID, "concept") is not None and cache.stats.take().disk_hits == 1


def test_a_failed_write_is_logged_and_counted(features, tmp_path, caplog, monkeypatch):
    cache = store(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache._disk["concept"], "set", disk_full)
    cache.put(ID, features)
    cache.flush()
    assert cache.stats.take().write_errors == 1 and "requests are still served" in caplog.text
    assert cache.get(ID, "interactive") is not None  # still on the device


def test_tiers_are_bounded_least_recently_used_first(features, tmp_path):
    size = tensors_bytes(features.fpn_tensors())
    small = FeatureStore(tmp_path, {"interactive": 10**9, "concept": int(size * 2.5)}, 0, "model-a", CPU)
    ids = [f"{i:032x}" for i in range(4)]
    for eid in ids:
        small.put(eid, features)
        small.flush()
        small.get(ids[0], "concept")  # keep the first one recently used
    small._disk["concept"].cull()
    assert small.volume_bytes("concept") <= size * 2.5 * 1.1
    assert small.get(ids[0], "concept") is not None and small.get(ids[1], "concept") is None
    assert small.get(ids[1], "interactive") is not None  # the other tier keeps its own entries


def copied(features: ImageFeatures) -> ImageFeatures:
    return ImageFeatures(
        features.original_size,
        {k: v.clone() for k, v in features.interactive.items()},
        [t.clone() for t in features.backbone_fpn],
    )


def test_the_write_queue_holds_host_copies_within_its_bytes_and_skips_the_disk_beyond(features, tmp_path, caplog):
    """A disk slower than the encoder: the queue never holds more than its bytes, nor the caller's (device)
    tensors; what does not fit is not written (counted) and put() still returns at once."""
    size = features_bytes(features)
    writer = HeldWriter()
    cache = store(tmp_path, device_limit=0, writer=writer, write_queue_bytes=int(size * 1.5))
    ids = [f"{i:032x}" for i in range(3)]
    mine = copied(features)
    tensors = [*mine.interactive.values(), *mine.backbone_fpn]
    alive = [weakref.ref(t) for t in tensors]
    cache.put(ids[0], mine)
    del mine, tensors
    gc.collect()
    assert [ref() for ref in alive] == [None] * len(alive)  # on a GPU: no device memory held until the write
    cache.put(ids[1], features)
    cache.put(ids[2], features)
    assert cache.stats.take().writes_skipped == 2 and cache.queued_bytes == size
    assert "cache write queue full" in caplog.text
    assert cache.get(ids[0], "concept") is not None and cache.get(ids[1], "concept") is None  # a skip is a miss
    writer.release.set()
    cache.flush()
    assert cache.queued_bytes == 0 and ids[0] in cache and ids[1] not in cache
    cache.put(ids[1], features)  # room again
    cache.flush()
    assert ids[1] in cache and cache.stats.take().writes_skipped == 0


def value_files(directory, tier: str) -> list:
    return sorted((directory / tier).rglob("*.val"))


@pytest.mark.parametrize("kept", [0, 5, 200, 0.5])
def test_an_entry_cut_short_is_a_miss_deleted_and_counted(features, tmp_path, kept, caplog):
    """A file cut short by a crash (its header, its tensors) fails no request: a miss, deleted, encoded again."""
    cache = store(tmp_path, device_limit=0)
    cache.put(ID, features)
    cache.flush()
    (value,) = value_files(tmp_path, "concept")
    data = value.read_bytes()
    value.write_bytes(data[: int(len(data) * kept) if isinstance(kept, float) else kept])
    assert cache.get(ID, "concept") is None
    stats = cache.stats.take()
    assert stats.corrupt_entries == 1 and stats.misses == 1 and "unreadable" in caplog.text
    assert not value.exists() and ID not in cache
    assert cache.get(ID, "interactive") is not None  # the other tier is intact
    cache.put(ID, features)
    cache.flush()
    assert cache.get(ID, "concept") is not None and cache.stats.take().corrupt_entries == 0


def test_the_folder_is_created_for_this_user_alone(tmp_path):
    store(tmp_path / "new" / "cache")
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "cache").st_mode) == 0o700


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        (lambda folder, mp: folder.chmod(0o777), "group or others may write to"),
        (lambda folder, mp: folder.chmod(0o770), "(mode 770)"),
        (lambda folder, mp: folder.parent.chmod(0o777), "another user may replace it through"),
        (lambda folder, mp: mp.setattr(os, "geteuid", lambda: os.getuid() + 4242), "not to this user"),
    ],
    ids=["world-writable", "group-writable", "parent-writable", "another-owner"],
)
def test_a_folder_another_user_may_write_to_stops_start_up_naming_it(tmp_path, monkeypatch, setup, says):
    """diskcache unpickles the rows it finds: a folder others may write to would let them run code here."""
    folder = tmp_path / "shared" / "cache"
    folder.mkdir(parents=True, mode=0o700)
    setup(folder, monkeypatch)
    with pytest.raises(StartupError) as refused:
        store(folder)
    message = str(refused.value)
    assert says in message and str(folder) in message and "\n" not in message


def test_a_sticky_parent_like_tmp_is_allowed(tmp_path):
    (tmp_path / "sticky").mkdir()
    (tmp_path / "sticky").chmod(0o1777)
    assert store(tmp_path / "sticky" / "cache").on_disk


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs the right to mount: root here)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:  # full
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("fault", ["full", "read-only", "read-only, no folder yet"])
def test_a_read_only_or_full_cache_disk_at_start_up_serves_from_the_device_only(features, tmpfs, fault, caplog):
    if fault == "full":
        (tmpfs / "cache").mkdir(mode=0o700)
        fill(tmpfs)
    else:
        if fault == "read-only":
            store(tmpfs / "cache").close()  # a cache from before, then the disk turns read-only
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    cache = store(tmpfs / "cache")
    assert not cache.on_disk and "serves without the disk tiers" in caplog.text and str(tmpfs / "cache") in caplog.text
    cache.put(ID, features)
    cache.flush()
    assert cache.get(ID, "interactive") is not None and cache.get(ID, "concept") is None  # device tier only
    assert ID not in cache and cache.volume_bytes("concept") == 0


def test_every_cache_metric_is_declared(tiny_loaded, tmp_path):
    """TorchServe drops a counter metrics.yaml does not declare: each metric the service emits for its cache."""
    from gen3d.sam3.service import Sam3Job, Sam3Service
    from gen3d.serving.schema import RawRequest

    declared = {m["name"] for m in yaml.safe_load((REPO / "metrics.yaml").read_text())["model_metrics"]["counter"]}
    emitted: dict[str, float] = {}
    cache = store(tmp_path, device_limit=0, write_queue_bytes=0)  # every write skipped
    service = Sam3Service(tiny_loaded, None, "out/{user_id}/{session_id}", cache, lambda n, v: emitted.update({n: v}))
    image = decode_image(png_bytes(21), "image")
    job = Sam3Job(RawRequest(b"", "image/png"), image=image, embedding_id=ID)
    service.run([job])
    assert job.features is not None and emitted["CacheWritesSkipped"] == 1
    assert set(emitted) <= declared and {"CacheWritesSkipped", "CacheCorruptEntries", "CacheDiskOff"} <= declared
