"""SageMaker control plane for the ``sam3`` and ``sam3d`` TorchServe images.

Pure library over boto3 clients (no torch): upload an uncompressed model
archive to S3, create the Model / EndpointConfig / Endpoint, wait for it,
autoscale async endpoints, invoke (real-time or async), verify a response and
tear everything down.  Every function takes its boto3 clients as arguments, so
``DryRunClient`` (prints each call, sends nothing) and botocore's ``Stubber``
can stand in for AWS.  Credentials and region come from boto3's default chain;
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` are honoured by boto3 itself.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import sys
import time
import uuid
import zlib
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
from tqdm import tqdm

BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 10})
# A real-time invocation may run for 60 s server-side; botocore's default read timeout is 60 s.
RUNTIME_CONFIG = BOTO_CONFIG.merge(Config(read_timeout=120))

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
MODELS = ("sam3", "sam3d")
MODES = ("realtime", "async")
DEFAULT_TASK = {"sam3": "get_embedding", "sam3d": "generate_3d"}
SAM3D_OUTPUTS = ("ply", "glb", "pose")

_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_SUFFIX_FMT = "%Y%m%d-%H%M%S"
_SUFFIX_RE = r"-\d{8}-\d{6}"
_FAILED = ("Failed", "UpdateRollbackFailed")


class DeployError(RuntimeError):
    """Base error of this module."""


class GpuMemoryError(DeployError):
    """The instance type's GPUs are too small for the model (or unknown)."""


class EndpointFailedError(DeployError):
    """The endpoint reached a failed state."""


class AsyncInferenceError(DeployError):
    """An async invocation wrote its failure object."""


class SmokeTestError(DeployError):
    """A response did not report success or its outputs are missing."""


# --------------------------------------------------------------------------- GPU check


@dataclass(frozen=True)
class GpuSpec:
    """GPUs of one instance type: model name, memory per GPU, count."""

    gpu: str
    memory_gib: int
    count: int


def _family(prefix: str, gpu: str, gib: int) -> dict[str, GpuSpec]:
    counts = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
              "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
    return {f"{prefix}.{size}": GpuSpec(gpu, gib, n) for size, n in counts.items()}


INSTANCE_GPUS: dict[str, GpuSpec] = {
    **_family("ml.g5", "NVIDIA A10G", 24),
    **_family("ml.g6", "NVIDIA L4", 24),
    **_family("ml.g6e", "NVIDIA L40S", 48),
    "ml.p4d.24xlarge": GpuSpec("NVIDIA A100", 40, 8),
    "ml.p4de.24xlarge": GpuSpec("NVIDIA A100", 80, 8),
    "ml.p5.4xlarge": GpuSpec("NVIDIA H100", 80, 1),
    "ml.p5.48xlarge": GpuSpec("NVIDIA H100", 80, 8),
}
# One TorchServe worker holds the whole model on one GPU, so the need is per GPU.
MODEL_GPU_MEMORY_GIB: dict[str, int] = {"sam3": 16, "sam3d": 32}


def check_gpu_memory(model: str, instance_type: str) -> GpuSpec:
    """Return the instance's GPU spec, or raise GpuMemoryError if the model does not fit."""
    if model not in MODEL_GPU_MEMORY_GIB:
        raise GpuMemoryError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    need = MODEL_GPU_MEMORY_GIB[model]
    fitting = sorted({t.rsplit(".", 1)[0] + ".*" for t, s in INSTANCE_GPUS.items() if s.memory_gib >= need})
    spec = INSTANCE_GPUS.get(instance_type)
    if spec is None:
        raise GpuMemoryError(
            f"unknown GPU instance type {instance_type!r}: cannot check that {model} "
            f"(needs >= {need} GiB per GPU) fits; known types: {', '.join(sorted(INSTANCE_GPUS))}"
        )
    if spec.memory_gib < need:
        raise GpuMemoryError(
            f"refusing to deploy {model} on {instance_type}: it needs >= {need} GiB of GPU "
            f"memory on one GPU, but {instance_type} has {spec.count}x {spec.gpu} with "
            f"{spec.memory_gib} GiB each; use one of {', '.join(fitting)}"
        )
    return spec


# --------------------------------------------------------------------------- clients


@dataclass
class Clients:
    """The boto3 clients this module uses (real, dry-run or stubbed)."""

    s3: Any
    sagemaker: Any
    runtime: Any
    autoscaling: Any
    cloudwatch: Any


