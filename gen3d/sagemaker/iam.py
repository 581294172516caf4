"""The IAM documents a gen3d deployment needs: the SageMaker execution role's minimal permission policy and its
trust policy, and the policy of the person (or pipeline) running gen3d-push, gen3d-deploy and gen3d-teardown.

Who does what with the execution role:
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
  failure objects (``s3:PutObject``) under ``<prefix>/async/`` or ``<prefix>/*/async/`` (the deploy's defaults
  for any ``--prefix`` starting with ``<prefix>``) or the ``--async-output-s3`` / ``--async-failure-s3`` paths,
  and publishes notifications (``sns:Publish``);
- with ``--kms-key-id``: SageMaker decrypts the model data and encrypts the async output with the key.
"""

from __future__ import annotations

from typing import Any

from gen3d.sagemaker.kms import key_statement
from gen3d.sagemaker.names import log_group, parse_s3_uri

ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
ECR_PUSH = ["ecr:DescribeRepositories", "ecr:CreateRepository", "ecr:TagResource", "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:DescribeImages", *ECR_PULL]
LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
ROLE_KMS = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
DEPLOYER_KMS = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "kms:CreateGrant"]
SAGEMAKER = ["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
             "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig",
             "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint",
             "sagemaker:DeleteEndpoint", "sagemaker:AddTags", "sagemaker:InvokeEndpoint",
             "sagemaker:InvokeEndpointAsync"]
AUTOSCALING = ["application-autoscaling:RegisterScalableTarget", "application-autoscaling:DescribeScalableTargets",
               "application-autoscaling:DeregisterScalableTarget", "application-autoscaling:PutScalingPolicy",
               "application-autoscaling:DeleteScalingPolicy", "application-autoscaling:TagResource"]
ALARMS = ["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:TagResource"]
LOG_GROUP = ["logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy", "logs:TagResource",
             "logs:FilterLogEvents"]
OUTPUT_PREFIX = "gen3d-outputs"  # the default GEN3D_OUTPUT_PREFIX's first level (gen3d-outputs/{user}/{session})
SCALING_ROLE = ("arn:aws:iam::{account}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")
# the role's own account, as the server's default GEN3D_BUCKET_OWNER (the account of its credentials)
PRINCIPAL_ACCOUNT = "${aws:PrincipalAccount}"


def s3_arn(uri: str, suffix: str = "") -> str:
    """``s3://bucket/key`` -> ``arn:aws:s3:::bucket/key<suffix>``."""
    bucket, key = parse_s3_uri(uri)
    return f"arn:aws:s3:::{bucket}/{key}{suffix}"


