"""SageMaker operations: failure alarms and notifications, real-time autoscaling, start-up timeouts derived
from the archive, the deployment checklist, and teardown of all of it. CloudWatch, Application Auto Scaling,
ECR, CloudWatch Logs, S3 and sagemaker-runtime are moto's server on 127.0.0.1; SageMaker's control plane is
botocore's Stubber (parameters checked against the service model)."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np
import pytest
import trimesh
import yaml
from botocore.stub import ANY
from plyfile import PlyData, PlyElement
from safetensors.numpy import save as save_safetensors

from gen3d.sagemaker import alarms, autoscaling, checklist, deploy, errors, names, teardown, timeouts
from gen3d.sagemaker import clients as aws
from tests.unit.sagemaker_support import (
    IMAGE,
    NOW,
    ROLE,
    TOPIC,
    FakeClock,
    client,
    clients_from,
    deploy_tags,
    endpoint_desc,
    expect_alarm_tagging,
    expect_deploy,
    not_found,
    set_moto_async_results,
    set_moto_realtime_results,
    write_archive,
)

pytestmark = pytest.mark.usefixtures("isolated_aws")

# What `serve` printed when run locally on the sam3 demo archive (TorchServe 0.12.0; trimmed): the lines the
# checklist looks for in the endpoint's CloudWatch log group.
READY_LOG = [
    "2026-11-28T18:34:13,155 [INFO ] main org.pytorch.serve.ModelServer - Loading initial models: sam3.mar",
    "2026-11-28T18:34:17,711 [DEBUG] W-9000-sam3_1.0 org.pytorch.serve.wlm.WorkerThread - W-9000-sam3_1.0 "
    "State change null -> WORKER_STARTED",
    "2026-11-28T18:34:20,297 [WARN ] W-9000-sam3_1.0-stderr MODEL_LOG - /opt/venv/lib/python3.11/site-packages/"
    "torch/jit/_script.py:1491: FutureWarning: `torch.jit.script` is deprecated.",
    "2026-11-28T18:34:21,536 [DEBUG] W-9000-sam3_1.0 org.pytorch.serve.wlm.WorkerThread - W-9000-sam3_1.0 "
    "State change WORKER_STARTED -> WORKER_MODEL_LOADED",
    "2026-11-28T18:34:21,535 [INFO ] W-9000-sam3_1.0-stdout MODEL_LOG - sam3 ready: {'model_id': "
    "'sam3/tiny/4e339cfad3bed99d', 'preset': {'name': 'tiny', 'resolution': 112}, 'device': 'cuda:0'}",
    "2026-11-28 18:34:22,192 gen3d.torchserve.runner INFO models ready: sam3",
    "2026-11-28 18:34:22,192 serve INFO serving sam3 on port 8080",
]
FAILED_LOG = [
    "2026-11-28T18:34:17,711 [DEBUG] W-9000-sam3_1.0 org.pytorch.serve.wlm.WorkerThread - W-9000-sam3_1.0 "
    "State change null -> WORKER_STARTED",
    "2026-11-28T18:34:20,100 [INFO ] W-9000-sam3_1.0-stdout MODEL_LOG - Traceback (most recent call last):",
    "2026-11-28T18:34:20,101 [ERROR] W-9000-sam3_1.0 org.pytorch.serve.wlm.WorkerThread - Backend worker error",
]


def put_image(ecr, tag: str = "sam3") -> None:
    ecr.create_repository(repositoryName="gen3d")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                           "digest": "sha256:" + "b" * 64},
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                            "digest": "sha256:" + "c" * 64}]}
    ecr.put_image(repositoryName="gen3d", imageManifest=json.dumps(manifest), imageTag=tag)


def put_logs(logs, endpoint: str, lines: list[str], at_ms: int) -> None:
    group = names.log_group(endpoint)
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0123456789abcdef0")
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0123456789abcdef0",
                        logEvents=[{"timestamp": at_ms + i, "message": line} for i, line in enumerate(lines)])


def embedding_bytes(constant: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    shapes = {"image_embed": (1, 256, 8, 8), "high_res_feats.0": (1, 32, 32, 32), "high_res_feats.1": (1, 64, 16, 16)}
    return save_safetensors({k: (np.zeros(s) if constant else rng.standard_normal(s)).astype(np.float16)
                             for k, s in shapes.items()}, metadata={"format": "gen3d.sam3.interactive-embedding/v1"})


def sam3d_files(vertices: int = 5) -> dict[str, bytes]:
    xyz = np.zeros(vertices, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    ply = io.BytesIO()
    PlyData([PlyElement.describe(xyz, "vertex")]).write(ply)
    glb = trimesh.creation.box().export(file_type="glb")
    pose = {"format": "gen3d.sam3d.pose/v1", "rotation": [1, 0, 0, 0], "translation": [0, 0, 2], "scale": [1, 1, 1]}
    return {"ply": ply.getvalue(), "glb": glb, "pose": json.dumps(pose).encode()}


# ----------------------------------------------------------------------------- failure alarms


def test_realtime_failure_alarms_notify_the_topic(stubbed):
    made, stubs = stubbed
    cw = stubs["cloudwatch"]
    dims = [{"Name": "EndpointName", "Value": "sam3-rt"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    common = {"Namespace": "AWS/SageMaker", "Period": 300, "EvaluationPeriods": 1, "DatapointsToAlarm": 1,
              "TreatMissingData": "notBreaching", "AlarmActions": [TOPIC], "OKActions": [TOPIC], "Dimensions": dims,
              "Statistic": "Sum", "Threshold": 3.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold"}
    for alarm, metric in (("sam3-rt-invocation-5xx-errors", "Invocation5XXErrors"),
                          ("sam3-rt-invocation-model-errors", "InvocationModelErrors")):
        cw.add_response("put_metric_alarm", {}, {**common, "AlarmName": alarm, "MetricName": metric,
                                                 "AlarmDescription": ANY})
    stale = ["sam3-rt-invocation-failures", "sam3-rt-notification-failures", "sam3-rt-oldest-request-age"]
    cw.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": stale[0]}]}, {"AlarmNames": stale})
    cw.add_response("delete_alarms", {}, {"AlarmNames": [stale[0]]})
    out = io.StringIO()
    made_alarms = alarms.put_failure_alarms(made["cloudwatch"], "sam3-rt", "realtime", TOPIC,
                                            alarms.AlarmSettings(errors=3), out=out)
    assert made_alarms == ["sam3-rt-invocation-5xx-errors", "sam3-rt-invocation-model-errors"]
    assert f"alarm sam3-rt-invocation-5xx-errors: Invocation5XXErrors -> {TOPIC}" in out.getvalue()
    assert "alarm sam3-rt-invocation-failures: deleted" in out.getvalue()  # the async one of an earlier deploy


def test_async_alarm_definitions():
    requests = alarms.failure_alarms("sam3d-async", "async", TOPIC, alarms.AlarmSettings(oldest_request_s=1800))
    by_metric = {r["MetricName"]: r for r in requests}
    assert set(by_metric) == {"InvocationFailures", "NotificationFailures", "ApproximateAgeOfOldestRequest"}
    assert by_metric["NotificationFailures"]["Dimensions"][1] == {"Name": "VariantName", "Value": "AllTraffic"}
    age = by_metric["ApproximateAgeOfOldestRequest"]
    assert age["Dimensions"] == [{"Name": "EndpointName", "Value": "sam3d-async"}]  # published per endpoint only
    assert (age["Statistic"], age["Threshold"], age["ComparisonOperator"]) == ("Maximum", 1800.0,
                                                                                "GreaterThanThreshold")
    assert by_metric["InvocationFailures"]["Dimensions"][1] == {"Name": "VariantName", "Value": "AllTraffic"}
    assert all(r["AlarmActions"] == [TOPIC] and r["OKActions"] == [TOPIC] for r in requests)
    assert "/aws/sagemaker/Endpoints/sam3d-async" in age["AlarmDescription"]
    with pytest.raises(ValueError, match="thresholds"):
        alarms.AlarmSettings(errors=0)


def test_alarms_follow_the_mode_and_teardown_removes_them_in_moto(sm_moto):
    cw = client("cloudwatch")
    alarms.put_failure_alarms(cw, "sam3-ep", "realtime", TOPIC, alarms.AlarmSettings(), out=io.StringIO())
    alarms.put_failure_alarms(cw, "sam3-ep", "async", TOPIC, alarms.AlarmSettings(), out=io.StringIO())
    cw.put_metric_alarm(AlarmName="sam3-ep-2-invocation-failures", Namespace="AWS/SageMaker", Period=60,
                        MetricName="InvocationFailures", Statistic="Sum", EvaluationPeriods=1, Threshold=1.0,
                        ComparisonOperator="GreaterThanOrEqualToThreshold")  # another endpoint's: left alone
    listed = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert set(listed) == {"sam3-ep-invocation-failures", "sam3-ep-notification-failures",
                           "sam3-ep-oldest-request-age", "sam3-ep-2-invocation-failures"}
    assert listed["sam3-ep-oldest-request-age"]["AlarmActions"] == [TOPIC]
    out = io.StringIO()
    assert alarms.remove_failure_alarms(cw, "sam3-ep", out=out) == [
        "sam3-ep-invocation-failures", "sam3-ep-notification-failures", "sam3-ep-oldest-request-age"]
    assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["sam3-ep-2-invocation-failures"]
    assert "alarm sam3-ep-invocation-5xx-errors: already gone" in out.getvalue()


# ----------------------------------------------------------------------------- real-time autoscaling


def test_realtime_autoscaling_target_tracking_in_moto(sm_moto):
    aas, cw = client("application-autoscaling"), client("cloudwatch")
    out = io.StringIO()
    result = autoscaling.configure_realtime_autoscaling(aas, "sam3-rt", min_capacity=1, max_capacity=4,
                                                        target_invocations_per_instance=120, out=out)
    assert result["invocations_policy_arn"].endswith("policyName/sam3-rt-invocations-target-tracking")
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/sam3-rt/variant/AllTraffic", 1, 4)
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert config["TargetValue"] == 120.0
    assert "1..4 instances, target 120 invocations/instance/minute" in out.getvalue()
    assert autoscaling.has_scalable_target(aas, "sam3-rt")
    autoscaling.remove_autoscaling(aas, cw, "sam3-rt", out=out)
    assert not autoscaling.has_scalable_target(aas, "sam3-rt")
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    assert "scaling policy sam3-rt-invocations-target-tracking: deleted" in out.getvalue()
    assert "scaling policy sam3-rt-scale-out-from-zero: already gone" in out.getvalue()
    with pytest.raises(ValueError, match="1 <= min"):
        autoscaling.configure_realtime_autoscaling(aas, "e", min_capacity=2, max_capacity=2,
                                                   target_invocations_per_instance=10)


def _spec(**kw) -> deploy.DeploySpec:
    base = {"model": "sam3", "bucket": "bkt", "prefix": "p", "image_uri": IMAGE, "role_arn": ROLE,
            "instance_type": "ml.g5.2xlarge", "endpoint_name": "sam3-rt"}
    return deploy.DeploySpec(**{**base, **kw})


def test_capacity_rules():
    assert _spec().capacity() == (1, 1, False)  # real-time default: fixed at --instance-count
    assert _spec(instance_count=2, max_instances=5, target_invocations=60).capacity() == (2, 5, True)
    assert _spec(mode="async").capacity() == (0, 1, True)
    assert _spec(mode="async", max_instances=3, autoscaling=False).capacity() == (0, 3, False)
    with pytest.raises(ValueError, match="needs --target-invocations"):
        _spec(max_instances=3).capacity()
    with pytest.raises(ValueError, match="1 <= --min-instances"):
        _spec(min_instances=0).capacity()
    with pytest.raises(ValueError, match="0 <= --min-instances"):
        _spec(mode="async", min_instances=2, max_instances=1).capacity()
    assert _spec(allowed_buckets=["in-*", "bkt"]).container_environment() == {
        "GEN3D_MODEL": "sam3", "GEN3D_ALLOWED_BUCKETS": "in-*,bkt", "GEN3D_READY_MARGIN_S": "60"}
    assert _spec(environment={"GEN3D_READY_MARGIN_S": "120"}).container_environment()["GEN3D_READY_MARGIN_S"] == "120"
    with pytest.raises(ValueError, match="whole seconds"):
        _spec(environment={"GEN3D_READY_MARGIN_S": "1m"}).container_environment()


def test_deploy_realtime_with_autoscaling_and_alarms(sm_moto, stubbed, tmp_path):
    """Stubbed SageMaker up to InService, then autoscaling and alarms in moto."""
    made, stubs = stubbed
    s3, aas, cw = client("s3"), client("application-autoscaling"), client("cloudwatch")
    s3.create_bucket(Bucket="bkt")
    name = "sam3-rt-20251128-130509"
    env = {"GEN3D_MODEL": "sam3", "GEN3D_ALLOWED_BUCKETS": "bkt,inputs-*", "GEN3D_READY_MARGIN_S": "90"}
    expect_deploy(stubs, "sam3-rt", name, "ml.g5.2xlarge", exists=False, timeouts=(750, 900), env=env)
    spec = _spec(archive=write_archive(tmp_path, "sam3", startup=600), max_instances=3, target_invocations=90,
                 sns_topic_arn=TOPIC, allowed_buckets=["bkt", "inputs-*"], download_timeout_s=900,
                 environment={"GEN3D_READY_MARGIN_S": "90"})
    clients = aws.Clients(s3=s3, sagemaker=made["sagemaker"], runtime=None, autoscaling=aas, cloudwatch=cw,
                          logs=client("logs"))
    result = deploy.deploy(clients, spec, out=io.StringIO(), now=NOW, sleep=lambda s: None, progress=False)
    assert (result.timeouts.health_check_s, result.timeouts.download_s) == (750, 900)  # 600 + 90 + 60
    assert result.alarms == ["sam3-rt-invocation-5xx-errors", "sam3-rt-invocation-model-errors"]
    made_alarms = cw.describe_alarms()["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in made_alarms) == result.alarms
    assert all(cw.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"] == deploy_tags("sam3-rt")
               for a in made_alarms)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]["MaxCapacity"] == 3


def test_teardown_removes_alarms_and_autoscaling_in_moto(sm_moto, stubbed):
    made, stubs = stubbed
    aas, cw = client("application-autoscaling"), client("cloudwatch")
    autoscaling.configure_realtime_autoscaling(aas, "sam3-rt", min_capacity=1, max_capacity=2,
                                               target_invocations_per_instance=30, out=io.StringIO())
    alarms.put_failure_alarms(cw, "sam3-rt", "realtime", TOPIC, alarms.AlarmSettings(), out=io.StringIO())
    sm = stubs["sagemaker"]
    not_found(sm, "describe_endpoint", {"EndpointName": "sam3-rt"}, "endpoint")
    clients = aws.Clients(s3=None, sagemaker=made["sagemaker"], runtime=None, autoscaling=aas, cloudwatch=cw,
                          tagging=client("resourcegroupstaggingapi"))
    deleted = teardown.teardown(clients, "sam3-rt", out=io.StringIO())
    assert deleted["alarm"] == ["sam3-rt-invocation-5xx-errors", "sam3-rt-invocation-model-errors"]
    assert cw.describe_alarms()["MetricAlarms"] == []
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


# ----------------------------------------------------------------------------- start-up timeouts


def test_timeouts_derive_from_the_archive_and_refuse_less(tmp_path):
    needs = timeouts.local_needs(write_archive(tmp_path, "sam3d", startup=1800, response=900), "sam3d")
    assert (needs.startup_timeout_s, needs.response_timeout_s) == (1800, 900)
    derived = timeouts.derive_timeouts(needs)
    assert (derived.health_check_s, derived.download_s) == (1920, 1920)
    assert "startupTimeout 1800 s + GEN3D_READY_MARGIN_S 60 s + 60 s slack = 1920 s" in derived.explanation
    assert timeouts.derive_timeouts(needs, health_check_s=2400, download_s=600).health_check_s == 2400
    with pytest.raises(errors.TimeoutSettingError, match=r"--health-check-timeout 1200 s is below .*1920 s"):
        timeouts.derive_timeouts(needs, health_check_s=1200)
    with pytest.raises(errors.TimeoutSettingError, match="outside SageMaker's 60..3600"):
        timeouts.derive_timeouts(needs, download_s=4000)
    too_slow = timeouts.ArchiveNeeds("s3://b/m/sam3d/model-config.yaml", 3500)
    with pytest.raises(errors.TimeoutSettingError, match=r"s3://b/m/sam3d/model-config.yaml needs .*3620 s, above"):
        timeouts.derive_timeouts(too_slow)
    assert timeouts.invocation_timeout(needs, 300) == 960
    assert timeouts.invocation_timeout(timeouts.ArchiveNeeds("x", 60, 3590), 300) == 3600


def test_download_timeout_floor_follows_the_archive_size():
    big = timeouts.ArchiveNeeds("model-store/sam3d", 1800, size_bytes=30 * 2**30)  # 1536 s at 20 MiB/s
    assert timeouts.derive_timeouts(big).download_s == 1920
    with pytest.raises(errors.TimeoutSettingError, match=r"--download-timeout 900 s is below the 1596 s"):
        timeouts.derive_timeouts(big, download_s=900)
    huge = timeouts.ArchiveNeeds("model-store/sam3d", 1800, size_bytes=80 * 2**30)
    with pytest.raises(errors.TimeoutSettingError, match="80.0 GiB.*3600 s download limit"):
        timeouts.derive_timeouts(huge)


def test_timeouts_from_a_mar_and_a_wrongly_named_archive(tmp_path):
    mar = tmp_path / "sam3.mar"
    with zipfile.ZipFile(mar, "w") as zf:
        zf.writestr("model-config.yaml", "startupTimeout: 900\nresponseTimeout: 120\n")
    assert timeouts.derive_timeouts(timeouts.local_needs(mar, "sam3")).health_check_s == 1020
    with pytest.raises(errors.TimeoutSettingError, match="named 'sam3', but the container serves GEN3D_MODEL=sam3d"):
        timeouts.local_needs(mar, "sam3d")
    (tmp_path / "sam3d").mkdir()
    with pytest.raises(errors.TimeoutSettingError, match="not a model archive directory .no MAR-INF"):
        timeouts.local_needs(tmp_path / "sam3d", "sam3d")
    (tmp_path / "sam3d" / "MAR-INF").mkdir()
    with pytest.raises(errors.TimeoutSettingError, match="has no model-config.yaml"):
        timeouts.local_needs(tmp_path / "sam3d", "sam3d")


def test_timeouts_from_model_data_in_s3(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="gen3d/v1/sam3d/model-config.yaml", Body=b"startupTimeout: 1500\n")
    s3.put_object(Bucket="models", Key="gen3d/v1/sam3d/pipeline/ckpt.pt", Body=b"x" * 100)
    needs = timeouts.s3_needs(s3, "s3://models/gen3d/v1", "sam3d")
    assert needs.startup_timeout_s == 1500 and needs.size_bytes == 100 + len(b"startupTimeout: 1500\n")
    assert timeouts.derive_timeouts(needs).health_check_s == 1620
    s3.put_object(Bucket="models", Key="gen3d/v2/sam3d.mar", Body=b"PK")
    unknown = timeouts.s3_needs(s3, "s3://models/gen3d/v2/", "sam3d")
    assert unknown.startup_timeout_s is None
    with pytest.raises(errors.TimeoutSettingError, match="give --health-check-timeout and --download-timeout"):
        timeouts.derive_timeouts(unknown)
    given = timeouts.derive_timeouts(unknown, health_check_s=2000, download_s=1500)
    assert (given.health_check_s, given.download_s) == (2000, 1500) and "from the flags" in given.explanation


def test_archive_weights_from_its_model_config(sm_moto, stubbed, tmp_path):
    """What gen3d-build-archives writes decides: the answer's model_id prefix, and the refusal of demo weights, here
    of model data already in S3, before any SageMaker call (the stubs have none queued)."""
    made, _ = stubbed
    real = write_archive(tmp_path, "sam3", handler={"checkpoint": "sam3.pt", "preset": "sam3", "demo_weights": False,
                                                    "checkpoint_sha256": "ab" * 32})
    needs = timeouts.local_needs(real, "sam3")
    assert needs.model_id_prefix("sam3") == "sam3/sam3/abababababababab"
    assert needs.check_weights(allow_demo=False) == f"weights: archive {real} holds the production weights of " \
                                                    "preset sam3"
    s3 = client("s3")
    s3.create_bucket(Bucket="models")
    config = {"startupTimeout": 600, "handler": {"preset": "tiny-cpu-demo", "demo_weights": True}}
    s3.put_object(Bucket="models", Key="gen3d/demo/sam3d/model-config.yaml", Body=yaml.safe_dump(config).encode())
    spec = _spec(model="sam3d", mode="async", instance_type="ml.g6e.2xlarge", endpoint_name="sam3d-async",
                 model_data_s3_uri="s3://models/gen3d/demo/")
    with pytest.raises(errors.DeployRefused, match=r"refusing to deploy: archive s3://models/gen3d/demo/sam3d/model-"
                                                   r"config.yaml was built from demo weights \(preset tiny-cpu-demo"):
        deploy.deploy(clients_from(made, s3=s3), spec, out=io.StringIO())
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"]] == ["gen3d/demo/sam3d/model-config.yaml"]
    assert timeouts.ArchiveNeeds("x", 600).model_id_prefix("sam3") is None


def test_health_check_outlasts_the_containers_own_deadline(tmp_path):
    """serve gives up after max(startupTimeout) + GEN3D_READY_MARGIN_S; SageMaker's health check must wait
    longer, so the container's clear 'not READY' exit is what ends a failed start."""
    from gen3d.sagemaker import entrypoint

    archive = write_archive(tmp_path, "sam3d", startup=1800)
    found = entrypoint.find_archives(tmp_path, "sam3d")
    container_deadline = found[0].startup_timeout + entrypoint.DEFAULT_READY_MARGIN_S
    derived = timeouts.derive_timeouts(timeouts.local_needs(archive, "sam3d"))
    assert derived.health_check_s - container_deadline == timeouts.HEALTH_CHECK_SLACK_S > 0