_SERVICES = {"s3": "s3", "sagemaker": "sagemaker", "runtime": "sagemaker-runtime",
             "autoscaling": "application-autoscaling", "cloudwatch": "cloudwatch"}


def make_clients(
    region: str | None = None,
    *,
    dry_run: bool = False,
    assume_exists: bool = False,
    out: IO[str] | None = None,
) -> Clients:
    """Build the five clients with standard retries; ``dry_run`` wraps them in DryRunClient."""
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


def _json_default(value: Any) -> Any:
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
        line = json.dumps(params, default=_json_default, sort_keys=True)
        print(f"DRY-RUN {self.service} {operation} {line}", file=self._rec.out or sys.stdout, flush=True)

    def _upload_file(self, Filename: str, Bucket: str, Key: str, **_: Any) -> None:  # noqa: N803
        self._record("upload_file", {"Bucket": Bucket, "Key": Key, "Filename": Filename,
                                     "Bytes": Path(Filename).stat().st_size})

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
            }.get(op, {"ModelName": name})
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
        if op == "DescribeAlarms":  # teardown dry runs (assume_exists) show the delete
            return {"MetricAlarms": [{"AlarmName": n} for n in p["AlarmNames"]] if self._rec.assume_exists else []}
        return {"ListEndpointConfigs": {"EndpointConfigs": []},
                "DescribeScalableTargets": {"ScalableTargets": []}}.get(op, {})


# --------------------------------------------------------------------------- helpers


def _say(out: IO[str] | None, message: str) -> None:
    print(message, file=out or sys.stdout, flush=True)


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _is_not_found(err: ClientError) -> bool:
    code = _error_code(err)
    message = str(err.response.get("Error", {}).get("Message", ""))
    if code in ("ValidationException", "ValidationError"):
        return "Could not find" in message or "does not exist" in message
    return code in ("ObjectNotFoundException", "ResourceNotFound", "ResourceNotFoundException",
                    "NoSuchKey", "NotFound", "404")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key)."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return match.group(1), match.group(2)


def validate_name(name: str) -> str:
    """Check a SageMaker resource name (1-63 chars, alphanumerics and hyphens)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid SageMaker name {name!r}: 1-63 chars of [a-zA-Z0-9-], "
                         "starting and ending alphanumeric")
    return name


def _name_base(base: str) -> str:
    return base[: 63 - 16].rstrip("-")  # room for "-YYYYmmdd-HHMMSS"


def unique_name(base: str, now: datetime | None = None) -> str:
    """``<base>-YYYYmmdd-HHMMSS`` (UTC), trimmed to SageMaker's 63-character limit."""
    stamp = (now or datetime.now(UTC)).strftime(_SUFFIX_FMT)
    return validate_name(f"{_name_base(base)}-{stamp}")


# --------------------------------------------------------------------------- S3 upload


@dataclass
class UploadResult:
    """Where an archive went: the S3 prefix URI (ends with '/'), keys and byte count."""

    s3_uri: str
    keys: list[str]
    total_bytes: int


