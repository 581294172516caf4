"""Delete a sam3 / sam3d SageMaker endpoint and what deploy created for it.

Removes the failure alarms (<endpoint>-invocation-5xx-errors, -invocation-model-errors,
-invocation-failures, -notification-failures, -oldest-request-age), the autoscaling alarm, policies and
scalable target, the endpoint, every endpoint config and model tagged gen3d:endpoint=<endpoint> (found with
the Resource Groups Tagging API: a model whose config failed included, another endpoint's never) and the
endpoint's current config and its models, and the superseded model data: the prefixes the deploys uploaded
under <prefix>/model/, but for the current one and the previous deployment's.  Whatever is already gone is
reported, not an error.  The log group stays (its events expire by the deploy's --log-retention-days), and so
do async results and data the deploy did not upload.
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
