"""Deploy and tear down: GPU check, upload, Model, EndpointConfig, Endpoint, wait, autoscaling, smoke test."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError, WaiterError

from gen3d.models import MODELS
from gen3d.sagemaker.autoscaling import configure_async_autoscaling, has_scalable_target, remove_autoscaling
from gen3d.sagemaker.clients import Clients, is_not_found, say, tolerant
from gen3d.sagemaker.gpus import check_gpu_memory
from gen3d.sagemaker.invoke import invoke_async, invoke_realtime, verify_response
from gen3d.sagemaker.names import SUFFIX_RE, name_base, parse_s3_uri, unique_name, validate_name
from gen3d.sagemaker.resources import (
    AsyncConfig,
    create_endpoint_config,
    create_model,
    create_or_update_endpoint,
    endpoint_exists,
    wait_for_endpoint,
)
from gen3d.sagemaker.upload import upload_model_archive

MODES = ("realtime", "async")


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
        raise ValueError(f"model must be one of {list(MODELS)} and mode one of {MODES}")
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
        say(out, "removing autoscaling before the update; it is re-applied afterwards for async")
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


def list_config_names(sm: Any, endpoint_name: str) -> list[str]:
    base = name_base(endpoint_name)
    names: list[str] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"NameContains": base, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_endpoint_configs(**kwargs)
        names += [c["EndpointConfigName"] for c in page.get("EndpointConfigs", [])
                  if re.fullmatch(re.escape(base) + SUFFIX_RE, c["EndpointConfigName"])]
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
) -> dict[str, list[str]]:
    """Delete autoscaling, the endpoint, its configs (current and timestamped) and their models; with ``wait``,
    botocore's ``endpoint_deleted`` waiter polls until the endpoint is gone.

    Missing resources are reported as 'already gone'.  Returns what was deleted.
    """
    sm = clients.sagemaker
    deleted: dict[str, list[str]] = {"endpoint": [], "endpoint_config": [], "model": []}
    remove_autoscaling(clients.autoscaling, clients.cloudwatch, endpoint_name, out=out)
    configs: list[str] = []
    try:
        configs.append(sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"])
    except ClientError as err:
        if not is_not_found(err):
            raise
        say(out, f"endpoint {endpoint_name}: already gone")
    else:
        if tolerant(out, f"endpoint {endpoint_name}", lambda: sm.delete_endpoint(EndpointName=endpoint_name)):
            deleted["endpoint"].append(endpoint_name)
    configs += [c for c in list_config_names(sm, endpoint_name) if c not in configs]
    models: list[str] = []
    for config in configs:
        try:
            variants = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        except ClientError as err:
            if not is_not_found(err):
                raise
            say(out, f"endpoint config {config}: already gone")
            continue
        models += [v["ModelName"] for v in variants if v["ModelName"] not in models]
        if tolerant(out, f"endpoint config {config}",
                     lambda config=config: sm.delete_endpoint_config(EndpointConfigName=config)):
            deleted["endpoint_config"].append(config)
    for model in models:
        if tolerant(out, f"model {model}", lambda model=model: sm.delete_model(ModelName=model)):
            deleted["model"].append(model)
    if wait and deleted["endpoint"]:
        delay = max(1, round(poll_s))
        try:
            sm.get_waiter("endpoint_deleted").wait(
                EndpointName=endpoint_name,
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout_s / delay))},
            )
        except WaiterError as err:
            raise TimeoutError(f"endpoint {endpoint_name} still deleting after {timeout_s:.0f} s: {err}") from err
        say(out, f"endpoint {endpoint_name}: deletion finished")
    return deleted
