"""Real answers of the demo models validate against docs/openapi.json: every request example the document carries
is sent to its path (its answer must be a 200 that fits the documented schema), and errors of both kinds (the
models' error answer, TorchServe's own) fit the schema documented for their status."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import requests
from PIL import Image

from gen3d.bench.serving import png_bytes
from gen3d.cli.openapi import EXAMPLE_PNG, EXAMPLES
from tests.conftest import BUCKET, REPO
from tests.integration.http_support import post

pytestmark = [pytest.mark.sam3, pytest.mark.sam3d]
DOCUMENT = json.loads((REPO / "docs" / "openapi.json").read_text())
PREDICTIONS = [path for path in DOCUMENT["paths"] if path.startswith("/predictions/")]


def documented(path: str, status: int, content_type: str = "application/json") -> dict:
    responses = DOCUMENT["paths"][path]["post"]["responses"]
    return {**responses[str(status)]["content"][content_type]["schema"], "components": DOCUMENT["components"]}


def check(path: str, resp: requests.Response) -> dict:
    """The answer, after checking it against the schema documented for its path and status."""
    body = resp.json()
    jsonschema.Draft202012Validator(documented(path, resp.status_code)).validate(body)
    return body


@pytest.fixture(scope="module")
def s3_inputs(s3):
    """What the S3 examples name: the picture and a mask of its size."""
    s3.put_object(Bucket=BUCKET, Key="test-data/test-image.png", Body=png_bytes(7, (120, 160)))
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 255
    buf = __import__("io").BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    s3.put_object(Bucket=BUCKET, Key="test-data/test-mask.png", Body=buf.getvalue())


@pytest.mark.parametrize(
    ("path", "example"),
    [(path, name) for path in PREDICTIONS for name in DOCUMENT["paths"][path]["post"]["requestBody"]["content"]
     ["application/json"].get("examples", {})],
)  # fmt: skip
def test_every_example_answers_as_documented(torchserve, s3_inputs, path, example):
    body = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"][example]["value"]
    request_id = "example-" + "".join(c if c.isalnum() else "-" for c in example)
    resp = post(torchserve, body, {"X-Request-Id": request_id}, path=path, timeout=300)
    assert resp.status_code == 200, resp.text
    answer = check(path, resp)
    assert answer["task"] == body["task"] and answer["request_id"] == request_id, answer


def test_every_task_has_an_example():
    tasks = {value["value"]["task"] for path in PREDICTIONS
             for value in DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
             .values()}  # fmt: skip
    assert tasks == set(EXAMPLES)


def test_invocations_and_the_binary_embedding(torchserve):
    body = EXAMPLES["get_embedding"]["inline"]
    resp = requests.post(f"{torchserve.inference_url}/invocations?model_name=sam3", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    assert check("/invocations", resp)["task"] == "get_embedding"
    raw = __import__("base64").b64decode(EXAMPLE_PNG)
    resp = post(torchserve, raw, {"Content-Type": "image/png", "Accept": "application/octet-stream"})
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/x-safetensors")
    assert "application/x-safetensors" in DOCUMENT["paths"]["/predictions/sam3"]["post"]["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "kind"),
    [
        ("/predictions/sam3", {"task": "segment", "image_base64": EXAMPLE_PNG}, None, 400, "invalid_field"),
        ("/predictions/sam3", b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("/predictions/sam3", {"task": "segment", "embedding_id": "0" * 32, "points": [[1, 1]], "point_labels": [1]},
         None, 404, "not_found"),
        ("/predictions/sam3d", {"task": "generate_3d", "image_base64": EXAMPLE_PNG}, None, 400, "invalid_field"),
        ("/predictions/sam3", {"task": "get_embedding", "image_s3_key": "x.png", "bucket": "not-allowed-bucket"},
         None, 403, "forbidden"),
    ],
)  # fmt: skip
def test_error_answers_fit_the_documented_schema(torchserve, path, body, headers, status, kind):
    resp = post(torchserve, body, headers, path=path)
    assert resp.status_code == status, resp.text
    answer = check(path, resp)
    assert answer["error"]["type"] == kind and answer["error"]["code"] == status
    assert ("preset" in answer) == path.endswith("sam3d")  # sam3d names its preset in every answer


def test_the_x_request_id_header_is_torchserves_own(torchserve):
    """docs/http-api.md says so: TorchServe 0.12 answers with its own X-Request-Id (a UUID), whatever the handler
    sets; the body's request_id is the client's id (the one the handlers' log lines carry)."""
    resp = post(torchserve, EXAMPLES["get_embedding"]["inline"], {"X-Request-Id": "client-id-1"})
    assert resp.json()["request_id"] == "client-id-1"
    assert resp.headers["X-Request-Id"] != "client-id-1" and len(resp.headers["X-Request-Id"]) == 36


def test_torchserves_own_errors_and_ping_fit_the_document(torchserve):
    resp = post(torchserve, {"task": "get_embedding"}, path="/predictions/no_such_model")
    assert resp.status_code == 404
    jsonschema.Draft202012Validator(documented("/predictions/sam3", 404)).validate(resp.json())
    assert resp.json().keys() == {"code", "type", "message"}  # TorchServe's, not a model's
    ping = requests.get(f"{torchserve.inference_url}/ping", timeout=10)
    schema = DOCUMENT["paths"]["/ping"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]}).validate(ping.json())
    assert ping.json() == {"status": "Healthy"}