# ----------------------------------------------------------------------------- checklist


def deployed(endpoint: str, config: str, *images: str) -> dict:
    """DescribeEndpoint's answer for an endpoint on ``config`` whose variant runs ``images`` (resolved URIs)."""
    return {**endpoint_desc(endpoint, "InService", config), "ProductionVariants": [
        {"VariantName": "AllTraffic", "DeployedImages": [{"SpecifiedImage": IMAGE, "ResolvedImage": uri}
                                                         for uri in images]}]}


def test_image_check_compares_the_deployed_digest_with_ecrs(sm_moto, stubbed):
    """ECR in moto; DescribeEndpoint stubbed with the DeployedImages SageMaker reports."""
    made, stubs = stubbed
    ecr, sm = client("ecr"), stubs["sagemaker"]
    put_image(ecr)
    digest = ecr.describe_images(repositoryName="gen3d")["imageDetails"][0]["imageDigest"]
    running = IMAGE.replace(":sam3", "@" + digest)
    for desc in (deployed("e", "c1", running), deployed("e", "c1", running.replace(digest, "sha256:" + "0" * 64)),
                 deployed("e", "c0", running), deployed("e", "c1")):
        sm.add_response("describe_endpoint", desc, {"EndpointName": "e"})
    passed = checklist.check_image(ecr, made["sagemaker"], "e", "c1", IMAGE)
    assert passed.line().startswith(f"PASS  deployed image is ECR's: e runs {running} = {IMAGE} (")
    stale = checklist.check_image(ecr, made["sagemaker"], "e", "c1", IMAGE)  # the tag moved after the deploy
    assert not stale.passed and stale.detail == (
        f"e runs {running.replace(digest, 'sha256:' + '0' * 64)}, but ECR's {IMAGE} is {digest}")
    other = checklist.check_image(ecr, made["sagemaker"], "e", "c1", IMAGE)
    assert not other.passed and other.detail == "e is on c0, not on c1, the config this deploy made"
    none = checklist.check_image(ecr, made["sagemaker"], "e", "c1", IMAGE)
    assert not none.passed and "no image (DescribeEndpoint lists no DeployedImages)" in none.detail
    missing = checklist.check_image(ecr, made["sagemaker"], "e", "c1", IMAGE.replace(":sam3", ":sam3d"))
    assert not missing.passed and "ImageNotFoundException" in missing.detail
    assert not checklist.check_image(ecr, made["sagemaker"], "e", "c1", "docker.io/library/gen3d:sam3").passed


