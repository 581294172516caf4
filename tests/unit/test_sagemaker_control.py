"""SageMaker control plane: Stubber (parameters checked against botocore's service models)
for SageMaker / Application Auto Scaling / CloudWatch, a local moto server for S3 and
sagemaker-runtime, and the three CLI scripts.  Nothing leaves 127.0.0.1."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber
from PIL import Image

from gen3d.models import MODELS
from gen3d.sagemaker import autoscaling, deploy, errors, gpus, invoke, names, resources, teardown, upload
from gen3d.sagemaker import clients as aws
from tests.unit.sagemaker_support import (
    ACCOUNT,
    IMAGE,
    NOW,
    REGION,
    ROLE,
    SCRIPTS,
    STAMPED,
    T0,
    TOPIC,
    FakeClock,
    client,
    clients_from,
    deploy_tags,
    dry_run_calls,
    endpoint_desc,
    expect_deploy,
    model_data_source,
    not_found,
    run_script,
    set_moto_async_results,
    set_moto_realtime_results,
    variant,
    write_archive,
)

pytestmark = pytest.mark.usefixtures("isolated_aws")


SCALING_TARGET = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/sam3-async/variant/AllTraffic",
                  "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
STEP_ARN = ("arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:1:resource/sagemaker/"
            "endpoint/sam3-async/variant/AllTraffic:policyName/sam3-async-scale-out-from-zero")
TRACK_ARN = STEP_ARN.replace("scale-out-from-zero", "backlog-target-tracking")


def expect_autoscaling(aas: Stubber, cw: Stubber, max_capacity: int = 1, min_capacity: int = 0,
                       tags: dict | None = None) -> None:
    dims = [{"Name": "EndpointName", "Value": "sam3-async"}]
    if tags:  # a new target takes its tags when registered
        aas.add_response("describe_scalable_targets", {"ScalableTargets": []}, {
            "ServiceNamespace": "sagemaker", "ResourceIds": [SCALING_TARGET["ResourceId"]],
            "ScalableDimension": SCALING_TARGET["ScalableDimension"]})
    aas.add_response("register_scalable_target", {}, {**SCALING_TARGET, "MinCapacity": min_capacity,
                                                      "MaxCapacity": max_capacity, **({"Tags": tags} if tags else {})})
    aas.add_response("put_scaling_policy", {"PolicyARN": TRACK_ARN}, {
        **SCALING_TARGET, "PolicyName": "sam3-async-backlog-target-tracking", "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {"MetricName": "ApproximateBacklogSizePerInstance",
                                              "Namespace": "AWS/SageMaker", "Dimensions": dims,
                                              "Statistic": "Average"},
            "ScaleInCooldown": 600, "ScaleOutCooldown": 300}})
    aas.add_response("put_scaling_policy", {"PolicyARN": STEP_ARN}, {
        **SCALING_TARGET, "PolicyName": "sam3-async-scale-out-from-zero", "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average", "Cooldown": 300,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]}})
    cw.add_response("put_metric_alarm", {}, {
        "AlarmName": "sam3-async-has-backlog-without-capacity", "AlarmDescription": ANY,
        "MetricName": "HasBacklogWithoutCapacity", "Namespace": "AWS/SageMaker", "Dimensions": dims,
        "Statistic": "Average", "Period": 60, "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "missing",
        "AlarmActions": [STEP_ARN]})


# ----------------------------------------------------------------------------- GPU check / names


@pytest.mark.parametrize(("model", "instance_type", "gpu"), [
    ("sam3", "ml.g5.2xlarge", "NVIDIA A10G"), ("sam3", "ml.g6.xlarge", "NVIDIA L4"),
    ("sam3d", "ml.g6e.2xlarge", "NVIDIA L40S"), ("sam3d", "ml.p4d.24xlarge", "NVIDIA A100"),
    ("sam3d", "ml.p5.48xlarge", "NVIDIA H100"), ("sam3d_body", "ml.g5.xlarge", "NVIDIA A10G"),
    ("sam3d_body", "ml.g6.xlarge", "NVIDIA L4")])
def test_gpu_check_accepts(model, instance_type, gpu):
    assert gpus.check_gpu_memory(model, instance_type).gpu == gpu


@pytest.mark.parametrize("instance_type", ["ml.g5.2xlarge", "ml.g5.48xlarge", "ml.g6.12xlarge"])
def test_gpu_check_refuses_sam3d_on_24gib(instance_type):
    with pytest.raises(errors.GpuMemoryError, match=r"refusing to deploy sam3d .* >= 32 GiB .* 24 GiB each") as err:
        gpus.check_gpu_memory("sam3d", instance_type)
    assert "ml.g6e.*" in str(err.value) and "ml.g5.*" not in str(err.value)


def test_gpu_table_values():
    assert gpus.INSTANCE_GPUS["ml.g6e.12xlarge"] == gpus.GpuSpec("NVIDIA L40S", 48, 4)
    assert gpus.INSTANCE_GPUS["ml.p4d.24xlarge"] == gpus.GpuSpec("NVIDIA A100", 40, 8)
    assert gpus.INSTANCE_GPUS["ml.p5.48xlarge"] == gpus.GpuSpec("NVIDIA H100", 80, 8)
    with pytest.raises(errors.GpuMemoryError, match="unknown GPU instance type 'ml.m5.large'"):
        gpus.check_gpu_memory("sam3", "ml.m5.large")


@pytest.mark.parametrize(("model", "instance_type", "requested", "sent", "driver"), [
    ("sam3", "ml.g5.2xlarge", None, gpus.DEFAULT_INFERENCE_AMI, "driver 550, CUDA 12.4"),
    ("sam3d", "ml.g6e.2xlarge", None, gpus.DEFAULT_INFERENCE_AMI, "driver 550, CUDA 12.4"),
    ("sam3", "ml.g5.2xlarge", "al2-ami-sagemaker-inference-gpu-2-1", "al2-ami-sagemaker-inference-gpu-2-1",
     "driver 535, CUDA 12.2"),
    ("sam3", "ml.g6.xlarge", "none", None, "driver 535, CUDA 12.2"),  # g6's default AMI already has 535
    ("sam3d", "ml.p5.48xlarge", "none", None, "driver 535, CUDA 12.2")])
def test_inference_ami_runs_the_images_cuda(model, instance_type, requested, sent, driver):
    chosen, why = gpus.choose_inference_ami(model, instance_type, requested)
    assert chosen == sent
    assert f"runs {driver}; the {model} image (CUDA {MODELS[model].cuda_version}) needs NVIDIA driver >= 525" in why


@pytest.mark.parametrize("instance_type", ["ml.g5.2xlarge", "ml.g5.48xlarge", "ml.p4d.24xlarge", "ml.p4de.24xlarge"])
def test_inference_ami_refuses_the_470_default(instance_type):
    """SageMaker's default AMI runs driver 470 (CUDA 11.4) on these: a CUDA 12 image finds no usable GPU."""
    with pytest.raises(ValueError) as err:
        gpus.choose_inference_ami("sam3", instance_type, "none")
    family = instance_type.rsplit(".", 1)[0]
    assert str(err.value) == (
        f"the sam3 image (CUDA 12.6) needs NVIDIA driver >= 525, but {instance_type} with {family}'s default AMI "
        "runs driver 470, CUDA 11.4: the container would find no usable GPU; use --inference-ami-version "
        "al2-ami-sagemaker-inference-gpu-3-1 (driver 550, CUDA 12.4), or leave the flag out")
    with pytest.raises(ValueError, match="AWS documents no default driver for ml.g6e: name one with "
                                         "--inference-ami-version"):
        gpus.choose_inference_ami("sam3d", "ml.g6e.2xlarge", "none")


