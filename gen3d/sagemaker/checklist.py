"""The deployment checklist: after InService, what a person would check by hand, one PASS/FAIL line each.

- the image is in ECR (``describe_images`` on the repository and tag or digest of the image URI);
- the endpoint is InService on the config just deployed;
- the endpoint's CloudWatch logs show each model's worker loaded (TorchServe's ``State change ... ->
  WORKER_MODEL_LOADED``, which its management API reports as READY, and the handler's ``<model> ready:``);
- no start-up line says ``ERROR``, ``Skipping``, ``Load model failed`` or holds a Python traceback;
- the smoke request returned real output: non-constant, finite tensors in the get_embedding file, a PLY with
  vertices, a GLB with a valid header and a pose with numbers for generate_3d, masks for segment;
- async: nothing was written to the smoke request's failure location.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from botocore.exceptions import ClientError
from plyfile import PlyData
from safetensors.numpy import load as load_safetensors

from gen3d.sagemaker.clients import Clients, error_code
from gen3d.sagemaker.errors import DeployError
from gen3d.sagemaker.invoke import AsyncInvocation, s3_object_exists, verify_response
from gen3d.sagemaker.names import log_group, parse_image_uri, parse_s3_uri

ERROR_LINE_RE = re.compile(r"\bERROR\b|\bSkipping\b|Load model failed|Traceback \(most recent call last\)")
MAX_LOG_EVENTS = 20000


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.detail}"


@dataclass
class SmokeOutcome:
    """What the smoke request gave: the response, or the error that stopped it; async: its invocation."""

    task: str
    bucket: str
    mode: str = "realtime"
    response: dict[str, Any] | None = None
    error: str | None = None
    invocation: AsyncInvocation | None = None


def check_image(ecr: Any, image_uri: str) -> Check:
    """The image URI's tag (or digest) exists in its ECR repository."""
    name = "image in ECR"
    match = parse_image_uri(image_uri)
    if not match:
        return Check(name, False, f"{image_uri} is not an ECR image URI "
                                  "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG); SageMaker pulls from ECR")
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    try:
        found = ecr.describe_images(registryId=match["registry"], repositoryName=match["repository"],
                                    imageIds=[image_id])["imageDetails"]
    except ClientError as err:
        return Check(name, False, f"{image_uri}: {error_code(err)}: {err.response.get('Error', {}).get('Message')}")
    if not found:
        return Check(name, False, f"{image_uri}: describe_images found no image")
    image = found[0]
    size = int(image.get("imageSizeInBytes") or 0)
    shown = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    return Check(name, True, f"{image_uri} ({str(image.get('imageDigest', '?'))[:19]}..., {shown}, "
                             f"pushed {image.get('imagePushedAt', '?')})")


def check_endpoint(sm: Any, endpoint_name: str, expected_config: str) -> Check:
    """The endpoint is InService on ``expected_config``."""
    name = "endpoint InService"
    try:
        desc = sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        return Check(name, False, f"{endpoint_name}: {error_code(err)}")
    status, config = desc.get("EndpointStatus"), desc.get("EndpointConfigName")
    passed = status == "InService" and config == expected_config
    return Check(name, passed, f"{endpoint_name} is {status} on {config}"
                               + ("" if config == expected_config else f" (expected {expected_config})"))


def log_messages(logs: Any, endpoint_name: str, since_ms: int) -> list[str]:
    """Every log message of the endpoint's log group since ``since_ms`` (epoch milliseconds), oldest first."""
    messages: list[str] = []
    params: dict[str, Any] = {"logGroupName": log_group(endpoint_name), "startTime": since_ms}
    while len(messages) < MAX_LOG_EVENTS:
        page = logs.filter_log_events(**params)
        messages += [e["message"] for e in sorted(page.get("events", []), key=lambda e: e.get("timestamp", 0))]
        if not page.get("nextToken") or page.get("nextToken") == params.get("nextToken"):
            break
        params["nextToken"] = page["nextToken"]
    return messages


def ready_lines(messages: list[str], model: str) -> tuple[str | None, str | None]:
    """The worker's WORKER_MODEL_LOADED line and the handler's ready line of ``model`` (None when absent)."""
    worker = re.compile(rf"W-\d+-{re.escape(model)}_\S* State change \S+ -> WORKER_MODEL_LOADED")
    handler = re.compile(rf"MODEL_LOG - {re.escape(model)} ready: ")
    return (next((m for m in messages if worker.search(m)), None),
            next((m for m in messages if handler.search(m)), None))


def check_logs(
    logs: Any,
    endpoint_name: str,
    models: list[str],
    since_ms: int,
    *,
    wait_s: float = 180.0,
    poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Check]:
    """One line per model (worker loaded and handler ready), then one for start-up errors. Logs reach
    CloudWatch with a delay, so the ready lines are awaited up to ``wait_s``."""
    group = log_group(endpoint_name)
    deadline = clock() + wait_s
    while True:
        try:
            messages = log_messages(logs, endpoint_name, since_ms)
        except ClientError as err:
            messages, failure = [], f"{group}: {error_code(err)}"
        else:
            failure = None
        found = {model: ready_lines(messages, model) for model in models}
        if all(all(lines) for lines in found.values()) or clock() >= deadline:
            break
        sleep(poll_s)
    checks = []
    for model, (worker, handler) in found.items():
        name = f"logs: {model} worker READY"
        if failure:
            checks.append(Check(name, False, failure))
        elif worker and handler:
            checks.append(Check(name, True, _clip(handler)))
        else:
            missing = [what for what, line in (("TorchServe's 'State change ... -> WORKER_MODEL_LOADED'", worker),
                                               (f"the handler's '{model} ready:'", handler)) if not line]
            checks.append(Check(name, False, f"{' and '.join(missing)} line{'s' if len(missing) > 1 else ''} "
                                             f"not found in {group} ({len(messages)} lines since the deploy began)"))
    errors = [m for m in messages if ERROR_LINE_RE.search(m)]
    checks.append(Check("logs: no Skipping/ERROR start-up lines", not errors and not failure,
                        failure or (f"{len(errors)} such lines, first: {_clip(errors[0])}" if errors
                                    else f"none in {len(messages)} lines of {group}")))
    return checks


