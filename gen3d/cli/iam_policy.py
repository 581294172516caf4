"""Print the IAM documents (JSON) of gen3d's SageMaker deployments.

Default: the SageMaker execution role's minimal permission policy. It grants exactly what SageMaker and the
container do with the role: read the model data under s3://<bucket>/<prefix>/ (ListBucket + GetObject), write
async results under <prefix>/async/ and <prefix>/*/async/ (the deploy's defaults for a --prefix starting with
<prefix>) and under each --async-output-s3 / --async-failure-s3, read inputs in the allowed buckets (GetObject,
and ListBucket so a missing key answers 404), write outputs under <allowed bucket>/<output-prefix>/ (inputs and
outputs only in buckets --bucket-owner owns: s3:ResourceAccount), publish async notifications to the SNS topics,
use the --kms-key-id key, pull the image from ECR, write the endpoint's CloudWatch logs (and PutMetricData, as
AWS's CreateModel role policy lists). Attach it to the role given to gen3d-deploy --role-arn;
deploy/execution-role-policy.json is its output for the example values in docs/deploy-sagemaker.md.

--trust-policy: the execution role's trust policy (SageMaker may assume it).
--deployer: what the person or pipeline running gen3d-push, gen3d-deploy and gen3d-teardown needs
(deploy/deployer-policy.json: its output for docs/deploy-sagemaker.md's example values).

  gen3d-iam-policy --bucket my-gen3d-bucket --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/gen3d:sam3 \\
      --sns-topic-arn arn:aws:sns:us-east-1:123456789012:gen3d-alerts > policy.json
  gen3d-iam-policy --trust-policy > trust.json
  aws iam create-role --role-name MySageMakerRole --assume-role-policy-document file://trust.json
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
    which = p.add_mutually_exclusive_group()
    which.add_argument("--deployer", action="store_true", help="the deploying person's policy instead")
    which.add_argument("--trust-policy", action="store_true", help="the execution role's trust policy instead")
    p.add_argument("--bucket", help="gen3d-deploy's --bucket (model data, async results); required but for "
                   "--trust-policy")
    p.add_argument("--prefix", default="gen3d", help="first level of gen3d-deploy's --prefix (default gen3d: "
                   "the deploy's default gen3d/<endpoint>)")
    p.add_argument("--allowed-buckets", help="comma-separated buckets (or globs) of inputs and outputs, as "
                   "gen3d-deploy --allowed-buckets (default: --bucket)")
    p.add_argument("--output-prefix", default=iam.OUTPUT_PREFIX,
                   help=f"first level of GEN3D_OUTPUT_PREFIX (default {iam.OUTPUT_PREFIX})")
    p.add_argument("--async-output-s3", action="append", default=[], metavar="S3_URI",
                   help="gen3d-deploy's --async-output-s3 (repeatable)")
    p.add_argument("--async-failure-s3", action="append", default=[], metavar="S3_URI",
                   help="gen3d-deploy's --async-failure-s3 (repeatable)")
    p.add_argument("--bucket-owner", default=iam.PRINCIPAL_ACCOUNT,
                   help="account id that owns the allowed buckets, as the container's GEN3D_BUCKET_OWNER (default: "
                   "the role's own account, as the server's default)")
    p.add_argument("--sns-topic-arn", action="append", default=[], help="async notification topic (repeatable)")
    p.add_argument("--kms-key-id", help="gen3d-deploy's --kms-key-id (key id, key ARN or alias)")
    p.add_argument("--role-arn", help="--deployer: the execution role it may pass to SageMaker (default: any role "
                   "of the account)")
    p.add_argument("--image-uri", help="ECR image URI: gives --region, --account and --repository")
    p.add_argument("--region", help="AWS region (default: from --image-uri, else *)")
    p.add_argument("--account", help="AWS account id (default: from --image-uri, else *)")
    p.add_argument("--repository", help="ECR repository (default: from --image-uri, else gen3d)")
    p.add_argument("--out", type=Path, help="write the policy here instead of stdout")
    return p.parse_args(argv)


def policy_of(args: argparse.Namespace, image: dict) -> dict:
    """The document the flags ask for."""
    if args.trust_policy:
        return iam.trust_policy()
    where = {"region": args.region or image.get("region") or "*",
             "account": args.account or image.get("registry") or "*",
             "repository": args.repository or image.get("repository") or "gen3d"}
    async_paths = [*args.async_output_s3, *args.async_failure_s3]
    for path in async_paths:
        names.parse_s3_uri(path)  # ValueError naming it
    if args.deployer:
        return iam.deployer_policy(bucket=args.bucket, prefix=args.prefix, role_arn=args.role_arn,
                                   async_paths=async_paths, kms_key_id=args.kms_key_id, **where)
    return iam.execution_role_policy(
        bucket=args.bucket, prefix=args.prefix,
        allowed_buckets=list(BucketPolicy.parse(args.allowed_buckets).patterns) or None,
        output_prefix=args.output_prefix, sns_topic_arns=args.sns_topic_arn, async_paths=async_paths,
        kms_key_id=args.kms_key_id, bucket_owner=args.bucket_owner, **where)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    image = {}
    if args.image_uri:
        image = names.parse_image_uri(args.image_uri) or {}
        if not image:
            print(f"ERROR: --image-uri {args.image_uri} is not an ECR image URI", file=sys.stderr)
            return 2
    if not args.bucket and not args.trust_policy:
        print("ERROR: --bucket is required (gen3d-deploy's --bucket)", file=sys.stderr)
        return 2
    if args.bucket_owner != iam.PRINCIPAL_ACCOUNT and not ACCOUNT_ID.match(args.bucket_owner):
        print(f"ERROR: --bucket-owner {args.bucket_owner} is not a 12-digit AWS account id", file=sys.stderr)
        return 2
    try:
        policy = policy_of(args, image)
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    text = json.dumps(policy, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def console() -> None:
    sys.exit(main())
