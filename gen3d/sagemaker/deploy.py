"""Deploy: GPU checks, the archive's weights and start-up timeouts, what runs now (read before anything is
written), log group, upload, Model, EndpointConfig, failure alarms, Endpoint (created, or updated as update.py
describes), wait, autoscaling, every resource tagged; and the smoke request the deployment checklist then judges."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.models import MODELS
from gen3d.sagemaker.alarms import AlarmSettings, put_failure_alarms
from gen3d.sagemaker.autoscaling import ScalingPlan, apply_scaling
from gen3d.sagemaker.checklist import SmokeOutcome
from gen3d.sagemaker.clients import Clients, say
from gen3d.sagemaker.entrypoint import DEFAULT_READY_MARGIN_S
from gen3d.sagemaker.errors import DeployError
from gen3d.sagemaker.gpus import check_gpu_memory, choose_inference_ami
from gen3d.sagemaker.invoke import invoke_realtime, start_async, wait_async
from gen3d.sagemaker.kms import volume_kms_key
from gen3d.sagemaker.log_group import DEFAULT_RETENTION_DAYS, check_retention, prepare_log_group
from gen3d.sagemaker.names import parse_s3_uri, unique_name, validate_name
from gen3d.sagemaker.resources import (
    AsyncConfig,
    create_endpoint,
    create_endpoint_config,
    create_model,
    wait_for_endpoint,
)
from gen3d.sagemaker.tags import resource_tags, s3_tagging, tag_alarms
from gen3d.sagemaker.timeouts import ArchiveNeeds, Timeouts, derive_timeouts, local_needs, s3_needs
from gen3d.sagemaker.update import (
    MAX_CANARY_PERCENT,
    bake_s,
    check_update,
    deployment_config,
    read_running,
    rollback_alarms,
    update_endpoint,
)
from gen3d.sagemaker.upload import upload_model_archive
from gen3d.serving.buckets import ENV as BUCKETS_ENV

MODES = ("realtime", "async")
PROVISIONING_S = 900  # instance launch and image pull, before the model download starts
REALTIME_INVOCATION_S = 60  # SageMaker's limit on one real-time invocation


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
    instance_count: int = 1  # of a new endpoint; an update keeps the running count
    max_concurrency: int = 1
    min_instances: int | None = None  # async: 0; real-time: instance_count
    max_instances: int | None = None  # async: 1; real-time: min_instances (no autoscaling)
    target_invocations: float | None = None  # real-time autoscaling: invocations per instance per minute
    async_output_s3: str | None = None
    async_failure_s3: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    allowed_buckets: list[str] | None = None  # GEN3D_ALLOWED_BUCKETS; default [bucket]
    inference_ami_version: str | None = None  # None: gpus.DEFAULT_INFERENCE_AMI; gpus.NO_INFERENCE_AMI: send none
    autoscaling: bool = True
    sns_topic_arn: str | None = None  # failure alarms; async: error (and success) notifications
    sns_success_topic_arn: str | None = None  # async success notifications (default: sns_topic_arn)
    alarms: AlarmSettings = field(default_factory=AlarmSettings)
    health_check_timeout_s: int | None = None
    download_timeout_s: int | None = None
    tags: dict[str, str] = field(default_factory=dict)  # --tag; resource_tags() adds project and the endpoint
    log_retention_days: int = DEFAULT_RETENTION_DAYS
    kms_key_id: str | None = None  # model data upload, async output, and the volume where allowed (kms.py)
    allow_demo_weights: bool = False  # deploy an archive built from demo weights (refused otherwise)
    allow_realtime_sam3d: bool = False  # sam3d on a real-time endpoint, whose invocations SageMaker cuts at 60 s
    canary_percent: int | None = None  # update: shift this share of the new fleet first (default: all at once)

    def check(self) -> None:
        """Everything the spec alone can be refused for, before any AWS call: the model and mode, the instance's GPU
        memory (GpuMemoryError), the GPU driver, the endpoint name, the instance counts and the container environment
        (ValueError naming the flag)."""
        if self.model not in MODELS or self.mode not in MODES:
            raise ValueError(f"model must be one of {list(MODELS)} and mode one of {MODES}")
        check_gpu_memory(self.model, self.instance_type)
        self.inference_ami()
        validate_name(self.endpoint_name)
        self.capacity()
        self.container_environment()
        self.resource_tags()
        check_retention(self.log_retention_days)
        if self.canary_percent is not None and not 1 <= self.canary_percent <= MAX_CANARY_PERCENT:
            raise ValueError(f"--canary is a percentage of the new fleet, 1..{MAX_CANARY_PERCENT}")
        if self.model == "sam3d" and self.mode == "realtime" and not self.allow_realtime_sam3d:
            raise ValueError(f"refusing sam3d on a real-time endpoint: SageMaker cuts a real-time invocation at "
                             f"{REALTIME_INVOCATION_S} s and generate_3d takes longer; use --mode async, or "
                             "--allow-realtime-sam3d to deploy it anyway")

    def resource_tags(self) -> dict[str, str]:
        """The tags of every resource the deploy creates (ValueError naming --tag)."""
        return resource_tags(self.endpoint_name, self.tags)

    def inference_ami(self) -> tuple[str | None, str]:
        """The variant's InferenceAmiVersion (None: none) and why its driver runs the image (see gpus.py)."""
        return choose_inference_ami(self.model, self.instance_type, self.inference_ami_version)

    def s3_base(self, part: str) -> str:
        """``s3://bucket/prefix/<part>/``."""
        return f"s3://{self.bucket}/{'/'.join(x for x in (self.prefix.strip('/'), part) if x)}/"

    def capacity(self) -> tuple[int, int, bool]:
        """(min, max, autoscaled) instances, checked; ValueError naming the flag otherwise."""
        if self.mode == "async":
            low, high = self.min_instances or 0, self.max_instances or 1
            if not 0 <= low <= high or high < 1:
                raise ValueError(f"async autoscaling needs 0 <= --min-instances ({low}) <= --max-instances ({high})")
            return low, high, self.autoscaling
        low = self.instance_count if self.min_instances is None else self.min_instances
        high = low if self.max_instances is None else self.max_instances
        if not 1 <= low <= high:
            raise ValueError(f"real-time endpoints need 1 <= --min-instances ({low}) <= --max-instances ({high})")
        scaled = self.autoscaling and high > low
        if scaled and not self.target_invocations:
            raise ValueError("real-time autoscaling (--max-instances above --min-instances) needs "
                             "--target-invocations: invocations per instance per minute to hold; measure what one "
                             "instance answers (gen3d-bench) and take a fraction of it")
        return low, high, scaled

    def scaling(self) -> ScalingPlan:
        """The autoscaling to put in place (see :meth:`capacity`)."""
        low, high, scaled = self.capacity()
        return ScalingPlan(self.mode, low, high, scaled, self.target_invocations, self.resource_tags())

    def container_environment(self) -> dict[str, str]:
        """The Model's Environment: the model to serve, the buckets it may touch, the ready margin; --env wins."""
        buckets = self.allowed_buckets or [self.bucket]
        env = {"GEN3D_MODEL": self.model, BUCKETS_ENV: ",".join(buckets),
               "GEN3D_READY_MARGIN_S": str(DEFAULT_READY_MARGIN_S), **self.environment}
        margin = env["GEN3D_READY_MARGIN_S"]
        if not margin.isdigit():
            raise ValueError(f"GEN3D_READY_MARGIN_S must be whole seconds, got {margin!r}")
        return env


