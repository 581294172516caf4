"""SageMaker control plane: Stubber (parameters checked against botocore's service models)
for SageMaker / Application Auto Scaling / CloudWatch, a local moto server for S3 and
sagemaker-runtime, and the three CLI scripts.  Nothing leaves 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber

from gen3d.sagemaker import autoscaling, deploy, errors, gpus, invoke, names, resources, upload
from gen3d.sagemaker import clients as aws

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-exec"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gen3d:sam3"
NOW = datetime(2025, 11, 28, 13, 5, 9, tzinfo=UTC)
STAMPED = "sam3-rt-20251128-130509"
T0 = datetime(2025, 11, 28, tzinfo=UTC)
DEAD_ENDPOINT = "http://127.0.0.1:9"  # discard port: anything sent by mistake fails at once, locally


def _clean_aws_env(env: dict[str, str]) -> dict[str, str]:
    for key in [k for k in env if k.startswith("AWS_")]:
        del env[key]
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=DEAD_ENDPOINT)
    return env


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch):
    """Dummy credentials, fixed region, no profile files, endpoints on 127.0.0.1 only."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in _clean_aws_env({}).items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def sm_moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sm_moto(sm_moto_server, monkeypatch):
    """Fresh moto state; boto3 clients made now go to the local moto server."""
    requests.post(f"{sm_moto_server}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", sm_moto_server)
    return sm_moto_server


def client(service: str):
    return boto3.client(service, region_name=REGION, config=aws.BOTO_CONFIG)


@pytest.fixture
def stubbed():
    """Stubbed sagemaker / application-autoscaling / cloudwatch clients (activated)."""
    made = {name: client(name) for name in ("sagemaker", "application-autoscaling", "cloudwatch")}
    stubs = {name: Stubber(c) for name, c in made.items()}
    for stub in stubs.values():
        stub.activate()
    yield made, stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def not_found(stub: Stubber, method: str, params: dict, what: str = "resource") -> None:
    stub.add_client_error(method, service_error_code="ValidationException",
                          service_message=f'Could not find {what} "x".', http_status_code=400,
                          expected_params=params)


def endpoint_desc(name: str, status: str, config: str, reason: str | None = None) -> dict:
    desc = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{name}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": T0, "LastModifiedTime": T0}
    if reason:
        desc["FailureReason"] = reason
    return desc


def model_data_source(uri: str) -> dict:
    return {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix", "CompressionType": "None"}}


def variant(model: str, instance_type: str, count: int = 1) -> dict:
    return {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": instance_type,
            "InitialInstanceCount": count, "ModelDataDownloadTimeoutInSeconds": 1200,
            "ContainerStartupHealthCheckTimeoutInSeconds": 1200}


SCALING_TARGET = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/sam3-async/variant/AllTraffic",
                  "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
STEP_ARN = ("arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:1:resource/sagemaker/"
            "endpoint/sam3-async/variant/AllTraffic:policyName/sam3-async-scale-out-from-zero")
TRACK_ARN = STEP_ARN.replace("scale-out-from-zero", "backlog-target-tracking")


def expect_autoscaling(aas: Stubber, cw: Stubber, max_capacity: int = 1) -> None:
    dims = [{"Name": "EndpointName", "Value": "sam3-async"}]
    aas.add_response("register_scalable_target", {}, {**SCALING_TARGET, "MinCapacity": 0,
                                                      "MaxCapacity": max_capacity})
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


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


# ----------------------------------------------------------------------------- GPU check / names


@pytest.mark.parametrize(("model", "instance_type", "gpu"), [
    ("sam3", "ml.g5.2xlarge", "NVIDIA A10G"), ("sam3", "ml.g6.xlarge", "NVIDIA L4"),
    ("sam3d", "ml.g6e.2xlarge", "NVIDIA L40S"), ("sam3d", "ml.p4d.24xlarge", "NVIDIA A100"),
    ("sam3d", "ml.p5.48xlarge", "NVIDIA H100")])
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
         "ProductionVariants": [{**variant(STAMPED, "ml.g6e.xlarge", 2),
                                 "InferenceAmiVersion": "al2-ami-sagemaker-inference-gpu-3-1"}]})
    arn = resources.create_endpoint_config(clients["sagemaker"], STAMPED, model_name=STAMPED,
                                     instance_type="ml.g6e.xlarge", instance_count=2,
                                     inference_ami_version="al2-ami-sagemaker-inference-gpu-3-1", out=io.StringIO())
    assert arn.endswith("endpoint-config/c")


