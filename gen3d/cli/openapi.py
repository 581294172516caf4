"""The OpenAPI 3.1 document of the inference API (``gen3d-schema --openapi``; docs/openapi.json is its output).

Built from :data:`gen3d.models.MODELS`: each served model's tasks, their pydantic request models (the
``Envelope`` subclass of ``gen3d.<model>.request`` whose ``task`` is that task) and answer models (the ``Answer``
subclass of ``gen3d.<model>.answers`` likewise), the error answer with one response per error class of
:mod:`gen3d.errors`, and TorchServe's own ``/ping`` and ``/invocations``. A task without both models stops the
build with one line naming the module to add it to. A model of MODELS whose package (``gen3d.<model>``) is not in
this checkout has no handler to serve it and is left out.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import version
from types import ModuleType
from typing import get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gen3d.errors import ERROR_TYPES
from gen3d.models import MODELS, ModelSpec
from gen3d.serving.answers import Answer, ErrorAnswer, PingAnswer, TorchServeError
from gen3d.serving.schema import Envelope

REF = "#/components/schemas/{model}"
# statuses TorchServe's frontend may answer itself (its own error body), besides the model's error answers
TORCHSERVE_STATUSES = {
    404: "The model is not loaded (TorchServe).",
    413: "The body is over TorchServe's max_request_size (64 MiB).",
    503: "No worker of the model is free or ready (TorchServe).",
    507: "The worker died while answering (TorchServe).",
}
# A 48x32 PNG (a red rectangle on blue) for examples that need no S3
EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAADAAAAAgCAIAAADbtmxLAAAATElEQVR42mPUiFrAMJgAE8MgA6MOGnXQqINoDViIUbTlUQdVLPORqxiNslEHjT"
    "po1EGjDhp10KiDRh006qCh5iDG0Z7rqINGHURjAADkjAWFgoZGRgAAAABJRU5ErkJggg=="
)
S3_FIELDS = {"bucket": "gen3d-data-bucket", "image_s3_key": "test-data/test-image.png"}
IDS = {"session_id": "s1", "user_id": "u1"}
# Request examples per task (optional): inline ones run against `make serve` without S3
EXAMPLES: dict[str, dict[str, dict]] = {
    "get_embedding": {
        "inline": {"task": "get_embedding", "image_base64": EXAMPLE_PNG},
        "s3": {"task": "get_embedding", **S3_FIELDS, **IDS},
    },
    "segment": {
        "click": {"task": "segment", "image_base64": EXAMPLE_PNG, "points": [[24, 16]], "point_labels": [1]},
        "concept": {"task": "segment", "image_base64": EXAMPLE_PNG, "text": "red square", "score_threshold": 0},
        "boxes": {"task": "segment", "image_base64": EXAMPLE_PNG, "boxes": [[10, 6, 38, 28]]},
    },
    "generate_3d": {
        "polygon": {
            "task": "generate_3d",
            "image_base64": EXAMPLE_PNG,
            "mask_polygon": [[12, 8], [36, 8], [36, 26], [12, 26]],
            "decode_formats": ["gaussian"],
        },
        "s3": {"task": "generate_3d", **S3_FIELDS, **IDS, "mask_s3_key": "test-data/test-mask.png", "seed": 42},
        "scene": {
            "task": "generate_3d",
            "image_base64": EXAMPLE_PNG,
            "masks": [
                {"mask_polygon": [[12, 8], [24, 8], [24, 26], [12, 26]]},
                {"mask_polygon": [[24, 8], [36, 8], [36, 26], [24, 26]]},
            ],
            "decode_formats": ["gaussian"],
        },
    },
    "generate_body": {
        "boxes": {"task": "generate_body", "image_base64": EXAMPLE_PNG, "boxes": [[8, 4, 40, 30]]},
        "mask": {
            "task": "generate_body",
            "image_base64": EXAMPLE_PNG,
            "masks": [{"mask_polygon": [[12, 6], [36, 6], [36, 28], [12, 28]]}],
            "focal_length": 60.0,
        },
    },
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _task_classes(module: ModuleType, task: str, base: type[BaseModel]) -> list[type[BaseModel]]:
    """The ``base`` subclasses of ``module`` whose ``task`` field is ``Literal[task]`` (at least one)."""
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, base) and value.__module__ == module.__name__
        and (field := value.model_fields.get("task")) is not None and get_args(field.annotation) == (task,)
    ]  # fmt: skip
    if not found:
        raise SystemExit(f"{module.__name__} has no {base.__name__} subclass with task: Literal[{task!r}]: add one")
    return found


def served_models() -> list[ModelSpec]:
    """The models of MODELS whose package is in this checkout (the ones a handler can serve)."""
    return [spec for spec in MODELS.values() if importlib.util.find_spec(f"gen3d.{spec.name}") is not None]


def task_models(spec: ModelSpec) -> dict[str, tuple[type[BaseModel], list[type[BaseModel]]]]:
    """Each task of ``spec``: its request model and its answer models (a task may answer in several shapes)."""
    requests, answers = _module(f"gen3d.{spec.name}.request"), _module(f"gen3d.{spec.name}.answers")
    models = {}
    for task in spec.tasks:
        (request, *more) = _task_classes(requests, task, Envelope)
        if more:
            raise SystemExit(f"{requests.__name__} has several request models for task {task!r}: keep one")
        models[task] = (request, _task_classes(answers, task, Answer))
    return models


def _one_of(refs: dict[str, list[dict]]) -> dict:
    """One schema of several task models, told apart by ``task`` (a task with several shapes: by their fields)."""
    every = [ref for task_refs in refs.values() for ref in task_refs]
    if len(every) == 1:
        return every[0]
    schema: dict = {"oneOf": every}
    if all(len(task_refs) == 1 for task_refs in refs.values()):
        schema["discriminator"] = {"propertyName": "task", "mapping": {task: r[0]["$ref"] for task, r in refs.items()}}
    return schema


def _binary(description: str) -> dict:
    return {"schema": {"type": "string", "format": "binary", "description": description}}


def _responses(answers: dict[str, dict], safetensors: bool) -> dict:
    error = {"$ref": REF.format(model="ErrorAnswer")}
    torchserve = {"$ref": REF.format(model="TorchServeError")}
    request_id = {
        "X-Request-Id": {
            "description": "TorchServe's own id of the request (a UUID), not the body's request_id",
            "schema": {"type": "string"},
        }
    }
    ok = {"application/json": {"schema": _one_of(answers)}}
    if safetensors:
        ok["application/x-safetensors"] = _binary("get_embedding with Accept: application/octet-stream: the file")
    responses: dict[str, dict] = {"200": {"description": "The task's answer.", "headers": request_id, "content": ok}}
    for cls in ERROR_TYPES:
        status = str(cls.status)
        words = " ".join((cls.__doc__ or "").split())
        also = TORCHSERVE_STATUSES.get(cls.status)
        schema = {"anyOf": [error, torchserve]} if also else error
        responses[status] = {
            "description": f"`{cls.error_type}`: {words}" + (f" Or: {also}" if also else ""),
            "content": {"application/json": {"schema": schema}},
        }
    for status, words in TORCHSERVE_STATUSES.items():
        responses.setdefault(
            str(status), {"description": words, "content": {"application/json": {"schema": torchserve}}}
        )
    return dict(sorted(responses.items()))


def _operation(
    specs: list[ModelSpec], refs: dict[str, tuple[dict, list[dict]]], operation_id: str, summary: str
) -> dict:
    tasks = [task for spec in specs for task in spec.tasks]
    examples = {
        f"{task}: {name}": {"summary": f"{task}, {name}", "value": value}
        for task in tasks
        for name, value in EXAMPLES.get(task, {}).items()
    }
    json_body: dict = {"schema": _one_of({task: [refs[task][0]] for task in tasks})}
    if examples:
        json_body["examples"] = examples
    defaults = ", ".join(f"{spec.name}: {spec.default_task}" for spec in specs)
    raw = f"the image file itself: the model's default task ({defaults}); generate_3d reads the mask from its alpha"
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": "Tasks: " + ", ".join(f"`{task}`" for task in tasks) + ". Fields, limits and examples: "
        "docs/http-api.md.",
        "parameters": [
            {
                "name": "X-Request-Id",
                "in": "header",
                "required": False,
                "description": "a plain token of at most 128 characters, echoed as request_id",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": json_body,
                "image/*": _binary(raw),
                "application/octet-stream": _binary(raw),
            },
        },
        "responses": _responses({task: refs[task][1] for task in tasks}, "get_embedding" in tasks),
    }


def openapi_document() -> dict:
    """The whole document: /predictions/<model> per served model, /invocations, /ping."""
    specs = served_models()
    per_task = {task: pair for spec in specs for task, pair in task_models(spec).items()}
    models = [(req, "validation") for req, _ in per_task.values()] + [
        (ans, "serialization") for _, answers in per_task.values() for ans in answers
    ]
    models += [(ErrorAnswer, "serialization"), (TorchServeError, "serialization"), (PingAnswer, "serialization")]
    keyed, defs = models_json_schema(models, ref_template=REF)
    refs = {
        task: (keyed[(req, "validation")], [keyed[(ans, "serialization")] for ans in answers])
        for task, (req, answers) in per_task.items()
    }
    paths: dict[str, dict] = {}
    for spec in specs:
        summary = f"Model {spec.name}: " + ", ".join(spec.tasks)
        paths[f"/predictions/{spec.name}"] = {"post": _operation([spec], refs, f"predict_{spec.name}", summary)}
    invocations = _operation(specs, refs, "invocations", "SageMaker's invocation: any task of the model served")
    invocations["parameters"].append(
        {
            "name": "model_name",
            "in": "query",
            "required": False,
            "description": "the model, when the server loads several (make serve); one model per SageMaker endpoint",
            "schema": {"type": "string", "enum": [spec.name for spec in specs]},
        }
    )
    paths["/invocations"] = {"post": invocations}
    ping = {
        "description": "Healthy once every model has its workers",
        "content": {"application/json": {"schema": keyed[(PingAnswer, "serialization")]}},
    }
    paths["/ping"] = {
        "get": {"operationId": "ping", "summary": "Health check (SageMaker's)", "responses": {"200": ping}}
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Gen3D serving",
            "version": version("gen3d"),
            "summary": "SAM 3 and SAM 3D Objects on TorchServe",
            "description": "The inference API of `make serve` (and of a SageMaker endpoint's container). Every "
            "answer is JSON with `status` and `request_id`; errors carry `error.code`, `error.type`, `error.field` "
            "and `error.message`. Generated by `gen3d-schema --openapi` from the pydantic request and answer models.",
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "make serve"}],
        "paths": paths,
        "components": {"schemas": defs["$defs"]},
    }