def upload_model_archive(
    s3: Any, archive: str | Path, bucket: str, prefix: str, *, progress: bool = True
) -> UploadResult:
    """Upload a model archive uncompressed under ``s3://bucket/prefix/``.

    A directory (``torch-model-archiver --archive-format no-archive`` output) keeps its
    own name as the first path level; a ``.mar`` file is uploaded as is.  SageMaker then
    copies ``prefix/<name>[.mar]`` to ``/opt/ml/model/<name>[.mar]``.
    """
    root = Path(archive)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    elif root.is_file():
        files = [root]
    else:
        raise FileNotFoundError(f"model archive not found: {root}")
    if not files:
        raise FileNotFoundError(f"model archive directory is empty: {root}")
    prefix = prefix.strip("/")
    keys = [f"{prefix}/{p.relative_to(root.parent).as_posix()}".lstrip("/") for p in files]
    total = sum(p.stat().st_size for p in files)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"upload {root.name}", disable=not progress) as bar:
        for path, key in zip(files, keys, strict=True):
            s3.upload_file(Filename=str(path), Bucket=bucket, Key=key, Callback=bar.update)
    return UploadResult(f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/", keys, total)


# --------------------------------------------------------------------------- model / config / endpoint


def create_model(
    sm: Any,
    name: str,
    *,
    image_uri: str,
    model_data_s3_uri: str,
    role_arn: str,
    environment: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> str:
    """Create a Model whose data is the uncompressed S3 prefix; an existing one is replaced."""
    if not model_data_s3_uri.endswith("/"):
        raise ValueError("an S3Prefix model data URI must end with '/'")
    try:
        sm.describe_model(ModelName=name)
    except ClientError as err:
        if not _is_not_found(err):
            raise
    else:
        _say(out, f"model {name} exists; models are immutable, replacing it")
        sm.delete_model(ModelName=name)
    response = sm.create_model(
        ModelName=validate_name(name),
        ExecutionRoleArn=role_arn,
        PrimaryContainer={
            "Image": image_uri,
            "ModelDataSource": {"S3DataSource": {"S3Uri": model_data_s3_uri,
                                                 "S3DataType": "S3Prefix",
                                                 "CompressionType": "None"}},
            "Environment": dict(environment or {}),
        },
    )
    _say(out, f"created model {name}")
    return str(response["ModelArn"])


@dataclass
class AsyncConfig:
    """Async inference settings: S3 output and failure paths, concurrency per instance."""

    output_s3: str
    failure_s3: str
    max_concurrency: int = 1

    def to_api(self) -> dict[str, Any]:
        """The ``AsyncInferenceConfig`` request structure."""
        return {
            "OutputConfig": {"S3OutputPath": self.output_s3, "S3FailurePath": self.failure_s3},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": self.max_concurrency},
        }


def create_endpoint_config(
    sm: Any,
    name: str,
    *,
    model_name: str,
    instance_type: str,
    instance_count: int = 1,
    async_config: AsyncConfig | None = None,
    startup_timeout_s: int = 1200,
    download_timeout_s: int = 1200,
    inference_ami_version: str | None = None,
    out: IO[str] | None = None,
) -> str:
    """Create a one-variant EndpointConfig (real-time, or async when ``async_config``)."""
    variant: dict[str, Any] = {
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        # Big checkpoints: allow time to copy the S3 prefix and load it before /ping.
        "ModelDataDownloadTimeoutInSeconds": download_timeout_s,
        "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout_s,
    }
    if inference_ami_version:
        variant["InferenceAmiVersion"] = inference_ami_version
    params: dict[str, Any] = {"EndpointConfigName": validate_name(name), "ProductionVariants": [variant]}
    if async_config is not None:
        params["AsyncInferenceConfig"] = async_config.to_api()
    response = sm.create_endpoint_config(**params)
    _say(out, f"created endpoint config {name} ({'async' if async_config else 'realtime'}, "
              f"{instance_count}x {instance_type})")
    return str(response["EndpointConfigArn"])


def endpoint_exists(sm: Any, endpoint_name: str) -> bool:
    """True when describe_endpoint finds the endpoint."""
    try:
        sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as err:
        if _is_not_found(err):
            return False
        raise
    return True


def create_or_update_endpoint(
    sm: Any, endpoint_name: str, config_name: str, *, exists: bool | None = None, out: IO[str] | None = None
) -> str:
    """Create the endpoint, or point an existing one at ``config_name``; returns the action."""
    if exists is None:
        exists = endpoint_exists(sm, validate_name(endpoint_name))
    if exists:
        sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
        _say(out, f"updating endpoint {endpoint_name} -> {config_name}")
        return "updated"
    sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
    _say(out, f"creating endpoint {endpoint_name} with {config_name}")
    return "created"


def log_group(endpoint_name: str) -> str:
    """CloudWatch log group of an endpoint's containers."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"


def wait_for_endpoint(
    sm: Any,
    endpoint_name: str,
    *,
    expected_config: str | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 30.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll until InService (on ``expected_config`` if given); print status changes.

    Raises EndpointFailedError (with FailureReason and log group) or TimeoutError.
    """
    deadline = clock() + timeout_s
    last = None
    while True:
        desc = sm.describe_endpoint(EndpointName=endpoint_name)
        status = desc["EndpointStatus"]
        if status != last:
            _say(out, f"endpoint {endpoint_name}: {status}")
            last = status
        reason = desc.get("FailureReason")
        if status in _FAILED:
            raise EndpointFailedError(
                f"endpoint {endpoint_name} is {status}: {reason or 'no FailureReason given'}; "
                f"container logs: CloudWatch log group {log_group(endpoint_name)}")
        if status == "InService":
            if expected_config is None or desc.get("EndpointConfigName") == expected_config:
                return dict(desc)
            if reason:  # a failed update rolls back to the old config and stays InService
                raise EndpointFailedError(
                    f"update of {endpoint_name} to {expected_config} failed and was rolled back "
                    f"(still on {desc.get('EndpointConfigName')}): {reason}; container logs: "
                    f"CloudWatch log group {log_group(endpoint_name)}")
        if clock() >= deadline:
            raise TimeoutError(f"endpoint {endpoint_name} still {status} after {timeout_s:.0f} s; "
                               f"see CloudWatch log group {log_group(endpoint_name)}")
        sleep(poll_s)


# --------------------------------------------------------------------------- autoscaling


def scaling_names(endpoint_name: str, variant_name: str = VARIANT_NAME) -> dict[str, str]:
    """Resource id and the policy / alarm names this module uses for an endpoint."""
    return {
        "resource_id": f"endpoint/{endpoint_name}/variant/{variant_name}",
        "target_policy": f"{endpoint_name}-backlog-target-tracking",
        "step_policy": f"{endpoint_name}-scale-out-from-zero",
        "alarm": f"{endpoint_name}-has-backlog-without-capacity",
    }


def configure_async_autoscaling(
    aas: Any,
    cw: Any,
    endpoint_name: str,
    *,
    max_capacity: int = 1,
    target_backlog_per_instance: float = 5.0,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
    out: IO[str] | None = None,
) -> dict[str, str]:
    """Scale an async endpoint between 0 and ``max_capacity`` instances.

    AWS's documented pattern: target tracking on ApproximateBacklogSizePerInstance,
    plus a step policy fired by a HasBacklogWithoutCapacity alarm to leave zero.
    """
    if max_capacity < 1:
        raise ValueError("max_capacity must be >= 1")
    names = scaling_names(endpoint_name)
    target = {"ServiceNamespace": "sagemaker", "ResourceId": names["resource_id"],
              "ScalableDimension": SCALABLE_DIMENSION}
    dimensions = [{"Name": "EndpointName", "Value": endpoint_name}]
    aas.register_scalable_target(**target, MinCapacity=0, MaxCapacity=max_capacity)
    tracking = aas.put_scaling_policy(
        PolicyName=names["target_policy"], PolicyType="TargetTrackingScaling", **target,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target_backlog_per_instance,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                "Dimensions": dimensions, "Statistic": "Average"},
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        },
    )
    step = aas.put_scaling_policy(
        PolicyName=names["step_policy"], PolicyType="StepScaling", **target,
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
            "Cooldown": scale_out_cooldown_s,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    )
    cw.put_metric_alarm(
        AlarmName=names["alarm"],
        AlarmDescription=f"Scale {endpoint_name} out from 0 when requests are queued",
        MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker", Dimensions=dimensions,
        Statistic="Average", Period=60, EvaluationPeriods=2, DatapointsToAlarm=2,
        Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing", AlarmActions=[step["PolicyARN"]],
    )
    _say(out, f"autoscaling {names['resource_id']}: 0..{max_capacity} instances, "
              f"target backlog/instance {target_backlog_per_instance}")
    return {"target_policy_arn": str(tracking["PolicyARN"]), "step_policy_arn": str(step["PolicyARN"]),
            "alarm": names["alarm"]}