def test_log_checks_pass_on_the_ready_lines_and_fail_on_errors(sm_moto):
    logs = client("logs")
    since = int(time.time() * 1000)
    put_logs(logs, "sam3-rt", READY_LOG, since + 1000)
    checks = checklist.check_logs(logs, "sam3-rt", ["sam3"], since, wait_s=0)
    assert [(c.name, c.passed) for c in checks] == [("logs: sam3 worker READY", True),
                                                    ("logs: no error lines", True)]
    assert "sam3 ready: {'model_id'" in checks[0].detail
    put_logs(logs, "sam3-bad", FAILED_LOG, since + 1000)
    clock = FakeClock()
    bad = checklist.check_logs(logs, "sam3-bad", ["sam3"], since, wait_s=30, poll_s=15, sleep=clock.sleep,
                               clock=clock)
    assert clock.sleeps == [15, 15]  # waited for the lines to arrive, then gave up
    assert not bad[0].passed and bad[0].detail.startswith(
        "TorchServe's 'State change ... -> WORKER_MODEL_LOADED' and the handler's 'sam3 ready:' lines not found in "
        "/aws/sagemaker/Endpoints/sam3-bad (3 lines since the deploy began)")
    assert not bad[1].passed and "2 such lines, first: " in bad[1].detail and "Traceback" in bad[1].detail
    # a module missing at import time, logged as a warning while the worker goes on (no traceback beside it)
    missing = "[WARN ] W-9000-sam3_1.0-stderr MODEL_LOG - Triton kernels off: No module named 'triton'"
    put_logs(logs, "sam3-warned", [*READY_LOG[:2], missing, *READY_LOG[2:]], since + 1000)
    warned = checklist.check_logs(logs, "sam3-warned", ["sam3"], since, wait_s=0)
    assert warned[0].passed and not warned[1].passed and warned[1].detail.endswith(missing)
    gone = checklist.check_logs(logs, "sam3-nothing", ["sam3"], since, wait_s=0)
    assert not gone[0].passed and "ResourceNotFoundException" in gone[0].detail