def test_async_endpoint_config(stubbed):
    clients, stubs = stubbed
    stubs["sagemaker"].add_response(
        "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"},
        {"EndpointConfigName": "sam3d-async-20251128-130509",
         "ProductionVariants": [variant("sam3d-async-20251128-130509", "ml.g6e.2xlarge")],
         "AsyncInferenceConfig": {
             "OutputConfig": {"S3OutputPath": "s3://b/out/", "S3FailurePath": "s3://b/fail/"},
             "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}})
    out = io.StringIO()
    resources.create_endpoint_config(clients["sagemaker"], "sam3d-async-20251128-130509",
                               model_name="sam3d-async-20251128-130509", instance_type="ml.g6e.2xlarge",
                               async_config=resources.AsyncConfig("s3://b/out/", "s3://b/fail/", 2), out=out)
    assert "(async, 1x ml.g6e.2xlarge)" in out.getvalue()


def test_create_then_update_endpoint(stubbed):
    clients, stubs = stubbed
    stub = stubs["sagemaker"]
    not_found(stub, "describe_endpoint", {"EndpointName": "sam3-rt"}, "endpoint")
    stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/sam3-rt"},
                      {"EndpointName": "sam3-rt", "EndpointConfigName": "c1"})
    stub.add_response("describe_endpoint", endpoint_desc("sam3-rt", "InService", "c1"), {"EndpointName": "sam3-rt"})
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/sam3-rt"},
                      {"EndpointName": "sam3-rt", "EndpointConfigName": "c2"})
    sm = clients["sagemaker"]
    assert resources.create_or_update_endpoint(sm, "sam3-rt", "c1", out=io.StringIO()) == "created"
    assert resources.create_or_update_endpoint(sm, "sam3-rt", "c2", out=io.StringIO()) == "updated"


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
    for policy in ("sam3-async-backlog-target-tracking", "sam3-async-scale-out-from-zero"):
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


def test_teardown_deletes_everything(stubbed):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    _expect_autoscaling_removal(stubs["application-autoscaling"], stubs["cloudwatch"], present=True)
    current, older = "sam3-async-20251128-130509", "sam3-async-20251101-000000"
    sm.add_response("describe_endpoint", endpoint_desc("sam3-async", "InService", current),
                    {"EndpointName": "sam3-async"})
    sm.add_response("delete_endpoint", {}, {"EndpointName": "sam3-async"})
    sm.add_response("list_endpoint_configs", {"EndpointConfigs": [
        {"EndpointConfigName": n, "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:1:endpoint-config/{n}",
         "CreationTime": T0} for n in (current, older, "sam3-async-other")]},
        {"NameContains": "sam3-async", "MaxResults": 100})
    for config in (current, older):
        sm.add_response("describe_endpoint_config", {
            "EndpointConfigName": config,
            "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:1:endpoint-config/{config}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": config}], "CreationTime": T0},
            {"EndpointConfigName": config})
        sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": config})
    sm.add_response("delete_model", {}, {"ModelName": current})
    not_found(sm, "delete_model", {"ModelName": older}, "model")
    out = io.StringIO()
    deleted = deploy.teardown(Clients_from(clients), "sam3-async", out=out)
    assert deleted == {"endpoint": ["sam3-async"], "endpoint_config": [current, older], "model": [current]}
    assert f"model {older}: already gone" in out.getvalue()
    assert "alarm sam3-async-has-backlog-without-capacity: deleted" in out.getvalue()


def test_teardown_when_already_gone(stubbed):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    _expect_autoscaling_removal(stubs["application-autoscaling"], stubs["cloudwatch"], present=False)
    not_found(sm, "describe_endpoint", {"EndpointName": "sam3-async"}, "endpoint")
    sm.add_response("list_endpoint_configs", {"EndpointConfigs": []}, {"NameContains": "sam3-async", "MaxResults": 100})
    out = io.StringIO()
    assert deploy.teardown(Clients_from(clients), "sam3-async", out=out) == {
        "endpoint": [], "endpoint_config": [], "model": []}
    text = out.getvalue()
    assert "endpoint sam3-async: already gone" in text
    assert "scalable target endpoint/sam3-async/variant/AllTraffic: already gone" in text
    assert text.count("already gone") == 5


