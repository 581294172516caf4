"""Deploy the sam3, sam3d or sam3d_body TorchServe image to a SageMaker endpoint, smoke-test it and run the checklist.

Steps: GPU memory check; GPU driver check (InferenceAmiVersion, default al2-ami-sagemaker-inference-gpu-3-1:
driver 550; SageMaker's default driver 470 on ml.g5 cannot run the CUDA 12 images); archives built from demo
weights refused (--allow-demo-weights), sam3d on real-time refused (--allow-realtime-sam3d: SageMaker cuts a
real-time invocation at 60 s); what runs now read, and a switch between real-time and async refused; start-up
timeouts derived from the archive's model-config.yaml (startupTimeout + GEN3D_READY_MARGIN_S + 60 s, never below
it, 60..3600 s); the endpoint's log group with --log-retention-days; upload of the model archive to S3
(uncompressed); Model (GEN3D_MODEL, GEN3D_ALLOWED_BUCKETS, GEN3D_READY_MARGIN_S); EndpointConfig (real-time, or
async with S3 output/failure paths and SNS notifications); CloudWatch failure alarms notifying --sns-topic-arn;
Endpoint: created, or updated blue/green (all at once, or --canary PERCENT first) rolling back on the failure
alarms, keeping the running instance count and the autoscaling (deregistered only for an instance-type change,
then registered again whatever the outcome); wait for InService; autoscaling (async: 0..N on backlog; real-time:
min..max on invocations per instance); one real invocation; then the deployment checklist, one PASS/FAIL line
each: the endpoint runs ECR's image digest, each model's READY line in the endpoint's logs, no
ERROR/Skipping/No module named lines, real smoke output from the archive's preset. Exit 0 only when every check
passes; 2 when refused before anything is uploaded or created.
Every resource it creates is tagged (project=gen3d, gen3d:endpoint=<endpoint>, each --tag); --kms-key-id
encrypts the model data and the async output.
--dry-run prints every AWS call instead of sending it. Credentials and region: boto3's default chain.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.models import MODELS
from gen3d.sagemaker import checklist, deploy, errors, gpus, invoke, log_group, names, tags, timeouts
from gen3d.sagemaker import clients as aws
from gen3d.sagemaker.alarms import AlarmSettings
from gen3d.serving.buckets import BucketPolicy

DEFAULT_INSTANCE = {name: spec.default_instance_type for name, spec in MODELS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), required=True, help="which model the image serves")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--archive", type=Path,
                     help="model archive to upload: a no-archive directory or a .mar file, named like --model")
    src.add_argument("--model-data-s3", metavar="S3_PREFIX", help="reuse model data already under this S3 prefix")
    p.add_argument("--bucket", required=True, help="S3 bucket for model data, smoke inputs and async results")
    p.add_argument("--prefix", help="S3 key prefix (default: gen3d/<endpoint-name>)")
    p.add_argument("--allowed-buckets", help="comma-separated bucket names or globs the container may read and "
                   "write (GEN3D_ALLOWED_BUCKETS; default: --bucket)")
    p.add_argument("--image-uri", required=True, help="ECR image URI of the model's target; gen3d-push prints "
                   "one pinned by digest (REPOSITORY@sha256:...)")
    p.add_argument("--role-arn", required=True, help="SageMaker execution role ARN (gen3d-iam-policy: its policy)")
    p.add_argument("--instance-type", help=f"default: {DEFAULT_INSTANCE}")
    p.add_argument("--instance-count", type=int, default=1, help="instance count of a new endpoint (default 1); "
                   "an update keeps the running count")
    p.add_argument("--canary", type=int, metavar="PERCENT", help="update: shift this share (1..50%%) of the new "
                   "fleet first and bake before the rest (default: blue/green, all at once); needs >= 2 instances")
    p.add_argument("--mode", choices=deploy.MODES, default="realtime", help="endpoint type (default realtime)")
    p.add_argument("--endpoint-name", help="default: <model>-<mode>, '_' as '-' (sam3d-body-realtime)")
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    p.add_argument("--dry-run", action="store_true", help="print every AWS call as JSON and send none")
    g = p.add_argument_group("scaling")
    g.add_argument("--max-concurrency", type=int, default=1,
                   help="async: MaxConcurrentInvocationsPerInstance (default 1)")
    g.add_argument("--min-instances", type=int, help="autoscaling minimum (async default 0, real-time: "
                   "--instance-count)")
    g.add_argument("--max-instances", type=int, help="autoscaling maximum (async default 1; real-time default "
                   "--min-instances, i.e. no autoscaling)")
    g.add_argument("--target-invocations", type=float, help="real-time autoscaling target: invocations per "
                   "instance per minute (SageMakerVariantInvocationsPerInstance); required with --max-instances")
    g.add_argument("--no-autoscaling", action="store_true", help="configure no autoscaling")
    g = p.add_argument_group("alarms and notifications")
    g.add_argument("--sns-topic-arn", help="SNS topic of the failure alarms; async: SageMaker's error (and "
                   "success) notifications too")
    g.add_argument("--sns-success-topic-arn", help="async: success notifications here instead of --sns-topic-arn")
    g.add_argument("--alarm-errors", type=int, default=1, help="alarm at this many failed invocations in 5 "
                   "minutes (default 1)")
    g.add_argument("--alarm-oldest-request", type=int, default=3600, help="async: alarm when a queued request "
                   "is older than this many seconds (default 3600)")
    g = p.add_argument_group("timeouts (seconds)")
    g.add_argument("--health-check-timeout", type=int, help="ContainerStartupHealthCheckTimeoutInSeconds "
                   "(default and minimum: the archive's startupTimeout + GEN3D_READY_MARGIN_S + 60)")
    g.add_argument("--download-timeout", type=int, help="ModelDataDownloadTimeoutInSeconds (default: the health "
                   f"check; minimum 60 + size at {timeouts.DOWNLOAD_FLOOR_MIB_S} MiB/s)")
    g.add_argument("--invocation-timeout", type=int, help="async smoke request's InvocationTimeoutSeconds "
                   "(default: the archive's responseTimeout + 60)")
    g.add_argument("--wait-timeout", type=float, help="wait for InService (default: "
                   f"{deploy.PROVISIONING_S} + download + health check)")
    g.add_argument("--poll", type=float, default=30.0, help="seconds between status polls")
    g.add_argument("--smoke-timeout", type=float, default=1800.0, help="async smoke test timeout")
    g.add_argument("--logs-wait", type=float, default=180.0, help="checklist: wait this long for the READY lines "
                   "to reach CloudWatch Logs")
    p.add_argument("--async-output-s3", help="async S3OutputPath (default s3://<bucket>/<prefix>/async/output/)")
    p.add_argument("--async-failure-s3", help="async S3FailurePath (default s3://<bucket>/<prefix>/async/failure/)")
    p.add_argument("--smoke-payload", type=Path,
                   help="JSON request for the smoke test (default: a generated seed image uploaded to S3)")
    p.add_argument("--no-smoke-test", action="store_true", help="skip the smoke invocation")
    p.add_argument("--no-checklist", action="store_true", help="skip the checklist (needs ecr:DescribeImages and "
                   "logs:FilterLogEvents)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="container environment")
    p.add_argument("--allow-demo-weights", action="store_true", help="deploy an archive built from demo (random) "
                   "weights, or one whose model-config.yaml cannot be read; refused otherwise")
    p.add_argument("--allow-realtime-sam3d", action="store_true", help="deploy sam3d on a real-time endpoint "
                   "although SageMaker cuts each real-time invocation at 60 s; refused otherwise (use --mode async)")
    p.add_argument("--inference-ami-version", choices=[*gpus.INFERENCE_AMIS, gpus.NO_INFERENCE_AMI],
                   help=f"ProductionVariant InferenceAmiVersion, i.e. the NVIDIA driver (default "
                   f"{gpus.DEFAULT_INFERENCE_AMI}: driver 550, CUDA 12.4; 'none' sends none: the instance family's "
                   "default, driver 470 on ml.g5/g4dn/p4d/p4de); refused when the driver cannot run the image")
    g = p.add_argument_group("platform")
    g.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="tag every resource the deploy "
                   "creates (repeatable; project=gen3d and gen3d:endpoint=<endpoint> are added; 10 in all)")
    g.add_argument("--log-retention-days", type=int, default=log_group.DEFAULT_RETENTION_DAYS,
                   help="retention of the endpoint's log group /aws/sagemaker/Endpoints/<endpoint> (default "
                   f"{log_group.DEFAULT_RETENTION_DAYS}; 0 keeps events forever)")
    g.add_argument("--kms-key-id", help="KMS key (id, ARN or alias) for the uploaded model data, the async output "
                   "and, on instance types without NVMe instance storage, the endpoint's volume")
    return p.parse_args(argv)


def _smoke_payload(args: argparse.Namespace, clients: aws.Clients, spec: deploy.DeploySpec) -> dict:
    if args.smoke_payload:
        payload = json.loads(args.smoke_payload.read_text())
        payload.setdefault("bucket", args.bucket)
        return payload
    key = names.parse_s3_uri(spec.s3_base("smoke"))[1] + "seed.png"
    clients.s3.put_object(Bucket=args.bucket, Key=key, Body=invoke.seed_png(), ContentType="image/png")
    return invoke.default_payload(args.model, args.bucket, key, invoke.new_session_id())


def make_spec(args: argparse.Namespace, endpoint: str, instance_type: str) -> deploy.DeploySpec:
    """The deploy's spec from the flags, checked before any AWS call (ValueError names the flag; GpuMemoryError)."""
    spec = deploy.DeploySpec(
        model=args.model, bucket=args.bucket, prefix=args.prefix or f"gen3d/{endpoint}",
        image_uri=args.image_uri, role_arn=args.role_arn, instance_type=instance_type,
        endpoint_name=endpoint, mode=args.mode, archive=args.archive,
        model_data_s3_uri=args.model_data_s3, instance_count=args.instance_count,
        max_concurrency=args.max_concurrency, min_instances=args.min_instances, max_instances=args.max_instances,
        target_invocations=args.target_invocations, async_output_s3=args.async_output_s3,
        async_failure_s3=args.async_failure_s3, environment=tags.parse_pairs("--env", args.env),
        allowed_buckets=list(BucketPolicy.parse(args.allowed_buckets).patterns) or None,
        inference_ami_version=args.inference_ami_version, autoscaling=not args.no_autoscaling,
        sns_topic_arn=args.sns_topic_arn, sns_success_topic_arn=args.sns_success_topic_arn,
        alarms=AlarmSettings(args.alarm_errors, args.alarm_oldest_request),
        health_check_timeout_s=args.health_check_timeout, download_timeout_s=args.download_timeout,
        tags=tags.parse_pairs("--tag", args.tag), log_retention_days=args.log_retention_days,
        kms_key_id=args.kms_key_id, allow_demo_weights=args.allow_demo_weights,
        allow_realtime_sam3d=args.allow_realtime_sam3d, canary_percent=args.canary)
    spec.check()
    if args.sns_success_topic_arn and not args.sns_topic_arn:
        raise ValueError("--sns-success-topic-arn needs --sns-topic-arn (errors and alarms go there)")
    if args.invocation_timeout is not None and not 1 <= args.invocation_timeout <= invoke.MAX_INVOCATION_TIMEOUT_S:
        raise ValueError(f"--invocation-timeout must be 1..{invoke.MAX_INVOCATION_TIMEOUT_S} s")
    return spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    endpoint = args.endpoint_name or names.default_endpoint_name(args.model, args.mode)
    instance_type = args.instance_type or DEFAULT_INSTANCE[args.model]
    try:
        spec = make_spec(args, endpoint, instance_type)  # before anything is uploaded or created
    except (errors.GpuMemoryError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    try:
        clients = aws.make_clients(args.region, dry_run=args.dry_run)
        result = deploy.deploy(clients, spec, wait_timeout_s=args.wait_timeout, poll_s=args.poll,
                               progress=not args.dry_run)
    except errors.DeployRefused as err:  # raised before anything is uploaded or created
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    except (errors.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError, OSError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    summary = {"endpoint": endpoint, "action": result.action, "model": result.model_name,
               "endpoint_config": result.endpoint_config_name, "model_data": result.model_data_s3_uri,
               "health_check_timeout_s": result.timeouts.health_check_s,
               "download_timeout_s": result.timeouts.download_s, "alarms": result.alarms,
               "log_group": names.log_group(endpoint)}
    limit = args.invocation_timeout or timeouts.invocation_timeout(
        result.needs, MODELS[args.model].response_timeout_s)
    smoke = None
    try:
        if not args.no_smoke_test:
            payload = _smoke_payload(args, clients, spec)
            input_uri = spec.s3_base("async/input") + f"{payload.get('session_id', 'smoke')}.json"
            smoke = deploy.run_smoke(clients, endpoint, payload, mode=args.mode, async_input_s3_uri=input_uri,
                                     expected_model_id=result.needs.model_id_prefix(args.model),
                                     invocation_timeout_s=limit, timeout_s=args.smoke_timeout)
        if args.dry_run:
            print("dry run: smoke test not sent, so not verified; checklist not run (it reads what a deployment "
                  "made)")
            checks = []
        elif not args.no_checklist:
            checks = checklist.run_checklist(
                clients, endpoint_name=endpoint, expected_config=result.endpoint_config_name,
                image_uri=args.image_uri, models=[args.model], since_ms=int(started.timestamp() * 1000),
                smoke=smoke, logs_wait_s=args.logs_wait)
            print(checklist.report(checks))
        else:
            checks = [checklist.check_output(clients.s3, smoke)] if smoke else []
            print(checklist.report(checks))
    except (errors.DeployError, ClientError, BotoCoreError, ValueError, OSError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    if smoke and smoke.response is not None:
        summary["smoke_response"] = smoke.response
    summary["checks"] = {c.name: c.passed for c in checks}
    print("RESULT " + json.dumps(summary, default=str))
    if any(not c.passed for c in checks):
        print(f"ERROR: the deployment of {endpoint} failed its checklist (FAIL lines above)", file=sys.stderr)
        return 1
    if checks:
        print(f"SUCCESS: {endpoint} is deployed and every check passed")
    return 0


def console() -> None:
    sys.exit(main())