SAM3_ID, SAM3D_ID = "sam3/sam3/4e339cfad3bed99d", "sam3d/sam3d-objects/0c1d2e3f4a5b6c7d"  # production presets


def smoke(task: str, response: dict | None = None, expected: str | None = "from the model", **kw):
    """A smoke outcome whose answer must come from the production preset of the task's model."""
    if expected == "from the model":
        expected = "sam3d/sam3d-objects/" if task == "generate_3d" else "sam3/sam3/"
    return checklist.SmokeOutcome(task, "bkt", response=response, expected_model_id=expected, **kw)


def test_output_checks_judge_real_files(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="o/e.safetensors", Body=embedding_bytes())
    s3.put_object(Bucket="bkt", Key="o/flat.safetensors", Body=embedding_bytes(constant=True))
    answer = {"status": "success", "task": "get_embedding", "output_bucket": "bkt", "model_id": SAM3_ID}
    good = checklist.check_output(s3, smoke("get_embedding", {**answer, "output_s3_key": "o/e.safetensors"}))
    assert good.passed and good.detail.startswith(
        f"model_id {SAM3_ID}: 3 non-constant tensors: high_res_feats.0 [1, 32, 32, 32] std")
    flat = checklist.check_output(s3, smoke("get_embedding", {**answer, "output_s3_key": "o/flat.safetensors"}))
    assert not flat.passed and "is constant (0.0)" in flat.detail
    files = sam3d_files()
    for kind, data in files.items():
        s3.put_object(Bucket="bkt", Key=f"3d/object.{kind}", Body=data)
    outputs = {kind: f"3d/object.{kind}" for kind in files}
    made = {"status": "success", "task": "generate_3d", "outputs": outputs, "model_id": SAM3D_ID}
    generated = checklist.check_output(s3, smoke("generate_3d", {**made, "output_bucket": "bkt"}))
    assert generated.passed and generated.detail.startswith(f"model_id {SAM3D_ID}: PLY 5 splats, GLB ")
    # the answer names its bucket only as "bucket": the files are read where verify_response found them
    s3.create_bucket(Bucket="other")
    for kind, data in files.items():
        s3.put_object(Bucket="other", Key=f"3d/object.{kind}", Body=data)
    elsewhere = checklist.check_output(s3, smoke("generate_3d", {**made, "bucket": "other"}))
    assert elsewhere.passed and elsewhere.detail == generated.detail
    s3.put_object(Bucket="bkt", Key="3d/empty.ply", Body=sam3d_files(vertices=0)["ply"])
    empty = checklist.check_output(s3, smoke("generate_3d", {**made, "outputs": {**outputs, "ply": "3d/empty.ply"}}))
    assert not empty.passed and empty.detail == "the PLY has no vertex"
    failed = checklist.check_output(s3, smoke("get_embedding", error="TimeoutError: late"))
    assert not failed.passed and failed.detail == "TimeoutError: late"
    segment = {"status": "success", "task": "segment", "masks": [{"area": 12, "score": 0.9}], "model_id": SAM3_ID}
    masks = checklist.check_output(s3, smoke("segment", segment))
    assert masks.passed and masks.detail == f"model_id {SAM3_ID}: 1 non-empty masks, best score 0.9"