def Clients_from(made: dict, s3=None, runtime=None) -> aws.Clients:  # noqa: N802 - reads like a constructor
    return aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=runtime,
                       autoscaling=made["application-autoscaling"], cloudwatch=made["cloudwatch"])


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


def _set_moto_async_results(url: str, results: list[dict]) -> None:
    requests.post(f"{url}/moto-api/static/sagemaker/async-endpoint-results",
                  json={"region": REGION, "results": results}, timeout=10).raise_for_status()


def test_invoke_async_against_moto_runtime(sm_moto):
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="iob")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/1.safetensors"}
    _set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}, {"is_failure": True, "data": "CUDA OOM"}])
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


def _set_moto_realtime_results(url: str, bodies: list[dict]) -> None:
    requests.post(f"{url}/moto-api/static/sagemaker/endpoint-results", timeout=10, json={
        "region": REGION, "results": [{"Body": json.dumps(b), "ContentType": "application/json",
                                       "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}
                                      for b in bodies]}).raise_for_status()


def test_realtime_invoke_and_verify_against_moto(sm_moto):
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="iob")
    s3.put_object(Bucket="iob", Key="emb/1.safetensors", Body=b"x")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/1.safetensors",
              "output_bucket": "iob", "embedding_size_mb": 0.1}
    _set_moto_realtime_results(sm_moto, [answer])
    got = invoke.invoke_realtime(rt, "sam3-rt", {"task": "get_embedding", "bucket": "iob"})
    assert got == answer
    assert invoke.verify_response(s3, got, "other") == ["s3://iob/emb/1.safetensors"]


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
    assert invoke.verify_response(s3, {"status": "success", "task": "generate_3d", "outputs": outputs}, "iob") == [
        "s3://iob/o/a.ply", "s3://iob/o/a.glb", "s3://iob/o/pose.json"]


# ----------------------------------------------------------------------------- full deploy (Stubber + moto)


def _expect_deploy(stubs: dict, endpoint: str, name: str, instance_type: str, *, exists: bool,
                   async_paths: tuple[str, str] | None = None) -> None:
    sm = stubs["sagemaker"]
    not_found(sm, "describe_model", {"ModelName": name}, "model")
    sm.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:us-east-1:1:model/{name}"}, {
        "ModelName": name, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": IMAGE, "ModelDataSource": model_data_source(ANY), "Environment": ANY}})
    config = {"EndpointConfigName": name, "ProductionVariants": [variant(name, instance_type)]}
    if async_paths:
        config["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": async_paths[0],
                                                           "S3FailurePath": async_paths[1]},
                                          "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1}}
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:endpoint-config/c"},
                    config)
    if exists:
        sm.add_response("describe_endpoint", endpoint_desc(endpoint, "InService", "old"), {"EndpointName": endpoint})
        stubs["application-autoscaling"].add_response(
            "describe_scalable_targets", {"ScalableTargets": []},
            {"ServiceNamespace": "sagemaker", "ResourceIds": [f"endpoint/{endpoint}/variant/AllTraffic"],
             "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})
        sm.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e"},
                        {"EndpointName": endpoint, "EndpointConfigName": name})
    else:
        not_found(sm, "describe_endpoint", {"EndpointName": endpoint}, "endpoint")
        sm.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/e"},
                        {"EndpointName": endpoint, "EndpointConfigName": name})
    sm.add_response("describe_endpoint", endpoint_desc(endpoint, "Creating", name), {"EndpointName": endpoint})
    sm.add_response("describe_endpoint", endpoint_desc(endpoint, "InService", name), {"EndpointName": endpoint})


