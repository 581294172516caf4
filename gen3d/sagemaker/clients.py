"""The boto3 clients the control plane uses, a dry-run stand-in that prints every call, and small helpers
over their answers. Every function of this package takes its clients as arguments, so ``DryRunClient``
(prints each call, sends nothing) and botocore's ``Stubber`` can stand in for AWS. Credentials and region come
from boto3's default chain; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` are honoured by boto3 itself."""

from __future__ import annotations

import io
import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.validate import validate_parameters

BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})
# A real-time invocation may run for 60 s server-side; botocore's default read timeout is 60 s.
RUNTIME_CONFIG = BOTO_CONFIG.merge(Config(read_timeout=120))
VARIANT_NAME = "AllTraffic"
DRY_RUN_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # creation time of whatever a dry run assumes exists


@dataclass
class Clients:
    """The boto3 clients this module uses (real, dry-run or stubbed)."""

    s3: Any
    sagemaker: Any
    runtime: Any
    autoscaling: Any
    cloudwatch: Any
    ecr: Any = None  # the deployment checklist's image check, gen3d-push
    logs: Any = None  # the endpoint's log group: made by the deploy, read by the checklist
    tagging: Any = None  # Resource Groups Tagging API: teardown finds configs and models by tag


_SERVICES = {"s3": "s3", "sagemaker": "sagemaker", "runtime": "sagemaker-runtime",
             "autoscaling": "application-autoscaling", "cloudwatch": "cloudwatch", "ecr": "ecr", "logs": "logs",
             "tagging": "resourcegroupstaggingapi"}


def make_clients(
    region: str | None = None,
    *,
    dry_run: bool = False,
    assume_exists: bool = False,
    out: IO[str] | None = None,
) -> Clients:
    """Build the clients with standard retries; ``dry_run`` wraps them in DryRunClient."""
    session = boto3.session.Session(region_name=region)
    if dry_run and session.region_name is None:
        session = boto3.session.Session(region_name="us-east-1")
    made = {
        attr: session.client(svc, config=RUNTIME_CONFIG if attr == "runtime" else BOTO_CONFIG)
        for attr, svc in _SERVICES.items()
    }
    if dry_run:
        recorder = DryRunRecorder(out=out, assume_exists=assume_exists)
        made = {attr: DryRunClient(client, recorder) for attr, client in made.items()}
    return Clients(**made)


@dataclass
class DryRunRecorder:
    """Shared state of the dry-run clients: printed calls and resources 'created' so far."""

    out: IO[str] | None = None
    assume_exists: bool = False
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # resource name -> linked name


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return json.loads(value)
        except ValueError:
            return f"<{len(value)} bytes>"
    return str(value)