def test_every_inference_ami_botocore_knows_is_in_the_driver_table(sm_moto):
    """botocore's service model lists the InferenceAmiVersion values; each GPU one has a driver here, and moto
    keeps the value it was given."""
    sm = client("sagemaker")
    shape = sm.meta.service_model.shape_for("ProductionVariantInferenceAmiVersion")
    assert {v for v in shape.enum if "gpu" in v} == set(gpus.INFERENCE_AMIS)
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    # moto's instance-type list stops before ml.g5; the AMI version is what is looked at here
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[variant("m", "ml.g4dn.xlarge")])
    sent = sm.describe_endpoint_config(EndpointConfigName="c")["ProductionVariants"][0]
    assert sent["InferenceAmiVersion"] == gpus.DEFAULT_INFERENCE_AMI


def test_unique_name_is_stamped_and_bounded():
    assert names.unique_name("sam3-rt", NOW) == STAMPED
    long = names.unique_name("a" * 70, NOW)
    assert len(long) == 63 and long.endswith("-20251128-130509")
    with pytest.raises(ValueError, match="invalid SageMaker name"):
        names.validate_name("bad_name")


# ----------------------------------------------------------------------------- Stubber: model, config, endpoint


def test_create_model_uses_uncompressed_prefix(stubbed):
    clients, stubs = stubbed
    stub = stubs["sagemaker"]
    not_found(stub, "describe_model", {"ModelName": STAMPED}, "model")
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:1:model/{STAMPED}"}, {
        "ModelName": STAMPED, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": IMAGE, "ModelDataSource": model_data_source("s3://b/p/model/"),
                             "Environment": {"GEN3D_MODEL": "sam3"}}})
    arn = resources.create_model(clients["sagemaker"], STAMPED, image_uri=IMAGE, model_data_s3_uri="s3://b/p/model/",
                           role_arn=ROLE, environment={"GEN3D_MODEL": "sam3"}, out=io.StringIO())
    assert arn.endswith(f"model/{STAMPED}")
    with pytest.raises(ValueError, match="must end with '/'"):
        resources.create_model(clients["sagemaker"], STAMPED, image_uri=IMAGE, model_data_s3_uri="s3://b/p",
                         role_arn=ROLE)


def test_create_model_replaces_existing(stubbed):
    clients, stubs = stubbed
    stub = stubs["sagemaker"]
    stub.add_response("describe_model", {"ModelName": STAMPED, "ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m",
                                         "CreationTime": T0}, {"ModelName": STAMPED})
    stub.add_response("delete_model", {}, {"ModelName": STAMPED})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m"}, {
        "ModelName": STAMPED, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": IMAGE, "ModelDataSource": model_data_source("s3://b/m/"), "Environment": {}}})
    out = io.StringIO()
    resources.create_model(clients["sagemaker"], STAMPED, image_uri=IMAGE, model_data_s3_uri="s3://b/m/",
                     role_arn=ROLE, out=out)
    assert "replacing it" in out.getvalue()


def test_realtime_endpoint_config_on_g6e(stubbed):
    clients, stubs = stubbed
    stubs["sagemaker"].add_response(
        "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"},
        {"EndpointConfigName": STAMPED,
         "ProductionVariants": [variant(STAMPED, "ml.g6e.xlarge", 2)]})
    arn = resources.create_endpoint_config(clients["sagemaker"], STAMPED, model_name=STAMPED,
                                     instance_type="ml.g6e.xlarge", instance_count=2, startup_timeout_s=1920,
                                     download_timeout_s=1920,
                                     inference_ami_version="al2-ami-sagemaker-inference-gpu-3-1", out=io.StringIO())
    assert arn.endswith("endpoint-config/c")


