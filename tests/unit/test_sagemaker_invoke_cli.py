"""gen3d-invoke (scripts/sagemaker_invoke.py): every task's request built from flags, local inputs uploaded,
InvocationTimeoutSeconds on async requests, and the answer's files written to --out. S3 and sagemaker-runtime
are moto's server on 127.0.0.1 (the async request JSON is read back from S3 to see what was sent)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from PIL import Image
from pycocotools import mask as mask_utils

from gen3d.errors import InvalidField
from gen3d.sagemaker import invoke, payloads
from tests.conftest import png_bytes
from tests.unit.sagemaker_support import client, run_script, set_moto_async_results, set_moto_realtime_results

pytestmark = pytest.mark.usefixtures("isolated_aws")


def options(**kw) -> payloads.PayloadOptions:
    return payloads.PayloadOptions(**{"bucket": "bkt", "image_s3_key": "in/photo.png", "session_id": "s1",
                                      "user_id": "u1", **kw})


def test_segment_payloads_from_flags():
    clicks = payloads.build_payload(options(task="segment", points=["150,100", "20.5,30"], labels=[1, 0],
                                            multimask=True))
    assert clicks == {"task": "segment", "image_s3_key": "in/photo.png", "bucket": "bkt", "session_id": "s1",
                      "user_id": "u1", "points": [[150, 100], [20.5, 30]], "point_labels": [1, 0], "multimask": True}
    concept = payloads.build_payload(options(task="segment", text="red chair", boxes=["10,20,80,120"],
                                             box_labels=["true"], return_png_masks=True, score_threshold=0.3))
    assert (concept["text"], concept["boxes"], concept["box_labels"]) == ("red chair", [[10, 20, 80, 120]], [True])
    assert concept["return_png_masks"] is True and concept["score_threshold"] == 0.3
    cached = payloads.build_payload(options(task="segment", image_s3_key=None, embedding_id="4eae9c33",
                                            boxes=["1,2,3,4", "5,6,7,8"]))
    assert "image_s3_key" not in cached and cached["embedding_id"] == "4eae9c33" and len(cached["boxes"]) == 2
    assert payloads.build_payload(options(task="segment", points=["5,5"]))["point_labels"] == [1]


def test_generate_3d_payloads_from_flags():
    one = payloads.build_payload(options(task="generate_3d", mask_polygons=[["40,30", "200,30", "200,180"]],
                                         seed=7, decode_formats=["gaussian"], ss_steps=10))
    assert one["mask_polygon"] == [[40, 30], [200, 30], [200, 180]]
    assert (one["seed"], one["decode_formats"], one["ss_steps"]) == (7, ["gaussian"], 10)
    two = payloads.build_payload(options(task="generate_3d", mask_polygons=[["0,0", "9,0", "9,9"],
                                                                             ["20,20", "30,20", "30,30"]]))
    assert len(two["mask_polygon"]) == 2 and two["mask_polygon"][1][0] == [20, 20]
    rle = {"size": [4, 4], "counts": "04L4"}
    assert payloads.build_payload(options(task="generate_3d", mask_rle=rle))["mask_rle"] == rle


def test_generate_body_payloads_from_flags():
    """generate_body's people: each --box one person, each mask (the invoke script makes one per mask flag) one
    person's, with the camera and the inference type."""
    boxes = payloads.build_payload(options(task="generate_body", boxes=["10,20,80,120", "90,5,150.5,118"],
                                           focal_length=1200.5, inference_type="body"))
    assert boxes == {"task": "generate_body", "image_s3_key": "in/photo.png", "bucket": "bkt", "session_id": "s1",
                     "user_id": "u1", "boxes": [[10, 20, 80, 120], [90, 5, 150.5, 118]], "focal_length": 1200.5,
                     "inference_type": "body"}
    rle = {"size": [4, 4], "counts": "04L4"}
    people = [{"mask_s3_key": "m/0.png"}, {"mask_rle": rle}, {"mask_polygon": [[0, 0], [9, 0], [9, 9]]}]
    masks = payloads.build_payload(options(task="generate_body", masks=people))
    assert masks["masks"] == people  # the same mask objects as generate_3d's masks
    assert "boxes" not in masks and "mask_polygon" not in masks and "mask_s3_key" not in masks