def test_output_check_requires_the_archives_preset(sm_moto):
    """Real output from another preset (a demo archive's tiny model) or another checkpoint fails the line."""
    s3 = client("s3")
    segment = {"status": "success", "task": "segment", "masks": [{"area": 12, "score": 0.9}]}
    demo = checklist.check_output(s3, smoke("segment", {**segment, "model_id": "sam3/tiny/4e339cfad3bed99d"}))
    assert not demo.passed and demo.detail == (
        "answered by model_id sam3/tiny/4e339cfad3bed99d, not by the archive's sam3/sam3/...: another model or "
        "preset is serving")
    digest = checklist.check_output(s3, smoke("segment", {**segment, "model_id": SAM3_ID},
                                              expected="sam3/sam3/ffffffffffffffff"))
    assert not digest.passed and "not by the archive's sam3/sam3/ffffffffffffffff..." in digest.detail
    unknown = checklist.check_output(s3, smoke("segment", {**segment, "model_id": SAM3_ID}, expected=None))
    assert not unknown.passed and unknown.detail.endswith(
        f"but the archive's preset is unknown (its model-config.yaml was not read), so model_id {SAM3_ID} cannot be "
        "matched to it")
    anonymous = checklist.check_output(s3, smoke("segment", segment))
    assert not anonymous.passed and anonymous.detail.startswith("answered by model_id (none)")


