"""The GPU check kit runs end to end on the CPU (tiny preset) and agrees with sam3's stock processor there."""

from __future__ import annotations

import re

import pytest

from gen3d.cli.gpu_check import main

pytestmark = pytest.mark.sam3


def test_gpu_check_runs_on_the_cpu_and_agrees_with_stock_sam3(capsys, tmp_path, bpe_path):
    argv = ["--preset", "tiny", "--device", "cpu", "--batches", "1,2", "--repeats", "1", "--clicks", "1",
            "--image-size", "96x64", "--work", str(tmp_path)]
    assert main(argv) == 0
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", capsys.readouterr().out, re.MULTILINE))
    assert {f"get_embedding images/s, batch {b}" for b in (1, 2)} <= rows.keys()
    assert float(rows["get_embedding images/s, batch 2"]) > 0
    assert rows["click latency, features on the device"].endswith(" ms")
    assert rows["click latency, features from the disk cache"].endswith(" ms")
    assert rows["start-up warm-up"].endswith(" ms")
    # on the CPU the service computes what sam3's own processor computes, up to holding features in float16
    assert float(rows["agreement: features max abs diff"]) < 2e-3
    assert float(rows["agreement: click mask IoU"]) >= 0.99 and float(rows["agreement: text masks mean IoU"]) >= 0.99
    assert rows["mask post-processing (hole filling)"] == "ran" and rows["verdict"] == "PASS"
    # its checkpoint is the demo archive's: named by preset, seed and the model code
    from gen3d.sam3.demo_weights import demo_checkpoint
    from gen3d.sam3.presets import PRESETS

    made = demo_checkpoint(tmp_path, PRESETS["tiny"], bpe_path, seed=0)
    assert list(tmp_path.glob("*.safetensors")) == [made]


def test_gpu_check_refuses_cuda_without_a_gpu(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