def execution_role_policy(
    *,
    bucket: str,
    prefix: str = "gen3d",
    allowed_buckets: list[str] | None = None,
    output_prefix: str = OUTPUT_PREFIX,
    sns_topic_arns: list[str] | None = None,
    async_paths: list[str] | None = None,
    kms_key_id: str | None = None,
    region: str = "*",
    account: str = "*",
    repository: str = "gen3d",
    bucket_owner: str = PRINCIPAL_ACCOUNT,
) -> dict[str, Any]:
    """The policy document: ``bucket``/``prefix`` hold model data and async results (the deploy's --bucket and
    the first level of its --prefix), ``allowed_buckets`` (GEN3D_ALLOWED_BUCKETS; names or globs) hold inputs
    and outputs, ``async_paths`` are the deploy's --async-output-s3 / --async-failure-s3."""
    prefix = prefix.strip("/")
    buckets = allowed_buckets or [bucket]
    async_results = [f"arn:aws:s3:::{bucket}/{prefix}/async/*", f"arn:aws:s3:::{bucket}/{prefix}/*/async/*",
                     *(s3_arn(path.rstrip("/") + "/", "*") for path in async_paths or [])]
    owned = {"StringEquals": {"s3:ResourceAccount": [bucket_owner]}}  # GEN3D_BUCKET_OWNER's account only
    statements: list[dict[str, Any]] = [
        {"Sid": "ModelDataList", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{bucket}"], "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
        {"Sid": "ModelDataRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*"]},
        {"Sid": "AsyncResultsWrite", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": async_results},
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
    if kms_key_id:
        statements.append(key_statement("ModelDataAndAsyncOutputKey", ROLE_KMS, kms_key_id, region=region,
                                        account=account))
    statements += [
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Sid": "EcrPull", "Effect": "Allow", "Action": ECR_PULL,
         "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{repository}"]},
        {"Sid": "EndpointLogs", "Effect": "Allow", "Action": LOGS,
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/*"]},
        {"Sid": "EndpointMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*"},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def trust_policy() -> dict[str, Any]:
    """The execution role's trust policy: SageMaker may assume it (AWS's documented SageMaker role trust)."""
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def deployer_policy(
    *,
    bucket: str,
    prefix: str = "gen3d",
    role_arn: str | None = None,
    async_paths: list[str] | None = None,
    kms_key_id: str | None = None,
    region: str = "*",
    account: str = "*",
    repository: str = "gen3d",
) -> dict[str, Any]:
    """What gen3d-push, gen3d-deploy (its checklist and smoke request included) and gen3d-teardown call: pass the
    execution role to SageMaker only; SageMaker, Application Auto Scaling, CloudWatch alarms, the endpoints' log
    groups, the Tagging API (teardown's search), S3 under the model-data bucket's prefix, ECR push to the
    repository and, with ``kms_key_id``, the key."""
    prefix = prefix.strip("/")
    sagemaker_arn = f"arn:aws:sagemaker:{region}:{account}"
    result_buckets = sorted({bucket, *(parse_s3_uri(p)[0] for p in async_paths or [])})
    statements: list[dict[str, Any]] = [
        {"Sid": "PassExecutionRole", "Effect": "Allow", "Action": ["iam:PassRole"],
         "Resource": [role_arn or f"arn:aws:iam::{account}:role/*"],
         "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}},
        {"Sid": "SageMaker", "Effect": "Allow", "Action": SAGEMAKER,
         "Resource": [f"{sagemaker_arn}:{kind}/*" for kind in ("model", "endpoint-config", "endpoint")]},
        {"Sid": "FindByTag", "Effect": "Allow", "Action": ["tag:GetResources"], "Resource": "*"},
        {"Sid": "Autoscaling", "Effect": "Allow", "Action": AUTOSCALING, "Resource": "*"},
        {"Sid": "AutoscalingRole", "Effect": "Allow", "Action": ["iam:CreateServiceLinkedRole"],
         "Resource": [SCALING_ROLE.format(account=account)],
         "Condition": {"StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}}},
        {"Sid": "Alarms", "Effect": "Allow", "Action": ALARMS,
         "Resource": [f"arn:aws:cloudwatch:{region}:{account}:alarm:*"]},
        {"Sid": "DescribeAlarmsAndLogGroups", "Effect": "Allow",
         "Action": ["cloudwatch:DescribeAlarms", "logs:DescribeLogGroups"], "Resource": "*"},
        {"Sid": "EndpointLogGroups", "Effect": "Allow", "Action": LOG_GROUP,
         "Resource": [f"arn:aws:logs:{region}:{account}:log-group:{log_group('*')}",
                      f"arn:aws:logs:{region}:{account}:log-group:{log_group('*')}:*"]},
        {"Sid": "ModelDataAndResultsRead", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{b}" for b in result_buckets]},
        {"Sid": "ModelDataAndResultsObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*", *(s3_arn(p.rstrip("/") + "/", "*")
                                                             for p in async_paths or [])]},
        {"Sid": "OutputsRead", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/{OUTPUT_PREFIX}/*"]},
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Sid": "EcrPush", "Effect": "Allow", "Action": ECR_PUSH,
         "Resource": [f"arn:aws:ecr:{region}:{account}:repository/{repository}"]},
    ]
    if kms_key_id:
        statements.append(key_statement("ModelDataAndAsyncOutputKey", DEPLOYER_KMS, kms_key_id, region=region,
                                        account=account))
    return {"Version": "2012-10-17", "Statement": statements}