def has_scalable_target(aas: Any, endpoint_name: str) -> bool:
    """True when the endpoint's variant is registered with Application Auto Scaling."""
    response = aas.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[scaling_names(endpoint_name)["resource_id"]],
        ScalableDimension=SCALABLE_DIMENSION)
    return bool(response.get("ScalableTargets"))


def _tolerant(out: IO[str] | None, what: str, action: Callable[[], Any]) -> bool:
    """Run a delete; report 'already gone' on not-found errors.  True when deleted."""
    try:
        action()
    except ClientError as err:
        if not _is_not_found(err):
            raise
        _say(out, f"{what}: already gone")
        return False
    _say(out, f"{what}: deleted")
    return True


def remove_autoscaling(aas: Any, cw: Any, endpoint_name: str, *, out: IO[str] | None = None) -> None:
    """Delete the alarm, both policies and the scalable target (tolerant of absence)."""
    names = scaling_names(endpoint_name)
    target = {"ServiceNamespace": "sagemaker", "ResourceId": names["resource_id"],
              "ScalableDimension": SCALABLE_DIMENSION}
    if cw.describe_alarms(AlarmNames=[names["alarm"]]).get("MetricAlarms"):
        _tolerant(out, f"alarm {names['alarm']}", lambda: cw.delete_alarms(AlarmNames=[names["alarm"]]))
    else:
        _say(out, f"alarm {names['alarm']}: already gone")
    for policy in (names["target_policy"], names["step_policy"]):
        _tolerant(out, f"scaling policy {policy}",
                  lambda policy=policy: aas.delete_scaling_policy(PolicyName=policy, **target))
    _tolerant(out, f"scalable target {names['resource_id']}",
              lambda: aas.deregister_scalable_target(**target))


