#!/usr/bin/env python3
"""Delete a sam3 / sam3d SageMaker endpoint and what deploy created for it.

Removes the autoscaling alarm, policies and scalable target, the endpoint, its
current endpoint config and the timestamped configs <endpoint>-YYYYmmdd-HHMMSS,
and the models those configs use.  Whatever is already gone is reported, not an
error.  S3 data (model archives, async results) is left in place.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from gen3d import sagemaker_control as smc  # noqa: E402


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
        smc.validate_name(args.endpoint_name)
        clients = smc.make_clients(args.region, dry_run=args.dry_run, assume_exists=True)
        deleted = smc.teardown(clients, args.endpoint_name, wait=args.wait and not args.dry_run)
    except (smc.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print("RESULT " + json.dumps(deleted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