def test_async_endpoint_config_with_notifications(stubbed):
    clients, stubs = stubbed
    success = TOPIC.replace("alerts", "done")
    stubs["sagemaker"].add_response(
        "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"},
        {"EndpointConfigName": "sam3d-async-20251128-130509",
         "ProductionVariants": [variant("sam3d-async-20251128-130509", "ml.g6e.2xlarge", health=1920, download=2400,
                                        ami=None)],
         "AsyncInferenceConfig": {
             "OutputConfig": {"S3OutputPath": "s3://b/out/", "S3FailurePath": "s3://b/fail/",
                              "NotificationConfig": {"SuccessTopic": success, "ErrorTopic": TOPIC}},
             "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}})
    out = io.StringIO()
    config = resources.AsyncConfig("s3://b/out/", "s3://b/fail/", 2, success_topic=success, error_topic=TOPIC)
    resources.create_endpoint_config(clients["sagemaker"], "sam3d-async-20251128-130509",
                               model_name="sam3d-async-20251128-130509", instance_type="ml.g6e.2xlarge",
                               startup_timeout_s=1920, download_timeout_s=2400, async_config=config, out=out)
    assert "(async, 1x ml.g6e.2xlarge, health check 1920 s, download 2400 s)" in out.getvalue()
    assert "NotificationConfig" not in resources.AsyncConfig("s3://b/o/", "s3://b/f/").to_api()["OutputConfig"]


def test_create_endpoint_tags_it(stubbed):
    clients, stubs = stubbed
    arn = "arn:aws:sagemaker:us-east-1:1:endpoint/sam3-rt"
    tags = [{"Key": "project", "Value": "gen3d"}, {"Key": "gen3d:endpoint", "Value": "sam3-rt"}]
    stubs["sagemaker"].add_response("create_endpoint", {"EndpointArn": arn},
                                    {"EndpointName": "sam3-rt", "EndpointConfigName": "c1", "Tags": tags})
    out = io.StringIO()
    assert resources.create_endpoint(clients["sagemaker"], "sam3-rt", "c1",
                                     tags={"project": "gen3d", "gen3d:endpoint": "sam3-rt"}, out=out) == arn
    assert out.getvalue() == "creating endpoint sam3-rt with c1\n"


def test_wait_prints_status_changes_until_in_service(stubbed):
    clients, stubs = stubbed
    for status in ("Creating", "Creating", "InService"):
        stubs["sagemaker"].add_response("describe_endpoint", endpoint_desc("sam3-rt", status, "c1"),
                                        {"EndpointName": "sam3-rt"})
    clock, out = FakeClock(), io.StringIO()
    desc = resources.wait_for_endpoint(clients["sagemaker"], "sam3-rt", expected_config="c1", poll_s=30, out=out,
                                 sleep=clock.sleep, clock=clock)
    assert desc["EndpointStatus"] == "InService"
    assert out.getvalue().splitlines() == ["endpoint sam3-rt: Creating", "endpoint sam3-rt: InService"]
    assert clock.sleeps == [30, 30]


def test_wait_reports_failure_reason_and_log_group(stubbed):
    clients, stubs = stubbed
    stubs["sagemaker"].add_response("describe_endpoint", endpoint_desc(
        "sam3-rt", "Failed", "c1", "The primary container for production variant AllTraffic did not pass the ping "
                                   "health check."), {"EndpointName": "sam3-rt"})
    with pytest.raises(errors.EndpointFailedError) as err:
        resources.wait_for_endpoint(clients["sagemaker"], "sam3-rt", out=io.StringIO(), sleep=FakeClock().sleep)
    assert "did not pass the ping health check" in str(err.value)
    assert "/aws/sagemaker/Endpoints/sam3-rt" in str(err.value)


def test_wait_detects_rolled_back_update(stubbed):
    clients, stubs = stubbed
    stub = stubs["sagemaker"]
    stub.add_response("describe_endpoint", endpoint_desc("e", "Updating", "old"), {"EndpointName": "e"})
    stub.add_response("describe_endpoint", endpoint_desc("e", "InService", "old", "CUDA out of memory"),
                      {"EndpointName": "e"})
    clock = FakeClock()
    expected = r"update of e to new failed .*still on old.*CUDA out of memory"
    with pytest.raises(errors.EndpointFailedError, match=expected):
        resources.wait_for_endpoint(clients["sagemaker"], "e", expected_config="new", out=io.StringIO(),
                              sleep=clock.sleep, clock=clock)


def test_wait_times_out(stubbed):
    clients, stubs = stubbed
    for _ in range(3):
        stubs["sagemaker"].add_response("describe_endpoint", endpoint_desc("e", "Creating", "c"), {"EndpointName": "e"})
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="still Creating after 60 s"):
        resources.wait_for_endpoint(clients["sagemaker"], "e", timeout_s=60, poll_s=30, out=io.StringIO(),
                              sleep=clock.sleep, clock=clock)


# ----------------------------------------------------------------------------- Stubber: autoscaling, teardown


def test_async_autoscaling_policies_and_alarm(stubbed):
    clients, stubs = stubbed
    expect_autoscaling(stubs["application-autoscaling"], stubs["cloudwatch"], max_capacity=3)
    result = autoscaling.configure_async_autoscaling(clients["application-autoscaling"], clients["cloudwatch"],
                                             "sam3-async", max_capacity=3, out=io.StringIO())
    assert result == {"target_policy_arn": TRACK_ARN, "step_policy_arn": STEP_ARN,
                      "alarm": "sam3-async-has-backlog-without-capacity"}


def _expect_autoscaling_removal(aas: Stubber, cw: Stubber, present: bool) -> None:
    alarm = "sam3-async-has-backlog-without-capacity"
    cw.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": alarm}] if present else []},
                    {"AlarmNames": [alarm]})
    if present:
        cw.add_response("delete_alarms", {}, {"AlarmNames": [alarm]})
    for policy in ("sam3-async-backlog-target-tracking", "sam3-async-scale-out-from-zero",
                   "sam3-async-invocations-target-tracking"):
        if present:
            aas.add_response("delete_scaling_policy", {}, {**SCALING_TARGET, "PolicyName": policy})
        else:
            aas.add_client_error("delete_scaling_policy", service_error_code="ObjectNotFoundException",
                                 service_message="No scaling policy found", http_status_code=400,
                                 expected_params={**SCALING_TARGET, "PolicyName": policy})
    if present:
        aas.add_response("deregister_scalable_target", {}, SCALING_TARGET)
    else:
        aas.add_client_error("deregister_scalable_target", service_error_code="ObjectNotFoundException",
                             service_message="No scalable target", http_status_code=400,
                             expected_params=SCALING_TARGET)


FAILURE_ALARMS = ["sam3-async-invocation-5xx-errors", "sam3-async-invocation-model-errors",
                  "sam3-async-invocation-failures", "sam3-async-notification-failures",
                  "sam3-async-oldest-request-age"]


def _expect_failure_alarm_removal(cw: Stubber, present: list[str]) -> None:
    cw.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": a} for a in present]},
                    {"AlarmNames": FAILURE_ALARMS})
    for alarm in present:
        cw.add_response("delete_alarms", {}, {"AlarmNames": [alarm]})


def _expect_tagged(tagging: Stubber, endpoint: str, configs: list[str], models: list[str]) -> None:
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    tagging.add_response("get_resources", {"ResourceTagMappingList": [
        {"ResourceARN": f"{arn}:{kind}/{name}", "Tags": [{"Key": "gen3d:endpoint", "Value": endpoint}]}
        for kind, names in (("endpoint-config", configs), ("model", models)) for name in names]},
        {"TagFilters": [{"Key": "gen3d:endpoint", "Values": [endpoint]}],
         "ResourceTypeFilters": ["sagemaker:endpoint-config", "sagemaker:model"]})


