"""Delete a sam3 / sam3d SageMaker endpoint and what deploy created for it.

Removes the failure alarms (<endpoint>-invocation-5xx-errors, -invocation-model-errors,
-invocation-failures, -oldest-request-age), the autoscaling alarm, policies and
scalable target, the endpoint, its
current endpoint config and the timestamped configs <endpoint>-YYYYmmdd-HHMMSS,
and the models those configs use.  Whatever is already gone is reported, not an
error.  S3 data (model archives, async results) is left in place.
"""

from __future__ import annotations

import argparse
import json
import sys

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.sagemaker import clients as aws
from gen3d.sagemaker import errors, names, teardown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint-name", required=True)
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    p.add_argument("--wait", action="store_true", help="wait until the endpoint deletion has finished")
    p.add_argument("--dry-run", action="store_true",
                   help="print every AWS call as JSON and send none (assumes the resources exist)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names.validate_name(args.endpoint_name)
        clients = aws.make_clients(args.region, dry_run=args.dry_run, assume_exists=True)
        deleted = teardown.teardown(clients, args.endpoint_name, wait=args.wait and not args.dry_run)
    except (errors.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print("RESULT " + json.dumps(deleted))
    return 0


def console() -> None:
    sys.exit(main())
