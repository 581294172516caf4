"""Print the SageMaker execution role's minimal permission policy (JSON) for gen3d's deployments.

It grants exactly what SageMaker and the container do with the role: read the model data under
s3://<bucket>/<prefix>/ (ListBucket + GetObject), write async results under <prefix>/*/async/, read inputs in
the allowed buckets (GetObject, and ListBucket so a missing key answers 404), write outputs under
<allowed bucket>/<output-prefix>/ (inputs and outputs only in buckets --bucket-owner owns: s3:ResourceAccount),
publish async notifications to the SNS topics, pull the image from ECR,
write the endpoint's CloudWatch logs (and PutMetricData, as AWS's CreateModel role policy lists). Attach it to
the role given to gen3d-deploy --role-arn; deploy/execution-role-policy.json is its output for the example
values in README.

  gen3d-iam-policy --bucket my-gen3d-bucket --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/gen3d:sam3 \\
      --sns-topic-arn arn:aws:sns:us-east-1:123456789012:gen3d-alerts > policy.json
  aws iam put-role-policy --role-name MySageMakerRole --policy-name gen3d --policy-document file://policy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gen3d.sagemaker import iam, names
from gen3d.serving.buckets import ACCOUNT_ID, BucketPolicy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bucket", required=True, help="gen3d-deploy's --bucket (model data, async results)")
    p.add_argument("--prefix", default="gen3d", help="first level of gen3d-deploy's --prefix (default gen3d: "
                   "the deploy's default gen3d/<endpoint>)")
    p.add_argument("--allowed-buckets", help="comma-separated buckets (or globs) of inputs and outputs, as "
                   "gen3d-deploy --allowed-buckets (default: --bucket)")
    p.add_argument("--output-prefix", default=iam.OUTPUT_PREFIX,
                   help=f"first level of GEN3D_OUTPUT_PREFIX (default {iam.OUTPUT_PREFIX})")
    p.add_argument("--bucket-owner", default=iam.PRINCIPAL_ACCOUNT,
                   help="account id that owns the allowed buckets, as the container's GEN3D_BUCKET_OWNER (default: "
                   "the role's own account, as the server's default)")
    p.add_argument("--sns-topic-arn", action="append", default=[], help="async notification topic (repeatable)")
    p.add_argument("--image-uri", help="ECR image URI: gives --region, --account and --repository")
    p.add_argument("--region", help="AWS region (default: from --image-uri, else *)")
    p.add_argument("--account", help="AWS account id (default: from --image-uri, else *)")
    p.add_argument("--repository", help="ECR repository (default: from --image-uri, else gen3d)")
    p.add_argument("--out", type=Path, help="write the policy here instead of stdout")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    image = {}
    if args.image_uri:
        image = names.parse_image_uri(args.image_uri) or {}
        if not image:
            print(f"ERROR: --image-uri {args.image_uri} is not an ECR image URI", file=sys.stderr)
            return 2
    if args.bucket_owner != iam.PRINCIPAL_ACCOUNT and not ACCOUNT_ID.match(args.bucket_owner):
        print(f"ERROR: --bucket-owner {args.bucket_owner} is not a 12-digit AWS account id", file=sys.stderr)
        return 2
    policy = iam.execution_role_policy(
        bucket=args.bucket, prefix=args.prefix,
        allowed_buckets=list(BucketPolicy.parse(args.allowed_buckets).patterns) or None,
        output_prefix=args.output_prefix, sns_topic_arns=args.sns_topic_arn, bucket_owner=args.bucket_owner,
        region=args.region or image.get("region") or "*", account=args.account or image.get("registry") or "*",
        repository=args.repository or image.get("repository") or "gen3d")
    text = json.dumps(policy, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def console() -> None:
    sys.exit(main())