def _model_desc(name: str) -> dict:
    return {"ModelName": name, "ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{name}", "CreationTime": T0,
            "PrimaryContainer": {"Image": IMAGE}}


def test_teardown_deletes_everything(stubbed):
    """Configs and models are found by their gen3d:endpoint tag, a model whose config was never made included."""
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    tagging = client("resourcegroupstaggingapi")
    _expect_failure_alarm_removal(stubs["cloudwatch"], FAILURE_ALARMS[2:])
    _expect_autoscaling_removal(stubs["application-autoscaling"], stubs["cloudwatch"], present=True)
    current, older = "sam3-async-20251128-130509", "sam3-async-20251101-000000"
    orphan = "sam3-async-20251127-000000"  # its endpoint config failed: only the tag leads to it
    sm.add_response("describe_endpoint", endpoint_desc("sam3-async", "InService", current),
                    {"EndpointName": "sam3-async"})
    sm.add_response("delete_endpoint", {}, {"EndpointName": "sam3-async"})
    with Stubber(tagging) as tag_stub:
        _expect_tagged(tag_stub, "sam3-async", [older, current], [older, orphan, current])
        for config in (current, older):
            sm.add_response("describe_endpoint_config", {
                "EndpointConfigName": config,
                "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:1:endpoint-config/{config}",
                "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": config}], "CreationTime": T0},
                {"EndpointConfigName": config})
            sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": config})
        for model in (current, older, orphan):
            sm.add_response("describe_model", _model_desc(model), {"ModelName": model})
        sm.add_response("delete_model", {}, {"ModelName": current})
        not_found(sm, "delete_model", {"ModelName": older}, "model")
        sm.add_response("delete_model", {}, {"ModelName": orphan})
        out = io.StringIO()
        deleted = teardown.teardown(clients_from(clients, tagging=tagging), "sam3-async", out=out)
    assert deleted == {"alarm": FAILURE_ALARMS[2:], "endpoint": ["sam3-async"],
                       "endpoint_config": [current, older], "model": [current, orphan], "model_data": []}
    assert f"model {older}: already gone" in out.getvalue()
    assert "tagged gen3d:endpoint=sam3-async: 2 endpoint configs, 3 models" in out.getvalue()
    for alarm in ("sam3-async-has-backlog-without-capacity", *FAILURE_ALARMS[2:]):
        assert f"alarm {alarm}: deleted" in out.getvalue()
    assert "alarm sam3-async-invocation-5xx-errors: already gone" in out.getvalue()


def test_teardown_when_already_gone(stubbed):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    tagging = client("resourcegroupstaggingapi")
    _expect_failure_alarm_removal(stubs["cloudwatch"], [])
    _expect_autoscaling_removal(stubs["application-autoscaling"], stubs["cloudwatch"], present=False)
    not_found(sm, "describe_endpoint", {"EndpointName": "sam3-async"}, "endpoint")
    out = io.StringIO()
    with Stubber(tagging) as tag_stub:
        _expect_tagged(tag_stub, "sam3-async", [], [])
        assert teardown.teardown(clients_from(clients, tagging=tagging), "sam3-async", out=out) == {
            "alarm": [], "endpoint": [], "endpoint_config": [], "model": [], "model_data": []}
    text = out.getvalue()
    assert "endpoint sam3-async: already gone" in text
    assert "scalable target endpoint/sam3-async/variant/AllTraffic: already gone" in text
    assert text.count("already gone") == 5 + 1 + 3 + 1 + 1  # failure alarms, scaling alarm, policies, target, endpoint


# ----------------------------------------------------------------------------- moto: S3 upload, async polling


class RecordingTqdm(upload.tqdm):
    bars: list[RecordingTqdm] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingTqdm.bars.append(self)


def test_upload_archive_directory_and_mar_with_progress(sm_moto, tmp_path, monkeypatch):
    s3 = client("s3")
    s3.create_bucket(Bucket="models")
    archive = tmp_path / "sam3"
    (archive / "MAR-INF").mkdir(parents=True)
    (archive / "MAR-INF" / "MANIFEST.json").write_text('{"model": {"modelName": "sam3"}}')
    big = os.urandom(9 * 1024 * 1024 + 5)  # over the 8 MiB multipart threshold
    (archive / "sam3.safetensors").write_bytes(big)
    RecordingTqdm.bars = []
    monkeypatch.setattr(upload, "tqdm", RecordingTqdm)

    result = upload.upload_model_archive(s3, archive, "models", "/gen3d/v1/", progress=True)
    assert result.s3_uri == "s3://models/gen3d/v1/"
    assert result.keys == ["gen3d/v1/sam3/MAR-INF/MANIFEST.json", "gen3d/v1/sam3/sam3.safetensors"]
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="models")["Contents"]}
    assert listed == {"gen3d/v1/sam3/MAR-INF/MANIFEST.json": 32, "gen3d/v1/sam3/sam3.safetensors": len(big)}
    assert s3.get_object(Bucket="models", Key="gen3d/v1/sam3/sam3.safetensors")["Body"].read() == big
    bar = RecordingTqdm.bars[-1]
    assert bar.total == result.total_bytes == len(big) + 32 and bar.n == bar.total

    mar = tmp_path / "sam3d.mar"
    mar.write_bytes(b"PK\x03\x04 fake mar")
    assert upload.upload_model_archive(s3, mar, "models", "m", progress=False).keys == ["m/sam3d.mar"]
    assert s3.get_object(Bucket="models", Key="m/sam3d.mar")["Body"].read() == b"PK\x03\x04 fake mar"
    with pytest.raises(FileNotFoundError):
        upload.upload_model_archive(s3, tmp_path / "missing", "models", "m")


def test_invoke_async_against_moto_runtime(sm_moto):
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="iob")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/1.safetensors"}
    set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}, {"is_failure": True, "data": "CUDA OOM"}])
    payload = {"task": "get_embedding", "image_s3_key": "img.png", "bucket": "iob", "session_id": "s1", "user_id": "u"}
    got = invoke.invoke_async(rt, s3, "sam3-async", payload, input_s3_uri="s3://iob/in/1.json", out=io.StringIO())
    assert got == answer
    assert json.loads(s3.get_object(Bucket="iob", Key="in/1.json")["Body"].read()) == payload
    with pytest.raises(errors.AsyncInferenceError, match="CUDA OOM.*/aws/sagemaker/Endpoints/sam3-async"):
        invoke.invoke_async(rt, s3, "sam3-async", payload, input_s3_uri="s3://iob/in/2.json", out=io.StringIO())


