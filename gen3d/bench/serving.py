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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from gen3d.torchserve import runner

CHECKOUT = Path(__file__).resolve().parents[2]


def png_bytes(seed: int, size: tuple[int, int] = (120, 160), mode: str = "RGB") -> bytes:
    """A random picture of ``size`` (h, w) as PNG: the same bytes for the same arguments."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_base64(seed: int, size: tuple[int, int] = (120, 160)) -> str:
    return base64.b64encode(png_bytes(seed, size)).decode()


class AnswerError(RuntimeError):
    """A non-200 answer: its HTTP ``status`` and JSON ``answer``."""

    def __init__(self, path: str, status: int, answer: dict) -> None:
        super().__init__(f"{path} answered {status}: {answer}")
        self.status = status
        self.answer = answer


class Client:
    """One keep-alive HTTP connection to the inference API."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)

    def post(self, path: str, body: dict) -> tuple[float, dict]:
        """(round trip in ms, JSON answer); :class:`AnswerError` for any other status than 200."""
        data = json.dumps(body).encode()
        started = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        answer = json.loads(response.read())
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise AnswerError(path, response.status, answer)
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


class MotoS3:
    """moto's S3 server (a test dependency) in its own process on a free loopback port. It can be stopped and
    started again (an S3 outage), with an empty state: moto keeps its objects in memory."""

    def __init__(self) -> None:
        self.port = runner.free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The standard AWS environment that reaches it (STS too: the workers ask it which account owns the
        buckets; moto answers 123456789012)."""
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ENDPOINT_URL_STS": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        """A boto3 S3 client that reaches it."""
        import boto3

        env = self.env()
        return boto3.client("s3", endpoint_url=self.url, region_name=env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        """Returns once it answers; raises if it exits or does not answer within ``timeout`` s."""
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:  # not listening yet (URLError is an OSError)
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"moto_server did not start on {self.url}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """moto's S3 server with one bucket holding the bench's picture: the AWS environment that reaches it."""
    server = MotoS3()
    server.start()
    try:
        s3 = server.client()
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="bench/image.png", Body=png_bytes(0))
        yield server.env()
    finally:
        server.stop()


@contextmanager
def loopback_torchserve(
    store: Path,
    work: Path,
    env: dict[str, str],
    models: list[str],
    timeout: float,
    config_overrides: dict[str, str] | None = None,
) -> Iterator[runner.TorchServe]:
    """A TorchServe serving ``store`` on free loopback ports, with ``env`` over this process's environment; its
    config, logs, output (torchserve.out) and TMPDIR in ``work``. Yields once ``models`` are READY, stops it after.
    Its own TMPDIR: the torchserve CLI refuses to start while the pid file in the temporary folder names a running
    server (a test's TorchServe runs beside the suite's)."""
    config = runner.loopback_config(CHECKOUT, work / "config.properties", store)
    if config_overrides:
        runner.write_config(config, config, config_overrides)
    (work / "tmp").mkdir(exist_ok=True)
    output = work / "torchserve.out"
    run_env = {**os.environ, **env, "TMPDIR": str(work / "tmp")}
    with open(output, "wb") as out:
        server = runner.start(config, store, "all", work / "logs", run_env, stdout=out)
        try:
            try:
                server.wait_ready(models, timeout)
            except (RuntimeError, TimeoutError) as err:
                err.add_note(f"{output} ends with:\n{output.read_text(errors='replace')[-5000:]}")
                raise
            yield server
        finally:
            server.stop()


def metric_totals(server: runner.TorchServe) -> dict[str, float]:
    """Every metric's value on the metrics API, summed over its labels (name -> total)."""
    with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


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
    before = metric_totals(server)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(requests_one):  # interleaved, so the machine's load drifts alike for the floor and the rest
        for name, (path, body) in paths.items():
            samples[name] += overheads(one, path, [body])
    report.one_client_p50_ms = {name: round(statistics.median(values), 2) for name, values in samples.items()}
    after = metric_totals(server)
    report.device_cache_hits = after.get("DeviceCacheHits", 0.0) - before.get("DeviceCacheHits", 0.0)
    report.cache_read_bytes = after.get("EmbeddingCacheReadBytes", 0.0) - before.get("EmbeddingCacheReadBytes", 0.0)

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
            env = {**aws_env, "GEN3D_CACHE_DIR": str(work / "cache"), "GEN3D_ALLOWED_BUCKETS": BUCKET}
            try:
                with loopback_torchserve(store, work, env, ["sam3", "echo"], timeout=300) as server:
                    report = measure(server, requests_one, requests_many, clients)
                report.max_batch_delay_ms = delay
                reports.append(report)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return reports
