"""Tags on everything a deploy creates, and finding by tag what teardown deletes.

Every resource a deploy creates carries ``project=gen3d`` (``--tag project=...`` replaces it), each ``--tag
KEY=VALUE``, and ``gen3d:endpoint=<endpoint name>``: teardown finds the endpoint's configs and models by that
exact value (Resource Groups Tagging API), so two endpoints whose names share a prefix never match each other's
resources, and a model left behind by a failed endpoint config is found too. At most 10 tags in all: S3 allows 10
per object, and the uploaded model data carries them.
"""

from __future__ import annotations

import re
from typing import IO, Any
from urllib.parse import urlencode

from gen3d.sagemaker.clients import say
from gen3d.sagemaker.names import alarm_names, parse_s3_uri, scaling_names

PROJECT_TAG, PROJECT = "project", "gen3d"
ENDPOINT_TAG = "gen3d:endpoint"
MAX_TAGS = 10  # S3's limit per object
# AWS's user-defined tag rules (the same for SageMaker, S3, CloudWatch, Logs, ECR, Application Auto Scaling)
KEY_RE = re.compile(r"^(?!aws:)[\w\s.:/=+\-@]{1,128}$")
VALUE_RE = re.compile(r"^[\w\s.:/=+\-@]{0,256}$")
TAGGED_TYPES = {"sagemaker:endpoint-config": "endpoint_config", "sagemaker:model": "model"}


def parse_pairs(flag: str, pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` flags -> a dict; ValueError naming the flag for anything else."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        parsed[key] = value
    return parsed


def resource_tags(endpoint_name: str, extra: dict[str, str]) -> dict[str, str]:
    """The tags of every resource the deploy creates for ``endpoint_name``, checked (ValueError naming --tag)."""
    if ENDPOINT_TAG in extra:
        raise ValueError(
            f"--tag {ENDPOINT_TAG}=... is set by the deploy (the endpoint's name; teardown finds resources by it)"
        )
    tags = {PROJECT_TAG: PROJECT, **extra, ENDPOINT_TAG: endpoint_name}
    for key, value in tags.items():
        if not KEY_RE.match(key) or not VALUE_RE.match(value):
            raise ValueError(
                f"--tag {key}={value}: keys are 1-128 and values 0-256 letters, digits, spaces or "
                "_ . : / = + - @ (keys not starting with aws:)"
            )
    if len(tags) > MAX_TAGS:
        raise ValueError(
            f"{len(tags)} tags (--tag plus {PROJECT_TAG} and {ENDPOINT_TAG}): S3 allows {MAX_TAGS} per "
            "object and the uploaded model data carries them all"
        )
    return tags


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """``[{"Key": ..., "Value": ...}]``: SageMaker's, CloudWatch's and ECR's form."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def s3_tagging(tags: dict[str, str]) -> str:
    """S3's ``Tagging`` header: URL-encoded ``key=value&...``."""
    return urlencode(tags)


def tag_alarms(cw: Any, endpoint_name: str, tags: dict[str, str], *, out: IO[str] | None = None) -> list[str]:
    """Tag the endpoint's alarms that exist (failure alarms and the scaling alarm). PutMetricAlarm applies tags
    only when it creates an alarm, so a redeploy tags them here. Returns the alarms tagged."""
    names = [*alarm_names(endpoint_name).values(), scaling_names(endpoint_name)["alarm"]]
    alarms = cw.describe_alarms(AlarmNames=names).get("MetricAlarms", [])
    for alarm in alarms:
        cw.tag_resource(ResourceARN=alarm["AlarmArn"], Tags=tag_list(tags))
    if alarms:
        say(out, f"tagged {len(alarms)} alarms: {', '.join(f'{k}={v}' for k, v in tags.items())}")
    return [alarm["AlarmName"] for alarm in alarms]


def tagged_resources(tagging: Any, endpoint_name: str) -> dict[str, list[str]]:
    """The endpoint configs and models tagged ``gen3d:endpoint=<endpoint_name>``, by kind, names in ARN order."""
    found: dict[str, list[str]] = {kind: [] for kind in TAGGED_TYPES.values()}
    params: dict[str, Any] = {
        "TagFilters": [{"Key": ENDPOINT_TAG, "Values": [endpoint_name]}],
        "ResourceTypeFilters": list(TAGGED_TYPES),
    }
    while True:
        page = tagging.get_resources(**params)
        for mapping in page.get("ResourceTagMappingList", []):
            # arn:aws:sagemaker:REGION:ACCOUNT:endpoint-config/NAME (SageMaker lower-cases names in ARNs)
            kind, _, name = mapping["ResourceARN"].split(":", 5)[5].partition("/")
            found[TAGGED_TYPES[f"sagemaker:{kind}"]].append(name)
        token = page.get("PaginationToken")
        if not token:
            return {kind: sorted(names) for kind, names in found.items()}
        params["PaginationToken"] = token


def object_tagged_for(s3: Any, s3_uri: str, endpoint_name: str) -> bool:
    """Whether the S3 object ``s3_uri`` carries ``gen3d:endpoint=<endpoint_name>``."""
    bucket, key = parse_s3_uri(s3_uri)
    tag_set = s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
    return {"Key": ENDPOINT_TAG, "Value": endpoint_name} in tag_set