@pytest.mark.parametrize(("kw", "message"), [
    ({"task": "generate_body"}, "generate_body needs its people: --box"),
    ({"task": "generate_body", "boxes": ["1,2,3,4"], "text": "person"}, "--text do not apply to task generate_body"),
    ({"task": "generate_body", "boxes": ["1,2,3,4"], "seed": 3}, "--seed do not apply to task generate_body"),
    ({"task": "segment", "text": "person", "focal_length": 900.0}, "--focal-length do not apply to task segment"),
    ({"task": "generate_3d", "mask_s3_key": "m.png", "boxes": ["1,2,3,4"]}, "--box do not apply to task generate_3d"),
    ({"task": "generate_body", "boxes": ["1,2,3"]}, "--box expects 4"),
    ({"task": "generate_body", "mask_s3_key": "m.png"}, "--mask-s3-key do not apply to task generate_body"),
    ({"task": "generate_3d", "points": ["1,2"], "mask_s3_key": "m.png"}, "--points do not apply to task generate_3d"),
    ({"task": "get_embedding", "seed": 3, "text": "cat"}, "--seed, --text do not apply to task get_embedding"),
    ({"task": "segment"}, "segment needs a prompt"),
    ({"task": "generate_3d"}, "generate_3d needs a mask"),
    ({"task": "segment", "points": ["1,2"], "labels": [1, 1]}, "one 1 .object. or 0 .background. per point"),
    ({"task": "segment", "points": ["1;2"]}, "--points expects 2 comma-separated numbers, got '1;2'"),
    ({"task": "segment", "boxes": ["1,2,3"]}, "--box expects 4"),
    ({"task": "segment", "text": "cat", "boxes": ["1,2,3,4"], "box_labels": ["yes"]}, "--box-labels"),
    ({"task": "generate_3d", "mask_polygons": [["1,2", "3,4"]]}, "at least 3"),
    ({"task": "segment", "text": "cat", "image_s3_key": None}, "give an image"),
])
def test_payload_flags_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        payloads.build_payload(options(**kw))


def test_async_invocation_timeout_is_sent_and_bounded(sm_moto):
    s3, rt = client("s3"), client("sagemaker-runtime")
    s3.create_bucket(Bucket="iob")
    stub = Stubber(rt)
    stub.add_response("invoke_endpoint_async", {"OutputLocation": "s3://iob/o.out", "FailureLocation": "s3://iob/f"},
                      {"EndpointName": "sam3d-async", "InputLocation": "s3://iob/in/x.json",
                       "ContentType": "application/json", "Accept": "application/json",
                       "InvocationTimeoutSeconds": 3600})
    with stub:
        started = invoke.start_async(rt, s3, "sam3d-async", {"task": "generate_3d"}, input_s3_uri="s3://iob/in/x.json",
                                     invocation_timeout_s=3600)
    assert started == invoke.AsyncInvocation("", "s3://iob/o.out", "s3://iob/f")
    with pytest.raises(ValueError, match=r"1..3600 s, got 3601"):
        invoke.start_async(rt, s3, "e", {}, input_s3_uri="s3://iob/in/y.json", invocation_timeout_s=3601)


def test_invoke_script_invocation_timeout_defaults_to_the_tasks_response_timeout():
    from gen3d.cli import invoke as invoke_cli

    args = invoke_cli.parse_args(["--endpoint-name", "e"])
    assert invoke_cli.invocation_timeout(args, {"task": "generate_3d"}) == 900 + 60
    assert invoke_cli.invocation_timeout(args, {"task": "segment"}) == 300 + 60
    assert invoke_cli.invocation_timeout(args, {}) == 300 + 60  # no task: the first model's
    args = invoke_cli.parse_args(["--endpoint-name", "e", "--invocation-timeout", "42"])
    assert invoke_cli.invocation_timeout(args, {"task": "generate_3d"}) == 42