# --------------------------------------------------------------------------- invoke


def _read_json(body: Any, what: str) -> dict[str, Any]:
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
    return _read_json(response["Body"], f"response of {endpoint_name}")


def s3_object_exists(s3: Any, bucket: str, key: str) -> bool:
    """head_object; False on 404."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if _is_not_found(err):
            return False
        raise
    return True


def invoke_async(
    rt: Any,
    s3: Any,
    endpoint_name: str,
    payload: dict[str, Any],
    *,
    input_s3_uri: str,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Upload the payload to ``input_s3_uri``, invoke_endpoint_async, poll S3 for the result.

    Returns the output JSON; raises AsyncInferenceError when the failure object
    appears first, TimeoutError when neither appears in time.
    """
    bucket, key = parse_s3_uri(input_s3_uri)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(payload).encode(),
                  ContentType="application/json")
    response = rt.invoke_endpoint_async(EndpointName=endpoint_name, InputLocation=input_s3_uri,
                                        ContentType="application/json", Accept="application/json")
    output_uri = response["OutputLocation"]
    failure_uri = response.get("FailureLocation")
    _say(out, f"async inference {response.get('InferenceId')}: waiting for {output_uri}")
    deadline = clock() + timeout_s
    while True:
        out_bucket, out_key = parse_s3_uri(output_uri)
        if s3_object_exists(s3, out_bucket, out_key):
            body = s3.get_object(Bucket=out_bucket, Key=out_key)["Body"]
            return _read_json(body, output_uri)
        if failure_uri:
            fail_bucket, fail_key = parse_s3_uri(failure_uri)
            if s3_object_exists(s3, fail_bucket, fail_key):
                text = s3.get_object(Bucket=fail_bucket, Key=fail_key)["Body"].read()
                raise AsyncInferenceError(
                    f"async inference failed ({failure_uri}): {text.decode(errors='replace')[:2000]}; "
                    f"container logs: CloudWatch log group {log_group(endpoint_name)}")
        if clock() >= deadline:
            raise TimeoutError(f"no async result at {output_uri} after {timeout_s:.0f} s")
        sleep(poll_s)


def verify_response(s3: Any, response: dict[str, Any], bucket: str) -> list[str]:
    """Check status == "success" and that every S3 output it names exists; return their URIs."""
    if response.get("status") != "success":
        raise SmokeTestError(f"response status is {response.get('status')!r}, not 'success': {response}")
    bucket = str(response.get("output_bucket") or response.get("bucket") or bucket)
    keys: list[str] = []
    if response.get("output_s3_key"):
        keys.append(str(response["output_s3_key"]))
    outputs = response.get("outputs")
    if isinstance(outputs, dict):
        if response.get("task") == "generate_3d":
            missing = [name for name in SAM3D_OUTPUTS if not outputs.get(name)]
            if missing:
                raise SmokeTestError(f"generate_3d response lacks outputs {missing}: {response}")
        keys.extend(str(v) for v in outputs.values() if v)
    if not keys:
        raise SmokeTestError(f"response names no S3 output: {response}")
    uris = [f"s3://{bucket}/{key}" for key in keys]
    absent = [uri for uri, key in zip(uris, keys, strict=True) if not s3_object_exists(s3, bucket, key)]
    if absent:
        raise SmokeTestError(f"response claims outputs that do not exist: {', '.join(absent)}")
    return uris


def seed_png(size: int = 256) -> bytes:
    """A small RGB PNG (a bright disc on a dark background), made without PIL."""
    rows = bytearray()
    centre, radius = (size - 1) / 2, size / 3
    for y in range(size):
        rows.append(0)  # filter type: none
        for x in range(size):
            inside = (x - centre) ** 2 + (y - centre) ** 2 <= radius**2
            rows.extend((230, 120, 40) if inside else (20, 30, 60))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b""))


