"""The GPU check kit runs end to end on the CPU (tiny preset) and agrees with sam3's stock processor there; every
module it imports is one the GPU machine has or one `make gpu-check-wheels` carries; its rows come out as they are
measured; empty masks do not count as agreement."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gen3d.cli.gpu_check import failures, iou, main
from tests.conftest import REPO

pytestmark = pytest.mark.sam3

TINY_RUN = ["--preset", "tiny", "--device", "cpu", "--batches", "1,2", "--repeats", "1", "--clicks", "1",
            "--image-size", "96x64"]  # fmt: skip

# Runs argv[2:] (a script and its arguments) as `python3 SCRIPT ...` would, recording which module imported which
# top-level module: every import statement (builtins.__import__) and every first import (a finder first on
# sys.meta_path, which also sees importlib.import_module). Writes {"exit", "modules": {top: [importers]}} to argv[1].
RECORDER = r"""
import builtins, json, runpy, sys

importers = {}
real_import = builtins.__import__


def record(name, importer):
    importers.setdefault(name.partition(".")[0], set()).add((importer or "?").partition(".")[0])


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0:
        record(name, (globals or {}).get("__name__"))
    return real_import(name, globals, locals, fromlist, level)


class FirstImports:
    @staticmethod
    def find_spec(name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and (frame.f_code is recording_import.__code__
                                     or frame.f_code.co_filename.startswith("<frozen")
                                     or frame.f_globals.get("__name__", "").startswith("importlib")):
            frame = frame.f_back
        record(name, frame.f_globals.get("__name__") if frame is not None else None)
        return None


builtins.__import__ = recording_import
sys.meta_path.insert(0, FirstImports)
out, sys.argv = sys.argv[1], sys.argv[2:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    code = exit.code
else:
    code = 0
builtins.__import__ = real_import
sys.meta_path.remove(FirstImports)
modules = {top: sorted(names) for top, names in importers.items() if top in sys.modules}
with open(out, "w") as f:
    json.dump({"exit": code, "modules": modules}, f)
"""

# Modules of Python 3.11's stdlib that 3.12, the GPU machine's Python, no longer has (PEP 594, PEP 632).
GONE_IN_312 = {"asynchat", "asyncore", "distutils", "imp", "smtpd"}
STDLIB = set(sys.stdlib_module_names) - GONE_IN_312


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def machine_packages() -> set[str]:
    lines = (REPO / "tests/data/gpu-machine-packages.txt").read_text().splitlines()
    return {canonical(line) for line in lines if line.strip() and not line.startswith("#")}


def carried_wheels() -> set[str]:
    """GPU_CHECK_WHEELS and GPU_CHECK_BUILDS, read from the Makefile that downloads and builds them."""
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    variables = ("GPU_CHECK_WHEELS", "GPU_CHECK_BUILDS")
    found = [re.search(rf"^{var} :?= (.*)$", makefile, re.MULTILINE) for var in variables]
    assert all(found), "the Makefile defines GPU_CHECK_WHEELS and GPU_CHECK_BUILDS"
    return {canonical(name) for match in found for name in match.group(1).split()}


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """The GPU check on the CPU (tiny preset) from the checkout's root, as on the GPU machine, imports recorded."""
    work = tmp_path_factory.mktemp("gpu-check")
    report = work / "imports.json"
    argv = [sys.executable, "-c", RECORDER, str(report), "scripts/gpu_check.py", *TINY_RUN, "--work", str(work)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(report.read_text()), work


def test_gpu_check_runs_on_the_cpu_and_agrees_with_stock_sam3(recorded_run, bpe_path):
    out, report, work = recorded_run
    assert report["exit"] == 0
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", out, re.MULTILINE))
    assert {f"get_embedding images/s, batch {b}" for b in (1, 2)} <= rows.keys()
    assert float(rows["get_embedding images/s, batch 2"]) > 0
    assert rows["click latency, features on the device"].endswith(" ms")
    assert rows["click latency, features from the disk cache"].endswith(" ms")
    assert rows["start-up warm-up"].endswith(" ms")
    # on the CPU the service computes what sam3's own processor computes, up to holding features in float16
    assert float(rows["agreement: features max abs diff"]) < 2e-3
    assert float(rows["agreement: click mask IoU"]) >= 0.99 and float(rows["agreement: text masks mean IoU"]) >= 0.99
    # the agreement counted masks that have pixels (two empty masks agree on nothing)
    counted, compared = map(int, re.search(r"(\d+) of (\d+) pairs not both empty", out).groups())
    assert 0 < counted <= compared
    assert rows["mask post-processing (hole filling)"] == "ran" and rows["verdict"] == "PASS"
    # its checkpoint is the demo archive's: named by preset, seed and the model code
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.presets import PRESETS

    made = demo_checkpoint(work, PRESETS["tiny"], bpe_path, seed=0)
    assert list(work.glob("*.safetensors")) == [made]


def test_every_module_the_gpu_check_imports_is_on_the_gpu_machine_or_carried(recorded_run):
    """What the check imports (found by running it) is in the stdlib, in the GPU machine's package list or in the
    Makefile's wheel list. A module imported only by the stdlib or by packages that machine has is their own
    (required or optional) import: the machine's install of them brings it or does without it (torch imports
    optree, torchvision defusedxml when present). Checkout modules (gen3d, the script) travel with the checkout.
    CUDA-only branches (sam3's Triton kernels) import only triton, which that machine has."""
    _, report, _ = recorded_run
    machine, carried = machine_packages(), carried_wheels()
    distributions = importlib.metadata.packages_distributions()

    def provided_by(top: str) -> set[str]:
        return {canonical(name) for name in distributions.get(top, ())}

    def own_import_of_the_machine(importer: str) -> bool:
        return importer in STDLIB or bool(provided_by(importer) & machine - carried)

    def in_checkout(top: str) -> bool:  # importable from the checkout's root (PYTHONPATH=. there), e.g. gen3d
        return (REPO / top / "__init__.py").is_file() or (REPO / f"{top}.py").is_file()

    uncovered = {}
    for top, importers in report["modules"].items():
        if top in STDLIB or in_checkout(top) or provided_by(top) & (machine | carried):
            continue
        importers = [name for name in importers if name != top]
        if importers and all(own_import_of_the_machine(name) for name in importers):
            continue
        uncovered[top] = f"{top} (distribution {sorted(provided_by(top)) or '?'}, imported by {importers})"
    assert uncovered == {}, "not on the GPU machine, not in GPU_CHECK_WHEELS: " + "; ".join(uncovered.values())
    # the check's own path was recorded: the serving code, sam3 and the packages the machine lacks
    assert {"gen3d", "sam3", "pydantic", "diskcache", "torch"} <= report["modules"].keys()


def test_gpu_check_prints_each_row_as_it_is_measured(tmp_path):
    """Cut short after its first row (the load), a run has already shown that row; the verdict never comes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "scripts/gpu_check.py", *TINY_RUN, "--work", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        shown = []
        for line in proc.stdout:
            shown.append(line)
            if line.startswith("| load_sam3"):
                break
        proc.kill()
        rest = proc.stdout.read()
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert shown[0].startswith("gen3d GPU check: SAM 3 preset tiny") and shown[-1].startswith("| load_sam3")
    assert "| verdict |" not in rest


def test_two_empty_masks_do_not_agree():
    empty, some = np.zeros((4, 4), bool), np.eye(4, dtype=bool)
    assert iou(empty, empty) is None
    assert iou(some, some) == 1.0 and iou(some, empty) == 0.0
    assert iou(some, np.diag([True, True, False, False])) == 0.5


def test_a_run_whose_masks_are_all_empty_fails():
    assert failures(True, [], [], True, 0.95) == [
        "every mask compared was empty on both sides, so nothing was shown to agree"
    ]
    assert failures(True, [], [0.97, 0.99], True, 0.95) == []
    assert failures(True, [], [0.9, 0.99], True, 0.95) == ["a mask IoU (0.9000) is under --min-iou 0.95"]
    assert len(failures(False, ["Skipping the post-processing step"], [1.0], False, 0.95)) == 3


def test_gpu_check_refuses_cuda_without_a_gpu(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
