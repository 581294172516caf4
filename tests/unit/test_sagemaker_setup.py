"""What a SageMaker setup needs besides the deploy: the execution role's policy (deploy/execution-role-policy.json,
gen3d-iam-policy) checked against what a deployment actually makes the role do, and the local `serve` command
docs/deploy-sagemaker.md gives (`make sagemaker-local`, `.venv/bin/gen3d-serve`)."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import subprocess
import tomllib

import pytest

from gen3d.cli import iam_policy
from gen3d.models import MODELS
from gen3d.sagemaker import gpus, iam
from gen3d.serving.buckets import ENV, BucketPolicy
from gen3d.serving.storage import DEFAULT_OUTPUT_PREFIX, output_key, output_prefix
from tests.conftest import REPO
from tests.unit.sagemaker_support import IMAGE, ROLE, TOPIC, dry_run_calls, run_script, write_archive

pytestmark = pytest.mark.usefixtures("isolated_aws")

POLICY_FILE = REPO / "deploy" / "execution-role-policy.json"
TRUST_FILE = REPO / "deploy" / "execution-role-trust-policy.json"
DEPLOYER_FILE = REPO / "deploy" / "deployer-policy.json"
DEPLOY_PAGE = REPO / "docs" / "deploy-sagemaker.md"
EXAMPLE_ARGS = ["--bucket", "my-gen3d-bucket", "--image-uri", IMAGE, "--sns-topic-arn", TOPIC]
DEPLOYER_ARGS = ["--deployer", "--bucket", "my-gen3d-bucket", "--image-uri", IMAGE, "--role-arn",
                 "arn:aws:iam::123456789012:role/MySageMakerRole"]
# boto3 S3 calls of the container's storage module -> the IAM action each needs
S3_CALL_ACTIONS = {"get_object": "s3:GetObject", "head_object": "s3:GetObject", "put_object": "s3:PutObject"}


def allows(policy: dict, action: str, resource: str, context: dict | None = None) -> bool:
    """Whether an Allow statement grants ``action`` on ``resource`` (IAM's * and ? wildcards; StringLike and
    StringEquals conditions on ``context``, whose values may name context keys as policy variables: ``${key}``)."""
    context = context or {}
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        like = statement.get("Condition", {}).get("StringLike", {})
        equal = statement.get("Condition", {}).get("StringEquals", {})
        values_of = {k: [re.sub(r"\$\{([^}]+)\}", lambda m: context.get(m.group(1), "\0"), value)
                         for value in (v if isinstance(v, list) else [v])] for k, v in (*like.items(), *equal.items())}
        if all(any(fnmatch.fnmatchcase(context.get(k, "\0"), v) if k in like
                   else context.get(k) == v for v in values) for k, values in values_of.items()):
            return True
    return False


@pytest.mark.parametrize(("args", "path"), [
    (EXAMPLE_ARGS, POLICY_FILE), (["--trust-policy"], TRUST_FILE), (DEPLOYER_ARGS, DEPLOYER_FILE)])
def test_policy_files_are_the_generators_output(tmp_path, args, path):
    assert iam_policy.main([*args, "--out", str(tmp_path / "p.json")]) == 0
    assert (tmp_path / "p.json").read_text() == path.read_text(), (
        f"regenerate: gen3d-iam-policy {' '.join(args)} --out {path.relative_to(REPO)}")
    page = DEPLOY_PAGE.read_text()
    assert str(path.relative_to(REPO)) in page
    if path != DEPLOYER_FILE:
        assert path.read_text().strip() in page  # the deploy page shows the file as it is


def test_execution_role_policy_statements():
    policy = json.loads(POLICY_FILE.read_text())
    assert "gen3d-iam-policy" in DEPLOY_PAGE.read_text()
    assert {s["Sid"] for s in policy["Statement"]} >= {"ModelDataList", "ModelDataRead", "AsyncResultsWrite",
                                                       "InputsRead", "OutputsWrite", "AsyncNotifications",
                                                       "EcrPull", "EndpointLogs"}


def test_policy_covers_what_a_deployment_makes_the_role_do(tmp_path):
    """A dry-run async deploy with notifications: every S3 path, topic, image and log group it configures for
    the role is allowed, and nothing beyond (no writes to model data, no other buckets, no deletes)."""
    archive = write_archive(tmp_path, "sam3d", startup=1800)
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(archive), "--bucket", "bkt",
                      "--image-uri", IMAGE.replace(":sam3", ":sam3d"), "--role-arn", ROLE, "--mode", "async",
                      "--allowed-buckets", "bkt,inputs-*", "--sns-topic-arn", TOPIC, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    calls = dry_run_calls(proc.stdout)
    model = next(p for _, op, p in calls if op == "CreateModel")["PrimaryContainer"]
    config = next(p for _, op, p in calls if op == "CreateEndpointConfig")["AsyncInferenceConfig"]["OutputConfig"]
    allowed = model["Environment"]["GEN3D_ALLOWED_BUCKETS"].split(",")
    policy = iam.execution_role_policy(bucket="bkt", allowed_buckets=allowed, sns_topic_arns=[TOPIC],
                                       region="us-east-1", account="123456789012", repository="gen3d")
    model_bucket, model_prefix = re.fullmatch(r"s3://([^/]+)/(.*)", model["ModelDataSource"]["S3DataSource"]["S3Uri"]
                                              ).groups()
    assert allows(policy, "s3:ListBucket", f"arn:aws:s3:::{model_bucket}", {"s3:prefix": model_prefix})
    uploaded = [p["Key"] for _, op, p in calls if op == "upload_file"]
    assert uploaded and all(allows(policy, "s3:GetObject", f"arn:aws:s3:::bkt/{key}") for key in uploaded)
    assert not any(allows(policy, "s3:PutObject", f"arn:aws:s3:::bkt/{key}") for key in uploaded)
    for path in (config["S3OutputPath"], config["S3FailurePath"]):
        assert allows(policy, "s3:PutObject", path.replace("s3://", "arn:aws:s3:::") + "0d1e-request.out")
    async_input = next(p for _, op, p in calls if op == "PutObject" and p["Key"].endswith(".json"))
    own = {"aws:PrincipalAccount": "123456789012", "s3:ResourceAccount": "123456789012"}  # a bucket of the role's
    assert allows(policy, "s3:GetObject", f"arn:aws:s3:::{async_input['Bucket']}/{async_input['Key']}", own)
    assert all(allows(policy, "sns:Publish", topic) for topic in config["NotificationConfig"].values())
    repository = "arn:aws:ecr:us-east-1:123456789012:repository/gen3d"
    assert all(allows(policy, action, repository) for action in iam.ECR_PULL)
    assert allows(policy, "ecr:GetAuthorizationToken", "*")
    stream = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/sam3d-async:log-stream:x/y"
    assert all(allows(policy, action, stream) for action in iam.LOGS)
    # the container: inputs anywhere in the allowed buckets (and 404s need ListBucket), outputs under its prefix
    out_key = output_key(output_prefix(DEFAULT_OUTPUT_PREFIX, "u1", "s1"), "3d/g/object.ply")
    for bucket in ("bkt", "inputs-eu"):
        assert allows(policy, "s3:GetObject", f"arn:aws:s3:::{bucket}/photos/p.png", own)
        assert allows(policy, "s3:ListBucket", f"arn:aws:s3:::{bucket}", own)
        assert allows(policy, "s3:PutObject", f"arn:aws:s3:::{bucket}/{out_key}", own)
        assert not allows(policy, "s3:PutObject", f"arn:aws:s3:::{bucket}/photos/p.png", own)
    # an allowed glob's bucket in another account: nothing (s3:ResourceAccount)
    other = {**own, "s3:ResourceAccount": "999999999999"}
    assert not allows(policy, "s3:GetObject", "arn:aws:s3:::inputs-evil/photos/p.png", other)
    assert not allows(policy, "s3:PutObject", f"arn:aws:s3:::inputs-evil/{out_key}", other)
    assert not allows(policy, "s3:GetObject", "arn:aws:s3:::someone-elses-bucket/k")
    assert not allows(policy, "s3:DeleteObject", "arn:aws:s3:::bkt/gen3d/sam3d-async/async/output/x.out")
    assert not allows(policy, "sns:Publish", TOPIC.replace("alerts", "other"))


def test_policy_covers_every_s3_call_of_the_container():
    """The serving storage module's boto3 calls map to the actions the policy grants (a new call fails here
    until the policy and this table say what it needs)."""
    tree = ast.parse((REPO / "gen3d" / "serving" / "storage.py").read_text())
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Attribute)
             and node.func.value.attr == "client"}
    assert calls and calls <= set(S3_CALL_ACTIONS), calls
    granted = {a for s in iam.execution_role_policy(bucket="b")["Statement"] for a in s["Action"]}
    assert {S3_CALL_ACTIONS[c] for c in calls} <= granted


def test_container_s3_access_is_limited_to_buckets_of_the_expected_account(capsys):
    """Bucket names are global (anyone can create a bucket an allow-list glob matches, in their own account): the
    container's S3 statements match buckets of one account only, the role's own by default as the server's
    ExpectedBucketOwner is, or --bucket-owner's (the container's GEN3D_BUCKET_OWNER)."""
    container = ("InputsList", "InputsRead", "OutputsWrite")

    def owners(policy: dict) -> list[object]:
        return [s.get("Condition", {}).get("StringEquals", {}).get("s3:ResourceAccount")
                for s in policy["Statement"] if s["Sid"] in container]

    assert owners(json.loads(POLICY_FILE.read_text())) == [["${aws:PrincipalAccount}"]] * 3
    assert iam_policy.main(["--bucket", "b", "--allowed-buckets", "gen3d-*", "--bucket-owner", "210987654321"]) == 0
    assert owners(json.loads(capsys.readouterr().out)) == [["210987654321"]] * 3
    assert iam_policy.main(["--bucket", "b", "--bucket-owner", "my-account"]) == 2
    assert "12-digit" in capsys.readouterr().err


def test_policy_cli_reads_the_image_uri(capsys):
    assert iam_policy.main(["--bucket", "b", "--allowed-buckets", "b, in-*", "--image-uri",
                            "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/gen3d:sam3d"]) == 0
    policy = json.loads(capsys.readouterr().out)
    pull = next(s for s in policy["Statement"] if s["Sid"] == "EcrPull")
    assert pull["Resource"] == ["arn:aws:ecr:eu-west-1:210987654321:repository/team/gen3d"]
    assert next(s for s in policy["Statement"] if s["Sid"] == "InputsRead")["Resource"] == [
        "arn:aws:s3:::b/*", "arn:aws:s3:::in-*/*"]
    assert not any(s["Sid"] == "AsyncNotifications" for s in policy["Statement"])
    assert iam_policy.main(["--bucket", "b", "--image-uri", "docker.io/gen3d"]) == 2
    assert iam_policy.main(["--bucket", "b", "--allowed-buckets", " , "]) == 0  # nothing listed: --bucket
    assert next(s for s in json.loads(capsys.readouterr().out)["Statement"] if s["Sid"] == "InputsRead")[
        "Resource"] == ["arn:aws:s3:::b/*"]


def policy_from_cli(tmp_path, *args: str) -> dict:
    assert iam_policy.main([*args, "--out", str(tmp_path / "policy.json")]) == 0
    return json.loads((tmp_path / "policy.json").read_text())


def s3_object_arn(uri: str, name: str = "") -> str:
    return uri.replace("s3://", "arn:aws:s3:::") + name


@pytest.mark.parametrize("prefix", [None, "prod", "gen3d/team/a"])
def test_async_results_are_allowed_for_any_prefix_and_explicit_paths(tmp_path, prefix):
    """The role may write the async output and failure objects wherever the deploy points SageMaker: the
    defaults under any --prefix (one level or several), and --async-output-s3 / --async-failure-s3 elsewhere."""
    explicit = ["--async-output-s3", "s3://results-bkt/out", "--async-failure-s3", "s3://bkt/failures/"]
    archive = write_archive(tmp_path, "sam3d", startup=1800)
    proc = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(archive), "--bucket", "bkt",
                      "--image-uri", IMAGE.replace(":sam3", ":sam3d"), "--role-arn", ROLE, "--mode", "async",
                      *(["--prefix", prefix] if prefix else []), *(explicit if prefix == "gen3d/team/a" else []),
                      "--dry-run", "--no-smoke-test")
    assert proc.returncode == 0, proc.stderr
    output = next(p for _, op, p in dry_run_calls(proc.stdout) if op == "CreateEndpointConfig")[
        "AsyncInferenceConfig"]["OutputConfig"]
    paths = [output["S3OutputPath"].rstrip("/") + "/", output["S3FailurePath"].rstrip("/") + "/"]
    args = ["--bucket", "bkt", "--prefix", (prefix or "gen3d").split("/")[0],
            *(explicit if prefix == "gen3d/team/a" else [])]
    role, deployer = policy_from_cli(tmp_path, *args), policy_from_cli(tmp_path, "--deployer", *args)
    for path in paths:
        assert allows(role, "s3:PutObject", s3_object_arn(path, "6a1c-request.out")), path
        assert allows(deployer, "s3:GetObject", s3_object_arn(path, "6a1c-request.out")), path
    assert not allows(role, "s3:PutObject", "arn:aws:s3:::results-bkt/elsewhere/x.out")


# IAM prefix of each service as the dry-run client names it
IAM_PREFIX = {"sagemaker": "sagemaker", "sagemaker-runtime": "sagemaker", "cloudwatch": "cloudwatch", "logs": "logs",
              "application-autoscaling": "application-autoscaling", "resourcegroupstaggingapi": "tag", "ecr": "ecr"}
S3_ACTION = {"ListObjectsV2": "s3:ListBucket", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
             "PutObject": "s3:PutObject", "GetObjectTagging": "s3:GetObjectTagging", "DeleteObjects": "s3:DeleteObject"}


def iam_requests(service: str, op: str, params: dict) -> list[tuple[str, str, dict]]:
    """The (action, resource, condition context) IAM checks for one recorded call."""
    region, account = "us-east-1", "000000000000"  # as the dry-run client answers
    if service == "s3":
        obj = f"arn:aws:s3:::{params['Bucket']}/{params.get('Key', '')}"
        if op == "upload_file":
            return [("s3:PutObject", obj, {}), *([("s3:PutObjectTagging", obj, {})] if "Tagging" in params else []),
                    *([("kms:GenerateDataKey", params["SSEKMSKeyId"], {})] if "SSEKMSKeyId" in params else [])]
        return [(S3_ACTION[op], f"arn:aws:s3:::{params['Bucket']}" if op == "ListObjectsV2" else obj, {})]
    action = f"{IAM_PREFIX[service]}:{op}"
    if service in ("sagemaker", "sagemaker-runtime"):
        if op == "AddTags":
            return [(action, params["ResourceArn"], {})]
        kind = "endpoint-config" if "EndpointConfig" in op else "endpoint" if "Endpoint" in op else "model"
        name = params.get({"endpoint-config": "EndpointConfigName", "endpoint": "EndpointName"}.get(kind, "ModelName"))
        checks = [(action, f"arn:aws:sagemaker:{region}:{account}:{kind}/{name}", {})]
        if op == "CreateModel":
            checks.append(("iam:PassRole", params["ExecutionRoleArn"],
                           {"iam:PassedToService": "sagemaker.amazonaws.com"}))
        return checks
    if service == "cloudwatch" and op in ("PutMetricAlarm", "DeleteAlarms"):
        name = params.get("AlarmName") or params["AlarmNames"][0]
        return [(action, f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}", {})]
    if service == "logs" and "logGroupName" in params:
        return [(action, f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}", {})]
    return [(action, params.get("ResourceARN") or params.get("resourceArn") or "*", {})]


def test_deployer_policy_covers_every_call_of_deploy_teardown_and_push(tmp_path):
    """Every call a dry-run async deploy (tags, KMS, alarms, autoscaling, smoke request) and teardown send, plus
    the checklist's, the model-data pruning's and gen3d-push's, is allowed; the execution role is passed only to
    SageMaker and nothing is deleted outside the prefix."""
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    archive = write_archive(tmp_path, "sam3d", startup=1800)
    deploy_run = run_script("sagemaker_deploy.py", "--model", "sam3d", "--archive", str(archive), "--bucket", "bkt",
                            "--image-uri", IMAGE.replace(":sam3", ":sam3d"), "--role-arn", ROLE, "--mode", "async",
                            "--sns-topic-arn", TOPIC, "--kms-key-id", key, "--tag", "team=vision",
                            "--async-output-s3", "s3://results-bkt/out/", "--dry-run")
    teardown_run = run_script("sagemaker_teardown.py", "--endpoint-name", "sam3d-async", "--dry-run")
    assert deploy_run.returncode == 0 and teardown_run.returncode == 0, deploy_run.stderr + teardown_run.stderr
    calls = dry_run_calls(deploy_run.stdout) + dry_run_calls(teardown_run.stdout)
    assert {op for _, op, _ in calls} >= {"CreateLogGroup", "upload_file", "CreateModel", "TagResource",
                                          "InvokeEndpointAsync", "GetResources", "DeleteModel"}
    policy = iam.deployer_policy(bucket="bkt", role_arn=ROLE, async_paths=["s3://results-bkt/out/"],
                                 kms_key_id=key)
    refused = [(action, resource) for call in calls for action, resource, context in iam_requests(*call)
               if not allows(policy, action, resource, context)
               and "dry-run-bucket" not in resource]  # the dry run's made-up async OutputLocation
    assert refused == []
    model_data = "arn:aws:s3:::bkt/gen3d/sam3d-async/model/sam3d-async-20251128-130509/sam3d/weights.bin"
    repository = "arn:aws:ecr:*:*:repository/gen3d"
    extra = [("ecr:DescribeImages", repository), ("logs:FilterLogEvents",
              "arn:aws:logs:us-east-1:1:log-group:/aws/sagemaker/Endpoints/sam3d-async:log-stream:x"),
             ("s3:GetObjectTagging", model_data), ("s3:DeleteObject", model_data),
             ("s3:GetObject", "arn:aws:s3:::bkt/gen3d-outputs/u/s/3d/object.ply"), ("kms:Decrypt", key),
             ("ecr:GetAuthorizationToken", "*"), *((action, repository) for action in iam.ECR_PUSH)]
    assert [(a, r) for a, r in extra if not allows(policy, a, r)] == []
    assert not allows(policy, "iam:PassRole", ROLE)  # to anything but SageMaker
    assert not allows(policy, "s3:DeleteObject", "arn:aws:s3:::bkt/photos/p.png")
    assert not allows(policy, "s3:PutObject", "arn:aws:s3:::other-bucket/gen3d/x")


def test_kms_key_statements_and_trust_policy(tmp_path):
    key = "1234abcd-12ab-34cd-56ef-1234567890ab"
    role = policy_from_cli(tmp_path, "--bucket", "b", "--kms-key-id", key, "--image-uri", IMAGE)
    statement = next(s for s in role["Statement"] if s["Sid"] == "ModelDataAndAsyncOutputKey")
    assert statement["Resource"] == [f"arn:aws:kms:us-east-1:123456789012:key/{key}"]
    assert set(statement["Action"]) == {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"}
    assert not any("kms:" in str(s["Action"]) for s in policy_from_cli(tmp_path, "--bucket", "b")["Statement"])
    trust = policy_from_cli(tmp_path, "--trust-policy")["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                      "Action": "sts:AssumeRole"}]
    assert iam_policy.main(["--deployer"]) == 2  # --bucket needed
    assert iam_policy.main(["--bucket", "b", "--async-output-s3", "results/out"]) == 2


def test_allowed_buckets_parse_like_the_servers_env():
    listed = " b, ,in-* ,"
    assert BucketPolicy.parse(listed) == BucketPolicy.from_env({ENV: listed}) == BucketPolicy(("b", "in-*"))
    assert BucketPolicy.parse(None) == BucketPolicy.from_env({}) == BucketPolicy(())


def test_local_serve_command_uses_the_venv():
    """The deploy page's local command runs the venv's gen3d-serve (a bare `scripts/serve` finds whatever python3 is
    first on PATH)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gen3d-serve"] == "gen3d.cli.serve:console"
    assert scripts["gen3d-iam-policy"] == "gen3d.cli.iam_policy:console"
    dry = subprocess.run(["make", "-n", "-C", str(REPO), "sagemaker-local", "MODEL_DIR=/models/ms", "PORT=9100",
                          "MODEL=sam3", "BUCKETS=b1,b2"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    command = dry.stdout.replace("\\\n", " ")
    assert re.search(r"SM_MODEL_DIR=/models/ms SAGEMAKER_BIND_TO_PORT=9100 GEN3D_MODEL=sam3 "
                     r"GEN3D_ALLOWED_BUCKETS=b1,b2\s+"
                     r"GEN3D_MANAGEMENT_PORT=\$\(\( 9100 \+ 1 \)\) GEN3D_METRICS_PORT=\$\(\( 9100 \+ 2 \)\)\s+"
                     r"GEN3D_GRPC_PORTS=\$\(\( 9100 \+ 3 \)\),\$\(\( 9100 \+ 4 \)\) \.venv/bin/gen3d-serve",
                     command), command
    page = DEPLOY_PAGE.read_text()
    assert "make sagemaker-local" in page and "SM_MODEL_DIR=/path/with/archives SAGEMAKER_BIND_TO_PORT=9080 " \
                                               "scripts/serve" not in page


def image_labels() -> dict[str, dict[str, str]]:
    """Every Dockerfile stage's labels, its own over those of the stage it is built FROM."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in (REPO / "Dockerfile").read_text().splitlines()
                                        if not line.lstrip().startswith("#")))
    stages: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for op, args in re.findall(r"^\s*(FROM|LABEL)\s+(.*)$", text, re.MULTILINE | re.IGNORECASE):
        if op.upper() == "FROM":
            parent, name = (re.split(r"\s+as\s+", args, flags=re.IGNORECASE) + [""])[:2]
            current = stages.setdefault(name.strip(), dict(stages.get(parent.strip(), {})))
        else:
            current.update(pair.split("=", 1) for pair in shlex.split(args))
    return stages


def image_locks() -> dict[str, set[str]]:
    """Every Dockerfile stage's image locks (locks/*-image.lock): those it copies, and those of the stages it is
    built FROM or copies from (sam3d_body is built from sam3, sam3d copies sam3d-build's environment)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, set[str]] = {}
    current: set[str] = set()
    for op, args in re.findall(r"^\s*(FROM|COPY)\s+(.*)$", text, re.MULTILINE):
        if op == "FROM":
            parent, name = (args.split(" AS ") + [""])[:2]
            current = stages.setdefault(name.strip(), set(stages.get(parent.strip(), set())))
        else:
            source = re.search(r"--from=(\S+)", args)
            copied = stages.get(source.group(1), set()) if source else re.findall(r"locks/(\S+-image)\.lock", args)
            current.update(copied)
    return stages


def test_image_labels_say_the_cuda_the_code_and_the_lock_say():
    """Each target's LABELs name the CUDA version and minimum driver gen3d/models.py records (gen3d-deploy picks
    the endpoint's driver from those), and that CUDA is the runtime its lock installs."""
    labels, locks = image_labels(), image_locks()
    assert {name: locks[name] for name in MODELS} == {
        "sam3": {"sam3-image"}, "sam3d": {"sam3d-image"}, "sam3d_body": {"sam3-image"}}
    for name, spec in MODELS.items():
        assert {k: v for k, v in labels[name].items() if k.startswith("gen3d.")} == {
            "gen3d.cuda-version": spec.cuda_version, "gen3d.min-nvidia-driver": str(spec.min_driver)}, name
        lock = (REPO / "locks" / f"{locks[name].pop()}.lock").read_text()
        runtime = re.search(r"^nvidia-cuda-runtime-cu12==(\d+\.\d+)\.", lock, re.MULTILINE)
        assert runtime and runtime.group(1) == spec.cuda_version, name
    assert gpus.driver_table() in DEPLOY_PAGE.read_text(), "the deploy page's driver table is gpus.driver_table()"