def default_payload(model: str, bucket: str, image_s3_key: str, session_id: str,
                    user_id: str = "sagemaker-smoke-test") -> dict[str, Any]:
    """The client contract's request for ``model``'s default task (generate_3d: the seed picture's disc as mask)."""
    payload: dict[str, Any] = {"task": DEFAULT_TASK[model], "image_s3_key": image_s3_key, "bucket": bucket,
                               "session_id": session_id, "user_id": user_id}
    if model == "sam3d":
        payload["mask_polygon"] = seed_disc_polygon()
    return payload


def seed_disc_polygon(size: int = 256, corners: int = 32) -> list[list[float]]:
    """The disc of :func:`seed_png` as a polygon in pixels ([[x, y], ...])."""
    centre, radius = (size - 1) / 2, size / 3
    return [[round(centre + radius * math.cos(2 * math.pi * i / corners), 2),
             round(centre + radius * math.sin(2 * math.pi * i / corners), 2)] for i in range(corners)]


# --------------------------------------------------------------------------- deploy / teardown


@dataclass
class DeploySpec:
    """Everything `deploy` needs.  ``archive`` or ``model_data_s3_uri`` must be given."""

    model: str
    bucket: str
    prefix: str
    image_uri: str
    role_arn: str
    instance_type: str
    endpoint_name: str
    mode: str = "realtime"
    archive: Path | None = None
    model_data_s3_uri: str | None = None
    instance_count: int = 1
    max_concurrency: int = 1
    max_instances: int = 1
    async_output_s3: str | None = None
    async_failure_s3: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    inference_ami_version: str | None = None
    autoscaling: bool = True

    def s3_base(self, part: str) -> str:
        """``s3://bucket/prefix/<part>/``."""
        return f"s3://{self.bucket}/{'/'.join(x for x in (self.prefix.strip('/'), part) if x)}/"


@dataclass
class DeployResult:
    """Names and ARNs produced by `deploy`."""

    endpoint_name: str
    model_name: str
    endpoint_config_name: str
    model_data_s3_uri: str
    action: str
    endpoint: dict[str, Any]
    autoscaling: dict[str, str] = field(default_factory=dict)


def deploy(
    clients: Clients,
    spec: DeploySpec,
    *,
    out: IO[str] | None = None,
    now: datetime | None = None,
    wait_timeout_s: float = 3600.0,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> DeployResult:
    """GPU check, upload, Model, EndpointConfig, Endpoint, wait, async autoscaling."""
    if spec.model not in MODELS or spec.mode not in MODES:
        raise ValueError(f"model must be one of {MODELS} and mode one of {MODES}")
    check_gpu_memory(spec.model, spec.instance_type)
    validate_name(spec.endpoint_name)
    name = unique_name(spec.endpoint_name, now)
    if spec.model_data_s3_uri:
        model_data = spec.model_data_s3_uri.rstrip("/") + "/"
    elif spec.archive is not None:
        # A fresh prefix per deployment: no stale files, and old configs keep their data.
        upload_prefix = parse_s3_uri(spec.s3_base(f"model/{name}"))[1]
        model_data = upload_model_archive(clients.s3, spec.archive, spec.bucket, upload_prefix,
                                          progress=progress).s3_uri
    else:
        raise ValueError("give an archive to upload or an existing model data S3 prefix")
    env = {"GEN3D_MODEL": spec.model, **spec.environment}
    create_model(clients.sagemaker, name, image_uri=spec.image_uri, model_data_s3_uri=model_data,
                 role_arn=spec.role_arn, environment=env, out=out)
    async_config = None
    if spec.mode == "async":
        output = spec.async_output_s3 or spec.s3_base("async/output")
        failure = spec.async_failure_s3 or spec.s3_base("async/failure")
        async_config = AsyncConfig(output, failure, spec.max_concurrency)
    create_endpoint_config(clients.sagemaker, name, model_name=name, instance_type=spec.instance_type,
                           instance_count=spec.instance_count, async_config=async_config,
                           inference_ami_version=spec.inference_ami_version, out=out)
    exists = endpoint_exists(clients.sagemaker, spec.endpoint_name)
    if exists and has_scalable_target(clients.autoscaling, spec.endpoint_name):
        # An update that changes the instance type of a scaled variant is rejected.
        _say(out, "removing autoscaling before the update; it is re-applied afterwards for async")
        remove_autoscaling(clients.autoscaling, clients.cloudwatch, spec.endpoint_name, out=out)
    action = create_or_update_endpoint(clients.sagemaker, spec.endpoint_name, name, exists=exists, out=out)
    desc = wait_for_endpoint(clients.sagemaker, spec.endpoint_name, expected_config=name,
                             timeout_s=wait_timeout_s, poll_s=poll_s, out=out, sleep=sleep)
    scaling: dict[str, str] = {}
    if spec.mode == "async" and spec.autoscaling:
        scaling = configure_async_autoscaling(clients.autoscaling, clients.cloudwatch,
                                              spec.endpoint_name, max_capacity=spec.max_instances,
                                              out=out)
    return DeployResult(spec.endpoint_name, name, name, model_data, action, desc, scaling)


def smoke_test(
    clients: Clients,
    endpoint_name: str,
    payload: dict[str, Any],
    *,
    mode: str,
    async_input_s3_uri: str | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], list[str]]:
    """Invoke once and verify the response; returns (response, verified output URIs)."""
    if mode == "async":
        if not async_input_s3_uri:
            raise ValueError("async smoke test needs an input S3 URI")
        response = invoke_async(clients.runtime, clients.s3, endpoint_name, payload,
                                input_s3_uri=async_input_s3_uri, timeout_s=timeout_s,
                                poll_s=poll_s, out=out, sleep=sleep)
    else:
        response = invoke_realtime(clients.runtime, endpoint_name, payload)
    return response, verify_response(clients.s3, response, str(payload.get("bucket", "")))