def _clip(text: str, limit: int = 160) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def embedding_summary(data: bytes) -> str:
    """Check every tensor of an embedding file is finite and not constant; a summary, or DeployError."""
    tensors = load_safetensors(data)
    if not tensors:
        raise DeployError("the embedding file holds no tensor")
    parts = []
    for name, array in sorted(tensors.items()):
        values = array.astype(np.float32)
        std = float(values.std())
        if not np.isfinite(values).all():
            raise DeployError(f"tensor {name} has non-finite values")
        if not std > 0:
            raise DeployError(f"tensor {name} {list(array.shape)} is constant ({float(values.flat[0])})")
        parts.append(f"{name} {list(array.shape)} std {std:.3g}")
    return f"{len(tensors)} non-constant tensors: " + ", ".join(parts)


def sam3d_summary(files: dict[str, bytes]) -> str:
    """Check the PLY has vertices, the GLB a valid header, the pose numbers; a summary, or DeployError."""
    parts = []
    if "ply" in files:
        ply = PlyData.read(io.BytesIO(files["ply"]))
        count = ply["vertex"].count if "vertex" in ply else 0
        if count == 0:
            raise DeployError("the PLY has no vertex")
        parts.append(f"PLY {count} splats")
    if "glb" in files:
        glb = files["glb"]
        if len(glb) < 20 or glb[:4] != b"glTF" or int.from_bytes(glb[8:12], "little") != len(glb):
            raise DeployError("the GLB has no valid glTF header")
        parts.append(f"GLB {len(glb)} bytes")
    pose = json.loads(files["pose"])
    for key, size in (("rotation", 4), ("translation", 3), ("scale", 3)):
        values = pose.get(key)
        if not (isinstance(values, list) and len(values) == size and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            raise DeployError(f"pose.json {key} is not {size} finite numbers: {values}")
    parts.append(f"pose scale {pose['scale'][0]:.3g}")
    return ", ".join(parts)


def check_output(s3: Any, smoke: SmokeOutcome) -> Check:
    """The smoke request answered success with real output (see the module's docstring)."""
    name = f"smoke {smoke.task} returns real output"
    if smoke.error is not None or smoke.response is None:
        return Check(name, False, smoke.error or "no response")
    response = smoke.response
    try:
        found = verify_response(s3, response, smoke.bucket) if smoke.task != "segment" else {}
        blobs = {}
        for output, uri in found.items():
            bucket, key = parse_s3_uri(uri)
            blobs[output] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if smoke.task == "get_embedding":
            detail = embedding_summary(next(iter(blobs.values())))
        elif smoke.task == "generate_3d":
            detail = sam3d_summary(blobs)  # by kind: ply, glb, pose
        else:
            masks = [m for m in response.get("masks") or [] if int(m.get("area", 0)) > 0]
            if not masks:
                raise DeployError(f"status success but no non-empty mask: {_clip(json.dumps(response), 300)}")
            detail = f"{len(masks)} non-empty masks, best score {masks[0].get('score')}"
    except (DeployError, ClientError, ValueError, KeyError) as err:
        return Check(name, False, str(err))
    return Check(name, True, detail)


def check_async_failure(s3: Any, invocation: AsyncInvocation | None) -> Check:
    """Nothing at the smoke request's async failure location."""
    name = "async failure path empty"
    if invocation is None or not invocation.failure_uri:
        return Check(name, False, "the smoke request has no async failure location to check")
    bucket, key = parse_s3_uri(invocation.failure_uri)
    try:
        present = s3_object_exists(s3, bucket, key)
    except ClientError as err:
        return Check(name, False, f"{invocation.failure_uri}: {error_code(err)}")
    if present:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode(errors="replace")
        return Check(name, False, f"{invocation.failure_uri}: {_clip(body, 300)}")
    return Check(name, True, f"nothing at {invocation.failure_uri}")


def run_checklist(
    clients: Clients,
    *,
    endpoint_name: str,
    expected_config: str,
    image_uri: str,
    models: list[str],
    since_ms: int,
    smoke: SmokeOutcome | None,
    logs_wait_s: float = 180.0,
    poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Check]:
    """Every check, in the order a person would go through them; async endpoints get the failure-path line."""
    checks = [check_image(clients.ecr, image_uri), check_endpoint(clients.sagemaker, endpoint_name, expected_config)]
    checks += check_logs(clients.logs, endpoint_name, models, since_ms, wait_s=logs_wait_s, poll_s=poll_s,
                         sleep=sleep, clock=clock)
    if smoke is not None:
        checks.append(check_output(clients.s3, smoke))
        if smoke.mode == "async":
            checks.append(check_async_failure(clients.s3, smoke.invocation))
    return checks


def report(checks: list[Check]) -> str:
    """The checklist as printed: a header, one line per check, a verdict."""
    failed = sum(not c.passed for c in checks)
    verdict = (f"CHECKLIST PASSED: {len(checks)} of {len(checks)} checks" if not failed
               else f"CHECKLIST FAILED: {failed} of {len(checks)} checks failed")
    return "\n".join(["DEPLOYMENT CHECKLIST", *(c.line() for c in checks), verdict])
