"""HTTP helpers of the integration tests: requests to the served models, their workers on the management API, the
seed payload's fields and the metadata of a get_embedding file."""

from __future__ import annotations

import json
import time

import requests

from tests.conftest import BUCKET

SEED = {"task": "get_embedding", "bucket": BUCKET, "session_id": "test-v2-001", "user_id": "admin-test"}


def post(server, body: dict | bytes, headers=None, path="/predictions/sam3", timeout: float = 120) -> requests.Response:
    """``body`` as JSON (a dict) or as it is (bytes) to ``path`` (sam3's predictions by default)."""
    if isinstance(body, dict):
        return requests.post(server.inference_url + path, json=body, headers=headers, timeout=timeout)
    return requests.post(server.inference_url + path, data=body, headers=headers, timeout=timeout)


def post_ok(server, body: dict | bytes, headers=None) -> requests.Response:
    """:func:`post` to sam3, asserting a 200 answer."""
    resp = post(server, body, headers)
    assert resp.status_code == 200, resp.text
    return resp


def put_image(s3, key: str, data: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return key


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header)."""
    header_len = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_len]).get("__metadata__", {})


def worker_pids(server, model: str = "sam3", status: str | None = None) -> list[int]:
    """The pids of ``model``'s workers (those in ``status`` only, e.g. READY), sorted."""
    described = requests.get(f"{server.management_url}/models/{model}", timeout=10).json()
    return sorted(w["pid"] for w in described[0]["workers"] if status is None or w["status"] == status)


def wait_for_worker(server, not_pid: int, timeout: float = 180, model: str = "sam3") -> int:
    """The pid of a READY worker of ``model`` other than ``not_pid`` (one that replaced a killed worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in worker_pids(server, model, "READY") if pid != not_pid]
        if pids:
            return pids[0]
        time.sleep(0.2)
    raise AssertionError(f"no new READY {model} worker within {timeout} s")
