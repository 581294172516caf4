"""Faults through the real server: a worker killed under load, S3 going away and coming back, a full disk under
the embedding cache, a full or read-only one at start-up. Every request gets an answer, failures are JSON 5xx that
say what failed, and the server recovers by itself."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gen3d.bench.serving import loopback_torchserve, metric_totals
from tests.conftest import BUCKET, png_bytes
from tests.integration.http_support import post, wait_for_worker, worker_pids
from tests.s3_faults import black_hole


def inline(seed: int) -> dict:
    return {"task": "get_embedding", "image_base64": base64.b64encode(png_bytes(seed)).decode()}


def test_worker_killed_under_load_answers_every_request_and_recovers(torchserve):
    pid = worker_pids(torchserve, status="READY")[0]
    bodies = [inline(1000 + i) for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, torchserve, body) for body in bodies]
        started = time.monotonic()  # kill once the worker is answering, with most requests still queued
        while not any(f.done() for f in futures) and time.monotonic() - started < 120:
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        in_flight = sum(not f.done() for f in futures)
        answers = [f.result() for f in futures]  # every request is answered (no hang, no dropped connection)
    assert in_flight > 0  # the kill hit a loaded worker, not an idle one
    failed = [a for a in answers if a.status_code != 200]
    batch_size = 4
    assert len(failed) <= batch_size, [(a.status_code, a.text[:200]) for a in failed]  # at most the batch in flight
    assert all(a.status_code >= 500 for a in failed)
    assert all(isinstance(a.json(), dict) for a in failed)  # 5xx bodies are JSON too (TorchServe's own, here)
    wait_for_worker(torchserve, pid)
    assert post(torchserve, inline(2000)).status_code == 200


def test_s3_outage_answers_5xx_json_quickly_then_recovers(torchserve, s3, moto_s3):
    key = "faults/outage.png"
    body = {"task": "get_embedding", "image_s3_key": key, "bucket": BUCKET, "user_id": "u", "session_id": "s"}
    s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(77))
    assert post(torchserve, body).status_code == 200
    moto_s3.stop()
    try:
        started = time.monotonic()
        down = post(torchserve, body)
        elapsed = time.monotonic() - started
        assert down.status_code == 502 and down.json()["error"]["field"] == "image_s3_key", down.text
        assert "Connect" in down.json()["error"]["message"] and elapsed < 60
    finally:
        moto_s3.start()
    s3.create_bucket(Bucket=BUCKET)  # moto keeps its state in memory: the restarted server starts empty
    s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(77))
    assert post(torchserve, body).status_code == 200


def test_s3_black_hole_answers_504_naming_the_field_and_the_worker_stays(torchserve, s3, moto_s3):
    """S3 accepts connections and never answers: the request answers 504 within the S3 deadline (botocore's
    defaults waited minutes, past responseTimeout, and TorchServe killed the worker); the same worker serves on."""
    from gen3d.serving.storage import S3_TIMEOUTS

    key = "faults/black-hole.png"
    body = {"task": "get_embedding", "image_s3_key": key, "bucket": BUCKET, "user_id": "u", "session_id": "s"}
    s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(78))
    assert post(torchserve, body).status_code == 200
    pids = worker_pids(torchserve, status="READY")
    moto_s3.stop()
    try:
        with black_hole(moto_s3.port) as hole:
            started = time.monotonic()
            down = post(torchserve, body, timeout=S3_TIMEOUTS.deadline_s + 30)
            elapsed = time.monotonic() - started
            assert down.status_code == 504, down.text
            assert down.json()["error"]["field"] == "image_s3_key" and down.json()["error"]["type"] == "storage_timeout"
            assert elapsed < S3_TIMEOUTS.deadline_s + 5 and hole.accepted >= S3_TIMEOUTS.attempts
            assert post(torchserve, inline(2001)).status_code == 200  # inline work goes on meanwhile
        assert worker_pids(torchserve, status="READY") == pids
    finally:
        moto_s3.start()
    s3.create_bucket(Bucket=BUCKET)  # moto keeps its state in memory: the restarted server starts empty
    s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(78))
    assert post(torchserve, body).status_code == 200


@pytest.fixture
def cache_disk(tmp_path):
    """A 1 MiB tmpfs for the embedding cache, this user's alone (a tmpfs root is 1777 by default, which the cache
    refuses: others could plant rows there)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(cache)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the cache disk here: {mounted.stderr.decode().strip()}")
    yield cache
    subprocess.run(["umount", "-l", str(cache)], check=False)


def fill(path) -> None:
    """Writes ``path`` until its disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def sam3_only(model_store, tmp_path, aws_env, cache):
    """A TorchServe of its own serving sam3 with its embedding cache in ``cache``."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(model_store / "sam3.mar", store / "sam3.mar")
    return loopback_torchserve(store, tmp_path, {**aws_env, "GEN3D_CACHE_DIR": str(cache)}, ["sam3"], timeout=240)


def test_full_cache_disk_still_serves_and_logs(model_store, aws_env, tmp_path, cache_disk):
    with sam3_only(model_store, tmp_path, aws_env, cache_disk) as server:
        for seed in range(8):  # tiny features: ~0.8 MB per image on disk, the tmpfs fills after one or two
            assert post(server, inline(3000 + seed)).status_code == 200
        deadline = time.monotonic() + 30  # writes happen after the answers: their failure is logged meanwhile
        while "requests are still served" not in (tmp_path / "logs" / "model_log.log").read_text():
            assert time.monotonic() < deadline, "no full-disk warning in the worker's log"
            time.sleep(0.2)
        clicks = {"task": "segment", "image_base64": inline(3007)["image_base64"], "points": [[5, 5]]}
        assert post(server, {**clicks, "point_labels": [1]}).status_code == 200


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_cache_disk_at_start_up_serves_without_the_disk_tiers(
    model_store, aws_env, tmp_path, cache_disk, fault
):
    """The cache only saves encoder passes: a disk that cannot hold it at start-up costs those, logged and counted
    (`CacheDiskOff`), never the model."""
    if fault == "full":
        fill(cache_disk / "filler")
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(cache_disk)], check=True)
    with sam3_only(model_store, tmp_path, aws_env, cache_disk / "embeddings") as server:
        first = post(server, inline(4000))
        again = post(server, inline(4000))
        assert first.status_code == again.status_code == 200, first.text
        assert again.json()["cache_hit"] and metric_totals(server).get("CacheDiskOff", 0) >= 1
        log = (tmp_path / "logs" / "model_log.log").read_text()
        assert f"embedding cache folder {cache_disk / 'embeddings'} is unusable" in log
        assert "serves without the disk tiers" in log


def test_loadtest_mixes_s3_inline_and_clicks_with_no_failures(torchserve, s3, capsys):
    from gen3d.cli import loadtest

    args = ["--url", torchserve.inference_url, "--requests", "36", "--concurrency", "6", "--bucket", BUCKET,
            "--images", "4", "--time-limit", "240", "--json"]  # fmt: skip
    assert loadtest.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 36 and summary["non_200_by_status"] == {}
    assert set(summary["by_kind"]) == {"s3", "inline", "click"}
    with pytest.raises(SystemExit, match="only loopback"):
        loadtest.loopback_only("http://10.0.0.1:8080")
