"""The SageMaker `serve` entrypoint run locally (no Docker) on a SageMaker-like model directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from gen3d.torchserve import runner
from tests.conftest import BUCKET, REPO, png_bytes
from tests.integration.local_serve import serve_local

pytestmark = pytest.mark.sam3

SERVE = [sys.executable, str(REPO / "scripts" / "serve"), "serve"]


def serve_env(model_dir: Path, aws_env: dict, **extra: str) -> tuple[dict, int]:
    port, management, metrics, *grpc = runner.free_ports(5)
    env = dict(
        os.environ,
        **aws_env,
        SM_MODEL_DIR=str(model_dir),
        SAGEMAKER_BIND_TO_PORT=str(port),
        GEN3D_MANAGEMENT_PORT=str(management),
        GEN3D_METRICS_PORT=str(metrics),
        GEN3D_GRPC_PORTS=",".join(map(str, grpc)),  # the defaults could be held by another TorchServe
        GEN3D_CACHE_DIR=str(model_dir.parent / "embedding-cache"),
        GEN3D_ALLOWED_BUCKETS=BUCKET,
        # its own TMPDIR: the torchserve CLI refuses to start while the pid file in the temporary folder names
        # another running TorchServe (the suite's own, or any other on this machine)
        TMPDIR=str(model_dir.parent / f"tmp-{port}"),
    )
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    env.update(extra)
    return env, port


def unpack(mar: Path, dest: Path) -> Path:
    """An uncompressed archive directory, as SageMaker copies an S3Prefix model into /opt/ml/model."""
    with zipfile.ZipFile(mar) as zf:
        zf.extractall(dest)
    return dest


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_serves_ping_and_seed_payload_on_invocations(model_store, aws_env, s3, tmp_path):
    model_dir = tmp_path / "model"
    unpack(model_store / "sam3.mar", model_dir / "sam3")
    before = tree(model_dir)
    env, port = serve_env(model_dir, aws_env, GEN3D_LOG_DIR=str(tmp_path / "logs"))
    out = open(tmp_path / "serve.out", "wb")  # noqa: SIM115 - a pipe would fill up and block TorchServe
    proc = subprocess.Popen(SERVE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.out").read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    body = {
                        "task": "get_embedding",
                        "image_s3_key": "sm/test-image.png",
                        "bucket": BUCKET,
                        "session_id": "sm-001",
                        "user_id": "sm-user",
                    }
                    s3.put_object(Bucket=BUCKET, Key="sm/test-image.png", Body=png_bytes(31))
                    resp = requests.post(f"{url}/invocations", json=body, timeout=60)
                    if resp.status_code == 200:
                        break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "serve never answered the seed payload"
            time.sleep(1)
        answer = resp.json()
        assert answer["status"] == "success" and answer["task"] == "get_embedding"
        assert s3.head_object(Bucket=BUCKET, Key=answer["output_s3_key"])["ContentLength"] > 0
        wrong = requests.post(f"{url}/invocations", json={**body, "task": "generate_3d"}, timeout=60)
        assert wrong.status_code == 400 and "sam3d" in wrong.json()["error"]["message"]
    finally:
        os.killpg(proc.pid, 15)
        assert proc.wait(60) is not None
        out.close()
    # The images run as an unprivileged user and /opt/ml/model is read-only on SageMaker: serve writes nothing
    # there; its TorchServe configuration goes to the temporary folder.
    assert tree(model_dir) == before
    assert list(Path(env["TMPDIR"]).glob("gen3d-serve-*/config.properties"))


def test_missing_checkpoint_exits_with_one_clear_line(model_store, aws_env, tmp_path):
    model_dir = tmp_path / "model"
    archive = unpack(model_store / "sam3.mar", model_dir / "sam3")
    checkpoint = next(archive.glob("*.safetensors"))
    checkpoint.unlink()
    env, _ = serve_env(model_dir, aws_env)
    done = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(archive) in errors[0] and checkpoint.name in errors[0]


def test_empty_model_dir_exits(aws_env, tmp_path):
    env, _ = serve_env(tmp_path, aws_env)
    done = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"no model archive in {tmp_path}" in done.stderr


def test_model_that_never_loads_makes_serve_exit(model_store, aws_env, tmp_path):
    model_dir = tmp_path / "model"
    archive = unpack(model_store / "sam3.mar", model_dir / "sam3")
    config = (archive / "model-config.yaml").read_text()
    config = config.replace("preset: tiny", "preset: no-such-preset").replace(
        "startupTimeout: 600", "startupTimeout: 2"
    )
    (archive / "model-config.yaml").write_text(config)
    # serve waits startupTimeout + the margin however fast the worker fails: both short, as the preset never loads
    env, port = serve_env(model_dir, aws_env, GEN3D_READY_MARGIN_S="3")
    done = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "cannot serve:" in done.stderr and "sam3" in done.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=2)


def test_only_the_named_model_is_served(model_store, tmp_path):
    from gen3d.archives import ArchiveError
    from gen3d.sagemaker.entrypoint import find_archives

    shutil.copy(model_store / "sam3.mar", tmp_path / "sam3.mar")
    assert [a.name for a in find_archives(tmp_path, "sam3")] == ["sam3"]
    with pytest.raises(ArchiveError, match="sam3d.mar"):
        find_archives(tmp_path, "sam3d")


def test_empty_bucket_allow_list_stops_the_container(model_store, aws_env, tmp_path):
    model_dir = tmp_path / "model"
    unpack(model_store / "sam3.mar", model_dir / "sam3")
    env, _ = serve_env(model_dir, aws_env, GEN3D_ALLOWED_BUCKETS=" , ")
    done = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert done.returncode == 2 and len(errors) == 1 and "GEN3D_ALLOWED_BUCKETS is empty" in errors[0]


def test_local_serve_binds_loopback_and_serves(model_store, aws_env, tmp_path):
    """gen3d-serve-local (what `make serve` runs): TorchServe in the foreground, inference on 127.0.0.1 unless
    GEN3D_BIND says otherwise, stopped cleanly by SIGTERM (its demo page: tests/integration/test_demo_page.py)."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(model_store / "sam3.mar", store / "sam3.mar")
    env = dict(os.environ, **aws_env, GEN3D_ALLOWED_BUCKETS=BUCKET)
    env.pop("GEN3D_BIND", None)
    with serve_local(tmp_path, store, env, "--no-page", ready="serving sam3 at") as served:
        text = served.text()
        assert f"serving sam3 at http://127.0.0.1:{served.port}" in text
        assert f"may use (GEN3D_ALLOWED_BUCKETS): {BUCKET}" in text
        assert f"inference_address=http://127.0.0.1:{served.port}" in (served.logs / "config.properties").read_text()
        assert requests.get(f"http://127.0.0.1:{served.port}/ping", timeout=5).json()["status"] == "Healthy"
