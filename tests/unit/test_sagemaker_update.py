"""Updating an endpoint that runs: blue/green with rollback on the failure alarms, the running instance count kept,
autoscaling registered whatever the outcome (deregistered only for an instance-type change), and a switch between
real-time and async refused before any write. SageMaker's control plane is botocore's Stubber (every call and its
parameters in order, nothing else allowed); S3, Application Auto Scaling and CloudWatch are moto's server, so what
stays registered is read back from it."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from gen3d.sagemaker import autoscaling, deploy, errors, update
from gen3d.sagemaker import clients as aws
from tests.unit.sagemaker_support import (
    IMAGE,
    NOW,
    OLD_CONFIG,
    ROLE,
    TOPIC,
    client,
    endpoint_desc,
    expect_alarm_tagging,
    expect_deploy,
    expect_running,
    write_archive,
)

pytestmark = pytest.mark.usefixtures("isolated_aws")
NAME = "sam3-rt-20251128-130509"
REALTIME_ROLLBACK = [{"AlarmName": "sam3-rt-invocation-5xx-errors"}, {"AlarmName": "sam3-rt-invocation-model-errors"}]


def spec(tmp_path, **kw) -> deploy.DeploySpec:
    base = {"model": "sam3", "bucket": "bkt", "prefix": "p", "image_uri": IMAGE, "role_arn": ROLE,
            "instance_type": "ml.g5.2xlarge", "endpoint_name": "sam3-rt", "archive": write_archive(tmp_path),
            "min_instances": 1, "max_instances": 3, "target_invocations": 60.0, "sns_topic_arn": TOPIC}
    return deploy.DeploySpec(**{**base, **kw})


@pytest.fixture
def aws_world(sm_moto, stubbed):
    """Clients: SageMaker stubbed, the rest moto; the bucket exists. Yields (clients, stubs, scaling_seen) where
    scaling_seen records whether the endpoint was registered for autoscaling when UpdateEndpoint was sent."""
    made, stubs = stubbed
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    clients = aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=None,
                          autoscaling=client("application-autoscaling"), cloudwatch=client("cloudwatch"),
                          logs=client("logs"))
    # moto 5.2.5 does not implement Application Auto Scaling's TagResource, which tags a target that exists
    # (test_sagemaker_platform pins that call with the Stubber): answer it here, as AWS does, with nothing
    clients.autoscaling.meta.events.register("before-call.application-auto-scaling.TagResource",
                                             lambda **_: (SimpleNamespace(status_code=200), {}))
    seen: list[bool] = []
    made["sagemaker"].meta.events.register(
        "before-parameter-build.sagemaker.UpdateEndpoint",
        lambda **_: seen.append(autoscaling.has_scalable_target(clients.autoscaling, "sam3-rt")))
    return clients, stubs, seen


def registered(clients: aws.Clients) -> tuple[int, int, list[str]]:
    """(min, max, policy names) of what Application Auto Scaling holds for the endpoint."""
    target = clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = clients.autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(target) == 1, target
    return target[0]["MinCapacity"], target[0]["MaxCapacity"], [p["PolicyName"] for p in policies]


def scale_running(clients: aws.Clients, low: int = 1, high: int = 2) -> None:
    autoscaling.configure_realtime_autoscaling(clients.autoscaling, "sam3-rt", min_capacity=low, max_capacity=high,
                                               target_invocations_per_instance=30, out=io.StringIO())


def blue_green(bake: int, alarms: list[dict] | None = None, *, timeout: int, routing: dict | None = None) -> dict:
    config = {"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": routing or {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": bake},
        "MaximumExecutionTimeoutInSeconds": timeout}}
    return {**config, "AutoRollbackConfiguration": {"Alarms": alarms}} if alarms else config


def test_update_is_blue_green_keeps_the_count_and_never_deregisters(aws_world, tmp_path):
    clients, stubs, seen = aws_world
    scale_running(clients)
    # 900 s provisioning + 720 + 720 s timeouts + 600 s bake: SageMaker's own deadline equals the deploy's wait
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g5.2xlarge", exists=True, timeouts=(720, 720), count=3,
                  running={"count": 3, "scaled": None}, rollback_present=None,
                  update={"RetainAllVariantProperties": True, "DeploymentConfig": blue_green(
                      600, REALTIME_ROLLBACK, timeout=2940)})
    out = io.StringIO()
    result = deploy.deploy(clients, spec(tmp_path), out=out, now=NOW, sleep=lambda s: None, progress=False)
    assert result.action == "updated" and seen == [True]
    assert registered(clients) == (1, 3, ["sam3-rt-invocations-target-tracking"])  # the new settings applied
    text = out.getvalue()
    assert "autoscaling stays registered during the update" in text
    assert (f"updating endpoint sam3-rt -> {NAME}: blue/green, ALL_AT_ONCE, bake 600 s, rolled back on "
            "sam3-rt-invocation-5xx-errors, sam3-rt-invocation-model-errors, keeping the running count (3)") in text


@pytest.mark.parametrize("outcome", ["failed", "rolled back", "timed out"])
def test_failed_update_leaves_autoscaling_as_it_was(aws_world, tmp_path, outcome):
    clients, stubs, seen = aws_world
    scale_running(clients, 1, 2)
    waiting = {"failed": [endpoint_desc("sam3-rt", "Failed", OLD_CONFIG, "did not pass the ping health check")],
               "rolled back": [endpoint_desc("sam3-rt", "Updating", OLD_CONFIG),
                               endpoint_desc("sam3-rt", "InService", OLD_CONFIG,
                                             "Alarm sam3-rt-invocation-5xx-errors fired: rolled back")],
               "timed out": [endpoint_desc("sam3-rt", "Updating", OLD_CONFIG)]}[outcome]
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g5.2xlarge", exists=True, timeouts=(720, 720),
                  running={"scaled": None}, rollback_present=None, waiting=waiting)
    raised = TimeoutError if outcome == "timed out" else errors.EndpointFailedError
    message = {"failed": "is Failed: did not pass the ping health check",
               "rolled back": f"update of sam3-rt to {NAME} failed and was rolled back",
               "timed out": "still Updating after 0 s"}[outcome]
    with pytest.raises(raised, match=message):
        deploy.deploy(clients, spec(tmp_path), out=io.StringIO(), now=NOW, sleep=lambda s: None, progress=False,
                      wait_timeout_s=1e-6 if outcome == "timed out" else None)
    assert seen == [True]
    assert registered(clients) == (1, 2, ["sam3-rt-invocations-target-tracking"])  # untouched


@pytest.mark.parametrize("succeeds", [True, False])
def test_instance_type_change_deregisters_for_the_update_only(aws_world, tmp_path, succeeds):
    """AWS rejects an update that changes the instance type of a scaled variant: autoscaling is deregistered for
    it, and registered again (the deploy's settings) whether the update succeeds or fails."""
    clients, stubs, seen = aws_world
    scale_running(clients, 1, 2)
    waiting = None if succeeds else [endpoint_desc("sam3-rt", "Failed", OLD_CONFIG, "CannotStartContainerError")]
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g6.xlarge", exists=True, timeouts=(720, 720),
                  running={"instance_type": "ml.g5.2xlarge", "scaled": None}, rollback_present=None,
                  waiting=waiting)
    out = io.StringIO()
    run = spec(tmp_path, instance_type="ml.g6.xlarge", max_instances=4)
    if succeeds:
        deploy.deploy(clients, run, out=out, now=NOW, sleep=lambda s: None, progress=False)
    else:
        with pytest.raises(errors.EndpointFailedError, match="CannotStartContainerError"):
            deploy.deploy(clients, run, out=out, now=NOW, sleep=lambda s: None, progress=False)
    assert seen == [False]  # not registered while UpdateEndpoint was sent
    assert registered(clients) == (1, 4, ["sam3-rt-invocations-target-tracking"])
    assert "instance type ml.g5.2xlarge -> ml.g6.xlarge: autoscaling is deregistered for the update" in out.getvalue()


