"""The SageMaker execution role's minimal permission policy for what gen3d deploys.

Who does what with the role (the deploying user's own permissions are separate):
- SageMaker copies the model data (an uncompressed S3 prefix): ``s3:ListBucket`` on the bucket for that
  prefix, ``s3:GetObject`` under it;
- SageMaker pulls the image: ``ecr:GetAuthorizationToken`` and the three pull actions on the repository;
- the container's logs go to ``/aws/sagemaker/Endpoints/<name>``: CloudWatch Logs;
  ``cloudwatch:PutMetricData`` is in AWS's documented CreateModel role policy (gen3d itself never calls it);
- the container reads inputs anywhere in its allowed buckets (``s3:GetObject``; ``s3:ListBucket`` so that a
  missing key answers 404 instead of S3's 403) and writes outputs under the output prefix (``s3:PutObject``),
  only in buckets ``bucket_owner`` owns (``s3:ResourceAccount``: a glob of the allow-list also matches buckets
  anyone can create in another account; the server passes the same account as ``ExpectedBucketOwner``);
- async endpoints: SageMaker reads the request object (covered by the input read), writes the output and
  failure objects under ``<prefix>/*/async/`` (``s3:PutObject``) and publishes notifications (``sns:Publish``).
"""

from __future__ import annotations

from typing import Any

ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
OUTPUT_PREFIX = "gen3d-outputs"  # the default GEN3D_OUTPUT_PREFIX's first level (gen3d-outputs/{user}/{session})
# the role's own account, as the server's default GEN3D_BUCKET_OWNER (the account of its credentials)
PRINCIPAL_ACCOUNT = "${aws:PrincipalAccount}"


def execution_role_policy(
    *,
    bucket: str,
    prefix: str = "gen3d",
    allowed_buckets: list[str] | None = None,
    output_prefix: str = OUTPUT_PREFIX,
    sns_topic_arns: list[str] | None = None,
    region: str = "*",
    account: str = "*",
    repository: str = "gen3d",
    bucket_owner: str = PRINCIPAL_ACCOUNT,
) -> dict[str, Any]:
    """The policy document: ``bucket``/``prefix`` hold model data and async results (the deploy's --bucket and
    the first level of its --prefix), ``allowed_buckets`` (GEN3D_ALLOWED_BUCKETS; names or globs) hold inputs
    and outputs."""
    prefix = prefix.strip("/")
    buckets = allowed_buckets or [bucket]
    owned = {"StringEquals": {"s3:ResourceAccount": [bucket_owner]}}  # GEN3D_BUCKET_OWNER's account only
    statements: list[dict[str, Any]] = [
        {"Sid": "ModelDataList", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}"], "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
        {"Sid": "ModelDataRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*"]},
        {"Sid": "AsyncResultsWrite", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*/async/*"]},
        {"Sid": "InputsList", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{b}" for b in buckets], "Condition": owned},
        {"Sid": "InputsRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{b}/*" for b in buckets], "Condition": owned},
        {"Sid": "OutputsWrite", "Effect": "Allow", "Action": ["s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{b}/{output_prefix.strip('/')}/*" for b in buckets], "Condition": owned},
    ]
    if sns_topic_arns:
        statements.append({"Sid": "AsyncNotifications", "Effect": "Allow", "Action": ["sns:Publish"],
                           "Resource": list(sns_topic_arns)})
    statements += [
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Sid": "EcrPull", "Effect": "Allow", "Action": ECR_PULL,
         "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{repository}"]},
        {"Sid": "EndpointLogs", "Effect": "Allow", "Action": LOGS,
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/*"]},
        {"Sid": "EndpointMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"},
    ]
    return {"Version": "2012-10-17", "Statement": statements}