def test_invoke_async_polls_until_output_appears(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    rt = client("sagemaker-runtime")
    stub = Stubber(rt)
    stub.add_response("invoke_endpoint_async", {
        "InferenceId": "inf-1", "OutputLocation": "s3://iob/out/inf-1.out", "FailureLocation": "s3://iob/fail/inf-1.out"},
        {"EndpointName": "sam3d-async", "InputLocation": "s3://iob/in/x.json", "ContentType": "application/json",
         "Accept": "application/json"})
    answer = {"status": "success", "task": "generate_3d",
              "outputs": {"ply": "o/a.ply", "glb": "o/a.glb", "pose": "o/pose.json"}}
    clock = FakeClock()

    def sleep(seconds: float) -> None:  # the "endpoint" finishes during the second wait
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:
            s3.put_object(Bucket="iob", Key="out/inf-1.out", Body=json.dumps(answer).encode())

    with stub:
        got = invoke.invoke_async(rt, s3, "sam3d-async", {"task": "generate_3d"}, input_s3_uri="s3://iob/in/x.json",
                               poll_s=5, out=io.StringIO(), sleep=sleep, clock=clock)
    assert got == answer and clock.sleeps == [5, 5]


def test_invoke_async_times_out(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    rt = client("sagemaker-runtime")
    stub = Stubber(rt)
    stub.add_response("invoke_endpoint_async", {"OutputLocation": "s3://iob/out/never.out"}, None)
    clock = FakeClock()
    with stub, pytest.raises(TimeoutError, match="no async result at s3://iob/out/never.out after 20 s"):
        invoke.invoke_async(rt, s3, "e", {}, input_s3_uri="s3://iob/in/y.json", timeout_s=20, poll_s=10,
                         out=io.StringIO(), sleep=clock.sleep, clock=clock)


def test_realtime_invoke_and_verify_against_moto(sm_moto):
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="iob")
    s3.put_object(Bucket="iob", Key="emb/1.safetensors", Body=b"x")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/1.safetensors",
              "output_bucket": "iob", "embedding_size_mb": 0.1}
    set_moto_realtime_results(sm_moto, [answer])
    got = invoke.invoke_realtime(rt, "sam3-rt", {"task": "get_embedding", "bucket": "iob"})
    assert got == answer
    assert invoke.verify_response(s3, got, "other") == {"output_s3_key": "s3://iob/emb/1.safetensors"}


def test_verify_response_rejects_bad_answers(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    for key in ("o/a.ply", "o/a.glb"):
        s3.put_object(Bucket="iob", Key=key, Body=b"x")
    outputs = {"ply": "o/a.ply", "glb": "o/a.glb", "pose": "o/pose.json"}
    with pytest.raises(errors.SmokeTestError, match=r"do not exist: s3://iob/o/pose.json"):
        invoke.verify_response(s3, {"status": "success", "task": "generate_3d", "outputs": outputs}, "iob")
    with pytest.raises(errors.SmokeTestError, match=r"lacks outputs \['pose'\]"):
        invoke.verify_response(s3, {"status": "success", "task": "generate_3d",
                                 "outputs": {"ply": "o/a.ply", "glb": "o/a.glb"}}, "iob")
    with pytest.raises(errors.SmokeTestError, match="status is 'error'"):
        invoke.verify_response(s3, {"status": "error", "message": "boom"}, "iob")
    with pytest.raises(errors.SmokeTestError, match="names no S3 output"):
        invoke.verify_response(s3, {"status": "success", "task": "get_embedding"}, "iob")
    s3.put_object(Bucket="iob", Key="o/pose.json", Body=b"{}")
    assert invoke.verify_response(s3, {"status": "success", "task": "generate_3d", "outputs": outputs}, "iob") == {
        "ply": "s3://iob/o/a.ply", "glb": "s3://iob/o/a.glb", "pose": "s3://iob/o/pose.json"}


def test_generate_body_smoke_request_and_its_verification(sm_moto):
    """The smoke request of sam3d_body names the seed disc's box as its one person; the answer must name
    people_glb and each person's glb and params, all present in S3."""
    payload = invoke.default_payload("sam3d_body", "iob", "smoke/seed.png", "s1")
    assert payload == {"task": "generate_body", "image_s3_key": "smoke/seed.png", "bucket": "iob",
                       "session_id": "s1", "user_id": "sagemaker-smoke-test", "boxes": [[42.17, 42.17, 212.83, 212.83]]}
    disc = np.array(Image.open(io.BytesIO(invoke.seed_png())).convert("RGB"))[..., 0] > 128
    rows, cols = np.nonzero(disc)
    assert abs(cols.min() - 42.17) < 1.5 and abs(cols.max() - 212.83) < 1.5 and abs(rows.min() - 42.17) < 1.5
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    for key in ("b/people.glb", "b/p0.glb", "b/p0.json"):
        s3.put_object(Bucket="iob", Key=key, Body=b"x")
    answer = {"status": "success", "task": "generate_body", "output_bucket": "iob",
              "people": [{"index": 0, "outputs": {"glb": "b/p0.glb", "params": "b/p0.json"}}],
              "outputs": {"people_glb": "b/people.glb"}}
    assert invoke.verify_response(s3, answer, "iob") == {
        "people_glb": "s3://iob/b/people.glb", "people[0].glb": "s3://iob/b/p0.glb",
        "people[0].params": "s3://iob/b/p0.json"}
    with pytest.raises(errors.SmokeTestError, match=r"people\[0\] lacks outputs \['params'\]"):
        invoke.verify_response(s3, {**answer, "people": [{"index": 0, "outputs": {"glb": "b/p0.glb"}}]}, "iob")
    with pytest.raises(errors.SmokeTestError, match="names no person or no outputs.people_glb"):
        invoke.verify_response(s3, {**answer, "people": []}, "iob")


def test_default_endpoint_names_have_no_underscore():
    assert names.default_endpoint_name("sam3d_body", "realtime") == "sam3d-body-realtime"
    assert names.default_endpoint_name("sam3", "async") == "sam3-async"


# ----------------------------------------------------------------------------- full deploy (Stubber + moto)


def test_deploy_async_uploads_creates_waits_and_autoscales(sm_moto, stubbed, tmp_path):
    """Also: every resource tagged (project, the endpoint, --tag), the log group made first with its retention,
    the KMS key on the uploaded objects and the async output, not on the NVMe volume of ml.g6e."""
    made, stubs = stubbed
    s3, logs = client("s3"), client("logs")
    s3.create_bucket(Bucket="bkt")
    archive = write_archive(tmp_path, "sam3", startup=600)
    name = "sam3-async-20251128-130509"
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    tags = deploy_tags("sam3-async", team="vision")
    expect_deploy(stubs, "sam3-async", name, "ml.g6e.xlarge", exists=False, timeouts=(720, 720),
                  env={"GEN3D_MODEL": "sam3", "GEN3D_ALLOWED_BUCKETS": "bkt", "GEN3D_READY_MARGIN_S": "60"},
                  async_paths=("s3://bkt/p/async/output/", "s3://bkt/p/async/failure/"), tags=tags,
                  output_kms_key=key)
    expect_autoscaling(stubs["application-autoscaling"], stubs["cloudwatch"], max_capacity=2,
                       tags={t["Key"]: t["Value"] for t in tags})
    alarm = {"AlarmName": "sam3-async-has-backlog-without-capacity",
             "AlarmArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:sam3-async-has-backlog-without-capacity"}
    stubs["cloudwatch"].add_response("describe_alarms", {"MetricAlarms": [alarm]},
                                     {"AlarmNames": [*FAILURE_ALARMS, alarm["AlarmName"]]})
    stubs["cloudwatch"].add_response("tag_resource", {}, {"ResourceARN": alarm["AlarmArn"], "Tags": tags})
    spec = deploy.DeploySpec(model="sam3", bucket="bkt", prefix="p", image_uri=IMAGE, role_arn=ROLE,
                          instance_type="ml.g6e.xlarge", endpoint_name="sam3-async", mode="async",
                          archive=archive, max_instances=2, tags={"team": "vision"}, log_retention_days=14,
                          kms_key_id=key)
    out = io.StringIO()
    result = deploy.deploy(clients_from(made, s3=s3, logs=logs), spec, out=out, now=NOW, sleep=lambda s: None,
                           progress=False)
    assert result.action == "created" and result.model_name == result.endpoint_config_name == name
    assert result.model_data_s3_uri == f"s3://bkt/p/model/{name}/"
    weights = f"p/model/{name}/sam3/weights.bin"
    assert s3.get_object(Bucket="bkt", Key=weights)["Body"].read() == b"w" * 1000
    assert s3.get_object_tagging(Bucket="bkt", Key=weights)["TagSet"] == tags
    head = s3.head_object(Bucket="bkt", Key=weights)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key)
    group = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/sam3-async")["logGroups"][0]
    assert (group["logGroupName"], group["retentionInDays"]) == ("/aws/sagemaker/Endpoints/sam3-async", 14)
    assert logs.list_tags_for_resource(resourceArn=group["logGroupArn"])["tags"] == {
        t["Key"]: t["Value"] for t in tags}
    assert result.autoscaling["step_policy_arn"] == STEP_ARN and result.alarms == []
    assert (result.timeouts.health_check_s, result.timeouts.download_s) == (720, 720)
    assert "endpoint sam3-async: Creating\nendpoint sam3-async: InService" in out.getvalue()
    assert "no --sns-topic-arn: no failure alarms" in out.getvalue()
    assert "ml.g6e.xlarge's volume is NVMe instance storage" in out.getvalue()


