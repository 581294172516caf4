"""Helpers of the SageMaker control-plane tests (fixtures are in tests/unit/conftest.py): constants, stubbed
answers, a fake clock, the CLI scripts run in a clean AWS environment, and small archives. Nothing leaves
127.0.0.1: every AWS endpoint is moto's local server or the discard port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import requests
import yaml
from botocore.stub import ANY, Stubber

from gen3d.sagemaker import clients as aws
from tests.conftest import REPO

SCRIPTS = REPO / "scripts"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: its ECR registry id
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-exec"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gen3d:sam3"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:gen3d-alerts"
NOW = datetime(2025, 11, 28, 13, 5, 9, tzinfo=UTC)
STAMPED = "sam3-rt-20251128-130509"
T0 = datetime(2025, 11, 28, tzinfo=UTC)
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: anything sent by mistake fails at once, locally
DEFAULT_AMI = "al2-ami-sagemaker-inference-gpu-3-1"  # driver 550: what every deploy sends unless told otherwise


def clean_aws_env(env: dict[str, str]) -> dict[str, str]:
    """Dummy credentials, fixed region, no profile files, every endpoint on 127.0.0.1."""
    for key in [k for k in env if k.startswith("AWS_")]:
        del env[key]
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=DEAD_ENDPOINT)
    return env


def client(service: str):
    return boto3.client(service, region_name=REGION, config=aws.BOTO_CONFIG)


def not_found(stub: Stubber, method: str, params: dict, what: str = "resource") -> None:
    stub.add_client_error(method, service_error_code="ValidationException",
                          service_message=f'Could not find {what} "x".', http_status_code=400,
                          expected_params=params)


def endpoint_desc(name: str, status: str, config: str, reason: str | None = None) -> dict:
    desc = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": T0, "LastModifiedTime": T0}
    if reason:
        desc["FailureReason"] = reason
    return desc


def model_data_source(uri) -> dict:
    return {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix", "CompressionType": "None"}}


def variant(model: str, instance_type: str, count: int = 1, health: int = 1920, download: int = 1920,
            ami: str | None = DEFAULT_AMI) -> dict:
    sent = {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": instance_type,
            "InitialInstanceCount": count, "ModelDataDownloadTimeoutInSeconds": download,
            "ContainerStartupHealthCheckTimeoutInSeconds": health}
    return {**sent, "InferenceAmiVersion": ami} if ami else sent


class FakeClock:
    """A monotonic clock that only moves when slept on."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def clients_from(made: dict, s3=None, runtime=None, ecr=None, logs=None, tagging=None) -> aws.Clients:
    """Clients from the ``stubbed`` fixture's stubbed clients plus real (moto) ones."""
    return aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=runtime,
                       autoscaling=made["application-autoscaling"], cloudwatch=made["cloudwatch"], ecr=ecr, logs=logs,
                       tagging=tagging)


PRODUCTION_PRESETS = {"sam3": "sam3", "sam3d": "sam3d-objects", "sam3d_body": "sam3d-body-vith"}  # real weights


def write_archive(folder: Path, name: str = "sam3", startup: float = 600, response: float = 300,
                  payload: bytes = b"w" * 1000, handler: dict | None = None) -> Path:
    """A minimal no-archive model directory whose model-config.yaml says ``startup`` / ``response`` and, unless
    ``handler`` says otherwise, that it holds the production weights of ``name``."""
    archive = folder / name
    (archive / "MAR-INF").mkdir(parents=True, exist_ok=True)
    (archive / "MAR-INF" / "MANIFEST.json").write_text(json.dumps({"model": {"modelName": name}}))
    production = {"checkpoint": "weights.bin", "preset": PRODUCTION_PRESETS[name], "demo_weights": False}
    (archive / "model-config.yaml").write_text(yaml.safe_dump(
        {"startupTimeout": startup, "responseTimeout": response,
         "handler": production if handler is None else handler}))
    (archive / "weights.bin").write_bytes(payload)
    return archive


def run_script(name: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = clean_aws_env(dict(os.environ))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd="/")


def dry_run_calls(stdout: str) -> list[tuple[str, str, dict]]:
    calls = []
    for line in stdout.splitlines():
        if line.startswith("DRY-RUN "):
            _, service, operation, params = line.split(" ", 3)
            calls.append((service, operation, json.loads(params)))
    return calls


def set_moto_async_results(url: str, results: list[dict]) -> None:
    requests.post(f"{url}/moto-api/static/sagemaker/async-endpoint-results",
                  json={"region": REGION, "results": results}, timeout=10).raise_for_status()


def set_moto_realtime_results(url: str, bodies: list[dict]) -> None:
    requests.post(f"{url}/moto-api/static/sagemaker/endpoint-results", timeout=10, json={
        "region": REGION, "results": [{"Body": json.dumps(b), "ContentType": "application/json",
                                       "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}
                                      for b in bodies]}).raise_for_status()


def deploy_tags(endpoint: str, **extra: str) -> list[dict[str, str]]:
    """The tags a deploy puts on every resource it creates, in SageMaker's form."""
    tags = {"project": "gen3d", **extra, "gen3d:endpoint": endpoint}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def expect_alarm_tagging(cw: Stubber, endpoint: str, present: list[str] | None = None,
                         tags: list | None = None) -> None:
    """The deploy's last step: the endpoint's alarms that exist (``present``) tagged like the rest."""
    names = [f"{endpoint}-{kind}" for kind in ("invocation-5xx-errors", "invocation-model-errors",
                                              "invocation-failures", "notification-failures", "oldest-request-age",
                                              "has-backlog-without-capacity")]
    arns = {name: f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}" for name in present or []}
    cw.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": n, "AlarmArn": a} for n, a in arns.items()]},
                    {"AlarmNames": names})
    for arn in arns.values():
        cw.add_response("tag_resource", {}, {"ResourceARN": arn, "Tags": tags or deploy_tags(endpoint)})


