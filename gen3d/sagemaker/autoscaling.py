"""Autoscaling: async endpoints 0..N on their backlog, real-time endpoints min..max on invocations per
instance (:func:`apply_scaling` of a :class:`ScalingPlan`); and its removal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from gen3d.sagemaker.alarms import remove_alarms
from gen3d.sagemaker.clients import say, tolerant
from gen3d.sagemaker.names import scaling_names

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def scalable_target(endpoint_name: str) -> dict[str, str]:
    """The endpoint's variant as Application Auto Scaling names it (its calls' common keyword arguments)."""
    return {"ServiceNamespace": "sagemaker", "ResourceId": scaling_names(endpoint_name)["resource_id"],
            "ScalableDimension": SCALABLE_DIMENSION}


def register_target(
    aas: Any, endpoint_name: str, *, min_capacity: int, max_capacity: int, tags: dict[str, str] | None = None
) -> None:
    """Register (or update) the variant's scalable target, tagged ``tags``. RegisterScalableTarget takes tags only
    when it creates the target (for an existing one it answers ValidationException "use the TagResource API")."""
    target = scalable_target(endpoint_name)
    existed = bool(tags) and has_scalable_target(aas, endpoint_name)
    response = aas.register_scalable_target(**target, MinCapacity=min_capacity, MaxCapacity=max_capacity,
                                            **({"Tags": tags} if tags and not existed else {}))
    if existed:
        aas.tag_resource(ResourceARN=response["ScalableTargetARN"], Tags=tags)


def configure_async_autoscaling(
    aas: Any,
    cw: Any,
    endpoint_name: str,
    *,
    min_capacity: int = 0,
    max_capacity: int = 1,
    target_backlog_per_instance: float = 5.0,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
    tags: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> dict[str, str]:
    """Scale an async endpoint between ``min_capacity`` (default 0) and ``max_capacity`` instances.

    AWS's documented pattern: target tracking on ApproximateBacklogSizePerInstance,
    plus a step policy fired by a HasBacklogWithoutCapacity alarm to leave zero.
    """
    if not 0 <= min_capacity <= max_capacity or max_capacity < 1:
        raise ValueError(f"async autoscaling needs 0 <= min ({min_capacity}) <= max ({max_capacity}), max >= 1")
    names, target = scaling_names(endpoint_name), scalable_target(endpoint_name)
    dimensions = [{"Name": "EndpointName", "Value": endpoint_name}]
    register_target(aas, endpoint_name, min_capacity=min_capacity, max_capacity=max_capacity, tags=tags)
    tracking = aas.put_scaling_policy(
        PolicyName=names["target_policy"], PolicyType="TargetTrackingScaling", **target,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target_backlog_per_instance,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                "Dimensions": dimensions, "Statistic": "Average"},
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        },
    )
    step = aas.put_scaling_policy(
        PolicyName=names["step_policy"], PolicyType="StepScaling", **target,
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
            "Cooldown": scale_out_cooldown_s,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    )
    cw.put_metric_alarm(
        AlarmName=names["alarm"],
        AlarmDescription=f"Scale {endpoint_name} out from 0 when requests are queued",
        MetricName="HasBacklogWithoutCapacity", Namespace="AWS/SageMaker", Dimensions=dimensions,
        Statistic="Average", Period=60, EvaluationPeriods=2, DatapointsToAlarm=2,
        Threshold=1.0, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing", AlarmActions=[step["PolicyARN"]],
    )
    say(out, f"autoscaling {names['resource_id']}: {min_capacity}..{max_capacity} instances, "
              f"target backlog/instance {target_backlog_per_instance}")
    return {"target_policy_arn": str(tracking["PolicyARN"]), "step_policy_arn": str(step["PolicyARN"]),
            "alarm": names["alarm"]}


def configure_realtime_autoscaling(
    aas: Any,
    endpoint_name: str,
    *,
    min_capacity: int,
    max_capacity: int,
    target_invocations_per_instance: float,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
    tags: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> dict[str, str]:
    """Scale a real-time endpoint between ``min_capacity`` (>= 1) and ``max_capacity`` instances.

    Target tracking on the predefined ``SageMakerVariantInvocationsPerInstance`` (invocations per instance
    per minute), as AWS documents for real-time variants.
    """
    if not 1 <= min_capacity < max_capacity:
        raise ValueError(f"real-time autoscaling needs 1 <= min ({min_capacity}) < max ({max_capacity}) instances")
    if target_invocations_per_instance <= 0:
        raise ValueError("the invocations-per-instance target must be > 0")
    names, target = scaling_names(endpoint_name), scalable_target(endpoint_name)
    register_target(aas, endpoint_name, min_capacity=min_capacity, max_capacity=max_capacity, tags=tags)
    policy = aas.put_scaling_policy(
        PolicyName=names["invocations_policy"], PolicyType="TargetTrackingScaling", **target,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target_invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        },
    )
    say(out, f"autoscaling {names['resource_id']}: {min_capacity}..{max_capacity} instances, "
              f"target {target_invocations_per_instance:g} invocations/instance/minute")
    return {"invocations_policy_arn": str(policy["PolicyARN"])}


@dataclass(frozen=True)
class ScalingPlan:
    """The autoscaling a deploy asks for: ``mode``'s policies between ``min_capacity`` and ``max_capacity``
    instances (``enabled`` False: none); real-time endpoints hold ``target_invocations`` per instance per minute."""

    mode: str
    min_capacity: int
    max_capacity: int
    enabled: bool
    target_invocations: float | None = None
    tags: dict[str, str] | None = None  # of the scalable target


def apply_scaling(aas: Any, cw: Any, endpoint_name: str, plan: ScalingPlan, *,
                  out: IO[str] | None = None) -> dict[str, str]:
    """Register the endpoint's variant and put ``plan``'s policies (over any earlier ones); {} when not enabled."""
    if not plan.enabled:
        return {}
    if plan.mode == "async":
        return configure_async_autoscaling(aas, cw, endpoint_name, min_capacity=plan.min_capacity,
                                           max_capacity=plan.max_capacity, tags=plan.tags, out=out)
    return configure_realtime_autoscaling(aas, endpoint_name, min_capacity=plan.min_capacity,
                                          max_capacity=plan.max_capacity,
                                          target_invocations_per_instance=float(plan.target_invocations or 0),
                                          tags=plan.tags, out=out)


def has_scalable_target(aas: Any, endpoint_name: str) -> bool:
    """True when the endpoint's variant is registered with Application Auto Scaling."""
    target = scalable_target(endpoint_name)
    resource = target.pop("ResourceId")
    response = aas.describe_scalable_targets(**target, ResourceIds=[resource])
    return bool(response.get("ScalableTargets"))


def remove_autoscaling(aas: Any, cw: Any, endpoint_name: str, *, out: IO[str] | None = None) -> None:
    """Delete the alarm, every policy and the scalable target (tolerant of absence)."""
    names, target = scaling_names(endpoint_name), scalable_target(endpoint_name)
    remove_alarms(cw, [names["alarm"]], out=out)
    for policy in (names["target_policy"], names["step_policy"], names["invocations_policy"]):
        tolerant(out, f"scaling policy {policy}",
                  lambda policy=policy: aas.delete_scaling_policy(PolicyName=policy, **target))
    tolerant(out, f"scalable target {names['resource_id']}",
              lambda: aas.deregister_scalable_target(**target))