def _list_config_names(sm: Any, endpoint_name: str) -> list[str]:
    base = _name_base(endpoint_name)
    names: list[str] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"NameContains": base, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_endpoint_configs(**kwargs)
        names += [c["EndpointConfigName"] for c in page.get("EndpointConfigs", [])
                  if re.fullmatch(re.escape(base) + _SUFFIX_RE, c["EndpointConfigName"])]
        token = page.get("NextToken")
        if not token:
            return names


def teardown(
    clients: Clients,
    endpoint_name: str,
    *,
    out: IO[str] | None = None,
    wait: bool = False,
    timeout_s: float = 1200.0,
    poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, list[str]]:
    """Delete autoscaling, the endpoint, its configs (current and timestamped) and their models.

    Missing resources are reported as 'already gone'.  Returns what was deleted.
    """
    sm = clients.sagemaker
    deleted: dict[str, list[str]] = {"endpoint": [], "endpoint_config": [], "model": []}
    remove_autoscaling(clients.autoscaling, clients.cloudwatch, endpoint_name, out=out)
    configs: list[str] = []
    try:
        configs.append(sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"])
    except ClientError as err:
        if not _is_not_found(err):
            raise
        _say(out, f"endpoint {endpoint_name}: already gone")
    else:
        if _tolerant(out, f"endpoint {endpoint_name}", lambda: sm.delete_endpoint(EndpointName=endpoint_name)):
            deleted["endpoint"].append(endpoint_name)
    configs += [c for c in _list_config_names(sm, endpoint_name) if c not in configs]
    models: list[str] = []
    for config in configs:
        try:
            variants = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        except ClientError as err:
            if not _is_not_found(err):
                raise
            _say(out, f"endpoint config {config}: already gone")
            continue
        models += [v["ModelName"] for v in variants if v["ModelName"] not in models]
        if _tolerant(out, f"endpoint config {config}",
                     lambda config=config: sm.delete_endpoint_config(EndpointConfigName=config)):
            deleted["endpoint_config"].append(config)
    for model in models:
        if _tolerant(out, f"model {model}", lambda model=model: sm.delete_model(ModelName=model)):
            deleted["model"].append(model)
    if wait and deleted["endpoint"]:
        deadline = time.monotonic() + timeout_s
        while endpoint_exists(sm, endpoint_name):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"endpoint {endpoint_name} still deleting after {timeout_s:.0f} s")
            sleep(poll_s)
        _say(out, f"endpoint {endpoint_name}: deletion finished")
    return deleted


def new_session_id() -> str:
    """A random id for smoke-test requests."""
    return f"smoke-{uuid.uuid4().hex[:12]}"