def test_invoke_script_generate_3d_uploads_inputs_and_writes_outputs(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    (tmp_path / "photo.png").write_bytes(png_bytes(3))
    (tmp_path / "mask.png").write_bytes(png_bytes(4, mode="L"))
    files = {"ply": b"ply\nformat binary_little_endian 1.0\n", "glb": b"glTF....", "pose": b'{"scale": [1, 1, 1]}'}
    for kind, data in files.items():
        s3.put_object(Bucket="bkt", Key=f"gen3d-outputs/u1/s7/3d/g/object.{kind}", Body=data)
    answer = {"status": "success", "task": "generate_3d", "output_bucket": "bkt",
              "outputs": {kind: f"gen3d-outputs/u1/s7/3d/g/object.{kind}" for kind in files}}
    set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}])
    out = tmp_path / "result"
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3d-async", "--mode", "async", "--task",
                      "generate_3d", "--bucket", "bkt", "--image-file", str(tmp_path / "photo.png"), "--mask-png",
                      str(tmp_path / "mask.png"), "--seed", "7", "--session-id", "s7", "--user-id", "u1",
                      "--invocation-timeout", "1200", "--out", str(out), "--verify",
                      env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == answer
    sent = json.loads(s3.get_object(Bucket="bkt", Key="gen3d/async/input/s7.json")["Body"].read())
    assert sent == {"task": "generate_3d", "image_s3_key": "gen3d-inputs/u1/s7/photo.png", "bucket": "bkt",
                    "mask_s3_key": "gen3d-inputs/u1/s7/mask.png", "seed": 7, "session_id": "s7", "user_id": "u1"}
    assert s3.get_object(Bucket="bkt", Key="gen3d-inputs/u1/s7/mask.png")["Body"].read() == png_bytes(4, mode="L")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "response.json"} == {
        "object.ply": files["ply"], "object.glb": files["glb"], "pose.json": files["pose"]}
    assert json.loads((out / "response.json").read_text()) == answer
    assert "uploaded " in proc.stderr and "wrote " in proc.stderr


def test_invoke_script_scene_sends_every_mask_as_an_object_and_writes_every_file(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(png_bytes(4, mode="L"))
    folder = "gen3d-outputs/u1/s8/3d/g"
    stored = {"scene.glb": b"glTF scene", "objects/0/object.ply": b"ply 0", "objects/1/pose.json": b'{"p": 1}'}
    for path, data in stored.items():
        s3.put_object(Bucket="bkt", Key=f"{folder}/{path}", Body=data)
    answer = {"status": "success", "task": "generate_3d", "output_bucket": "bkt",
              "outputs": {"scene_glb": f"{folder}/scene.glb"},
              "outputs_base64": {"scene_ply": base64.b64encode(b"ply scene").decode()},
              "objects": [{"index": 0, "outputs": {"ply": f"{folder}/objects/0/object.ply"}},
                          {"index": 1, "outputs": {"pose": f"{folder}/objects/1/pose.json"}},
                          {"index": 2, "status": "error", "error": {"code": 507}}]}
    set_moto_realtime_results(sm_moto, [answer])
    rle = {"size": [4, 4], "counts": "04"}
    out = tmp_path / "result"
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3d-rt", "--task", "generate_3d", "--bucket",
                      "bkt", "--image-s3-key", "in/photo.png", "--scene", "--mask-polygon", "0,0", "3,0", "3,3",
                      "--mask-png", str(tmp_path / "a.png"), "--mask-rle", json.dumps(rle), "--mask-png",
                      str(tmp_path / "b.png"), "--mask-polygon", "1,1", "2,1", "2,2", "--session-id", "s8",
                      "--user-id", "u1", "--out", str(out), env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "response.json"} == {
        "scene.glb": b"glTF scene", "scene.ply": b"ply scene", "object-0-object.ply": b"ply 0",
        "object-1-pose.json": b'{"p": 1}'}
    from gen3d.cli import invoke as invoke_cli

    args = invoke_cli.parse_args(["--endpoint-name", "e", "--task", "generate_3d", "--bucket", "bkt",
                                  "--image-s3-key", "in/photo.png", "--scene", "--mask-s3-key", "k.png",
                                  "--mask-polygon", "0,0", "3,0", "3,3", "--mask-rle", json.dumps(rle),
                                  "--mask-polygon", "1,1", "2,1", "2,2"])
    payload = invoke_cli.build_payload(args, None)
    assert payload["masks"] == [{"mask_s3_key": "k.png"}, {"mask_rle": rle},
                                {"mask_polygon": [[0, 0], [3, 0], [3, 3]]}, {"mask_polygon": [[1, 1], [2, 1], [2, 2]]}]
    assert "mask_polygon" not in payload and "mask_s3_key" not in payload
    args = invoke_cli.parse_args(["--endpoint-name", "e", "--task", "generate_3d", "--image-s3-key", "x",
                                  "--mask-rle", json.dumps(rle), "--mask-rle", json.dumps(rle)])
    with pytest.raises(ValueError, match="--mask-rle given 2 times: add --scene"):
        invoke_cli.build_payload(args, None)