def test_deploy_refuses_sam3d_on_g5_before_any_call(stubbed, tmp_path):
    made, _ = stubbed  # no stubbed responses: any API call would fail the test
    spec = deploy.DeploySpec(model="sam3d", bucket="b", prefix="p", image_uri=IMAGE, role_arn=ROLE,
                          instance_type="ml.g5.12xlarge", endpoint_name="sam3d", archive=tmp_path)
    with pytest.raises(errors.GpuMemoryError, match="refusing to deploy sam3d on ml.g5.12xlarge"):
        deploy.deploy(clients_from(made, s3=client("s3")), spec, out=io.StringIO())


# ----------------------------------------------------------------------------- dry run


def test_dry_run_client_validates_against_service_model():
    out = io.StringIO()
    clients = aws.make_clients(REGION, dry_run=True, out=out)
    with pytest.raises(ParamValidationError, match="EndpointConfigName"):
        clients.sagemaker.create_endpoint(EndpointName="e")
    with pytest.raises(ParamValidationError, match="InitialInstanceCount"):
        clients.sagemaker.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": "one"}])
    assert out.getvalue() == ""
    clients.sagemaker.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    line = out.getvalue().strip()
    assert line.startswith("DRY-RUN sagemaker CreateModel ")
    assert json.loads(line.split(" ", 3)[3])["ExecutionRoleArn"] == ROLE