def test_async_endpoint_at_zero_is_updated_with_the_configs_count(aws_world, tmp_path):
    """Scaled in to zero, the retained count would start no instance: the new model would never be health-checked
    before traffic. The config's count (1) is used instead; autoscaling takes it back to zero."""
    clients, stubs, seen = aws_world
    autoscaling.configure_async_autoscaling(clients.autoscaling, clients.cloudwatch, "sam3-rt", out=io.StringIO())
    paths = ("s3://bkt/p/async/output/", "s3://bkt/p/async/failure/")
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g5.2xlarge", exists=True, timeouts=(720, 720), count=1,
                  async_paths=paths, notification={"SuccessTopic": TOPIC, "ErrorTopic": TOPIC},
                  running={"mode": "async", "count": 0, "scaled": None}, rollback_present=None,
                  update={"RetainAllVariantProperties": True,
                          "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DesiredInstanceCount"}],
                          "DeploymentConfig": blue_green(
                              600, [{"AlarmName": "sam3-rt-invocation-failures"}], timeout=2940)})
    run = spec(tmp_path, mode="async", min_instances=None, max_instances=None, target_invocations=None)
    deploy.deploy(clients, run, out=io.StringIO(), now=NOW, sleep=lambda s: None, progress=False)
    assert seen == [True]
    assert registered(clients)[:2] == (0, 1)