@dataclass
class DeployResult:
    """Names, settings and ARNs produced by `deploy`."""

    endpoint_name: str
    model_name: str
    model_data_s3_uri: str
    action: str
    endpoint: dict[str, Any]
    timeouts: Timeouts
    needs: ArchiveNeeds
    autoscaling: dict[str, str] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)

    @property
    def endpoint_config_name(self) -> str:
        """The endpoint config deploy made: named like its model (one stamped name for both)."""
        return self.model_name


def archive_needs(clients: Clients, spec: DeploySpec) -> ArchiveNeeds:
    """What the archive to be served says about its start-up (read before anything is uploaded or created)."""
    if spec.archive is not None:
        return local_needs(spec.archive, spec.model)
    if spec.model_data_s3_uri:
        return s3_needs(clients.s3, spec.model_data_s3_uri, spec.model)
    raise ValueError("give an archive to upload or an existing model data S3 prefix")


def deploy(
    clients: Clients,
    spec: DeploySpec,
    *,
    out: IO[str] | None = None,
    now: datetime | None = None,
    wait_timeout_s: float | None = None,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> DeployResult:
    """Checks, timeouts, upload, Model, EndpointConfig, failure alarms, Endpoint, wait, autoscaling; DeployRefused
    before anything is written when the deploy cannot work. ``wait_timeout_s`` defaults to provisioning + download
    + health-check timeouts (+ an update's bake)."""
    spec.check()
    scaling = spec.scaling()
    env = spec.container_environment()
    needs = archive_needs(clients, spec)
    say(out, needs.check_weights(spec.allow_demo_weights))
    timeouts = derive_timeouts(needs, ready_margin_s=int(env["GEN3D_READY_MARGIN_S"]),
                               health_check_s=spec.health_check_timeout_s, download_s=spec.download_timeout_s)
    say(out, f"start-up timeouts: health check {timeouts.health_check_s} s, model download {timeouts.download_s} s "
             f"({timeouts.explanation})")
    ami, why = spec.inference_ami()
    say(out, why)
    running = read_running(clients.sagemaker, clients.autoscaling, spec.endpoint_name)  # reads only
    if running is not None:
        check_update(running, spec.mode, spec.canary_percent, spec.instance_count)
    name = unique_name(spec.endpoint_name, now)
    tags = spec.resource_tags()
    prepare_log_group(clients.logs, spec.endpoint_name, spec.log_retention_days, tags, out=out)
    if spec.archive is not None:
        # A fresh prefix per deployment: no stale files, and old configs keep their data.
        upload_prefix = parse_s3_uri(spec.s3_base(f"model/{name}"))[1]
        model_data = upload_model_archive(clients.s3, spec.archive, spec.bucket, upload_prefix, progress=progress,
                                          tagging=s3_tagging(tags), kms_key_id=spec.kms_key_id).s3_uri
    else:
        model_data = str(spec.model_data_s3_uri).rstrip("/") + "/"
    create_model(clients.sagemaker, name, image_uri=spec.image_uri, model_data_s3_uri=model_data,
                 role_arn=spec.role_arn, environment=env, tags=tags, out=out)
    async_config = None
    if spec.mode == "async":
        async_config = AsyncConfig(spec.async_output_s3 or spec.s3_base("async/output"),
                                   spec.async_failure_s3 or spec.s3_base("async/failure"), spec.max_concurrency,
                                   success_topic=spec.sns_success_topic_arn or spec.sns_topic_arn,
                                   error_topic=spec.sns_topic_arn, kms_key_id=spec.kms_key_id)
    volume_key = volume_kms_key(spec.instance_type, spec.kms_key_id)
    if spec.kms_key_id and not volume_key:
        say(out, f"--kms-key-id: {spec.instance_type}'s volume is NVMe instance storage, encrypted by the instance "
                 "(SageMaker refuses a KmsKeyId for it); the key encrypts the uploaded model data"
                 + (" and the async output" if async_config else ""))
    count = running.update_count(spec.instance_count) if running else spec.instance_count
    create_endpoint_config(clients.sagemaker, name, model_name=name, instance_type=spec.instance_type,
                           instance_count=count, async_config=async_config,
                           startup_timeout_s=timeouts.health_check_s, download_timeout_s=timeouts.download_s,
                           inference_ami_version=ami, kms_key_id=volume_key, tags=tags, out=out)
    alarms: list[str] = []  # before the endpoint changes: an update rolls back on them
    if spec.sns_topic_arn:
        alarms = put_failure_alarms(clients.cloudwatch, spec.endpoint_name, spec.mode, spec.sns_topic_arn,
                                    spec.alarms, out=out)
    else:
        say(out, "no --sns-topic-arn: no failure alarms (existing ones are left as they are)")
    start_s = PROVISIONING_S + timeouts.download_s + timeouts.health_check_s
    if running is None:
        create_endpoint(clients.sagemaker, spec.endpoint_name, name, tags=tags, out=out)
        action = "created"
        desc = wait_for_endpoint(clients.sagemaker, spec.endpoint_name, expected_config=name,
                                 timeout_s=wait_timeout_s or start_s, poll_s=poll_s, out=out, sleep=sleep)
        scaled = apply_scaling(clients.autoscaling, clients.cloudwatch, spec.endpoint_name, scaling, out=out)
    else:
        rollback = rollback_alarms(clients.cloudwatch, spec.endpoint_name, spec.mode, alarms)
        wait_s = wait_timeout_s or start_s + bake_s(rollback, spec.canary_percent)
        action = "updated"
        desc, scaled = update_endpoint(clients, running, name, instance_type=spec.instance_type, scaling=scaling,
                                       deployment=deployment_config(rollback, spec.canary_percent, round(wait_s)),
                                       tags=tags, timeout_s=wait_s, poll_s=poll_s, out=out, sleep=sleep)
    tag_alarms(clients.cloudwatch, spec.endpoint_name, tags, out=out)  # the scaling alarm exists only now
    return DeployResult(spec.endpoint_name, name, model_data, action, desc, timeouts, needs, scaled, alarms)


def run_smoke(
    clients: Clients,
    endpoint_name: str,
    payload: dict[str, Any],
    *,
    mode: str,
    expected_model_id: str | None = None,
    async_input_s3_uri: str | None = None,
    invocation_timeout_s: int | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 5.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SmokeOutcome:
    """Send the smoke request once; its response or error is kept for the checklist to judge, with the
    ``model_id`` prefix the answer must carry (:meth:`ArchiveNeeds.model_id_prefix`)."""
    outcome = SmokeOutcome(task=str(payload.get("task")), bucket=str(payload.get("bucket", "")), mode=mode,
                           expected_model_id=expected_model_id)
    try:
        if mode == "async":
            if not async_input_s3_uri:
                raise ValueError("async smoke test needs an input S3 URI")
            outcome.invocation = start_async(clients.runtime, clients.s3, endpoint_name, payload,
                                             input_s3_uri=async_input_s3_uri,
                                             invocation_timeout_s=invocation_timeout_s)
            outcome.response = wait_async(clients.s3, endpoint_name, outcome.invocation, timeout_s=timeout_s,
                                          poll_s=poll_s, out=out, sleep=sleep)
        else:
            outcome.response = invoke_realtime(clients.runtime, endpoint_name, payload)
    except (DeployError, TimeoutError, ClientError, BotoCoreError, ValueError) as err:
        outcome.error = f"{type(err).__name__}: {err}"
    return outcome
