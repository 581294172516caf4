"""Integration fixtures: moto's S3 server over HTTP, demo archives built by the project's script, and a real
TorchServe (Java frontend + Python workers) serving them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUCKET, REPO, free_port


@pytest.fixture(scope="session")
def aws_env():
    """moto's S3 server on a free loopback port, reached through the standard AWS environment.

    It runs in its own process: moto servers inside the test process share one state, which
    test_sagemaker_control.py resets between its tests (that would delete this server's bucket).
    """
    import requests

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=2)
            break
        except requests.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not start on {url}") from None
            time.sleep(0.2)
    env = {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.terminate()
    server.wait(30)


@pytest.fixture(scope="session")
def s3(aws_env):
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, models) -> Path:
    """Demo archives of the models this run serves (--models; default sam3 and sam3d) built by the project's own
    script, as `make serve` builds them."""
    store = tmp_path_factory.mktemp("model-store")
    script = [sys.executable, str(REPO / "scripts" / "build_archives.py")]
    options = {"sam3": ["--batch-size", "4", "--max-batch-delay", "1500"], "sam3d": []}
    builds = [[*script, model, "--export-path", str(store), *options[model]] for model in models]
    procs = [subprocess.Popen(cmd, cwd=REPO) for cmd in builds]  # in parallel: each takes seconds
    codes = [proc.wait() for proc in procs]
    assert codes == [0] * len(builds), f"build_archives.py exit codes {codes}"
    return store


@pytest.fixture(scope="session")
def demo_checkpoint(model_store) -> Path:
    return REPO / "build" / "sam3-tiny-demo-seed0.safetensors"


@pytest.fixture(scope="session")
def torchserve(model_store, aws_env, tmp_path_factory, models):
    """A real TorchServe (Java frontend + Python workers) on free ports, serving the demo archives."""
    from gen3d.torchserve import runner

    work = tmp_path_factory.mktemp("torchserve")
    ports = [free_port() for _ in range(5)]
    config = runner.write_config(
        REPO / "config.properties",
        work / "config.properties",
        {
            "inference_address": f"http://127.0.0.1:{ports[0]}",
            "management_address": f"http://127.0.0.1:{ports[1]}",
            "metrics_address": f"http://127.0.0.1:{ports[2]}",
            # gRPC's default ports (7070/7071) would collide with the TorchServes of test_sagemaker_serve.py
            "grpc_inference_port": str(ports[3]),
            "grpc_management_port": str(ports[4]),
            "model_store": str(model_store),
            "metrics_config": str(REPO / "metrics.yaml"),
        },
    )
    # Its own TMPDIR: the torchserve CLI refuses to start while the pid file in the temporary folder names a
    # running server, and tests/test_sagemaker_serve.py starts other TorchServes while this one runs.
    (work / "tmp").mkdir()
    env = dict(os.environ, **aws_env, GEN3D_CACHE_DIR=str(work / "embedding-cache"), TMPDIR=str(work / "tmp"))
    with open(work / "torchserve.out", "wb") as out:
        server = runner.start(config, model_store, "all", work / "logs", env, stdout=out)
        try:
            server.wait_ready(list(models), timeout=240)
        except Exception:
            server.stop()
            print((work / "torchserve.out").read_text()[-5000:])
            raise
        yield server
        server.stop()
