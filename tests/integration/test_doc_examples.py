"""The documentation's examples run against the demo models, as written: every curl (bash) and Python example whose
marker names this file (tests/doc_blocks.py) runs in a folder holding the files the examples name (photo.png,
photo.jpg, object_rgba.png; the picture also in S3 as test-data/test-image.png), against the session's TorchServe
and moto S3. Only the server's address, `.venv/bin/python` and the documented embedding id (that of the docs'
picture) are replaced. Every curl must get a 2xx, and every JSON answer must fit docs/openapi.json."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
from PIL import Image

from gen3d.cli.openapi import served_models, task_models
from gen3d.serving.masks import mask_from_rle
from tests.conftest import BUCKET, REPO
from tests.doc_blocks import examples_run_by
from tests.integration.http_support import post_ok

pytestmark = [pytest.mark.sam3, pytest.mark.sam3d, pytest.mark.sam3d_body]
THIS = "tests/integration/test_doc_examples.py"
EXAMPLES = examples_run_by(THIS)
SAMPLE = REPO / "web" / "samples" / "still-life.png"
DOCUMENTED_EMBEDDING_ID = "4eae9c335ffeb626efd7adcb44b8d1fe"  # the docs' picture's, in the segment examples
DOCUMENT = json.loads((REPO / "docs" / "openapi.json").read_text())
ANSWER_MODELS = {task: answers for spec in served_models() for task, (_, answers) in task_models(spec).items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, s3) -> Path:
    """A working folder with the files the examples name; the picture in S3 too."""
    work = tmp_path_factory.mktemp("doc-examples")
    picture = SAMPLE.read_bytes()
    s3.put_object(Bucket=BUCKET, Key="test-data/test-image.png", Body=picture)
    (work / "photo.png").write_bytes(picture)
    image = Image.open(io.BytesIO(picture)).convert("RGB")
    image.save(work / "photo.jpg", "JPEG")
    alpha = np.zeros((image.height, image.width), np.uint8)
    alpha[100:260, 120:360] = 255
    rgba = image.copy()
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(work / "object_rgba.png")
    (work / "answers").mkdir()
    return work


def shell_script(blocks, torchserve, embedding_id: str) -> str:
    """The page's bash examples in one shell (they share variables), curl failing on HTTP errors and keeping a copy
    of every answer in answers/."""
    lines = [
        "set -euo pipefail",
        'curl() { command curl --fail-with-body --show-error "$@" | tee "$(mktemp answers/XXXXXX)"; }',
    ]
    address = torchserve.inference_url.removeprefix("http://")
    for block in blocks:
        code = block.code.replace("localhost:8080", address).replace(".venv/bin/python", sys.executable)
        lines += [f"echo '### {block.name}' >&2", code.replace(DOCUMENTED_EMBEDDING_ID, embedding_id)]
    return "\n".join(lines) + "\n"


def check_answers(folder: Path) -> int:
    """Every JSON answer the examples got fits its task's answer schema in docs/openapi.json; how many there were."""
    checked = 0
    for path in sorted((folder / "answers").iterdir()):
        try:
            answer = json.loads(path.read_bytes())
        except ValueError:
            continue  # a file (safetensors) rather than JSON
        refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in ANSWER_MODELS[answer["task"]]]
        schema = {"oneOf": refs, **DOCUMENT}
        jsonschema.Draft202012Validator(schema).validate(answer)
        checked += 1
        path.unlink()
    return checked


@pytest.mark.parametrize(
    "page",
    sorted({b.page for b in EXAMPLES if b.language in ("bash", "sh")}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_curl_examples_run_as_written(page, folder, torchserve):
    embedding_id = post_ok(torchserve, {"task": "get_embedding", "image_base64": _b64(SAMPLE)}).json()["embedding_id"]
    blocks = [b for b in EXAMPLES if b.page == page and b.language in ("bash", "sh")]
    script = shell_script(blocks, torchserve, embedding_id)
    run = subprocess.run(
        ["bash", "-c", script], cwd=folder, capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    ran = [line for line in run.stderr.splitlines() if line.startswith("### ")]
    assert run.returncode == 0, f"{ran[-1] if ran else page}: exit {run.returncode}\n{run.stderr[-3000:]}"
    assert len(ran) == len(blocks)
    assert check_answers(folder) >= len(blocks)


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def test_python_onnx_example_decodes_the_servers_mask(folder, torchserve, decoder_onnx):
    """docs/demo-page.md's onnxruntime example, on the embedding file of the sample picture: its mask is the one
    segment answers for the same box and click."""
    (block,) = [b for b in EXAMPLES if b.language == "python"]
    answer = requests.post(
        torchserve.inference_url + "/predictions/sam3",
        data=SAMPLE.read_bytes(),
        headers={"Content-Type": "image/png", "Accept": "application/octet-stream"},
        timeout=120,
    )
    assert answer.status_code == 200
    (folder / "embedding.safetensors").write_bytes(answer.content)
    (folder / "decoder.onnx").write_bytes(decoder_onnx.read_bytes())
    namespace: dict = {"__name__": "example"}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - the documented example itself
    finally:
        os.chdir(cwd)
    segment = post_ok(
        torchserve,
        {
            "task": "segment",
            "image_base64": _b64(SAMPLE),
            "boxes": [[70, 140, 235, 300]],
            "points": [[150, 220]],
            "point_labels": [1],
        },
    ).json()
    served = mask_from_rle(segment["masks"][0]["rle"], namespace["mask"].shape, "rle")
    assert namespace["mask"].any()
    assert np.mean(namespace["mask"] != served) <= 1e-4  # onnxruntime's rounding, as test_onnx_decoder allows
