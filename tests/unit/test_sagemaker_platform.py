"""What a platform team expects of the deploy: tags on everything it creates and teardown by those tags (moto's
SageMaker, S3, CloudWatch, Application Auto Scaling, Logs and Resource Groups Tagging API on 127.0.0.1), the log
group's retention, where the KMS key goes, and superseded model data."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from datetime import timedelta

import pytest
from botocore.stub import Stubber

from gen3d.models import MODELS
from gen3d.sagemaker import autoscaling, kms, log_group, names, resources, tags, teardown, upload
from gen3d.sagemaker import clients as aws
from tests.conftest import REPO
from tests.unit.sagemaker_support import ACCOUNT, IMAGE, NOW, REGION, ROLE, client, dry_run_calls, write_archive

pytestmark = pytest.mark.usefixtures("isolated_aws")

SHARED = "gen3d-" + "a" * 41  # 47 characters: what the old name prefix kept of both endpoints below
ENDPOINT, NEIGHBOUR = f"{SHARED}-one", f"{SHARED}-two"


def moto_clients() -> aws.Clients:
    return aws.Clients(
        s3=client("s3"),
        sagemaker=client("sagemaker"),
        runtime=None,
        autoscaling=client("application-autoscaling"),
        cloudwatch=client("cloudwatch"),
        logs=client("logs"),
        tagging=client("resourcegroupstaggingapi"),
    )


STEPS = ("upload", "model", "config", "endpoint")


def deploy_to_moto(clients: aws.Clients, endpoint: str, archive, when, *, until: str) -> tuple[str, str]:
    """What a deploy creates, made with the deploy's own functions, names and tags, up to the step ``until``
    (moto's SageMaker knows no GPU instance type the deploy accepts and has no UpdateEndpoint, so deploy() itself
    cannot run against it); returns (name, model data)."""
    endpoint_tags = tags.resource_tags(endpoint, {"team": "vision"})
    name = names.unique_name(endpoint, when)
    steps = STEPS[: STEPS.index(until) + 1]
    data = upload.upload_model_archive(
        clients.s3, archive, "bkt", f"gen3d/{endpoint}/model/{name}", progress=False,
        tagging=tags.s3_tagging(endpoint_tags),
    ).s3_uri  # fmt: skip
    if "model" in steps:
        resources.create_model(clients.sagemaker, name, image_uri=IMAGE, model_data_s3_uri=data, role_arn=ROLE,
                               tags=endpoint_tags, out=io.StringIO())  # fmt: skip
    if "config" in steps:
        resources.create_endpoint_config(clients.sagemaker, name, model_name=name, instance_type="ml.g4dn.xlarge",
                                         startup_timeout_s=720, download_timeout_s=720, tags=endpoint_tags,
                                         out=io.StringIO())  # fmt: skip
    if "endpoint" in steps:
        resources.create_endpoint(clients.sagemaker, endpoint, name, tags=endpoint_tags, out=io.StringIO())
    return name, data


def repair_moto_config_arns() -> None:
    """moto 5.2.5 keeps an endpoint config's ``arn`` as a 1-tuple (sagemaker/models.py: ``self.arn =
    (self.endpoint_config_arn,)``), which its Tagging API then answers as ``...endpoint-config/NAME',)``; the
    server runs in this process, so set it to the ARN it means."""
    from moto.sagemaker.models import sagemaker_backends

    for config in sagemaker_backends[ACCOUNT][REGION].endpoint_configs.values():
        config.arn = config.endpoint_config_arn


def keys_under(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix=prefix).get("Contents", [])]


def test_teardown_finds_by_tag_and_keeps_the_current_and_previous_model_data(sm_moto, tmp_path):
    """Three deploys of one endpoint, a model whose config failed, an upload whose model failed, and a neighbour
    whose name shares the first 47 characters (and an old-style config name): teardown deletes exactly the
    endpoint's resources, and of its model data keeps the current and the previous prefix."""
    clients = moto_clients()
    clients.s3.create_bucket(Bucket="bkt")
    archive = write_archive(tmp_path, "sam3")
    first, previous, failed, current, orphan = (
        deploy_to_moto(clients, ENDPOINT, archive, NOW + timedelta(days=day), until=until)
        for day, until in enumerate(("config", "config", "model", "endpoint", "upload"))
    )  # day 2: the endpoint config failed; day 4: the model failed
    neighbour, _ = deploy_to_moto(clients, NEIGHBOUR, archive, NOW, until="endpoint")
    # data the deploy did not upload (gen3d-deploy --model-data-s3): no tag, never touched
    clients.s3.put_object(Bucket="bkt", Key=f"gen3d/{ENDPOINT}/model/manual/sam3/weights.bin", Body=b"m")
    # the neighbour's config named the old way (47 characters + stamp) matched the old name prefix
    old_style = f"{SHARED}-20251101-000000"
    resources.create_endpoint_config(
        clients.sagemaker,
        old_style,
        model_name=neighbour,
        instance_type="ml.g4dn.xlarge",
        startup_timeout_s=720,
        download_timeout_s=720,
        tags=tags.resource_tags(NEIGHBOUR, {}),
        out=io.StringIO(),
    )
    assert first[0].startswith(SHARED[:40]) and first[0] != neighbour

    repair_moto_config_arns()
    out = io.StringIO()
    deleted = teardown.teardown(clients, ENDPOINT, out=out)

    assert deleted["endpoint"] == [ENDPOINT]
    made = [first[0], previous[0], current[0]]
    assert sorted(deleted["endpoint_config"]) == sorted(made)
    assert sorted(deleted["model"]) == sorted([*made, failed[0]])
    assert sorted(deleted["model_data"]) == sorted([first[1], failed[1], orphan[1]])
    sm = clients.sagemaker
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == [NEIGHBOUR]
    assert sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]) == sorted(
        [neighbour, old_style]
    )
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [neighbour]
    left = {key.split("/model/")[1].split("/")[0] for key in keys_under(clients.s3, "gen3d/")}
    assert left == {current[0], previous[0], "manual", neighbour}
    assert f"model data {current[1]}: kept (current or previous)" in out.getvalue()


