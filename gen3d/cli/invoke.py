"""Send one request to a sam3 / sam3d SageMaker endpoint and print the JSON response.

The request is a JSON file (--payload, '-' for stdin) or is built from --task,
--bucket, --image-s3-key, --session-id and --user-id.  Real-time endpoints get
invoke_endpoint; async endpoints get the request uploaded to S3, invoke_endpoint_async,
and the output (or failure) object polled in S3.  --verify checks status == "success"
and that the S3 outputs the response names exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.models import MODELS
from gen3d.sagemaker import clients as aws
from gen3d.sagemaker import deploy, errors, invoke


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint-name", required=True)
    p.add_argument("--mode", choices=deploy.MODES, default="realtime", help="endpoint type (default realtime)")
    p.add_argument("--payload", help="JSON request file, or '-' for stdin")
    tasks = [task for spec in MODELS.values() for task in spec.tasks]
    p.add_argument("--task", choices=tasks, default=tasks[0])
    p.add_argument("--bucket", help="bucket of the image (and of the async input unless --async-input-s3)")
    p.add_argument("--image-s3-key")
    p.add_argument("--session-id", default=None, help="default: a random smoke-... id")
    p.add_argument("--user-id", default="cli")
    p.add_argument("--async-input-s3", help="async: S3 URI to upload the request to "
                                            "(default s3://<bucket>/gen3d/async/input/<session>.json)")
    p.add_argument("--timeout", type=float, default=1800.0, help="async: seconds to wait for the result")
    p.add_argument("--poll", type=float, default=5.0, help="async: seconds between S3 polls")
    p.add_argument("--verify", action="store_true", help="fail unless status is success and outputs exist")
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    p.add_argument("--dry-run", action="store_true", help="print every AWS call as JSON and send none")
    return p.parse_args(argv)


def build_payload(args: argparse.Namespace) -> dict:
    if args.payload:
        text = sys.stdin.read() if args.payload == "-" else Path(args.payload).read_text()
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ValueError("the payload must be a JSON object")
        return payload
    if not (args.bucket and args.image_s3_key):
        raise ValueError("give --payload, or --bucket and --image-s3-key")
    payload = {"task": args.task, "image_s3_key": args.image_s3_key, "bucket": args.bucket,
               "session_id": args.session_id or invoke.new_session_id(), "user_id": args.user_id}
    return payload


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        payload = build_payload(args)
        clients = aws.make_clients(args.region, dry_run=args.dry_run)
        if args.mode == "async":
            input_uri = args.async_input_s3
            if not input_uri:
                bucket = args.bucket or payload.get("bucket")
                if not bucket:
                    raise ValueError("async mode needs --async-input-s3 or a bucket")
                session = payload.get("session_id") or invoke.new_session_id()
                input_uri = f"s3://{bucket}/gen3d/async/input/{session}.json"
            response = invoke.invoke_async(clients.runtime, clients.s3, args.endpoint_name, payload,
                                        input_s3_uri=input_uri, timeout_s=args.timeout, poll_s=args.poll,
                                        out=sys.stderr)
        else:
            response = invoke.invoke_realtime(clients.runtime, args.endpoint_name, payload)
        print(json.dumps(response, indent=2))
        if args.verify and not args.dry_run:
            outputs = invoke.verify_response(clients.s3, response, str(payload.get("bucket", "")))
            print(f"verified: {', '.join(outputs)}", file=sys.stderr)
    except (errors.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError, OSError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


def console() -> None:
    sys.exit(main())