def test_deploy_async_uploads_creates_waits_and_autoscales(sm_moto, stubbed, tmp_path):
    made, stubs = stubbed
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    archive = tmp_path / "sam3"
    archive.mkdir()
    (archive / "weights.bin").write_bytes(b"w" * 1000)
    name = "sam3-async-20251128-130509"
    _expect_deploy(stubs, "sam3-async", name, "ml.g6e.xlarge", exists=False,
                   async_paths=("s3://bkt/p/async/output/", "s3://bkt/p/async/failure/"))
    expect_autoscaling(stubs["application-autoscaling"], stubs["cloudwatch"], max_capacity=2)
    spec = deploy.DeploySpec(model="sam3", bucket="bkt", prefix="p", image_uri=IMAGE, role_arn=ROLE,
                          instance_type="ml.g6e.xlarge", endpoint_name="sam3-async", mode="async",
                          archive=archive, max_instances=2)
    out = io.StringIO()
    result = deploy.deploy(Clients_from(made, s3=s3), spec, out=out, now=NOW, sleep=lambda s: None, progress=False)
    assert result.action == "created" and result.model_name == name
    assert result.model_data_s3_uri == f"s3://bkt/p/model/{name}/"
    assert s3.get_object(Bucket="bkt", Key=f"p/model/{name}/sam3/weights.bin")["Body"].read() == b"w" * 1000
    assert result.autoscaling["step_policy_arn"] == STEP_ARN
    assert "endpoint sam3-async: Creating\nendpoint sam3-async: InService" in out.getvalue()


def test_deploy_refuses_sam3d_on_g5_before_any_call(stubbed, tmp_path):
    made, _ = stubbed  # no stubbed responses: any API call would fail the test
    spec = deploy.DeploySpec(model="sam3d", bucket="b", prefix="p", image_uri=IMAGE, role_arn=ROLE,
                          instance_type="ml.g5.12xlarge", endpoint_name="sam3d", archive=tmp_path)
    with pytest.raises(errors.GpuMemoryError, match="refusing to deploy sam3d on ml.g5.12xlarge"):
        deploy.deploy(Clients_from(made, s3=client("s3")), spec, out=io.StringIO())


