"""Print (or write) the JSON Schema of every request the served models take (gen3d.models.MODELS: get_embedding
and segment of model sam3, generate_3d of sam3d, ...), or with --openapi the OpenAPI 3.1 document of the whole
inference API (requests, answers, errors). docs/request-schema.json and docs/openapi.json are this command's
outputs (tests keep them current).

  gen3d-schema                          # to stdout
  gen3d-schema --out docs/request-schema.json
  gen3d-schema --openapi --out docs/openapi.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Union

from pydantic import TypeAdapter

from gen3d.cli.openapi import openapi_document, served_models, task_models


def request_schema() -> dict:
    """One schema: a request is any of the tasks' requests, told apart by ``task``."""
    requests = [request for spec in served_models() for request, _ in task_models(spec).values()]
    schema = TypeAdapter(Union[tuple(requests)]).json_schema(mode="validation")  # noqa: UP007 - a runtime union
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Gen3D request"
    schema["description"] = (
        "A JSON request to POST /predictions/sam3 (get_embedding, segment) or /predictions/sam3d (generate_3d); "
        "SageMaker's /invocations takes the same bodies. Answers are JSON with status, task and request_id."
    )
    return schema


def render(openapi: bool = False) -> str:
    document = openapi_document() if openapi else request_schema()
    return json.dumps(document, indent=1, sort_keys=not openapi) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the schema to this file instead of stdout")
    parser.add_argument("--openapi", action="store_true", help="the OpenAPI 3.1 document instead of the schema")
    args = parser.parse_args(argv)
    text = render(args.openapi)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def console() -> None:
    sys.exit(main())
