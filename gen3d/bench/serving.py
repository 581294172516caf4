"""Serving overhead and batching through a real TorchServe, tiny demo model.

Overhead of a request = its round trip minus the handler's own ``timings_ms.total``: what the frontend, the
IPC to the worker, batching and our glue add. The floor is an echo handler on the same TorchServe. At one client
a lone request also waits ``maxBatchDelay`` for a batch that never fills; under 32 concurrent clients the batches
should still fill.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from gen3d.torchserve import runner

CHECKOUT = Path(__file__).resolve().parents[2]


def png_base64(seed: int, size: tuple[int, int] = (120, 160)) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Client:
    """One keep-alive HTTP connection to the inference API."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)

    def post(self, path: str, body: dict) -> tuple[float, dict]:
        """(round trip in ms, JSON answer)."""
        data = json.dumps(body).encode()
        started = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        answer = json.loads(response.read())
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {answer}")
        return elapsed, answer


def overheads(client: Client, path: str, bodies: list[dict]) -> list[float]:
    """Round trip minus the handler's own total, per request (ms)."""
    found = []
    for body in bodies:
        rtt, answer = client.post(path, body)
        found.append(rtt - float(answer.get("timings_ms", {}).get("total", 0.0)))
    return found


@dataclass
class ServingReport:
    max_batch_delay_ms: int
    one_client_p50_ms: dict[str, float] = field(default_factory=dict)
    concurrent_mean_batch: float = 0.0
    concurrent_throughput_rps: float = 0.0
    concurrent_p50_ms: float = 0.0
    device_cache_hits: float = 0.0
    cache_read_bytes: float = 0.0


def build_store(store: Path, max_batch_delay_ms: int) -> None:
    """The tiny sam3 demo archive (batchSize 4) and the echo archive (batchSize 1) in ``store``."""
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "gen3d-build-archives"), "sam3", "--export-path", str(store), "--batch-size", "4",
         "--max-batch-delay", str(max_batch_delay_ms)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [str(bin_dir / "torch-model-archiver"), "--model-name", "echo", "--version", "1.0", "--handler",
         str(Path(__file__).with_name("echo_handler.py")), "--export-path", str(store), "--force"],
        check=True, capture_output=True,
    )  # fmt: skip


BUCKET = "gen3d-bench"


@contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server (a test dependency) on a free loopback port, with one bucket: the standard AWS
    environment that reaches it."""
    import boto3

    port = runner.free_ports(1)[0]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="bench/image.png", Body=base64.b64decode(png_base64(0)))
        yield env
    finally:
        server.terminate()
        server.wait(30)


def start_server(store: Path, work: Path, aws_env: dict[str, str]) -> runner.TorchServe:
    config = runner.loopback_config(CHECKOUT, work / "config.properties", store)
    (work / "tmp").mkdir(exist_ok=True)
    env = {
        **os.environ,
        **aws_env,
        "GEN3D_CACHE_DIR": str(work / "cache"),
        "TMPDIR": str(work / "tmp"),
        "GEN3D_ALLOWED_BUCKETS": BUCKET,
    }
    out = open(work / "torchserve.out", "wb")  # noqa: SIM115 - closed with the process
    server = runner.start(config, store, "all", work / "logs", env, stdout=out)
    server.wait_ready(["sam3", "echo"], timeout=300)
    return server


def metric_total(server: runner.TorchServe, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def measure(server: runner.TorchServe, requests_one: int, requests_many: int, clients: int) -> ServingReport:
    """One client (echo, get_embedding of an embedded image, clicks), then ``clients`` concurrent clients."""
    report = ServingReport(max_batch_delay_ms=0)
    one = Client(server.inference_url)
    image = png_base64(0)
    _, first = one.post("/predictions/sam3", {"task": "get_embedding", "image_base64": image})
    click = {"task": "segment", "embedding_id": first["embedding_id"], "points": [[80, 60]], "point_labels": [1]}
    by_s3 = {"task": "get_embedding", "image_s3_key": "bench/image.png", "bucket": BUCKET, "user_id": "bench",
             "session_id": "one-client"}  # fmt: skip
    paths = {
        "echo": ("/predictions/echo", {"n": 0}),
        "get_embedding": ("/predictions/sam3", by_s3),  # the client contract: image in S3, the file written to S3
        "get_embedding_inline": ("/predictions/sam3", {"task": "get_embedding", "image_base64": image}),
        "click": ("/predictions/sam3", click),
    }
    for path, body in paths.values():
        overheads(one, path, [body] * 3)  # warm each path
    before = {metric: metric_total(server, metric) for metric in ("DeviceCacheHits", "EmbeddingCacheReadBytes")}
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(requests_one):  # interleaved, so the machine's load drifts alike for the floor and the rest
        for name, (path, body) in paths.items():
            samples[name] += overheads(one, path, [body])
    report.one_client_p50_ms = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    report.device_cache_hits = metric_total(server, "DeviceCacheHits") - before["DeviceCacheHits"]
    report.cache_read_bytes = metric_total(server, "EmbeddingCacheReadBytes") - before["EmbeddingCacheReadBytes"]

    images = [png_base64(seed) for seed in range(1, requests_many + 1)]
    batches: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        client = Client(server.inference_url)
        for seed in range(index, requests_many, clients):
            rtt, answer = client.post("/predictions/sam3", {"task": "get_embedding", "image_base64": images[seed]})
            with lock:
                batches.append(int(answer["batch_size"]))
                latencies.append(rtt)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    report.concurrent_mean_batch = round(statistics.mean(batches), 2)
    report.concurrent_throughput_rps = round(len(batches) / elapsed, 1)
    report.concurrent_p50_ms = round(statistics.median(latencies), 1)
    return report


def run(
    delays_ms: list[int], requests_one: int = 60, requests_many: int = 256, clients: int = 32
) -> list[ServingReport]:
    """A TorchServe per ``maxBatchDelay`` to compare; each measured the same way."""
    reports = []
    with moto_s3() as aws_env:
        for delay in delays_ms:
            work = Path(tempfile.mkdtemp(prefix=f"gen3d-bench-delay{delay}-"))
            store = work / "model-store"
            build_store(store, delay)
            server = start_server(store, work, aws_env)
            try:
                report = measure(server, requests_one, requests_many, clients)
                report.max_batch_delay_ms = delay
                reports.append(report)
            finally:
                server.stop()
                shutil.rmtree(work, ignore_errors=True)
    return reports