def test_invoke_script_segment_writes_masks_and_inline_embedding(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    truth = np.zeros((6, 8), dtype=np.uint8)
    truth[1:4, 2:7] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    rle["counts"] = rle["counts"].decode()
    s3.put_object(Bucket="bkt", Key="gen3d-outputs/u/s/masks/x/1.png", Body=b"\x89PNG stored")
    segment = {"status": "success", "task": "segment", "output_bucket": "bkt",
               "masks": [{"rle": rle, "score": 0.9}, {"rle": rle, "png_s3_key": "gen3d-outputs/u/s/masks/x/1.png"}]}
    embedding = {"status": "success", "task": "get_embedding", "embedding_id": "abc",
                 "embedding_base64": base64.b64encode(b"safetensors bytes").decode()}
    set_moto_realtime_results(sm_moto, [segment, embedding])
    env = {"AWS_ENDPOINT_URL": sm_moto}
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3-rt", "--task", "segment", "--bucket", "bkt",
                      "--image-s3-key", "in/photo.png", "--text", "red chair", "--box", "1,2,30,40", "--box",
                      "5,5,9,9", "--out", str(tmp_path / "seg"), env_extra=env)
    assert proc.returncode == 0, proc.stderr
    decoded = np.array(Image.open(tmp_path / "seg" / "mask-0.png")) > 0
    assert (decoded == truth.astype(bool)).all()
    assert (tmp_path / "seg" / "mask-1.png").read_bytes() == b"\x89PNG stored"
    (tmp_path / "photo.png").write_bytes(png_bytes(5))
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3-rt", "--image-file", str(tmp_path / "photo.png"),
                      "--preset", "tiny", "--out", str(tmp_path / "emb"), env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "emb" / "abc.safetensors").read_bytes() == b"safetensors bytes"


def test_invoke_script_generate_body_writes_each_persons_files(sm_moto, tmp_path):
    s3 = client("s3")
    s3.create_bucket(Bucket="bkt")
    files = {"body/g/people.glb": b"glTF everyone", "body/g/person_0.glb": b"glTF one", "body/g/person_0.json": b"{}"}
    for key, data in files.items():
        s3.put_object(Bucket="bkt", Key=key, Body=data)
    answer = {"status": "success", "task": "generate_body", "output_bucket": "bkt",
              "people": [{"index": 0, "outputs": {"glb": "body/g/person_0.glb", "params": "body/g/person_0.json"}},
                         {"index": 1, "outputs_base64": {"glb": base64.b64encode(b"glTF two").decode(),
                                                         "params": base64.b64encode(b'{"i": 1}').decode()}}],
              "outputs": {"people_glb": "body/g/people.glb"}}
    set_moto_realtime_results(sm_moto, [answer])
    out = tmp_path / "body"
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3d-body-realtime", "--task", "generate_body",
                      "--bucket", "bkt", "--image-s3-key", "in/photo.png", "--box", "10,20,80,120", "--focal-length",
                      "1000", "--out", str(out), "--verify", env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode != 0 and "people[1] lacks outputs ['glb', 'params']" in proc.stderr  # inline: not in S3
    set_moto_realtime_results(sm_moto, [answer])
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3d-body-realtime", "--task", "generate_body",
                      "--bucket", "bkt", "--image-s3-key", "in/photo.png", "--box", "10,20,80,120", "--focal-length",
                      "1000", "--out", str(out), env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "response.json"} == {
        "people.glb": b"glTF everyone", "person-0.glb": b"glTF one", "person-0.json": b"{}",
        "person-1.glb": b"glTF two", "person-1.json": b'{"i": 1}'}


def test_invoke_refuses_a_realtime_answer_over_6_mb_before_sending(tmp_path, capsys, monkeypatch):
    """get_embedding with an inline image answers with the embedding inline: 10.6 MB of float16 at the production
    preset's 1008 px, 14.2 MB as base64. sagemaker-runtime is a Stubber expecting the one request that fits."""
    from gen3d.cli import invoke as invoke_cli
    from gen3d.sagemaker import clients as aws

    rt = client("sagemaker-runtime")
    stub = Stubber(rt)
    stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b'{"status": "success"}'), 21)})
    monkeypatch.setattr(aws, "make_clients", lambda *a, **k: aws.Clients(None, None, rt, None, None))
    (tmp_path / "photo.png").write_bytes(png_bytes(5))
    with stub:
        assert invoke_cli.main(["--endpoint-name", "sam3-rt", "--image-file", str(tmp_path / "photo.png")]) == 1
        assert capsys.readouterr().err.strip() == (
            "ERROR: refusing to send: the get_embedding answer of preset sam3 carries its 10.6 MB embedding inline "
            "as 14.2 MB of base64, over SageMaker's 6 MB real-time response limit; send the image by S3 key so the "
            "embedding is written to S3 (--bucket with --image-file uploads it), or use an async endpoint (--mode "
            "async)")
        (tmp_path / "big.png").write_bytes(bytes(5 * 2**20))
        assert invoke_cli.main(["--endpoint-name", "sam3-rt", "--image-file", str(tmp_path / "big.png"), "--task",
                                "segment", "--text", "cat"]) == 1
        assert capsys.readouterr().err.startswith("ERROR: the request is 7.0 MB, over SageMaker's 6 MB real-time "
                                                  "limit")
        payload = tmp_path / "request.json"
        payload.write_text(json.dumps({"task": "get_embedding", "image_base64": "aGk=", "embedding_dtype": "float32"}))
        assert invoke_cli.main(["--endpoint-name", "sam3-rt", "--payload", str(payload), "--preset", "tiny"]) == 0
        stub.assert_no_pending_responses()  # the tiny preset's 0.5 MB float32 answer fits: sent


