"""Updating an existing endpoint so that no outcome leaves it worse than it was.

- What runs is read before anything is written (DescribeEndpoint, DescribeEndpointConfig, the scalable target),
  and the deploy is refused there when it cannot work: a switch between real-time and async (an update cannot add
  or remove an endpoint's AsyncInferenceConfig), an endpoint still changing, a variant this deploy did not name.
- The update is a blue/green deployment (``DeploymentConfig``): all traffic at once by default, or a canary share
  of the new fleet first (``--canary``); it bakes while the endpoint's failure alarms
  (``AutoRollbackConfiguration``) can roll it back to the old fleet.
- The instance count stays what runs (``RetainAllVariantProperties``). An async endpoint scaled in to zero gets
  the new config's count instead, so the new model is health-checked before it takes traffic (its autoscaling
  takes it back to zero).
- Autoscaling stays registered throughout: AWS requires deregistering it only when the instance type changes
  ("Update endpoints that use auto scaling"), and then the deploy's autoscaling is registered again whatever the
  outcome (success, failure, rollback, time-out).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.sagemaker.autoscaling import ScalingPlan, apply_scaling, has_scalable_target, remove_autoscaling
from gen3d.sagemaker.clients import VARIANT_NAME, Clients, describe_or_none, say
from gen3d.sagemaker.errors import DeployRefused
from gen3d.sagemaker.names import alarm_names
from gen3d.sagemaker.resources import wait_for_endpoint
from gen3d.sagemaker.tags import tag_list

IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
MODE_WORDS = {"realtime": "real-time", "async": "async"}
# The failure alarms that say the new model fails. Not the async queue's age: a queue that grows while fleets
# change says nothing about the model, and would roll a good update back.
ROLLBACK_ALARMS = {"realtime": ("invocation_5xx", "model_errors"), "async": ("async_failures",)}
BAKE_S = 600  # two periods of the failure alarms: a failure in the first reaches its alarm before the bake ends
MAX_CANARY_PERCENT = 50  # SageMaker: a canary is at most half of the new fleet
DEPLOYMENT_TIMEOUT_S = (600, 28800)  # SageMaker's bounds of MaximumExecutionTimeoutInSeconds


@dataclass(frozen=True)
class RunningEndpoint:
    """What an existing endpoint runs, read before the deploy writes anything."""

    name: str
    status: str
    config_name: str
    mode: str
    variant_name: str
    instance_type: str
    instance_count: int  # desired now; 0: an async endpoint scaled in to zero
    scaled: bool  # registered with Application Auto Scaling

    def update_count(self, new_endpoint_count: int) -> int:
        """The new fleet's size: what runs, or (scaled in to zero) the count a new endpoint would start with."""
        return self.instance_count or new_endpoint_count


def read_running(sm: Any, aas: Any, endpoint_name: str) -> RunningEndpoint | None:
    """The endpoint as it runs; None when there is none (reads only)."""
    desc = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
    if desc is None:
        return None
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    variants = config.get("ProductionVariants") or [{}]
    variant = variants[0] if len(variants) == 1 else {}
    summary = next((v for v in desc.get("ProductionVariants") or [] if v.get("VariantName") == variant.get(
        "VariantName")), {})
    count = summary.get("DesiredInstanceCount", summary.get("CurrentInstanceCount", variant.get(
        "InitialInstanceCount", 0)))
    return RunningEndpoint(endpoint_name, str(desc.get("EndpointStatus")), str(desc["EndpointConfigName"]),
                           "async" if config.get("AsyncInferenceConfig") else "realtime",
                           str(variant.get("VariantName", f"{len(variants)} variants")),
                           str(variant.get("InstanceType")), int(count or 0),
                           has_scalable_target(aas, endpoint_name))


def check_update(running: RunningEndpoint, mode: str, canary_percent: int | None, new_endpoint_count: int) -> None:
    """DeployRefused, naming what runs and what gets past it, for an update that cannot work."""
    name = running.name
    teardown = f"tear it down first (gen3d-teardown --endpoint-name {name}) or deploy under another --endpoint-name"
    if running.mode != mode:
        raise DeployRefused(
            f"endpoint {name} is {MODE_WORDS[running.mode]} and this deploy is {MODE_WORDS[mode]}: SageMaker cannot "
            f"switch an existing endpoint between real-time and async (an update cannot add or remove its "
            f"AsyncInferenceConfig); {teardown}")
    if running.status in IN_PROGRESS:
        raise DeployRefused(f"endpoint {name} is {running.status}: SageMaker updates one change at a time; deploy "
                            "again once it is InService")
    if running.variant_name != VARIANT_NAME:
        raise DeployRefused(f"endpoint {name} serves variant {running.variant_name!r}, not {VARIANT_NAME!r}, which "
                            f"every gen3d deploy names (a blue/green update keeps the variant's name); {teardown}")
    fleet = running.update_count(new_endpoint_count)
    if canary_percent and fleet < 2:
        raise DeployRefused(f"--canary needs a fleet of >= 2 instances (a canary is at most {MAX_CANARY_PERCENT}% "
                            f"of it); {name}'s update runs {fleet}: leave --canary out (all at once)")