def test_long_endpoint_names_get_distinct_lower_case_model_names():
    one, two = names.unique_name(ENDPOINT, NOW), names.unique_name(NEIGHBOUR, NOW)
    assert one != two and len(one) == len(two) == 63 and one.startswith(SHARED[:40] + "-")
    assert names.unique_name("Sam3-RT", NOW) == "sam3-rt-20251128-130509"  # as SageMaker writes it in ARNs


# ----------------------------------------------------------------------------- tags


def test_resource_tags_are_checked_before_any_call():
    assert tags.resource_tags("e", {"project": "vision", "owner": "ml@example.com"}) == {
        "project": "vision",
        "owner": "ml@example.com",
        "gen3d:endpoint": "e",
    }
    with pytest.raises(ValueError, match="set by the deploy"):
        tags.resource_tags("e", {"gen3d:endpoint": "other"})
    with pytest.raises(ValueError, match="keys are 1-128"):
        tags.resource_tags("e", {"aws:owner": "x"})
    with pytest.raises(ValueError, match="keys are 1-128"):
        tags.resource_tags("e", {"team": "a;b"})
    with pytest.raises(ValueError, match="11 tags .* S3 allows 10 per object"):
        tags.resource_tags("e", {f"k{i}": "v" for i in range(9)})
    with pytest.raises(ValueError, match="--tag expects KEY=VALUE, got 'team'"):
        tags.parse_pairs("--tag", ["team"])
    assert tags.s3_tagging({"a b": "c/d", "gen3d:endpoint": "e"}) == "a+b=c%2Fd&gen3d%3Aendpoint=e"


def test_an_existing_scalable_target_is_tagged_with_tag_resource(stubbed):
    """RegisterScalableTarget refuses tags for a target that exists, so a redeploy tags it with TagResource."""
    made, stubs = stubbed
    aas = stubs["application-autoscaling"]
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/e/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    arn = f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/0123456789abcdef"
    aas.add_response(
        "describe_scalable_targets",
        {"ScalableTargets": [{**target, "MinCapacity": 0, "MaxCapacity": 1, "RoleARN": ROLE, "CreationTime": NOW}]},
        {
            "ServiceNamespace": "sagemaker",
            "ResourceIds": [target["ResourceId"]],
            "ScalableDimension": target["ScalableDimension"],
        },
    )
    aas.add_response(
        "register_scalable_target", {"ScalableTargetARN": arn}, {**target, "MinCapacity": 0, "MaxCapacity": 2}
    )
    aas.add_response("tag_resource", {}, {"ResourceARN": arn, "Tags": {"project": "gen3d"}})
    autoscaling.register_target(
        made["application-autoscaling"], "e", min_capacity=0, max_capacity=2, tags={"project": "gen3d"}
    )


# ----------------------------------------------------------------------------- log group, KMS