def expect_checklist_reads(stubs: dict, ecr, endpoint: str, name: str) -> None:
    """After the deploy: the alarms' tagging, and DescribeEndpoint showing config ``name`` running ECR's image."""
    expect_alarm_tagging(stubs["cloudwatch"], endpoint)
    digest = ecr.describe_images(repositoryName="gen3d")["imageDetails"][0]["imageDigest"]
    stubs["sagemaker"].add_response("describe_endpoint", deployed(endpoint, name, IMAGE.replace(
        ":sam3", "@" + digest)), {"EndpointName": endpoint})


def _deploy_cli(monkeypatch, made, **clients_kw):
    from gen3d.cli import deploy as deploy_cli

    monkeypatch.setattr(names, "datetime", type("D", (), {"now": staticmethod(lambda tz=None: NOW)}))
    monkeypatch.setattr(aws, "make_clients", lambda *a, **k: clients_from(made, **clients_kw))
    return deploy_cli


@pytest.mark.parametrize("real_output", [True, False])
def test_deploy_script_prints_the_checklist(sm_moto, stubbed, tmp_path, monkeypatch, capsys, real_output):
    """gen3d-deploy: every check passes -> exit 0 and SUCCESS; a constant embedding -> FAIL line, exit 1."""
    made, stubs = stubbed
    s3, rt, ecr, logs = client("s3"), client("sagemaker-runtime"), client("ecr"), client("logs")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="emb/e1.safetensors", Body=embedding_bytes(constant=not real_output))
    put_image(ecr)
    put_logs(logs, "sam3-realtime", READY_LOG, int(time.time() * 1000) + 5000)
    set_moto_realtime_results(sm_moto, [{"status": "success", "task": "get_embedding", "embedding_size_mb": 0.1,
                                         "output_s3_key": "emb/e1.safetensors", "output_bucket": "bkt",
                                         "model_id": SAM3_ID}])
    name = "sam3-realtime-20251128-130509"
    expect_deploy(stubs, "sam3-realtime", name, "ml.g5.2xlarge", exists=True, timeouts=(720, 720))
    expect_checklist_reads(stubs, ecr, "sam3-realtime", name)
    deploy_cli = _deploy_cli(monkeypatch, made, s3=s3, runtime=rt, ecr=ecr, logs=logs)
    rc = deploy_cli.main(["--model", "sam3", "--archive", str(write_archive(tmp_path, "sam3", startup=600)),
                          "--bucket", "bkt", "--image-uri", IMAGE, "--role-arn", ROLE, "--poll", "0",
                          "--logs-wait", "0"])
    captured = capsys.readouterr()
    seed = s3.get_object(Bucket="bkt", Key="gen3d/sam3-realtime/smoke/seed.png")["Body"].read()
    assert seed.startswith(b"\x89PNG\r\n\x1a\n")
    lines = captured.out.split("DEPLOYMENT CHECKLIST\n", 1)[1].splitlines()
    verdicts = [line.split(":", 1)[0] for line in lines[:4]]
    expected = ["PASS  deployed image is ECR's", "PASS  logs", "PASS  logs",
                f"{'PASS' if real_output else 'FAIL'}  smoke get_embedding returns real output"]
    assert verdicts == expected
    assert "weights: archive " in captured.out and " holds the production weights of preset sam3" in captured.out
    summary = json.loads(captured.out.split("\nRESULT ", 1)[1].splitlines()[0])
    assert summary["action"] == "updated" and summary["health_check_timeout_s"] == 720
    if real_output:
        assert rc == 0, captured.err
        assert lines[3].startswith(f"PASS  smoke get_embedding returns real output: model_id {SAM3_ID}: 3 non-")
        assert lines[4] == "CHECKLIST PASSED: 4 of 4 checks"
        assert "SUCCESS: sam3-realtime is deployed and every check passed" in captured.out
    else:
        assert rc == 1 and "SUCCESS" not in captured.out
        assert "tensor high_res_feats.0 [1, 32, 32, 32] is constant" in lines[3]
        assert lines[4] == "CHECKLIST FAILED: 1 of 4 checks failed"


