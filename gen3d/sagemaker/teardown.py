"""Tear down what deploy made for an endpoint: failure alarms, autoscaling, the endpoint, every endpoint config and
model tagged ``gen3d:endpoint=<name>`` (a model whose config failed included) plus the endpoint's current config
and its models, and the superseded model data (the current and the previous prefix stay). The log group stays:
its events expire by the deploy's retention."""

from __future__ import annotations

import math
from typing import IO, Any

from botocore.exceptions import ClientError, WaiterError

from gen3d.sagemaker.alarms import remove_failure_alarms
from gen3d.sagemaker.autoscaling import remove_autoscaling
from gen3d.sagemaker.clients import Clients, is_not_found, say, tolerant
from gen3d.sagemaker.model_data import describe_model_data, prune_model_data
from gen3d.sagemaker.tags import ENDPOINT_TAG, tagged_resources


def config_models(sm: Any, config: str, out: IO[str] | None) -> list[str] | None:
    """The models an endpoint config serves, or None when it is gone."""
    try:
        variants = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    except ClientError as err:
        if not is_not_found(err):
            raise
        say(out, f"endpoint config {config}: already gone")
        return None
    return [v["ModelName"] for v in variants]


def teardown(
    clients: Clients,
    endpoint_name: str,
    *,
    out: IO[str] | None = None,
    wait: bool = False,
    timeout_s: float = 1200.0,
    poll_s: float = 15.0,
) -> dict[str, list[str]]:
    """Delete the failure alarms, autoscaling, the endpoint, its configs and models (found by tag, and the current
    config's), and superseded model data; with ``wait``, botocore's ``endpoint_deleted`` waiter polls until the
    endpoint is gone.

    Missing resources are reported as 'already gone'.  Returns what was deleted.
    """
    sm = clients.sagemaker
    deleted: dict[str, list[str]] = {"alarm": [], "endpoint": [], "endpoint_config": [], "model": [],
                                     "model_data": []}
    deleted["alarm"] = remove_failure_alarms(clients.cloudwatch, endpoint_name, out=out)
    remove_autoscaling(clients.autoscaling, clients.cloudwatch, endpoint_name, out=out)
    configs: list[str] = []  # the endpoint's current config first
    try:
        configs.append(sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"])
    except ClientError as err:
        if not is_not_found(err):
            raise
        say(out, f"endpoint {endpoint_name}: already gone")
    else:
        if tolerant(out, f"endpoint {endpoint_name}", lambda: sm.delete_endpoint(EndpointName=endpoint_name)):
            deleted["endpoint"].append(endpoint_name)
    tagged = tagged_resources(clients.tagging, endpoint_name)
    say(out, f"tagged {ENDPOINT_TAG}={endpoint_name}: {len(tagged['endpoint_config'])} endpoint configs, "
             f"{len(tagged['model'])} models")
    serving = configs[:1]
    configs += [c for c in tagged["endpoint_config"] if c not in configs]
    current: list[str] = []  # the models the endpoint serves: their data stays
    models: list[str] = []  # those its configs served first
    for config in configs:
        served = config_models(sm, config, out)
        if served is None:
            continue
        if config in serving:
            current = served
        models += [m for m in served if m not in models]
        if tolerant(out, f"endpoint config {config}",
                    lambda config=config: sm.delete_endpoint_config(EndpointConfigName=config)):
            deleted["endpoint_config"].append(config)
    served = list(models)
    models += [m for m in tagged["model"] if m not in models]
    data = [d for d in (describe_model_data(sm, m) for m in models) if d is not None]
    for model in models:
        if tolerant(out, f"model {model}", lambda model=model: sm.delete_model(ModelName=model)):
            deleted["model"].append(model)
    deleted["model_data"] = prune_model_data(clients.s3, endpoint_name, data, current=current, served=served, out=out)
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