def test_log_group_is_made_with_retention_or_retagged(sm_moto):
    logs = client("logs")
    out = io.StringIO()
    assert log_group.prepare_log_group(logs, "sam3-rt", 30, {"project": "gen3d"}, out=out) == (
        "/aws/sagemaker/Endpoints/sam3-rt"
    )
    assert "created, events kept 30 days" in out.getvalue()
    log_group.prepare_log_group(logs, "sam3-rt", 0, {"team": "vision"}, out=out)  # 0: keep forever
    group = log_group.find_log_group(logs, "/aws/sagemaker/Endpoints/sam3-rt")
    assert "retentionInDays" not in group and "exists, events kept forever" in out.getvalue()
    assert logs.list_tags_for_resource(resourceArn=group["logGroupArn"])["tags"] == {
        "project": "gen3d",
        "team": "vision",
    }
    assert log_group.find_log_group(logs, "/aws/sagemaker/Endpoints/sam3") is None  # a prefix is not a match
    with pytest.raises(ValueError, match="--log-retention-days must be 0 .* got 10"):
        log_group.check_retention(10)


def test_kms_key_goes_where_sagemaker_accepts_it():
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert kms.volume_kms_key("ml.g5.2xlarge", key) is None  # NVMe instance storage
    assert kms.volume_kms_key("ml.p3.2xlarge", key) == key  # EBS volume
    from gen3d.sagemaker.gpus import INSTANCE_GPUS

    assert {t.rsplit(".", 1)[0] for t in INSTANCE_GPUS} <= kms.INSTANCE_STORE_FAMILIES
    actions = ["kms:Decrypt"]
    assert kms.key_statement("K", actions, key, region="*", account="*")["Resource"] == [key]
    assert kms.key_statement("K", actions, "1234", region="eu-west-1", account=ACCOUNT)["Resource"] == [
        f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234"
    ]
    for alias in ("alias/gen3d", f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/gen3d"):
        statement = kms.key_statement("K", actions, alias, region="*", account="*")
        assert statement["Resource"] == "*"
        assert statement["Condition"] == {"ForAnyValue:StringEquals": {"kms:ResourceAliases": ["alias/gen3d"]}}


def test_endpoint_config_carries_the_volume_key_and_the_async_output_key(stubbed):
    made, stubs = stubbed
    key = "alias/gen3d"
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/c"
    stubs["sagemaker"].add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": arn},
        {
            "EndpointConfigName": "c",
            "KmsKeyId": key,
            "Tags": [{"Key": "project", "Value": "gen3d"}],
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m",
                    "InstanceType": "ml.p3.2xlarge",
                    "InitialInstanceCount": 1,
                    "ModelDataDownloadTimeoutInSeconds": 600,
                    "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                }
            ],
            "AsyncInferenceConfig": {
                "OutputConfig": {"S3OutputPath": "s3://b/o/", "S3FailurePath": "s3://b/f/", "KmsKeyId": key},
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},
            },
        },
    )
    resources.create_endpoint_config(
        made["sagemaker"],
        "c",
        model_name="m",
        instance_type="ml.p3.2xlarge",
        startup_timeout_s=600,
        download_timeout_s=600,
        kms_key_id=key,
        async_config=resources.AsyncConfig("s3://b/o/", "s3://b/f/", kms_key_id=key),
        tags={"project": "gen3d"},
        out=io.StringIO(),
    )


# ----------------------------------------------------------------------------- gen3d-push