def test_deploy_dry_run_prints_calls(tmp_path):
    """The issue's check: --dry-run --mode async --sns-topic-arn shows the alarms, the notification config and
    the timeouts derived from the archive's startupTimeout."""
    archive = write_archive(tmp_path, "sam3d", startup=1800, response=900, payload=b"123")
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(archive), "--bucket", "bkt",
                      "--prefix", "gen3d/prod", "--image-uri", IMAGE, "--role-arn", ROLE,
                      "--instance-type", "ml.g6e.2xlarge", "--mode", "async", "--endpoint-name", "sam3d-async",
                      "--max-concurrency", "2", "--async-output-s3", "s3://bkt/results/", "--sns-topic-arn", TOPIC,
                      "--tag", "team=vision", "--tag", "cost-center=42", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    calls = dry_run_calls(proc.stdout)
    ops = [op for _, op, _ in calls]
    # what runs is read first; the log group before the upload; the failure alarms exist before the endpoint
    # changes (an update rolls back on them); the alarms are tagged last (the scaling alarm exists only then)
    assert ops[:16] == ["DescribeEndpoint", "DescribeLogGroups", "CreateLogGroup", "PutRetentionPolicy",
                        *["upload_file"] * 3, "DescribeModel", "CreateModel", "CreateEndpointConfig",
                        "PutMetricAlarm", "PutMetricAlarm", "PutMetricAlarm", "DescribeAlarms", "CreateEndpoint",
                        "DescribeEndpoint"]
    assert ops[16:26] == ["DescribeScalableTargets", "RegisterScalableTarget", "PutScalingPolicy", "PutScalingPolicy",
                          "PutMetricAlarm", "DescribeAlarms", *["TagResource"] * 4]
    tags = {"project": "gen3d", "team": "vision", "cost-center": "42", "gen3d:endpoint": "sam3d-async"}
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    by_op = {op: p for _, op, p in calls}
    assert by_op["CreateLogGroup"] == {"logGroupName": "/aws/sagemaker/Endpoints/sam3d-async", "tags": tags}
    assert by_op["PutRetentionPolicy"]["retentionInDays"] == 30
    for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert by_op[op]["Tags"] == tag_list, op
    assert by_op["RegisterScalableTarget"]["Tags"] == tags
    assert all(p["Tags"] == tag_list for _, op, p in calls if op == "TagResource")
    assert all(p["Tagging"] == "project=gen3d&team=vision&cost-center=42&gen3d%3Aendpoint=sam3d-async"
               for _, op, p in calls if op == "upload_file")
    assert "InvokeEndpointAsync" in ops
    create_model = next(p for _, op, p in calls if op == "CreateModel")
    assert create_model["PrimaryContainer"]["Environment"] == {
        "GEN3D_MODEL": "sam3d", "GEN3D_ALLOWED_BUCKETS": "bkt", "GEN3D_READY_MARGIN_S": "60"}
    source = create_model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["CompressionType"] == "None"
    assert source["S3Uri"].startswith("s3://bkt/gen3d/prod/model/sam3d-async-") and source["S3Uri"].endswith("/")
    uploads = {p["Key"]: p["Bytes"] for _, op, p in calls if op == "upload_file"}
    assert uploads[source["S3Uri"].removeprefix("s3://bkt/") + "sam3d/weights.bin"] == 3
    config = next(p for _, op, p in calls if op == "CreateEndpointConfig")
    variant_sent = config["ProductionVariants"][0]
    assert variant_sent["InstanceType"] == "ml.g6e.2xlarge"
    # 1800 s startupTimeout + 60 s GEN3D_READY_MARGIN_S + 60 s slack: the container's own exit comes first
    assert variant_sent["ContainerStartupHealthCheckTimeoutInSeconds"] == 1920
    assert variant_sent["ModelDataDownloadTimeoutInSeconds"] == 1920
    assert variant_sent["InferenceAmiVersion"] == gpus.DEFAULT_INFERENCE_AMI
    assert "GPU driver: ml.g6e.2xlarge with al2-ami-sagemaker-inference-gpu-3-1 runs driver 550" in proc.stdout
    assert "health check 1920 s, model download 1920 s (archive" in proc.stdout
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://bkt/results/", "S3FailurePath": "s3://bkt/gen3d/prod/async/failure/",
                         "NotificationConfig": {"SuccessTopic": TOPIC, "ErrorTopic": TOPIC}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}
    register = next(p for _, op, p in calls if op == "RegisterScalableTarget")
    assert register["MinCapacity"] == 0
    alarms = {p["AlarmName"]: p for _, op, p in calls if op == "PutMetricAlarm" and TOPIC in p["AlarmActions"]}
    assert {a: (p["MetricName"], p["Statistic"], p["Threshold"]) for a, p in alarms.items()} == {
        "sam3d-async-invocation-failures": ("InvocationFailures", "Sum", 1.0),
        "sam3d-async-notification-failures": ("NotificationFailures", "Sum", 1.0),
        "sam3d-async-oldest-request-age": ("ApproximateAgeOfOldestRequest", "Maximum", 3600.0)}
    invoke_async = next(p for _, op, p in calls if op == "InvokeEndpointAsync")
    assert invoke_async["InvocationTimeoutSeconds"] == 960  # the archive's responseTimeout 900 + 60
    assert "dry run: smoke test not sent" in proc.stdout
    summary = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert summary["health_check_timeout_s"] == 1920 and sorted(summary["alarms"]) == sorted(alarms)


def test_deploy_dry_run_refuses_sam3d_on_g5(tmp_path):
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(tmp_path), "--bucket", "b",
                      "--image-uri", IMAGE, "--role-arn", ROLE, "--instance-type", "ml.g5.2xlarge", "--dry-run")
    assert proc.returncode == 2
    assert "refusing to deploy sam3d on ml.g5.2xlarge" in proc.stderr and "24 GiB" in proc.stderr
    assert dry_run_calls(proc.stdout) == []


