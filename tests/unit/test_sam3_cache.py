"""The feature store: two tiers on disk shared by processes, keyed by model, bounded; a device LRU per worker;
writes off the request path; a failed write costs a re-encode, never a request."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gen3d.sam3.cache import FeatureStore, tensors_bytes
from gen3d.sam3.features import ImageFeatures
from gen3d.serving.images import decode_image
from tests.conftest import png_bytes

pytestmark = pytest.mark.sam3

CPU = torch.device("cpu")
ID = "f" * 32


@pytest.fixture(scope="module")
def features(tiny_loaded) -> ImageFeatures:
    from gen3d.sam3.features import encode_images

    return encode_images(tiny_loaded, [decode_image(png_bytes(9), "f")])[0]


def store(directory, model_id="model-a", limit=10**9, device_limit=10**9, writer=None) -> FeatureStore:
    return FeatureStore(directory, {"interactive": limit, "concept": limit}, device_limit, model_id, CPU, writer)


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