OLD_CONFIG = "old-config-20251101-000000"  # what a running endpoint is on before the deploy updates it
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def expect_running(stubs: dict, endpoint: str, *, instance_type: str = "ml.g5.2xlarge", count: int = 1,
                   mode: str = "realtime", scaled: bool | None = False, status: str = "InService",
                   variant_name: str = "AllTraffic") -> None:
    """The reads that find an endpoint running OLD_CONFIG (DescribeEndpoint, DescribeEndpointConfig and, unless
    ``scaled`` is None because autoscaling is moto's, the scalable target)."""
    sm = stubs["sagemaker"]
    sm.add_response("describe_endpoint", {**endpoint_desc(endpoint, status, OLD_CONFIG), "ProductionVariants": [
        {"VariantName": variant_name, "CurrentInstanceCount": count, "DesiredInstanceCount": count}]},
        {"EndpointName": endpoint})
    config = {"EndpointConfigName": OLD_CONFIG, "CreationTime": T0, "ProductionVariants": [
        {"VariantName": variant_name, "ModelName": OLD_CONFIG, "InstanceType": instance_type,
         "InitialInstanceCount": 1}],
        "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{OLD_CONFIG}"}
    if mode == "async":
        config["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": "s3://bkt/out/"}}
    sm.add_response("describe_endpoint_config", config, {"EndpointConfigName": OLD_CONFIG})
    if scaled is not None:
        target = {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{endpoint}/variant/AllTraffic",
                  "ScalableDimension": SCALABLE_DIMENSION, "MinCapacity": 0, "MaxCapacity": 1,
                  "RoleARN": ROLE, "CreationTime": T0}
        stubs["application-autoscaling"].add_response(
            "describe_scalable_targets", {"ScalableTargets": [target] if scaled else []},
            {"ServiceNamespace": "sagemaker", "ResourceIds": [f"endpoint/{endpoint}/variant/AllTraffic"],
             "ScalableDimension": SCALABLE_DIMENSION})


def expect_deploy(stubs: dict, endpoint: str, name: str, instance_type: str, *, exists: bool,
                  timeouts: tuple[int, int], env=ANY, async_paths: tuple[str, str] | None = None,
                  notification: dict | None = None, image: str = IMAGE, tags: list | None = None,
                  output_kms_key: str | None = None, count: int = 1,
                  running: dict | None = None, rollback_present: tuple[str, ...] | list[str] | None = (),
                  update=ANY, waiting: list[dict] | None = None) -> None:
    """The SageMaker calls of one deploy (up to InService), stubbed in order. ``exists``: the endpoint runs (see
    :func:`expect_running`, given ``running``), and the update's DescribeAlarms (of the rollback alarms, stubbed
    with ``rollback_present`` unless None), UpdateEndpoint (``update``: the parameters besides the names) and
    AddTags follow the EndpointConfig. ``waiting``: DescribeEndpoint's answers until the end (default: then
    InService). Every created resource carries ``tags`` (default: :func:`deploy_tags`)."""
    sm = stubs["sagemaker"]
    tags = tags or deploy_tags(endpoint)
    if exists:
        expect_running(stubs, endpoint, **(running or {}))
    else:
        not_found(sm, "describe_endpoint", {"EndpointName": endpoint}, "endpoint")
    not_found(sm, "describe_model", {"ModelName": name}, "model")
    sm.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}"}, {
        "ModelName": name, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": image, "ModelDataSource": model_data_source(ANY), "Environment": env},
        "Tags": tags})
    config = {"EndpointConfigName": name, "ProductionVariants": [
        variant(name, instance_type, count=count, health=timeouts[0], download=timeouts[1])], "Tags": tags}
    if async_paths:
        output = {"S3OutputPath": async_paths[0], "S3FailurePath": async_paths[1]}
        if notification:
            output["NotificationConfig"] = notification
        if output_kms_key:
            output["KmsKeyId"] = output_kms_key
        config["AsyncInferenceConfig"] = {"OutputConfig": output,
                                          "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}}
    sm.add_response("create_endpoint_config",
                    {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{name}"}, config)
    endpoint_arn = {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{endpoint}"}
    if exists:
        if rollback_present is not None:
            kinds = ["invocation-failures"] if async_paths else ["invocation-5xx-errors", "invocation-model-errors"]
            stubs["cloudwatch"].add_response(
                "describe_alarms", {"MetricAlarms": [{"AlarmName": a} for a in rollback_present]},
                {"AlarmNames": [f"{endpoint}-{kind}" for kind in kinds]})
        params = {"EndpointName": endpoint, "EndpointConfigName": name}
        sm.add_response("update_endpoint", endpoint_arn, {**params, **update} if isinstance(update, dict) else {
            **params, "RetainAllVariantProperties": True, "DeploymentConfig": update})
        sm.add_response("add_tags", {"Tags": tags}, {"ResourceArn": endpoint_arn["EndpointArn"], "Tags": tags})
    else:
        sm.add_response("create_endpoint", endpoint_arn, {"EndpointName": endpoint, "EndpointConfigName": name,
                                                          "Tags": tags})
    for desc in waiting or [endpoint_desc(endpoint, "Updating" if exists else "Creating", name),
                            endpoint_desc(endpoint, "InService", name)]:
        sm.add_response("describe_endpoint", desc, {"EndpointName": endpoint})
