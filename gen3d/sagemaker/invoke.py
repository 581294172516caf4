"""Invoking an endpoint (real-time or async through S3), verifying a response, and the smoke-test request."""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import ClientError
from PIL import Image, ImageDraw

from gen3d.models import MODELS
from gen3d.sagemaker.clients import is_not_found, say
from gen3d.sagemaker.errors import AsyncInferenceError, SmokeTestError
from gen3d.sagemaker.names import log_group, parse_s3_uri

MAX_INVOCATION_TIMEOUT_S = 3600  # SageMaker's limit of InvocationTimeoutSeconds
REALTIME_PAYLOAD_BYTES = 6 * 2**20  # SageMaker's limit on a real-time request body and on its answer (6 MB)
BODY_PERSON_OUTPUTS = ("glb", "params")  # the files of each person of a generate_body answer


def sam3d_outputs(decode_formats: object) -> list[str]:
    """The files a generate_3d answer must name: the pose always, the PLY for "gaussian", the GLB for "mesh"."""
    formats = decode_formats if isinstance(decode_formats, list) else ["gaussian", "mesh"]
    return [name for name, wanted in (("ply", "gaussian" in formats), ("glb", "mesh" in formats),
                                      ("pose", True)) if wanted]


def read_json(body: Any, what: str) -> dict[str, Any]:
    raw = body.read() if hasattr(body, "read") else body
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise SmokeTestError(f"{what} is not JSON: {raw[:200]!r}") from err
    if not isinstance(data, dict):
        raise SmokeTestError(f"{what} is not a JSON object: {data!r}")
    return data


def invoke_realtime(rt: Any, endpoint_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST the JSON payload to a real-time endpoint and return the JSON response."""
    response = rt.invoke_endpoint(EndpointName=endpoint_name, ContentType="application/json",
                                  Accept="application/json", Body=json.dumps(payload).encode())
    return read_json(response["Body"], f"response of {endpoint_name}")


def s3_object_exists(s3: Any, bucket: str, key: str) -> bool:
    """head_object; False on 404."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if is_not_found(err):
            return False
        raise
    return True


@dataclass(frozen=True)
class AsyncInvocation:
    """An accepted async request: its id and where SageMaker will write the output or the failure."""

    inference_id: str
    output_uri: str
    failure_uri: str | None


def start_async(
    rt: Any,
    s3: Any,
    endpoint_name: str,
    payload: dict[str, Any],
    *,
    input_s3_uri: str,
    invocation_timeout_s: int | None = None,
) -> AsyncInvocation:
    """Upload the payload to ``input_s3_uri`` and invoke_endpoint_async; ``invocation_timeout_s``
    (InvocationTimeoutSeconds, 1..3600; SageMaker's default is 900) bounds the container's processing."""
    bucket, key = parse_s3_uri(input_s3_uri)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(payload).encode(), ContentType="application/json")
    params: dict[str, Any] = {"EndpointName": endpoint_name, "InputLocation": input_s3_uri,
                              "ContentType": "application/json", "Accept": "application/json"}
    if invocation_timeout_s is not None:
        if not 1 <= invocation_timeout_s <= MAX_INVOCATION_TIMEOUT_S:
            raise ValueError(f"the invocation timeout must be 1..{MAX_INVOCATION_TIMEOUT_S} s, "
                             f"got {invocation_timeout_s}")
        params["InvocationTimeoutSeconds"] = invocation_timeout_s
    response = rt.invoke_endpoint_async(**params)
    return AsyncInvocation(str(response.get("InferenceId", "")), response["OutputLocation"],
                           response.get("FailureLocation"))


