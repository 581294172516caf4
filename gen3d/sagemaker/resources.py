"""Model, EndpointConfig and Endpoint: create, and wait for InService (updates: update.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import ClientError

from gen3d.sagemaker.clients import VARIANT_NAME, is_not_found, say
from gen3d.sagemaker.errors import EndpointFailedError
from gen3d.sagemaker.names import log_group, validate_name
from gen3d.sagemaker.tags import tag_list

FAILED_STATUSES = ("Failed", "UpdateRollbackFailed")


def tag_param(tags: dict[str, str] | None) -> dict[str, Any]:
    """``Tags=[...]`` for a SageMaker create call, or nothing."""
    return {"Tags": tag_list(tags)} if tags else {}


def create_model(
    sm: Any,
    name: str,
    *,
    image_uri: str,
    model_data_s3_uri: str,
    role_arn: str,
    environment: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> str:
    """Create a Model whose data is the uncompressed S3 prefix, tagged ``tags``; an existing one is replaced."""
    if not model_data_s3_uri.endswith("/"):
        raise ValueError("an S3Prefix model data URI must end with '/'")
    try:
        sm.describe_model(ModelName=name)
    except ClientError as err:
        if not is_not_found(err):
            raise
    else:
        say(out, f"model {name} exists; models are immutable, replacing it")
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
        **tag_param(tags),
    )
    say(out, f"created model {name}")
    return str(response["ModelArn"])


@dataclass
class AsyncConfig:
    """Async inference settings: S3 output and failure paths, concurrency per instance, the SNS topics
    SageMaker notifies when a request succeeds or fails (none: no notifications), and the KMS key of the output."""

    output_s3: str
    failure_s3: str
    max_concurrency: int = 1
    success_topic: str | None = None
    error_topic: str | None = None
    kms_key_id: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The ``AsyncInferenceConfig`` request structure."""
        output: dict[str, Any] = {"S3OutputPath": self.output_s3, "S3FailurePath": self.failure_s3}
        topics = {"SuccessTopic": self.success_topic, "ErrorTopic": self.error_topic}
        if any(topics.values()):
            output["NotificationConfig"] = {key: arn for key, arn in topics.items() if arn}
        if self.kms_key_id:
            output["KmsKeyId"] = self.kms_key_id
        return {
            "OutputConfig": output,
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": self.max_concurrency},
        }


def create_endpoint_config(
    sm: Any,
    name: str,
    *,
    model_name: str,
    instance_type: str,
    instance_count: int = 1,
    startup_timeout_s: int,
    download_timeout_s: int,
    async_config: AsyncConfig | None = None,
    inference_ami_version: str | None = None,
    kms_key_id: str | None = None,
    tags: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> str:
    """Create a one-variant EndpointConfig (real-time, or async when ``async_config``), tagged ``tags``; the
    timeouts come from :func:`gen3d.sagemaker.timeouts.derive_timeouts`; ``kms_key_id`` encrypts the ML storage
    volume (see :func:`gen3d.sagemaker.kms.volume_kms_key`)."""
    variant: dict[str, Any] = {
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "ModelDataDownloadTimeoutInSeconds": download_timeout_s,
        "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout_s,
    }
    if inference_ami_version:
        variant["InferenceAmiVersion"] = inference_ami_version
    params: dict[str, Any] = {"EndpointConfigName": validate_name(name), "ProductionVariants": [variant]}
    if async_config is not None:
        params["AsyncInferenceConfig"] = async_config.to_api()
    if kms_key_id:
        params["KmsKeyId"] = kms_key_id
    response = sm.create_endpoint_config(**params, **tag_param(tags))
    say(out, f"created endpoint config {name} ({'async' if async_config else 'realtime'}, "
              f"{instance_count}x {instance_type}, health check {startup_timeout_s} s, "
              f"download {download_timeout_s} s)")
    return str(response["EndpointConfigArn"])


def create_endpoint(
    sm: Any,
    endpoint_name: str,
    config_name: str,
    *,
    tags: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> str:
    """Create the endpoint on ``config_name``, tagged ``tags`` (an existing one is updated by
    :func:`gen3d.sagemaker.update.update_endpoint`); returns its ARN."""
    arn = sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name,
                             **tag_param(tags))["EndpointArn"]
    say(out, f"creating endpoint {endpoint_name} with {config_name}")
    return str(arn)


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
            say(out, f"endpoint {endpoint_name}: {status}")
            last = status
        reason = desc.get("FailureReason")
        if status in FAILED_STATUSES:
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
