"""The sam3d worker never imports sam3 or gen3d.sam3: the sam3d image lacks sam3's packages. Proven by running
the worker's path (handler module, archive loading, one generate_3d request) in a fresh interpreter and
listing what it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.sam3d

WORKER = r"""
import base64, importlib.util, io, json, sys
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

spec = importlib.util.spec_from_file_location("sam3d_handler", sys.argv[1] + "/handlers/sam3d_handler.py")
handler_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler_module)

from gen3d.sam3d.demo.weights import demo_checkpoint_bytes
from gen3d.sam3d.presets import PRESETS

model_dir = Path(sys.argv[2])
(model_dir / "demo.safetensors").write_bytes(demo_checkpoint_bytes(PRESETS["tiny-cpu-demo"]))
config = {"preset": "tiny-cpu-demo", "checkpoint": "demo.safetensors", "demo_weights": True}


class Context:
    system_properties = {"model_dir": str(model_dir), "gpu_id": None}
    model_yaml_config = {"handler": config}
    metrics = SimpleNamespace(add_counter=lambda name, value: None)
    status = []

    def get_all_request_header(self, idx):
        return {"content-type": "application/json"}

    def set_response_status(self, code, phrase, idx):
        self.status.append(code)

    def set_response_content_type(self, idx, value):
        pass

    def set_response_header(self, idx, key, value):
        pass


handler = handler_module.Sam3dHandler()
context = Context()
handler.initialize(context)
buf = io.BytesIO()
Image.new("RGB", (48, 40), (200, 120, 40)).save(buf, "PNG")
body = {"task": "generate_3d", "image_base64": base64.b64encode(buf.getvalue()).decode(),
        "mask_polygon": [[8, 8], [40, 8], [40, 32], [8, 32]], "decode_formats": ["gaussian"]}
answer = json.loads(handler.handle([{"body": json.dumps(body).encode()}], context)[0])
print(json.dumps({"status": context.status, "answer": answer.get("status"), "modules": sorted(sys.modules)}))
"""


def is_sam3(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in ("sam3", "gen3d.sam3"))


def test_sam3d_worker_imports_nothing_of_sam3(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == [200] and report["answer"] == "success"
    assert "gen3d.sam3d.service" in report["modules"] and "sam3d_objects" in report["modules"]
    assert [m for m in report["modules"] if is_sam3(m)] == []