@pytest.mark.parametrize("output_exists", [True, False])
def test_deploy_script_smoke_test_gates_success(sm_moto, stubbed, tmp_path, monkeypatch, capsys, output_exists):
    """gen3d-deploy (scripts/sagemaker_deploy.py): success only if status=success and the named output exists."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from gen3d.cli import deploy as deploy_cli

    made, stubs = stubbed
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="bkt")
    if output_exists:
        s3.put_object(Bucket="bkt", Key="emb/e1.safetensors", Body=b"x")
    _set_moto_realtime_results(sm_moto, [{"status": "success", "task": "get_embedding", "embedding_size_mb": 1.0,
                                       "output_s3_key": "emb/e1.safetensors", "output_bucket": "bkt"}])
    monkeypatch.setattr(names, "datetime", type("D", (), {"now": staticmethod(lambda tz=None: NOW)}))
    name = "sam3-realtime-20251128-130509"
    _expect_deploy(stubs, "sam3-realtime", name, "ml.g5.2xlarge", exists=True)
    monkeypatch.setattr(aws, "make_clients", lambda *a, **k: Clients_from(made, s3=s3, runtime=rt))
    (tmp_path / "sam3").mkdir()
    (tmp_path / "sam3" / "w.bin").write_bytes(b"w")
    rc = deploy_cli.main(["--model", "sam3", "--archive", str(tmp_path / "sam3"), "--bucket", "bkt",
                                "--image-uri", IMAGE, "--role-arn", ROLE, "--poll", "0"])
    captured = capsys.readouterr()
    seed = s3.get_object(Bucket="bkt", Key="gen3d/sam3-realtime/smoke/seed.png")["Body"].read()
    assert seed.startswith(b"\x89PNG\r\n\x1a\n")
    if output_exists:
        assert rc == 0, captured.err
        assert "SUCCESS: sam3-realtime answered get_embedding with status=success" in captured.out
        summary = json.loads(captured.out.split("RESULT ", 1)[1])
        assert summary["verified_outputs"] == ["s3://bkt/emb/e1.safetensors"] and summary["action"] == "updated"
    else:
        assert rc == 1 and "SUCCESS" not in captured.out
        assert "claims outputs that do not exist: s3://bkt/emb/e1.safetensors" in captured.err


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


def run_script(name: str, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = _clean_aws_env(dict(os.environ))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd="/")


def dry_run_calls(stdout: str) -> list[tuple[str, str, dict]]:
    calls = []
    for line in stdout.splitlines():
        if line.startswith("DRY-RUN "):
            _, service, operation, params = line.split(" ", 3)
            calls.append((service, operation, json.loads(params)))
    return calls


def test_deploy_dry_run_prints_calls(tmp_path):
    archive = tmp_path / "sam3d"
    archive.mkdir()
    (archive / "w.bin").write_bytes(b"123")
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(archive), "--bucket", "bkt",
                      "--prefix", "gen3d/prod", "--image-uri", IMAGE, "--role-arn", ROLE,
                      "--instance-type", "ml.g6e.2xlarge", "--mode", "async", "--endpoint-name", "sam3d-async",
                      "--max-concurrency", "2", "--async-output-s3", "s3://bkt/results/", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    calls = dry_run_calls(proc.stdout)
    ops = [op for _, op, _ in calls]
    assert ops[:7] == ["upload_file", "DescribeModel", "CreateModel", "CreateEndpointConfig", "DescribeEndpoint",
                       "CreateEndpoint", "DescribeEndpoint"]
    assert ops[7:11] == ["RegisterScalableTarget", "PutScalingPolicy", "PutScalingPolicy", "PutMetricAlarm"]
    assert "InvokeEndpointAsync" in ops
    create_model = next(p for _, op, p in calls if op == "CreateModel")
    source = create_model["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["CompressionType"] == "None"
    assert source["S3Uri"].startswith("s3://bkt/gen3d/prod/model/sam3d-async-") and source["S3Uri"].endswith("/")
    upload = calls[0][2]
    assert upload["Key"] == source["S3Uri"].removeprefix("s3://bkt/") + "sam3d/w.bin" and upload["Bytes"] == 3
    config = next(p for _, op, p in calls if op == "CreateEndpointConfig")
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g6e.2xlarge"
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://bkt/results/", "S3FailurePath": "s3://bkt/gen3d/prod/async/failure/"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}
    register = next(p for _, op, p in calls if op == "RegisterScalableTarget")
    assert register["MinCapacity"] == 0
    assert "dry run: smoke test not sent" in proc.stdout


def test_deploy_dry_run_refuses_sam3d_on_g5(tmp_path):
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(tmp_path), "--bucket", "b",
                      "--image-uri", IMAGE, "--role-arn", ROLE, "--instance-type", "ml.g5.2xlarge", "--dry-run")
    assert proc.returncode == 2
    assert "refusing to deploy sam3d on ml.g5.2xlarge" in proc.stderr and "24 GiB" in proc.stderr
    assert dry_run_calls(proc.stdout) == []


def test_teardown_dry_run():
    proc = run_script("sagemaker_teardown.py", "--endpoint-name", "sam3-async", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    ops = [op for _, op, _ in dry_run_calls(proc.stdout)]
    assert ops == ["DescribeAlarms", "DeleteAlarms", "DeleteScalingPolicy", "DeleteScalingPolicy",
                   "DeregisterScalableTarget", "DescribeEndpoint", "DeleteEndpoint", "ListEndpointConfigs",
                   "DescribeEndpointConfig", "DeleteEndpointConfig", "DeleteModel"]


def test_invoke_script_async_against_moto(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    answer = {"status": "success", "task": "get_embedding", "output_s3_key": "emb/9.safetensors"}
    s3.put_object(Bucket="iob", Key="emb/9.safetensors", Body=b"x")
    _set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}])
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
                             "--max-concurrency", "--async-output-s3", "--smoke-payload"]),
    ("sagemaker_invoke.py", ["--endpoint-name", "--mode", "--payload", "--async-input-s3", "--verify", "--dry-run"]),
    ("sagemaker_teardown.py", ["--endpoint-name", "--region", "--wait", "--dry-run"])])
def test_script_help(script, options):
    proc = run_script(script, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ")
    missing = [opt for opt in options if opt not in proc.stdout]
    assert missing == []
    assert os.access(SCRIPTS / script, os.X_OK)
    assert (SCRIPTS / script).read_text().startswith("#!/usr/bin/env python3\n")
