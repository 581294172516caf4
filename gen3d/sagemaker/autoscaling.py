"""Autoscaling of async endpoints (0..N on backlog) and its removal."""

from __future__ import annotations

from typing import IO, Any

from gen3d.sagemaker.clients import say, tolerant
from gen3d.sagemaker.names import scaling_names

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def configure_async_autoscaling(
    aas: Any,
    cw: Any,
    endpoint_name: str,
    *,
    max_capacity: int = 1,
    target_backlog_per_instance: float = 5.0,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
    out: IO[str] | None = None,
) -> dict[str, str]:
    """Scale an async endpoint between 0 and ``max_capacity`` instances.

    AWS's documented pattern: target tracking on ApproximateBacklogSizePerInstance,
    plus a step policy fired by a HasBacklogWithoutCapacity alarm to leave zero.
    """
    if max_capacity < 1:
        raise ValueError("max_capacity must be >= 1")
    names = scaling_names(endpoint_name)
    target = {"ServiceNamespace": "sagemaker", "ResourceId": names["resource_id"],
              "ScalableDimension": SCALABLE_DIMENSION}
    dimensions = [{"Name": "EndpointName", "Value": endpoint_name}]
    aas.register_scalable_target(**target, MinCapacity=0, MaxCapacity=max_capacity)
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
    say(out, f"autoscaling {names['resource_id']}: 0..{max_capacity} instances, "
              f"target backlog/instance {target_backlog_per_instance}")
    return {"target_policy_arn": str(tracking["PolicyARN"]), "step_policy_arn": str(step["PolicyARN"]),
            "alarm": names["alarm"]}


def has_scalable_target(aas: Any, endpoint_name: str) -> bool:
    """True when the endpoint's variant is registered with Application Auto Scaling."""
    response = aas.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[scaling_names(endpoint_name)["resource_id"]],
        ScalableDimension=SCALABLE_DIMENSION)
    return bool(response.get("ScalableTargets"))


def remove_autoscaling(aas: Any, cw: Any, endpoint_name: str, *, out: IO[str] | None = None) -> None:
    """Delete the alarm, both policies and the scalable target (tolerant of absence)."""
    names = scaling_names(endpoint_name)
    target = {"ServiceNamespace": "sagemaker", "ResourceId": names["resource_id"],
              "ScalableDimension": SCALABLE_DIMENSION}
    if cw.describe_alarms(AlarmNames=[names["alarm"]]).get("MetricAlarms"):
        tolerant(out, f"alarm {names['alarm']}", lambda: cw.delete_alarms(AlarmNames=[names["alarm"]]))
    else:
        say(out, f"alarm {names['alarm']}: already gone")
    for policy in (names["target_policy"], names["step_policy"]):
        tolerant(out, f"scaling policy {policy}",
                  lambda policy=policy: aas.delete_scaling_policy(PolicyName=policy, **target))
    tolerant(out, f"scalable target {names['resource_id']}",
              lambda: aas.deregister_scalable_target(**target))