class DryRunClient:
    """Validates each call against the real service model, prints it as JSON and sends nothing.

    Responses are minimal and plausible.  Describe* calls for names not created
    in this run answer "Could not find" unless the recorder ``assume_exists``.
    """

    def __init__(self, client: Any, recorder: DryRunRecorder) -> None:
        self._client = client
        self._rec = recorder
        self.meta = client.meta
        self.service = client.meta.service_model.service_name

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        if name == "upload_file":
            return self._upload_file
        operation = self._client.meta.method_to_api_mapping.get(name)
        if operation is None:
            raise AttributeError(name)

        def call(**params: Any) -> dict[str, Any]:
            shape = self._client.meta.service_model.operation_model(operation).input_shape
            if shape is not None:
                validate_parameters(params, shape)
            self._record(operation, params)
            return self._respond(operation, params)

        return call

    def _record(self, operation: str, params: dict[str, Any]) -> None:
        self._rec.calls.append((self.service, operation, params))
        line = json.dumps(params, default=json_default, sort_keys=True)
        print(f"DRY-RUN {self.service} {operation} {line}", file=self._rec.out or sys.stdout, flush=True)

    def _upload_file(self, Filename: str, Bucket: str, Key: str, ExtraArgs: dict | None = None,  # noqa: N803
                     **_: Any) -> None:
        self._record("upload_file", {"Bucket": Bucket, "Key": Key, "Filename": Filename,
                                     "Bytes": Path(Filename).stat().st_size, **(ExtraArgs or {})})

    def _respond(self, op: str, p: dict[str, Any]) -> dict[str, Any]:
        arn = f"arn:aws:sagemaker:{self.meta.region_name}:000000000000"
        created = self._rec.created
        name = p.get("EndpointName") or p.get("EndpointConfigName") or p.get("ModelName") or ""
        if op.startswith("Describe") and self.service == "sagemaker":
            if name not in created and not self._rec.assume_exists:
                raise ClientError({"Error": {"Code": "ValidationException",
                                             "Message": f'Could not find "{name}" (dry run).'}}, op)
            # deploy names a model like its endpoint config; an endpoint's config is made up here
            linked = created.get(name) or (f"{name}-dry-run" if op == "DescribeEndpoint" else name)
            return {
                "DescribeEndpoint": {"EndpointName": name, "EndpointArn": f"{arn}:endpoint/{name}",
                                     "EndpointConfigName": linked, "EndpointStatus": "InService"},
                "DescribeEndpointConfig": {"EndpointConfigName": name, "ProductionVariants": [
                    {"VariantName": VARIANT_NAME, "ModelName": linked}]},
            }.get(op, {"ModelName": name, "CreationTime": DRY_RUN_TIME})
        if op == "CreateModel":
            created[name] = ""
            return {"ModelArn": f"{arn}:model/{name}"}
        if op == "CreateEndpointConfig":
            created[name] = p["ProductionVariants"][0]["ModelName"]
            return {"EndpointConfigArn": f"{arn}:endpoint-config/{name}"}
        if op in ("CreateEndpoint", "UpdateEndpoint"):
            created[name] = p["EndpointConfigName"]
            return {"EndpointArn": f"{arn}:endpoint/{name}"}
        if op == "PutScalingPolicy":
            return {"PolicyARN": f"arn:aws:autoscaling:{self.meta.region_name}:000000000000:"
                                 f"scalingPolicy:dry-run:resource/sagemaker/{p['ResourceId']}:"
                                 f"policyName/{p['PolicyName']}"}
        if op in ("InvokeEndpoint", "GetObject"):
            body = b'{"status": "dry-run"}'
            return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}
        if op == "InvokeEndpointAsync":
            base = f"s3://dry-run-bucket/{uuid.uuid4()}"
            return {"InferenceId": "dry-run", "OutputLocation": f"{base}.out",
                    "FailureLocation": f"{base}-error.out"}
        if op == "PutMetricAlarm":
            created[p["AlarmName"]] = f"arn:aws:cloudwatch:{self.meta.region_name}:000000000000:alarm:{p['AlarmName']}"
        if op == "DescribeAlarms":  # teardown dry runs (assume_exists) show the delete
            return {"MetricAlarms": [{"AlarmName": n, "AlarmArn": created.get(n, n)} for n in p["AlarmNames"]
                                     if n in created or self._rec.assume_exists]}
        return {"ListEndpointConfigs": {"EndpointConfigs": []},
                "DescribeScalableTargets": {"ScalableTargets": []}}.get(op, {})


def say(out: IO[str] | None, message: str) -> None:
    print(message, file=out or sys.stdout, flush=True)


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def is_not_found(err: ClientError) -> bool:
    code = error_code(err)
    message = str(err.response.get("Error", {}).get("Message", ""))
    if code in ("ValidationException", "ValidationError"):
        # SageMaker: 'Could not find ...'; Application Auto Scaling as moto answers it: 'No scaling policy found'
        return "Could not find" in message or "does not exist" in message or bool(re.match(r"No .* found", message))
    return code in ("ObjectNotFoundException", "ResourceNotFound", "ResourceNotFoundException",
                    "NoSuchKey", "NotFound", "404")


def tolerant(out: IO[str] | None, what: str, action: Callable[[], Any]) -> bool:
    """Run a delete; report 'already gone' on not-found errors.  True when deleted."""
    try:
        action()
    except ClientError as err:
        if not is_not_found(err):
            raise
        say(out, f"{what}: already gone")
        return False
    say(out, f"{what}: deleted")
    return True


def describe_or_none(describe: Callable[..., dict], **params: object) -> dict | None:
    """``describe(**params)``'s answer, or None when what it describes does not exist (other errors raise)."""
    try:
        return describe(**params)
    except ClientError as err:
        if is_not_found(err):
            return None
        raise