def test_invoke_sends_an_inline_embedding_to_an_async_endpoint(sm_moto, tmp_path):
    """Async answers go through S3 (up to 1 GB): no size refusal."""
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    answer = {"status": "success", "task": "get_embedding", "embedding_base64": "aGk="}
    set_moto_async_results(sm_moto, [{"data": json.dumps(answer)}])
    (tmp_path / "photo.png").write_bytes(png_bytes(5))
    proc = run_script("sagemaker_invoke.py", "--endpoint-name", "sam3-async", "--mode", "async", "--image-file",
                      str(tmp_path / "photo.png"), "--async-input-s3", "s3://iob/in/1.json",
                      env_extra={"AWS_ENDPOINT_URL": sm_moto})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == answer


def test_invoke_script_refuses_flags_of_another_task(sm_moto, capsys):
    from gen3d.cli import invoke as invoke_cli

    assert invoke_cli.main(["--endpoint-name", "e", "--task", "generate_3d", "--bucket", "b", "--image-s3-key", "k",
                            "--points", "1,2", "--mask-s3-key", "m.png"]) == 1
    assert "--points do not apply to task generate_3d (model sam3d)" in capsys.readouterr().err
    assert invoke_cli.main(["--endpoint-name", "e", "--task", "generate_3d", "--image-s3-key", "k",
                            "--mask-png", "/nonexistent.png"]) == 1
    assert "--mask-png needs --bucket" in capsys.readouterr().err


def test_save_outputs_needs_a_bucket_for_s3_keys(tmp_path):
    with pytest.raises(ValueError, match="give --bucket"):
        payloads.save_outputs(None, {"output_s3_key": "a/b.safetensors"}, tmp_path, None)
    assert json.loads((tmp_path / "response.json").read_text()) == {"output_s3_key": "a/b.safetensors"}


def test_save_outputs_writes_rle_masks_as_png_and_names_a_bad_one(tmp_path):
    truth = np.zeros((3, 4), dtype=bool)
    truth[1, 1:3] = True
    listed = {"size": [3, 4], "counts": [4, 1, 2, 1, 4]}  # uncompressed counts, column-major
    written = payloads.save_outputs(None, {"masks": [{"rle": listed}]}, tmp_path, None)
    assert [p.name for p in written] == ["response.json", "mask-0.png"]
    with Image.open(tmp_path / "mask-0.png") as png:
        assert png.mode == "1" and (np.array(png) == truth).all()  # 1-bit, as the server's PNG masks
    with pytest.raises(InvalidField, match=r"masks\[1\]\.rle: size must be"):
        payloads.save_outputs(None, {"masks": [{"rle": listed}, {"rle": {"size": [0, 4], "counts": ""}}]},
                              tmp_path, None)


def test_verify_response_follows_decode_formats(sm_moto):
    s3 = client("s3")
    s3.create_bucket(Bucket="iob")
    for key in ("o/a.ply", "o/pose.json"):
        s3.put_object(Bucket="iob", Key=key, Body=io.BytesIO(b"x").read())
    splat_only = {"status": "success", "task": "generate_3d", "decode_formats": ["gaussian"],
                  "outputs": {"ply": "o/a.ply", "pose": "o/pose.json"}}
    assert invoke.verify_response(s3, splat_only, "iob") == {"ply": "s3://iob/o/a.ply", "pose": "s3://iob/o/pose.json"}
    assert invoke.sam3d_outputs(["gaussian", "mesh"]) == ["ply", "glb", "pose"]