def test_deploy_script_async_checklist(sm_moto, stubbed, tmp_path, monkeypatch, capsys):
    made, stubs = stubbed
    s3, rt, ecr, logs = client("s3"), client("sagemaker-runtime"), client("ecr"), client("logs")
    s3.create_bucket(Bucket="bkt")
    files = sam3d_files()
    for kind, data in files.items():
        s3.put_object(Bucket="bkt", Key=f"out/3d/g1/object.{kind}", Body=data)
    put_image(ecr, "sam3d")
    put_logs(logs, "sam3d-async", [line.replace("sam3", "sam3d") for line in READY_LOG],
             int(time.time() * 1000) + 5000)
    answer = {"status": "success", "task": "generate_3d", "output_bucket": "bkt", "decode_formats": ["gaussian"],
              "outputs": {"ply": "out/3d/g1/object.ply", "pose": "out/3d/g1/object.pose"}, "model_id": SAM3D_ID}
    set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}])
    name = "sam3d-async-20251128-130509"
    expect_deploy(stubs, "sam3d-async", name, "ml.g6e.2xlarge", exists=False, timeouts=(1920, 1920),
                  image=IMAGE.replace(":sam3", ":sam3d"), async_paths=("s3://bkt/gen3d/sam3d-async/async/output/",
                               "s3://bkt/gen3d/sam3d-async/async/failure/"))
    expect_checklist_reads(stubs, ecr, "sam3d-async", name)
    deploy_cli = _deploy_cli(monkeypatch, made, s3=s3, runtime=rt, ecr=ecr, logs=logs)
    rc = deploy_cli.main(["--model", "sam3d", "--archive", str(write_archive(tmp_path, "sam3d", startup=1800)),
                          "--bucket", "bkt", "--image-uri", IMAGE.replace(":sam3", ":sam3d"), "--role-arn", ROLE,
                          "--mode", "async", "--no-autoscaling", "--poll", "0", "--logs-wait", "0"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    checks = captured.out.split("DEPLOYMENT CHECKLIST\n", 1)[1].splitlines()
    assert checks[3] == f"PASS  smoke generate_3d returns real output: model_id {SAM3D_ID}: PLY 5 splats, pose scale 1"
    assert checks[4] == "CHECKLIST PASSED: 4 of 4 checks"
    sent = s3.get_object(Bucket="bkt", Key=next(
        o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="gen3d/sam3d-async/async/input/")["Contents"]))
    assert json.loads(sent["Body"].read())["mask_polygon"][0] == [212.83, 127.5]


SAM3D_BODY_ID = "sam3d_body/sam3d-body-vith/5a6b7c8d9e0f1a2b"


def body_answer(people: int = 1, vertices: int = 18_439) -> dict:
    """A generate_body answer as the sam3d_body worker writes it to S3: each person's GLB and params, everyone's GLB."""
    person = {"keypoints_2d": [[100.5, 120.25]] * 70, "mesh": {"vertices": vertices, "faces": 36_874}}
    return {"status": "success", "task": "generate_body", "output_bucket": "bkt", "model_id": SAM3D_BODY_ID,
            "people": [{**person, "index": i, "outputs": {"glb": f"body/g1/person_{i}.glb",
                                                          "params": f"body/g1/person_{i}.json"}}
                       for i in range(people)],
            "outputs": {"people_glb": "body/g1/people.glb"}}


def put_body_files(s3, people: int = 1) -> None:
    glb = trimesh.creation.box().export(file_type="glb")
    for i in range(people):
        s3.put_object(Bucket="bkt", Key=f"body/g1/person_{i}.glb", Body=glb)
        s3.put_object(Bucket="bkt", Key=f"body/g1/person_{i}.json", Body=b'{"format": "params"}')
    s3.put_object(Bucket="bkt", Key="body/g1/people.glb", Body=glb)


def test_output_checks_judge_generate_body(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    put_body_files(s3, people=2)
    expected = "sam3d_body/sam3d-body-vith/"
    good = checklist.check_output(s3, smoke("generate_body", body_answer(people=2), expected=expected))
    assert good.passed and good.detail.startswith(
        f"model_id {SAM3D_BODY_ID}: 2 people (MHR meshes, 70 keypoints each), people GLB ")
    other = checklist.check_output(s3, smoke("generate_body", body_answer(vertices=6_890), expected=expected))
    assert not other.passed and other.detail == (
        "people[0]'s mesh is {'vertices': 6890, 'faces': 36874}, not MHR's 18439 vertices and 36874 faces")
    few = body_answer()
    few["people"][0]["keypoints_2d"] = [[1.0, float("nan")]] * 70
    assert checklist.check_output(s3, smoke("generate_body", few, expected=expected)).detail == (
        "people[0].keypoints_2d is not 70 finite [x, y] pairs")
    s3.put_object(Bucket="bkt", Key="body/g1/people.glb", Body=b"not a glb at all, but long enough")
    broken = checklist.check_output(s3, smoke("generate_body", body_answer(), expected=expected))
    assert not broken.passed and broken.detail == "people_glb has no valid glTF header"
    s3.delete_object(Bucket="bkt", Key="body/g1/person_0.json")
    gone = checklist.check_output(s3, smoke("generate_body", body_answer(), expected=expected))
    assert not gone.passed and gone.detail == "response claims outputs that do not exist: s3://bkt/body/g1/person_0.json"


def test_deploy_script_deploys_sam3d_body_from_its_image_target(sm_moto, stubbed, tmp_path, monkeypatch, capsys):
    """gen3d-deploy --model sam3d_body: the endpoint name without '_', ml.g5.xlarge (A10G, 24 GiB) with a driver
    that runs CUDA 12.6, GEN3D_MODEL=sam3d_body, a box-based smoke request and the checklist's MHR checks."""
    made, stubs = stubbed
    s3, rt, ecr, logs = client("s3"), client("sagemaker-runtime"), client("ecr"), client("logs")
    s3.create_bucket(Bucket="bkt")
    put_body_files(s3)
    put_image(ecr, "sam3d_body")
    put_logs(logs, "sam3d-body-realtime", [line.replace("sam3", "sam3d_body") for line in READY_LOG],
             int(time.time() * 1000) + 5000)
    set_moto_realtime_results(sm_moto, [body_answer()])
    name = "sam3d-body-realtime-20251128-130509"
    image = IMAGE.replace(":sam3", ":sam3d_body")
    expect_deploy(stubs, "sam3d-body-realtime", name, "ml.g5.xlarge", exists=False, timeouts=(1020, 1020),
                  image=image, env={"GEN3D_MODEL": "sam3d_body", "GEN3D_ALLOWED_BUCKETS": "bkt",
                                    "GEN3D_READY_MARGIN_S": "60"})
    expect_checklist_reads(stubs, ecr, "sam3d-body-realtime", name)
    deploy_cli = _deploy_cli(monkeypatch, made, s3=s3, runtime=rt, ecr=ecr, logs=logs)
    rc = deploy_cli.main(["--model", "sam3d_body", "--archive", str(write_archive(tmp_path, "sam3d_body", startup=900)),
                          "--bucket", "bkt", "--image-uri", image, "--role-arn", ROLE, "--poll", "0",
                          "--logs-wait", "0", "--no-autoscaling"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert ("GPU driver: ml.g5.xlarge with al2-ami-sagemaker-inference-gpu-3-1 runs driver 550, CUDA 12.4; the "
            "sam3d_body image (CUDA 12.6) needs NVIDIA driver >= 525") in captured.out
    checks = captured.out.split("DEPLOYMENT CHECKLIST\n", 1)[1].splitlines()
    glb_size = len(trimesh.creation.box().export(file_type="glb"))
    assert checks[3] == (f"PASS  smoke generate_body returns real output: model_id {SAM3D_BODY_ID}: 1 people (MHR "
                         f"meshes, 70 keypoints each), people GLB {glb_size} bytes")
    assert checks[4] == "CHECKLIST PASSED: 4 of 4 checks"
    assert "SUCCESS: sam3d-body-realtime is deployed and every check passed" in captured.out