def wait_async(
    s3: Any,
    endpoint_name: str,
    invocation: AsyncInvocation,
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll S3 for the output JSON; AsyncInferenceError when the failure object appears first, TimeoutError
    when neither appears in time."""
    say(out, f"async inference {invocation.inference_id}: waiting for {invocation.output_uri}")
    deadline = clock() + timeout_s
    while True:
        out_bucket, out_key = parse_s3_uri(invocation.output_uri)
        if s3_object_exists(s3, out_bucket, out_key):
            body = s3.get_object(Bucket=out_bucket, Key=out_key)["Body"]
            return read_json(body, invocation.output_uri)
        if invocation.failure_uri:
            fail_bucket, fail_key = parse_s3_uri(invocation.failure_uri)
            if s3_object_exists(s3, fail_bucket, fail_key):
                text = s3.get_object(Bucket=fail_bucket, Key=fail_key)["Body"].read()
                raise AsyncInferenceError(
                    f"async inference failed ({invocation.failure_uri}): {text.decode(errors='replace')[:2000]}; "
                    f"container logs: CloudWatch log group {log_group(endpoint_name)}")
        if clock() >= deadline:
            raise TimeoutError(f"no async result at {invocation.output_uri} after {timeout_s:.0f} s")
        sleep(poll_s)


def invoke_async(
    rt: Any,
    s3: Any,
    endpoint_name: str,
    payload: dict[str, Any],
    *,
    input_s3_uri: str,
    invocation_timeout_s: int | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """:func:`start_async` then :func:`wait_async`: the output JSON of one async request."""
    invocation = start_async(rt, s3, endpoint_name, payload, input_s3_uri=input_s3_uri,
                             invocation_timeout_s=invocation_timeout_s)
    return wait_async(s3, endpoint_name, invocation, timeout_s=timeout_s, poll_s=poll_s, out=out, sleep=sleep,
                      clock=clock)


def verify_response(s3: Any, response: dict[str, Any], bucket: str) -> dict[str, str]:
    """Check status == "success" and that every S3 output it names exists; return their URIs by name
    (``output_s3_key``, then each kind of ``outputs``: ply, glb, pose, people_glb; then generate_body's
    ``people[i].glb`` / ``people[i].params``), in the answer's order."""
    if response.get("status") != "success":
        raise SmokeTestError(f"response status is {response.get('status')!r}, not 'success': {response}")
    bucket = str(response.get("output_bucket") or response.get("bucket") or bucket)
    keys: dict[str, str] = {}
    if response.get("output_s3_key"):
        keys["output_s3_key"] = str(response["output_s3_key"])
    outputs = response.get("outputs")
    if isinstance(outputs, dict):
        if response.get("task") == "generate_3d":
            missing = [name for name in sam3d_outputs(response.get("decode_formats")) if not outputs.get(name)]
            if missing:
                raise SmokeTestError(f"generate_3d response lacks outputs {missing}: {response}")
        keys.update({str(name): str(key) for name, key in outputs.items() if key})
    if response.get("task") == "generate_body":
        keys.update(body_output_keys(response))
    if not keys:
        raise SmokeTestError(f"response names no S3 output: {response}")
    absent = [f"s3://{bucket}/{key}" for key in keys.values() if not s3_object_exists(s3, bucket, key)]
    if absent:
        raise SmokeTestError(f"response claims outputs that do not exist: {', '.join(absent)}")
    return {name: f"s3://{bucket}/{key}" for name, key in keys.items()}


def body_output_keys(response: dict[str, Any]) -> dict[str, str]:
    """The S3 keys a generate_body answer must name: ``people_glb``, and each person's ``glb`` and ``params``
    (as ``people[i].glb``); SmokeTestError naming what is missing."""
    people = response.get("people")
    outputs = response.get("outputs")
    if not (isinstance(people, list) and people and isinstance(outputs, dict) and outputs.get("people_glb")):
        raise SmokeTestError(f"generate_body response names no person or no outputs.people_glb: {response}")
    keys: dict[str, str] = {}
    for i, person in enumerate(people):
        files = person.get("outputs") if isinstance(person, dict) else None
        missing = [kind for kind in BODY_PERSON_OUTPUTS if not (isinstance(files, dict) and files.get(kind))]
        if missing:
            raise SmokeTestError(f"generate_body response's people[{i}] lacks outputs {missing}: {response}")
        keys.update({f"people[{i}].{kind}": str(files[kind]) for kind in BODY_PERSON_OUTPUTS})
    return keys


def seed_png(size: int = 256) -> bytes:
    """A small RGB PNG: the disc of :func:`seed_disc_polygon` (bright) on a dark background."""
    image = Image.new("RGB", (size, size), (20, 30, 60))
    centre, radius = (size - 1) / 2, size / 3
    ImageDraw.Draw(image).ellipse(
        (centre - radius, centre - radius, centre + radius, centre + radius), fill=(230, 120, 40)
    )
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def default_payload(model: str, bucket: str, image_s3_key: str, session_id: str,
                    user_id: str = "sagemaker-smoke-test") -> dict[str, Any]:
    """The client contract's request for ``model``'s default task (generate_3d: the seed picture's disc as mask;
    generate_body: the disc's box as the one person, a box being what a client gets from segment's "person")."""
    payload: dict[str, Any] = {"task": MODELS[model].default_task, "image_s3_key": image_s3_key, "bucket": bucket,
                               "session_id": session_id, "user_id": user_id}
    if model == "sam3d":
        payload["mask_polygon"] = seed_disc_polygon()
    elif model == "sam3d_body":
        payload["boxes"] = [seed_disc_box()]
    return payload


def seed_disc_box(size: int = 256) -> list[float]:
    """The box around the disc of :func:`seed_png` in pixels ([x0, y0, x1, y1])."""
    centre, radius = (size - 1) / 2, size / 3
    return [round(centre - radius, 2), round(centre - radius, 2), round(centre + radius, 2), round(centre + radius, 2)]


def seed_disc_polygon(size: int = 256, corners: int = 32) -> list[list[float]]:
    """The disc of :func:`seed_png` as a polygon in pixels ([[x, y], ...])."""
    centre, radius = (size - 1) / 2, size / 3
    return [[round(centre + radius * math.cos(2 * math.pi * i / corners), 2),
             round(centre + radius * math.sin(2 * math.pi * i / corners), 2)] for i in range(corners)]


def new_session_id() -> str:
    """A random id for smoke-test requests."""
    return f"smoke-{uuid.uuid4().hex[:12]}"