def test_deploy_dry_run_on_g5_picks_a_driver_that_runs_the_image(tmp_path, capsys):
    """The issue's check: sam3 on ml.g5.2xlarge (SageMaker's default there: driver 470, CUDA 11.4) is sent with
    InferenceAmiVersion gpu-3-1 (driver 550), and the 470 default is refused before anything is created."""
    from gen3d.cli import deploy as deploy_cli

    common = ["--model", "sam3", "--archive", str(write_archive(tmp_path, "sam3")), "--bucket", "b", "--image-uri",
              IMAGE, "--role-arn", ROLE, "--instance-type", "ml.g5.2xlarge", "--no-smoke-test", "--dry-run"]
    assert deploy_cli.main(common) == 0
    out = capsys.readouterr().out
    config = next(p for _, op, p in dry_run_calls(out) if op == "CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-3-1"
    assert ("GPU driver: ml.g5.2xlarge with al2-ami-sagemaker-inference-gpu-3-1 runs driver 550, CUDA 12.4; the sam3 "
            "image (CUDA 12.6) needs NVIDIA driver >= 525") in out
    assert deploy_cli.main([*common, "--inference-ami-version", "none"]) == 2
    captured = capsys.readouterr()
    assert dry_run_calls(captured.out) == []
    assert ("ml.g5.2xlarge with ml.g5's default AMI runs driver 470, CUDA 11.4: the container would find no usable "
            "GPU; use --inference-ami-version al2-ami-sagemaker-inference-gpu-3-1") in captured.err


@pytest.mark.parametrize(("handler", "refusal"), [
    ({"checkpoint": "sam3_tiny.pt", "preset": "tiny", "demo_weights": True},
     "was built from demo weights (preset tiny, random weights: its answers mean nothing); build it with "
     "--checkpoint (sam3, sam3d_body) or --pipeline-dir (sam3d), or pass --allow-demo-weights"),
    ({"checkpoint": "weights.bin"},  # no demo_weights: not written by gen3d-build-archives
     "holds demo weights (its model-config.yaml was not read); deploy an archive directory built by "
     "gen3d-build-archives, or pass --allow-demo-weights")])
def test_deploy_refuses_demo_weights_before_anything_is_sent(tmp_path, capsys, handler, refusal):
    from gen3d.cli import deploy as deploy_cli

    archive = write_archive(tmp_path, "sam3", handler=handler)
    common = ["--model", "sam3", "--archive", str(archive), "--bucket", "b", "--image-uri", IMAGE, "--role-arn", ROLE,
              "--no-smoke-test", "--dry-run"]
    assert deploy_cli.main(common) == 2
    captured = capsys.readouterr()
    assert dry_run_calls(captured.out) == []
    assert captured.err.startswith("ERROR: refusing to deploy: ") and refusal in captured.err
    assert deploy_cli.main([*common, "--allow-demo-weights"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: " in out and "deployed anyway (--allow-demo-weights)" in out
    assert "CreateEndpointConfig" in [op for _, op, _ in dry_run_calls(out)]


def test_deploy_refuses_sam3d_on_realtime(tmp_path, capsys):
    """SageMaker cuts a real-time invocation at 60 s; generate_3d takes longer."""
    from gen3d.cli import deploy as deploy_cli

    common = ["--model", "sam3d", "--archive", str(write_archive(tmp_path, "sam3d", startup=1800)), "--bucket", "b",
              "--image-uri", IMAGE, "--role-arn", ROLE, "--no-smoke-test", "--dry-run"]
    assert deploy_cli.main(common) == 2
    captured = capsys.readouterr()
    assert dry_run_calls(captured.out) == []
    assert captured.err.strip() == (
        "ERROR: refusing sam3d on a real-time endpoint: SageMaker cuts a real-time invocation at 60 s and "
        "generate_3d takes longer; use --mode async, or --allow-realtime-sam3d to deploy it anyway")
    assert deploy_cli.main([*common, "--allow-realtime-sam3d"]) == 0
    assert deploy_cli.main([*common, "--mode", "async"]) == 0


def test_deploy_refuses_a_health_check_below_the_archives_need(tmp_path, capsys):
    from gen3d.cli import deploy as deploy_cli  # in-process: these refusals come before any AWS client is made

    archive = write_archive(tmp_path, "sam3d", startup=1800)
    common = ["--model", "sam3d", "--archive", str(archive), "--bucket", "b", "--image-uri", IMAGE, "--role-arn", ROLE,
              "--dry-run"]
    assert deploy_cli.main([*common, "--mode", "async", "--health-check-timeout", "1200"]) == 2
    captured = capsys.readouterr()
    assert dry_run_calls(captured.out) == []  # nothing uploaded or created
    assert "--health-check-timeout 1200 s is below what archive" in captured.err and "= 1920 s" in captured.err
    assert deploy_cli.main([*common, "--mode", "async", "--invocation-timeout", "4000"]) == 2
    assert "--invocation-timeout must be 1..3600 s" in capsys.readouterr().err
    assert deploy_cli.main([*common, "--max-instances", "3"]) == 2  # real-time
    assert "needs --target-invocations" in capsys.readouterr().err
    assert deploy_cli.main([*common, "--endpoint-name", "sam3d_async"]) == 2
    assert "invalid SageMaker name 'sam3d_async'" in capsys.readouterr().err
    assert deploy_cli.main([*common, "--env", "GEN3D_READY_MARGIN_S=soon"]) == 2
    assert "GEN3D_READY_MARGIN_S must be whole seconds, got 'soon'" in capsys.readouterr().err


def test_teardown_dry_run():
    proc = run_script("sagemaker_teardown.py", "--endpoint-name", "sam3-async", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    ops = [op for _, op, _ in dry_run_calls(proc.stdout)]
    assert ops == ["DescribeAlarms", *["DeleteAlarms"] * 5, "DescribeAlarms", "DeleteAlarms",
                   *["DeleteScalingPolicy"] * 3, "DeregisterScalableTarget", "DescribeEndpoint", "DeleteEndpoint",
                   "GetResources", "DescribeEndpointConfig", "DeleteEndpointConfig", "DescribeModel", "DeleteModel"]
    deleted = json.loads(proc.stdout.split("RESULT ", 1)[1])["alarm"]
    assert deleted == FAILURE_ALARMS


def test_invoke_script_async_against_moto(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/9.safetensors"}
    s3.put_object(Bucket="iob", Key="emb/9.safetensors", Body=b"x")
    set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}])
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3-async", "--mode", "async", "--bucket", "iob",
                      "--image-s3-key", "img.png", "--session-id", "s9", "--verify",
                      env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == answer
    assert "verified: s3://iob/emb/9.safetensors" in proc.stderr
    sent = json.loads(s3.get_object(Bucket="iob", Key="gen3d/async/input/s9.json")["Body"].read())
    assert sent == {"task": "get_embedding", "image_s3_key": "img.png", "bucket": "iob", "session_id": "s9",
                    "user_id": "cli"}


@pytest.mark.parametrize(("script", "options"), [
    ("sagemaker_deploy.py", ["--model", "--archive", "--bucket", "--prefix", "--image-uri", "--role-arn",
                             "--instance-type", "--mode", "--endpoint-name", "--region", "--dry-run",
                             "--max-concurrency", "--async-output-s3", "--smoke-payload", "--sns-topic-arn",
                             "--min-instances", "--max-instances", "--target-invocations", "--health-check-timeout",
                             "--download-timeout", "--invocation-timeout", "--allowed-buckets", "--no-checklist",
                             "--inference-ami-version", "--allow-demo-weights", "--allow-realtime-sam3d",
                             "--canary", "--tag", "--log-retention-days", "--kms-key-id"]),
    ("sagemaker_invoke.py", ["--endpoint-name", "--mode", "--payload", "--async-input-s3", "--verify", "--dry-run",
                             "--points", "--labels", "--box", "--text", "--embedding-id", "--mask-s3-key",
                             "--mask-png", "--mask-polygon", "--seed", "--out", "--image-file",
                             "--invocation-timeout", "--preset"]),
    ("sagemaker_teardown.py", ["--endpoint-name", "--region", "--wait", "--dry-run"])])
def test_script_help(script, options):
    proc = run_script(script, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ")
    missing = [opt for opt in options if opt not in proc.stdout]
    assert missing == []
    assert os.access(SCRIPTS / script, os.X_OK)
    assert (SCRIPTS / script).read_text().startswith("#!/usr/bin/env python3\n")
