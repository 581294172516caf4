"""docs/openapi.json: `gen3d-schema --openapi`'s current output, a valid OpenAPI 3.1 document (openapi-spec-validator)
describing every served model's tasks with their request and answer models; its examples are valid requests."""

from __future__ import annotations

import copy
import json

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gen3d.cli.openapi import EXAMPLES, openapi_document, served_models, task_models
from gen3d.cli.schema import main, render
from gen3d.models import MODELS, ModelSpec
from gen3d.serving.schema import validated
from tests.conftest import REPO

OPENAPI = REPO / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi_document()


def test_committed_document_is_current():
    assert OPENAPI.read_text() == render(openapi=True), "regenerate: gen3d-schema --openapi --out docs/openapi.json"


def test_cli_writes_the_document(tmp_path):
    assert main(["--openapi", "--out", str(tmp_path / "o.json")]) == 0
    assert (tmp_path / "o.json").read_text() == OPENAPI.read_text()


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)
    broken = copy.deepcopy(document)
    del broken["paths"]["/ping"]["get"]["responses"]["200"]["description"]  # required: the validator says so
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_served_model_and_task_is_described(document):
    schemas = document["components"]["schemas"]
    served = served_models()
    assert {"/invocations", "/ping"} | {f"/predictions/{spec.name}" for spec in served} == set(document["paths"])
    assert {"sam3", "sam3d"} <= {spec.name for spec in served}
    for spec in served:
        operation = document["paths"][f"/predictions/{spec.name}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
        for task, (request, replies) in task_models(spec).items():
            refs = [ref["$ref"] for ref in body.get("oneOf", [body])]
            assert f"#/components/schemas/{request.__name__}" in refs, task
            assert schemas[request.__name__]["properties"]["task"]["const"] == task
            for reply in replies:
                assert f"#/components/schemas/{reply.__name__}" in [r["$ref"] for r in answer.get("oneOf", [answer])]
        assert {"400", "415", "500", "502", "504", "507"} <= set(operation["responses"])
    invocations = document["paths"]["/invocations"]["post"]
    model_name = next(p for p in invocations["parameters"] if p["name"] == "model_name")
    assert model_name["schema"]["enum"] == [spec.name for spec in served]


def test_a_model_without_its_package_is_left_out():
    """MODELS may name a model before its package lands (its handler imports gen3d.<model>): not served yet."""
    missing = [spec.name for spec in MODELS.values() if not (REPO / "gen3d" / spec.name).is_dir()]
    assert [spec.name for spec in served_models()] == [name for name in MODELS if name not in missing]


def test_error_answer_names_every_error_type(document):
    error = document["components"]["schemas"]["ErrorDetail"]
    from gen3d.errors import ERROR_TYPES

    assert set(error["properties"]["type"]["enum"]) == {cls.error_type for cls in ERROR_TYPES}


def test_examples_are_valid_requests():
    for spec in served_models():
        for task, (request, _) in task_models(spec).items():
            for name, example in EXAMPLES.get(task, {}).items():
                assert validated(request, json.loads(json.dumps(example))).task == task, name


def test_a_task_without_an_answer_model_stops_the_build_naming_the_module():
    spec = ModelSpec("sam3", ("get_embedding", "unknown_task"), 16, 1, 1, 1, 1, "ml.g5.2xlarge", "12.6", 525)
    with pytest.raises(SystemExit, match=r"gen3d\.sam3\.request has no Envelope subclass .*'unknown_task'"):
        task_models(spec)
