"""Tear down what deploy made for an endpoint: failure alarms, autoscaling, the endpoint, its configs (current
and timestamped) and their models. S3 data is left in place."""

from __future__ import annotations

import math
import re
from typing import IO, Any

from botocore.exceptions import ClientError, WaiterError

from gen3d.sagemaker.alarms import remove_failure_alarms
from gen3d.sagemaker.autoscaling import remove_autoscaling
from gen3d.sagemaker.clients import Clients, is_not_found, say, tolerant
from gen3d.sagemaker.names import SUFFIX_RE, name_base


def list_config_names(sm: Any, endpoint_name: str) -> list[str]:
    base = name_base(endpoint_name)
    names: list[str] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"NameContains": base, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = sm.list_endpoint_configs(**kwargs)
        names += [c["EndpointConfigName"] for c in page.get("EndpointConfigs", [])
                  if re.fullmatch(re.escape(base) + SUFFIX_RE, c["EndpointConfigName"])]
        token = page.get("NextToken")
        if not token:
            return names


def teardown(
    clients: Clients,
    endpoint_name: str,
    *,
    out: IO[str] | None = None,
    wait: bool = False,
    timeout_s: float = 1200.0,
    poll_s: float = 15.0,
) -> dict[str, list[str]]:
    """Delete the failure alarms, autoscaling, the endpoint, its configs (current and timestamped) and their
    models; with ``wait``, botocore's ``endpoint_deleted`` waiter polls until the endpoint is gone.

    Missing resources are reported as 'already gone'.  Returns what was deleted.
    """
    sm = clients.sagemaker
    deleted: dict[str, list[str]] = {"alarm": [], "endpoint": [], "endpoint_config": [], "model": []}
    deleted["alarm"] = remove_failure_alarms(clients.cloudwatch, endpoint_name, out=out)
    remove_autoscaling(clients.autoscaling, clients.cloudwatch, endpoint_name, out=out)
    configs: list[str] = []
    try:
        configs.append(sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"])
    except ClientError as err:
        if not is_not_found(err):
            raise
        say(out, f"endpoint {endpoint_name}: already gone")
    else:
        if tolerant(out, f"endpoint {endpoint_name}", lambda: sm.delete_endpoint(EndpointName=endpoint_name)):
            deleted["endpoint"].append(endpoint_name)
    configs += [c for c in list_config_names(sm, endpoint_name) if c not in configs]
    models: list[str] = []
    for config in configs:
        try:
            variants = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        except ClientError as err:
            if not is_not_found(err):
                raise
            say(out, f"endpoint config {config}: already gone")
            continue
        models += [v["ModelName"] for v in variants if v["ModelName"] not in models]
        if tolerant(out, f"endpoint config {config}",
                     lambda config=config: sm.delete_endpoint_config(EndpointConfigName=config)):
            deleted["endpoint_config"].append(config)
    for model in models:
        if tolerant(out, f"model {model}", lambda model=model: sm.delete_model(ModelName=model)):
            deleted["model"].append(model)
    if wait and deleted["endpoint"]:
        delay = max(1, round(poll_s))
        try:
            sm.get_waiter("endpoint_deleted").wait(
                EndpointName=endpoint_name,
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, math.ceil(timeout_s / delay))},
            )
        except WaiterError as err:
            raise TimeoutError(f"endpoint {endpoint_name} still deleting after {timeout_s:.0f} s: {err}") from err
        say(out, f"endpoint {endpoint_name}: deletion finished")
    return deleted
