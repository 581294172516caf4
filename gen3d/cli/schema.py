"""Print (or write) the JSON Schema of every request the models take: get_embedding and segment (model sam3),
generate_3d (model sam3d), generate_body (model sam3d_body). docs/request-schema.json is this command's
output (a test keeps it current).

  gen3d-schema                          # to stdout
  gen3d-schema --out docs/request-schema.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

from gen3d.sam3.request import GetEmbeddingRequest, SegmentRequest
from gen3d.sam3d.request import Generate3dRequest
from gen3d.sam3d_body.request import GenerateBodyRequest


def request_schema() -> dict:
    """One schema: a request is any of the tasks' requests, told apart by ``task``."""
    union = GetEmbeddingRequest | SegmentRequest | Generate3dRequest | GenerateBodyRequest
    schema = TypeAdapter(union).json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Gen3D request"
    schema["description"] = (
        "A JSON request to POST /predictions/sam3 (get_embedding, segment) /predictions/sam3d (generate_3d) or "
        "/predictions/sam3d_body (generate_body); "
        "SageMaker's /invocations takes the same bodies. Answers are JSON with status, task and request_id."
    )
    return schema


def render() -> str:
    return json.dumps(request_schema(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the schema to this file instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def console() -> None:
    sys.exit(main())
