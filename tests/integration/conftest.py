"""Integration fixtures: moto's S3 server over HTTP, demo archives built by the project's script, and a real
TorchServe (Java frontend + Python workers) serving them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gen3d.bench.serving import MotoS3
from tests.conftest import BUCKET, REPO


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server for the session. It runs in its own process: moto servers inside the test process share
    one state, which the SageMaker control-plane tests reset between their tests."""
    server = MotoS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def aws_env(moto_s3):
    """The standard AWS environment pointing S3 at moto's server (set for this process too)."""
    env = moto_s3.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3(aws_env):
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def model_store(tmp_path_factory, models) -> Path:
    """Demo archives of the models this run serves (--models; default all three) built by the project's own
    script, as `make serve` builds them."""
    store = tmp_path_factory.mktemp("model-store")
    script = [sys.executable, str(REPO / "scripts" / "build_archives.py")]
    # sam3 waits up to 100 ms for a batch of 4: long enough for the batching tests' concurrent requests (sent together
    # from one thread pool, they reach TorchServe within ~30 ms of each other here) to land in one batch, short
    # enough that the suite's ~300 lone sam3 requests don't each pay much (at 400 ms they cost ~100 s of make test)
    options = {"sam3": ["--batch-size", "4", "--max-batch-delay", "100"], "sam3d": [], "sam3d_body": []}
    builds = [[*script, model, "--export-path", str(store), *options[model]] for model in models]
    procs = [subprocess.Popen(cmd, cwd=REPO) for cmd in builds]  # in parallel: each takes seconds
    codes = [proc.wait() for proc in procs]
    assert codes == [0] * len(builds), f"build_archives.py exit codes {codes}"
    return store


@pytest.fixture(scope="session")
def demo_checkpoint(model_store, bpe_path) -> Path:
    """The checkpoint the sam3 demo archive was built from (build/, named by gen3d.sam3.demo_weights)."""
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.presets import PRESETS

    return demo_checkpoint(REPO / "build", PRESETS["tiny"], bpe_path)


@pytest.fixture(scope="session")
def page_port() -> int:
    """The demo page's port in the tests (TorchServe's CORS is opened for its origin, as `make serve` does)."""
    from gen3d.torchserve import runner

    return runner.free_ports(1)[0]


@pytest.fixture(scope="session")
def decoder_export(model_store, tmp_path_factory) -> tuple[subprocess.Popen, Path, Path]:
    """The ONNX decoders (K=1, and K=3 with --multimask-out) exported from the served sam3 archive by the project's
    script, as `make serve` does; it runs in the background (~45 s) while later fixtures start TorchServe."""
    folder = tmp_path_factory.mktemp("onnx")
    single, multimask = folder / "decoder.onnx", folder / "decoder-k3.onnx"
    script = REPO / "scripts" / "export_decoder_onnx.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--archive", str(model_store / "sam3.mar"), "--out", str(single),
         "--multimask-out", str(multimask)],
        cwd=REPO,
    )  # fmt: skip
    yield proc, single, multimask
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _exported(export: tuple[subprocess.Popen, Path, Path]) -> tuple[Path, Path]:
    proc, single, multimask = export
    assert proc.wait(300) == 0, f"export_decoder_onnx.py exited with {proc.returncode}"
    return single, multimask


@pytest.fixture(scope="session")
def decoder_onnx(decoder_export) -> Path:
    """The K=1 decoder (segment's single mask): what the page uses."""
    return _exported(decoder_export)[0]


@pytest.fixture(scope="session")
def decoder_onnx_multimask(decoder_export) -> Path:
    return _exported(decoder_export)[1]


@pytest.fixture(scope="session")
def torchserve(model_store, aws_env, tmp_path_factory, models, page_port):
    """A real TorchServe (Java frontend + Python workers) on free ports, serving the demo archives."""
    from gen3d.bench.serving import loopback_torchserve
    from gen3d.web.page_server import torchserve_cors

    work = tmp_path_factory.mktemp("torchserve")
    env = {
        **aws_env,
        "GEN3D_CACHE_DIR": str(work / "embedding-cache"),
        "GEN3D_ALLOWED_BUCKETS": f"{BUCKET},gen3d-out-*",
    }
    cors = torchserve_cors(f"http://127.0.0.1:{page_port}")  # as `make serve` does
    with loopback_torchserve(model_store, work, env, list(models), timeout=240, config_overrides=cors) as server:
        yield server


@pytest.fixture(scope="session")
def demo_sam3(demo_checkpoint, bpe_path):
    """The served tiny SAM 3 (the demo archive's checkpoint) loaded once in this process, to compare served values
    with. Users of its interactive predictor reset it after use."""
    import torch

    from gen3d.sam3.loading import load_sam3

    return load_sam3("tiny", demo_checkpoint, bpe_path, torch.device("cpu"))
