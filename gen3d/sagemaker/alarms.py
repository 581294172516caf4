"""CloudWatch alarms on an endpoint's failed invocations, notifying an SNS topic; and their removal.

Real-time endpoints: ``Invocation5XXErrors`` (the container answered 5xx) and ``InvocationModelErrors`` (no 2xx
answer: 4xx/5xx, socket errors, timeouts). Async endpoints publish neither per request, so they get
``InvocationFailures`` (an invocation failed for any reason: its failure object was written),
``ApproximateAgeOfOldestRequest`` (the queue is not drained: no capacity, or a stuck worker) and
``NotificationFailures`` (SageMaker could not publish a success or error notification to SNS, so callers waiting
on the topic never hear of their requests). Metric names and dimensions are those of AWS's "Monitor SageMaker AI
with Amazon CloudWatch" and "Alarms and logs for tracking metrics from asynchronous endpoints" pages. Names are
:func:`gen3d.sagemaker.names.alarm_names`, so teardown finds every alarm deploy made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from gen3d.sagemaker.clients import VARIANT_NAME, say, tolerant
from gen3d.sagemaker.names import alarm_names, log_group

NAMESPACE = "AWS/SageMaker"
PERIOD_S = 300
MODE_ALARMS = {"realtime": ("invocation_5xx", "model_errors"),
               "async": ("async_failures", "oldest_request", "notification_failures")}


@dataclass(frozen=True)
class AlarmSettings:
    """When the failure alarms fire: ``errors`` failed invocations within 5 minutes; the oldest queued async
    request older than ``oldest_request_s``."""

    errors: int = 1
    oldest_request_s: int = 3600

    def __post_init__(self) -> None:
        if self.errors < 1 or self.oldest_request_s < 60:
            raise ValueError("alarm thresholds: errors must be >= 1 and the oldest-request age >= 60 s")


def failure_alarms(endpoint_name: str, mode: str, topic_arn: str, settings: AlarmSettings) -> list[dict[str, Any]]:
    """The ``put_metric_alarm`` requests for ``mode``'s failure alarms, each notifying ``topic_arn`` on ALARM
    and on OK."""
    names = alarm_names(endpoint_name)
    endpoint = [{"Name": "EndpointName", "Value": endpoint_name}]
    variant = [*endpoint, {"Name": "VariantName", "Value": VARIANT_NAME}]
    logs = f"container logs: CloudWatch log group {log_group(endpoint_name)}"
    errors = {"Statistic": "Sum", "Threshold": float(settings.errors),
              "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Dimensions": variant}
    kinds: dict[str, dict[str, Any]] = {
        "invocation_5xx": {**errors, "MetricName": "Invocation5XXErrors", "AlarmDescription":
                           f"{endpoint_name}: >= {settings.errors} invocations answered 5xx in 5 minutes; {logs}"},
        "model_errors": {**errors, "MetricName": "InvocationModelErrors", "AlarmDescription":
                         f"{endpoint_name}: >= {settings.errors} invocations without a 2xx answer (4xx/5xx, "
                         f"timeouts, broken connections) in 5 minutes; {logs}"},
        "async_failures": {**errors, "MetricName": "InvocationFailures", "AlarmDescription":
                           f"{endpoint_name}: >= {settings.errors} async invocations failed in 5 minutes (their "
                           f"failure objects are in the S3 failure path); {logs}"},
        "notification_failures": {**errors, "MetricName": "NotificationFailures", "Threshold": 1.0,
                                  "AlarmDescription": f"{endpoint_name}: SageMaker failed to publish async success or "
                                  f"error notifications to SNS in 5 minutes (topic deleted, or its policy or KMS key "
                                  f"refuses SageMaker); {logs}"},
        "oldest_request": {"MetricName": "ApproximateAgeOfOldestRequest", "Statistic": "Maximum",
                           "Threshold": float(settings.oldest_request_s), "ComparisonOperator": "GreaterThanThreshold",
                           "Dimensions": endpoint, "AlarmDescription":
                           f"{endpoint_name}: a queued async request has waited over {settings.oldest_request_s} s "
                           f"(no capacity, or a worker stuck); {logs}"},
    }
    return [
        {"AlarmName": names[kind], "Namespace": NAMESPACE, "Period": PERIOD_S, "EvaluationPeriods": 1,
         "DatapointsToAlarm": 1, "TreatMissingData": "notBreaching", "AlarmActions": [topic_arn],
         "OKActions": [topic_arn], **kinds[kind]}
        for kind in MODE_ALARMS[mode]
    ]


def put_failure_alarms(
    cw: Any, endpoint_name: str, mode: str, topic_arn: str, settings: AlarmSettings, *, out: IO[str] | None = None
) -> list[str]:
    """Create (or overwrite) ``mode``'s failure alarms and delete those of the other mode; returns their names."""
    requests = failure_alarms(endpoint_name, mode, topic_arn, settings)
    for request in requests:
        cw.put_metric_alarm(**request)
        say(out, f"alarm {request['AlarmName']}: {request['MetricName']} -> {topic_arn}")
    made = [r["AlarmName"] for r in requests]
    remove_failure_alarms(cw, endpoint_name, keep=made, out=out, quiet=True)
    return made


def remove_failure_alarms(
    cw: Any, endpoint_name: str, *, keep: list[str] | None = None, out: IO[str] | None = None, quiet: bool = False
) -> list[str]:
    """Delete every failure alarm of the endpoint (but ``keep``); absent ones are reported unless ``quiet``."""
    wanted = [name for name in alarm_names(endpoint_name).values() if name not in (keep or [])]
    return remove_alarms(cw, wanted, out=out, quiet=quiet)


def remove_alarms(cw: Any, names: list[str], *, out: IO[str] | None = None, quiet: bool = False) -> list[str]:
    """Delete the alarms ``names`` that exist (one describe_alarms, then one delete each); absent ones are reported
    as already gone unless ``quiet``.  Returns those deleted."""
    present = {a["AlarmName"] for a in cw.describe_alarms(AlarmNames=names).get("MetricAlarms", [])}
    deleted = []
    for name in names:
        if name in present:
            if tolerant(out, f"alarm {name}", lambda name=name: cw.delete_alarms(AlarmNames=[name])):
                deleted.append(name)
        elif not quiet:
            say(out, f"alarm {name}: already gone")
    return deleted