def rollback_alarms(cw: Any, endpoint_name: str, mode: str, made: list[str]) -> list[str]:
    """The failure alarms the update may roll back on: those this deploy just put, else those already there."""
    wanted = [alarm_names(endpoint_name)[kind] for kind in ROLLBACK_ALARMS[mode]]
    present = set(made) if made else {a["AlarmName"] for a in cw.describe_alarms(AlarmNames=wanted).get(
        "MetricAlarms", [])}
    return [alarm for alarm in wanted if alarm in present]


def deployment_config(alarms: list[str], canary_percent: int | None, timeout_s: int) -> dict[str, Any]:
    """UpdateEndpoint's ``DeploymentConfig``: blue/green, all at once (baking only when there are alarms to
    watch) or a canary of ``canary_percent``% first, rolled back when one of ``alarms`` fires."""
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": BAKE_S if alarms else 0}
    if canary_percent:
        routing = {"Type": "CANARY", "WaitIntervalInSeconds": BAKE_S,
                   "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": canary_percent}}
    low, high = DEPLOYMENT_TIMEOUT_S
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": routing, "MaximumExecutionTimeoutInSeconds": min(high, max(low, timeout_s))}}
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": alarm} for alarm in alarms]}
    return config


def bake_s(alarms: list[str], canary_percent: int | None) -> int:
    """How long the deployment bakes, which the wait for InService must add."""
    return 2 * BAKE_S if canary_percent else (BAKE_S if alarms else 0)


def update_request(running: RunningEndpoint, config_name: str, deployment: dict[str, Any]) -> dict[str, Any]:
    """UpdateEndpoint's parameters: the running instance count kept, unless it is zero (then the config's)."""
    params: dict[str, Any] = {"EndpointName": running.name, "EndpointConfigName": config_name,
                              "RetainAllVariantProperties": True, "DeploymentConfig": deployment}
    if not running.instance_count:
        params["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DesiredInstanceCount"}]
    return params


def update_endpoint(
    clients: Clients,
    running: RunningEndpoint,
    config_name: str,
    *,
    instance_type: str,
    scaling: ScalingPlan,
    deployment: dict[str, Any],
    tags: dict[str, str] | None = None,
    timeout_s: float,
    poll_s: float = 30.0,
    out: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Point the endpoint at ``config_name`` (adding ``tags``: UpdateEndpoint takes none) and wait for InService
    there; then put ``scaling`` in place. Returns DescribeEndpoint's answer and the scaling policies.
    EndpointFailedError / TimeoutError leave autoscaling registered (registered again after an instance-type
    change)."""
    sm, aas, cw = clients.sagemaker, clients.autoscaling, clients.cloudwatch
    retype = running.scaled and running.instance_type != instance_type
    if retype:
        say(out, f"instance type {running.instance_type} -> {instance_type}: autoscaling is deregistered for the "
                 "update (AWS requires it) and registered again whatever the outcome")
        remove_autoscaling(aas, cw, running.name, out=out)
    elif running.scaled:
        say(out, "autoscaling stays registered during the update")
    routing = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    rollback = [a["AlarmName"] for a in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])]
    try:
        arn = sm.update_endpoint(**update_request(running, config_name, deployment))["EndpointArn"]
        if tags:
            sm.add_tags(ResourceArn=arn, Tags=tag_list(tags))
        say(out, f"updating endpoint {running.name} -> {config_name}: blue/green, {routing['Type']}, bake "
                 f"{routing['WaitIntervalInSeconds']} s, "
                 + (f"rolled back on {', '.join(rollback)}" if rollback else "no failure alarms to roll back on")
                 + (f", keeping the running count ({running.instance_count})" if running.instance_count else ""))
        desc = wait_for_endpoint(sm, running.name, expected_config=config_name, timeout_s=timeout_s, poll_s=poll_s,
                                 out=out, sleep=sleep)
    except BaseException:
        if retype:
            restore_scaling(clients, running.name, scaling, out=out)
        raise
    if scaling.enabled:
        return desc, apply_scaling(aas, cw, running.name, scaling, out=out)
    if running.scaled and not retype:
        say(out, "this deploy asks for no autoscaling: removing the endpoint's")
        remove_autoscaling(aas, cw, running.name, out=out)
    return desc, {}


def restore_scaling(clients: Clients, endpoint_name: str, scaling: ScalingPlan, *, out: IO[str] | None) -> None:
    """After a failed update: register ``scaling`` again, saying (not raising) when that fails too, so the update's
    own error is the one reported."""
    if not scaling.enabled:
        say(out, f"autoscaling of {endpoint_name} stays removed: this deploy asks for none")
        return
    try:
        apply_scaling(clients.autoscaling, clients.cloudwatch, endpoint_name, scaling, out=out)
    except (ClientError, BotoCoreError) as err:
        say(out, f"WARNING: could not register the autoscaling of {endpoint_name} again ({err}); deploy again, or "
                 "register it by hand")