@pytest.mark.parametrize(("running", "flags", "refusal"), [
    ({"mode": "async"}, {}, "endpoint sam3-rt is async and this deploy is real-time: SageMaker cannot switch an "
     "existing endpoint between real-time and async (an update cannot add or remove its AsyncInferenceConfig); "
     "tear it down first (gen3d-teardown --endpoint-name sam3-rt) or deploy under another --endpoint-name"),
    ({}, {"mode": "async", "min_instances": None, "max_instances": None, "target_invocations": None},
     "endpoint sam3-rt is real-time and this deploy is async: SageMaker cannot switch"),
    ({"status": "Updating"}, {}, "endpoint sam3-rt is Updating: SageMaker updates one change at a time"),
    ({"variant_name": "Blue"}, {}, "endpoint sam3-rt serves variant 'Blue', not 'AllTraffic'"),
    ({"count": 1}, {"canary_percent": 20}, "--canary needs a fleet of >= 2 instances (a canary is at most 50% of it); "
     "sam3-rt's update runs 1: leave --canary out (all at once)")])
def test_refused_update_makes_no_write_call(stubbed, sm_moto, tmp_path, running, flags, refusal):
    """Only the reads are stubbed: any write call (or an upload) fails the test."""
    made, stubs = stubbed
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    expect_running(stubs, "sam3-rt", **running)
    clients = aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=None,
                          autoscaling=made["application-autoscaling"], cloudwatch=made["cloudwatch"])
    with pytest.raises(errors.DeployRefused) as err:
        deploy.deploy(clients, spec(tmp_path, **flags), out=io.StringIO(), now=NOW, progress=False)
    assert refusal in str(err.value)
    assert "Contents" not in s3.list_objects_v2(Bucket="bkt")


def test_canary_update(aws_world, tmp_path):
    clients, stubs, _ = aws_world
    scale_running(clients, 2, 4)
    canary = {"Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25}}
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g5.2xlarge", exists=True, timeouts=(720, 720), count=4,
                  running={"count": 4, "scaled": None}, rollback_present=None,
                  update={"RetainAllVariantProperties": True,
                          "DeploymentConfig": blue_green(0, REALTIME_ROLLBACK, timeout=3540, routing=canary)})
    deploy.deploy(clients, spec(tmp_path, min_instances=2, max_instances=4, canary_percent=25), out=io.StringIO(),
                  now=NOW, sleep=lambda s: None, progress=False)
    with pytest.raises(ValueError, match=r"--canary is a percentage of the new fleet, 1..50"):
        spec(tmp_path, canary_percent=60).check()


def test_without_failure_alarms_the_update_does_not_bake(stubbed, sm_moto, tmp_path):
    """No --sns-topic-arn and no alarms left by an earlier deploy (DescribeAlarms finds none): nothing to roll back
    on, so no bake either; no autoscaling asked for nor running: none touched."""
    made, stubs = stubbed
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    expect_deploy(stubs, "sam3-rt", NAME, "ml.g5.2xlarge", exists=True, timeouts=(720, 720),
                  update={"RetainAllVariantProperties": True, "DeploymentConfig": blue_green(0, timeout=2340)})
    expect_alarm_tagging(stubs["cloudwatch"], "sam3-rt")
    clients = aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=None,
                          autoscaling=made["application-autoscaling"], cloudwatch=made["cloudwatch"],
                          logs=client("logs"))
    run = spec(tmp_path, sns_topic_arn=None, min_instances=None, max_instances=None, target_invocations=None)
    result = deploy.deploy(clients, run, out=io.StringIO(), now=NOW, sleep=lambda s: None, progress=False)
    assert result.action == "updated" and result.autoscaling == {} and result.alarms == []


def test_deployment_config_bounds():
    """SageMaker takes 600..28800 s as the deployment's deadline; the wait for InService adds the bake."""
    assert update.deployment_config([], None, 100) == blue_green(0, timeout=600)
    assert update.deployment_config(["a"], None, 99999)["BlueGreenUpdatePolicy"][
        "MaximumExecutionTimeoutInSeconds"] == 28800
    assert (update.bake_s([], 10), update.bake_s(["a"], None), update.bake_s([], None)) == (1200, 600, 0)