STAND_IN_DOCKER = '''#!/usr/bin/env python3
"""Stand-in docker: records its arguments (and login's stdin); push prints the digest line docker prints."""
import json, os, sys
command = sys.argv[1]
with open(os.environ["DOCKER_RECORD"], "a") as record:
    record.write(json.dumps({"args": sys.argv[1:], "stdin": sys.stdin.read() if command == "login" else None}))
    record.write("\\n")
if command == "push":
    print("The push refers to repository [" + sys.argv[2].rsplit(":", 1)[0] + "]")
    print("sam3: digest: sha256:" + "d" * 64 + " size: 2417")
sys.exit(int(os.environ.get("DOCKER_EXIT_" + command.upper(), "0")))
'''
REPOSITORY_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gen3d"
DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def stand_in_docker(tmp_path, monkeypatch):
    """A `docker` first on PATH that records what it was asked; returns a reader of the records."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "docker").write_text(STAND_IN_DOCKER)
    (folder / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_RECORD", str(tmp_path / "docker.jsonl"))
    return lambda: [json.loads(line) for line in (tmp_path / "docker.jsonl").read_text().splitlines()]


def push_cli(monkeypatch, ecr):
    from gen3d.cli import push as push_cli_module

    monkeypatch.setattr(aws, "make_clients", lambda *a, **k: aws.Clients(None, None, None, None, None, ecr=ecr))
    return push_cli_module


def expect_ecr(stub: Stubber, *, exists: bool, pushed: bool = True) -> None:
    repository = {
        "repositoryName": "gen3d",
        "repositoryUri": REPOSITORY_URI,
        "repositoryArn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/gen3d",
        "registryId": ACCOUNT,
    }
    if exists:
        stub.add_response("describe_repositories", {"repositories": [repository]}, {"repositoryNames": ["gen3d"]})
    else:
        stub.add_client_error(
            "describe_repositories",
            service_error_code="RepositoryNotFoundException",
            service_message="The repository with name 'gen3d' does not exist",
            expected_params={"repositoryNames": ["gen3d"]},
        )
        stub.add_response(
            "create_repository",
            {"repository": repository},
            {
                "repositoryName": "gen3d",
                "imageScanningConfiguration": {"scanOnPush": True},
                "encryptionConfiguration": {"encryptionType": "AES256"},
                "tags": [{"Key": "project", "Value": "gen3d"}, {"Key": "team", "Value": "vision"}],
            },
        )
    token = base64.b64encode(b"AWS:secret-password").decode()
    stub.add_response(
        "get_authorization_token",
        {
            "authorizationData": [
                {
                    "authorizationToken": token,
                    "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
                    "expiresAt": NOW,
                }
            ]
        },
        {},
    )
    if pushed:
        stub.add_response(
            "describe_images",
            {
                "imageDetails": [
                    {"registryId": ACCOUNT, "repositoryName": "gen3d", "imageDigest": DIGEST, "imageTags": ["sam3"]}
                ]
            },
            {"repositoryName": "gen3d", "imageIds": [{"imageDigest": DIGEST}]},
        )


def test_push_creates_the_repository_logs_in_builds_pushes_and_prints_the_digest(
    stand_in_docker, monkeypatch, capsys, tmp_path
):
    ecr = client("ecr")
    with Stubber(ecr) as stub:
        expect_ecr(stub, exists=False)
        rc = push_cli(monkeypatch, ecr).main(["--target", "sam3", "--context", str(tmp_path), "--tag", "team=vision"])
        stub.assert_no_pending_responses()
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out == f"{REPOSITORY_URI}@{DIGEST}\n"  # stdout: only what gen3d-deploy --image-uri takes
    assert f"created ECR repository {REPOSITORY_URI}" in captured.err
    login, build, push = stand_in_docker()
    assert login == {
        "args": ["login", "--username", "AWS", "--password-stdin", f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"],
        "stdin": "secret-password",
    }
    assert build["args"] == [
        "build",
        "--target",
        "sam3",
        "--tag",
        f"{REPOSITORY_URI}:sam3",
        "--file",
        str(tmp_path / "Dockerfile"),
        str(tmp_path),
    ]
    assert push["args"] == ["push", f"{REPOSITORY_URI}:sam3"]
    assert names.parse_image_uri(captured.out.strip())["digest"] == DIGEST


def test_push_stops_at_a_failed_build_and_without_docker(stand_in_docker, monkeypatch, capsys, tmp_path):
    ecr = client("ecr")
    monkeypatch.setenv("DOCKER_EXIT_BUILD", "1")
    with Stubber(ecr) as stub:
        expect_ecr(stub, exists=True, pushed=False)
        rc = push_cli(monkeypatch, ecr).main(["--target", "sam3d", "--context", str(tmp_path)])
    assert rc == 1 and "ERROR: docker build failed (exit status 1)" in capsys.readouterr().err
    assert [r["args"][0] for r in stand_in_docker()] == ["login", "build"]  # nothing pushed
    assert push_cli(monkeypatch, ecr).main(["--target", "sam3", "--docker", str(tmp_path / "no-docker")]) == 1
    assert "no-docker not found on PATH" in capsys.readouterr().err


def test_every_push_target_is_a_dockerfile_stage_and_the_deploy_takes_the_digest(tmp_path, capsys):
    from gen3d.cli import deploy as deploy_cli
    from gen3d.cli import push as push_cli_module

    stages = re.findall(r"^FROM \S+ AS (\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    targets = push_cli_module.parse_args(["--target", "sam3"])
    assert targets.target == "sam3" and set(MODELS) <= set(stages)
    archive = write_archive(tmp_path, "sam3")
    image = f"{REPOSITORY_URI}@{DIGEST}"
    assert (
        deploy_cli.main(
            [
                "--model",
                "sam3",
                "--archive",
                str(archive),
                "--bucket",
                "b",
                "--image-uri",
                image,
                "--role-arn",
                ROLE,
                "--dry-run",
                "--no-smoke-test",
            ]
        )
        == 0
    )
    model = next(p for _, op, p in dry_run_calls(capsys.readouterr().out) if op == "CreateModel")
    assert model["PrimaryContainer"]["Image"] == image
