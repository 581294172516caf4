"""Deploy the sam3 or sam3d TorchServe image to a SageMaker endpoint, then smoke-test it.

Steps: GPU memory check, upload of the model archive to S3 (uncompressed), Model,
EndpointConfig (real-time or async), Endpoint (create or update), wait for InService,
autoscaling 0..N for async endpoints, one real invocation whose response must say
status "success" and name outputs that exist in S3.  --dry-run prints every AWS call
instead of sending it.  Credentials and region: boto3's default chain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.models import MODELS
from gen3d.sagemaker import clients as aws
from gen3d.sagemaker import deploy, errors, gpus, invoke, names

DEFAULT_INSTANCE = {name: spec.default_instance_type for name, spec in MODELS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), required=True, help="which model the image serves")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--archive", type=Path,
                     help="model archive to upload: a no-archive directory or a .mar file")
    src.add_argument("--model-data-s3", metavar="S3_PREFIX", help="reuse model data already under this S3 prefix")
    p.add_argument("--bucket", required=True, help="S3 bucket for model data, smoke inputs and async results")
    p.add_argument("--prefix", help="S3 key prefix (default: gen3d/<endpoint-name>)")
    p.add_argument("--image-uri", required=True, help="ECR image URI of the sam3 or sam3d target")
    p.add_argument("--role-arn", required=True, help="SageMaker execution role ARN")
    p.add_argument("--instance-type", help=f"default: {DEFAULT_INSTANCE}")
    p.add_argument("--instance-count", type=int, default=1, help="initial instance count (default 1)")
    p.add_argument("--mode", choices=deploy.MODES, default="realtime", help="endpoint type (default realtime)")
    p.add_argument("--endpoint-name", help="default: <model>-<mode>")
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    p.add_argument("--dry-run", action="store_true", help="print every AWS call as JSON and send none")
    p.add_argument("--max-concurrency", type=int, default=1,
                   help="async: MaxConcurrentInvocationsPerInstance (default 1)")
    p.add_argument("--max-instances", type=int, default=1, help="async: autoscaling maximum (default 1)")
    p.add_argument("--no-autoscaling", action="store_true", help="async: do not configure autoscaling")
    p.add_argument("--async-output-s3", help="async S3OutputPath (default s3://<bucket>/<prefix>/async/output/)")
    p.add_argument("--async-failure-s3", help="async S3FailurePath (default s3://<bucket>/<prefix>/async/failure/)")
    p.add_argument("--smoke-payload", type=Path,
                   help="JSON request for the smoke test (default: a generated seed image uploaded to S3)")
    p.add_argument("--no-smoke-test", action="store_true", help="skip the smoke invocation")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="container environment")
    p.add_argument("--inference-ami-version", help="ProductionVariant InferenceAmiVersion (GPU driver choice)")
    p.add_argument("--wait-timeout", type=float, default=3600.0, help="seconds to wait for InService")
    p.add_argument("--poll", type=float, default=30.0, help="seconds between status polls")
    p.add_argument("--smoke-timeout", type=float, default=1800.0, help="async smoke test timeout, seconds")
    return p.parse_args(argv)


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _smoke_payload(args: argparse.Namespace, clients: aws.Clients, spec: deploy.DeploySpec) -> dict:
    if args.smoke_payload:
        payload = json.loads(args.smoke_payload.read_text())
        payload.setdefault("bucket", args.bucket)
        return payload
    key = names.parse_s3_uri(spec.s3_base("smoke"))[1] + "seed.png"
    clients.s3.put_object(Bucket=args.bucket, Key=key, Body=invoke.seed_png(), ContentType="image/png")
    return invoke.default_payload(args.model, args.bucket, key, invoke.new_session_id())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    endpoint = args.endpoint_name or f"{args.model}-{args.mode}"
    instance_type = args.instance_type or DEFAULT_INSTANCE[args.model]
    try:
        gpus.check_gpu_memory(args.model, instance_type)  # before anything is uploaded or created
        spec = deploy.DeploySpec(
            model=args.model, bucket=args.bucket, prefix=args.prefix or f"gen3d/{endpoint}",
            image_uri=args.image_uri, role_arn=args.role_arn, instance_type=instance_type,
            endpoint_name=names.validate_name(endpoint), mode=args.mode, archive=args.archive,
            model_data_s3_uri=args.model_data_s3, instance_count=args.instance_count,
            max_concurrency=args.max_concurrency, max_instances=args.max_instances,
            async_output_s3=args.async_output_s3, async_failure_s3=args.async_failure_s3,
            environment=_env(args.env), inference_ami_version=args.inference_ami_version,
            autoscaling=not args.no_autoscaling)
    except (errors.GpuMemoryError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    if args.model == "sam3d" and args.mode == "realtime":
        print("WARNING: generate_3d can exceed the 60 s real-time invocation limit; consider --mode async",
              file=sys.stderr)
    try:
        clients = aws.make_clients(args.region, dry_run=args.dry_run)
        result = deploy.deploy(clients, spec, wait_timeout_s=args.wait_timeout, poll_s=args.poll,
                            progress=not args.dry_run)
        summary = {"endpoint": endpoint, "action": result.action, "model": result.model_name,
                   "endpoint_config": result.endpoint_config_name, "model_data": result.model_data_s3_uri,
                   "log_group": names.log_group(endpoint)}
        if not args.no_smoke_test:
            payload = _smoke_payload(args, clients, spec)
            input_uri = spec.s3_base("async/input") + f"{payload.get('session_id', 'smoke')}.json"
            if args.dry_run:
                if args.mode == "async":
                    invoke.invoke_async(clients.runtime, clients.s3, endpoint, payload, input_s3_uri=input_uri)
                else:
                    invoke.invoke_realtime(clients.runtime, endpoint, payload)
                print("dry run: smoke test not sent, so not verified")
            else:
                response, outputs = deploy.smoke_test(clients, endpoint, payload, mode=args.mode,
                                                   async_input_s3_uri=input_uri, timeout_s=args.smoke_timeout)
                summary.update(smoke_response=response, verified_outputs=outputs)
                print(f"SUCCESS: {endpoint} answered {payload['task']} with status=success; "
                      f"outputs exist: {', '.join(outputs)}")
    except (errors.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError, OSError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print("RESULT " + json.dumps(summary, default=str))
    return 0


def console() -> None:
    sys.exit(main())
