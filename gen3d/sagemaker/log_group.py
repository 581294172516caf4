"""The endpoint's CloudWatch log group, made by the deploy before SageMaker writes to it: tagged, with a retention.

SageMaker creates ``/aws/sagemaker/Endpoints/<name>`` on first write without a retention, so container logs (every
request's errors included) would be kept, and billed, forever. The deploy creates it first, tagged like the rest,
and sets ``--log-retention-days`` (default 30; 0 keeps the events forever). Teardown leaves the group: its events
expire by the retention, and a failed endpoint's logs stay readable after it is gone.
"""

from __future__ import annotations

from typing import IO, Any

from gen3d.sagemaker.clients import say
from gen3d.sagemaker.names import log_group

# the values PutRetentionPolicy accepts (botocore's service model documents them)
RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
DEFAULT_RETENTION_DAYS = 30


def check_retention(days: int) -> int:
    """``days`` if CloudWatch Logs accepts it (0: no retention); ValueError naming the flag otherwise."""
    if days != 0 and days not in RETENTION_DAYS:
        raise ValueError(
            f"--log-retention-days must be 0 (keep forever) or one of CloudWatch Logs' values "
            f"{', '.join(map(str, RETENTION_DAYS))}; got {days}"
        )
    return days


def find_log_group(logs: Any, name: str) -> dict[str, Any] | None:
    """The log group called exactly ``name``, or None."""
    params: dict[str, Any] = {"logGroupNamePrefix": name}
    while True:
        page = logs.describe_log_groups(**params)
        found = next((g for g in page.get("logGroups", []) if g["logGroupName"] == name), None)
        if found or not page.get("nextToken"):
            return found
        params["nextToken"] = page["nextToken"]


def prepare_log_group(
    logs: Any, endpoint_name: str, retention_days: int, tags: dict[str, str], *, out: IO[str] | None = None
) -> str:
    """Create (or tag) the endpoint's log group and set its retention; returns its name."""
    name = log_group(endpoint_name)
    existing = find_log_group(logs, name)
    if existing is None:
        logs.create_log_group(logGroupName=name, tags=tags)
    else:
        logs.tag_resource(resourceArn=existing["logGroupArn"], tags=tags)
    if retention_days:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
    elif existing and existing.get("retentionInDays"):
        logs.delete_retention_policy(logGroupName=name)
    kept = f"{retention_days} days" if retention_days else "forever"
    say(out, f"log group {name}: {'created' if existing is None else 'exists'}, events kept {kept}")
    return name
