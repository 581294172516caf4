"""The deployment checklist: after InService, what a person would check by hand, one PASS/FAIL line each, every one
able to fail on an endpoint that reached InService.

- the endpoint runs the image ECR holds: ``DescribeEndpoint``'s ``DeployedImages[].ResolvedImage`` carries the
  digest ``describe_images`` reports for the image URI's tag (or digest), on the config just deployed;
- the endpoint's CloudWatch logs show each model's worker loaded (TorchServe's ``State change ... ->
  WORKER_MODEL_LOADED``, which its management API reports as READY, and the handler's ``<model> ready:``);
- no log line says ``ERROR``, ``Skipping``, ``Load model failed``, ``No module named`` or holds a Python traceback;
- the smoke request returned real output from the archive's weights: its ``model_id`` names the archive's preset
  (and checkpoint digest, when the archive records it); non-constant, finite tensors in the get_embedding file, a
  PLY with vertices, a GLB with a valid header and a pose with numbers for generate_3d, masks for segment, and for
  generate_body valid GLBs and each person's MHR mesh (18,439 vertices, 36,874 faces) with 70 finite keypoints.

(InService on the new config is what the deploy waited for, and an async smoke request that failed already fails
its line with the failure object's text: neither gets a line of its own.)
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
from gen3d.sagemaker.invoke import AsyncInvocation, verify_response
from gen3d.sagemaker.names import log_group, parse_image_uri, parse_s3_uri

# "No module named" wherever it is: a worker can log a missing module as a warning and go on without it
ERROR_LINE_RE = re.compile(r"\bERROR\b|\bSkipping\b|Load model failed|No module named|Traceback \(most recent call")
MAX_LOG_EVENTS = 20000
MHR_MESH = (18_439, 36_874)  # vertices and faces of every person's mesh (SAM 3D Body's MHR topology)
MHR_KEYPOINTS = 70  # keypoints of each person (MHR70)


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
    """What the smoke request gave: the response, or the error that stopped it; async: its invocation. The answer's
    ``model_id`` must start with ``expected_model_id`` (None: the archive's preset is unknown, which fails)."""

    task: str
    bucket: str
    mode: str = "realtime"
    response: dict[str, Any] | None = None
    error: str | None = None
    invocation: AsyncInvocation | None = None
    expected_model_id: str | None = None


def check_image(ecr: Any, sm: Any, endpoint_name: str, expected_config: str, image_uri: str) -> Check:
    """The endpoint, on ``expected_config``, runs the image ECR holds under ``image_uri``: every
    ``DeployedImages[].ResolvedImage`` has the repository and the digest ``describe_images`` reports."""
    name = "deployed image is ECR's"
    match = parse_image_uri(image_uri)
    if not match:
        return Check(name, False, f"{image_uri} is not an ECR image URI "
                                  "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG); SageMaker pulls from ECR")
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    try:
        found = ecr.describe_images(registryId=match["registry"], repositoryName=match["repository"],
                                    imageIds=[image_id])["imageDetails"]
        desc = sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        return Check(name, False, f"{image_uri}: {error_code(err)}: {err.response.get('Error', {}).get('Message')}")
    if not found:
        return Check(name, False, f"{image_uri}: describe_images found no image")
    digest = str(found[0].get("imageDigest"))
    if desc.get("EndpointConfigName") != expected_config:
        return Check(name, False, f"{endpoint_name} is on {desc.get('EndpointConfigName')}, not on "
                                  f"{expected_config}, the config this deploy made")
    resolved = [str(image.get("ResolvedImage")) for variant in desc.get("ProductionVariants") or []
                for image in variant.get("DeployedImages") or []]
    wanted = {**match, "tag": None, "digest": digest}
    wrong = [uri for uri in resolved if {**(parse_image_uri(uri) or {}), "tag": None} != wanted]
    if not resolved or wrong:
        running = wrong[0] if wrong else "no image (DescribeEndpoint lists no DeployedImages)"
        return Check(name, False, f"{endpoint_name} runs {running}, but ECR's {image_uri} is {digest}")
    size = int(found[0].get("imageSizeInBytes") or 0)
    shown = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    return Check(name, True, f"{endpoint_name} runs {resolved[0]} = {image_uri} ({shown}, pushed "
                             f"{found[0].get('imagePushedAt', '?')})")


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
    checks.append(Check("logs: no error lines", not errors and not failure,
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


def check_glb(glb: bytes, what: str) -> int:
    """The size of a GLB whose header is valid (magic ``glTF``, its length field = its size); DeployError naming
    ``what`` otherwise."""
    if len(glb) < 20 or glb[:4] != b"glTF" or int.from_bytes(glb[8:12], "little") != len(glb):
        raise DeployError(f"{what} has no valid glTF header")
    return len(glb)


def body_summary(files: dict[str, bytes], response: dict[str, Any]) -> str:
    """Check generate_body's GLBs have valid headers and each person MHR's mesh (18,439 vertices, 36,874 faces) and
    70 finite 2D keypoints; a summary, or DeployError."""
    people = response["people"]
    for i, person in enumerate(people):
        check_glb(files[f"people[{i}].glb"], f"people[{i}]'s GLB")
        mesh = person.get("mesh") or {}
        if (mesh.get("vertices"), mesh.get("faces")) != MHR_MESH:
            raise DeployError(f"people[{i}]'s mesh is {mesh}, not MHR's {MHR_MESH[0]} vertices and {MHR_MESH[1]} faces")
        points = person.get("keypoints_2d")
        if not (isinstance(points, list) and len(points) == MHR_KEYPOINTS and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                            for v in p) for p in points)):
            raise DeployError(f"people[{i}].keypoints_2d is not {MHR_KEYPOINTS} finite [x, y] pairs")
    size = check_glb(files["people_glb"], "people_glb")
    return f"{len(people)} people (MHR meshes, {MHR_KEYPOINTS} keypoints each), people GLB {size} bytes"


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
        parts.append(f"GLB {check_glb(files['glb'], 'the GLB')} bytes")
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
        elif smoke.task == "generate_body":
            detail = body_summary(blobs, response)  # people_glb, people[i].glb / .params
        else:
            masks = [m for m in response.get("masks") or [] if int(m.get("area", 0)) > 0]
            if not masks:
                raise DeployError(f"status success but no non-empty mask: {_clip(json.dumps(response), 300)}")
            detail = f"{len(masks)} non-empty masks, best score {masks[0].get('score')}"
    except (DeployError, ClientError, ValueError, KeyError) as err:
        return Check(name, False, str(err))
    model_id = str(response.get("model_id") or "(none)")
    if smoke.expected_model_id is None:
        return Check(name, False, f"{detail}; but the archive's preset is unknown (its model-config.yaml was not "
                                  f"read), so model_id {model_id} cannot be matched to it")
    if not model_id.startswith(smoke.expected_model_id):
        return Check(name, False, f"answered by model_id {model_id}, not by the archive's "
                                  f"{smoke.expected_model_id}...: another model or preset is serving")
    return Check(name, True, f"model_id {model_id}: {detail}")


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
    """Every check, in the order a person would go through them."""
    checks = [check_image(clients.ecr, clients.sagemaker, endpoint_name, expected_config, image_uri)]
    checks += check_logs(clients.logs, endpoint_name, models, since_ms, wait_s=logs_wait_s, poll_s=poll_s,
                         sleep=sleep, clock=clock)
    if smoke is not None:
        checks.append(check_output(clients.s3, smoke))
    return checks


def report(checks: list[Check]) -> str:
    """The checklist as printed: a header, one line per check, a verdict."""
    failed = sum(not c.passed for c in checks)
    verdict = (f"CHECKLIST PASSED: {len(checks)} of {len(checks)} checks" if not failed
               else f"CHECKLIST FAILED: {failed} of {len(checks)} checks failed")
    return "\n".join(["DEPLOYMENT CHECKLIST", *(c.line() for c in checks), verdict])
