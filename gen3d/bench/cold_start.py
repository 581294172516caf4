"""Cold start of the real-architecture SAM 3 (860 M parameters, random weights): the project's loader against the
stock procedure (random init + read the checkpoint + ``load_state_dict``), each in a fresh process, every weight
touched at the end (imports, the same for both, are not timed). The project's loader builds the model on
the meta device (skipping the ViT's meta-tensor init) while the kernel reads the checkpoint ahead, assigns the
checkpoint's tensors and takes the digest the archive recorded when it was built: the 3.45 GB file is read once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
CHECKPOINT = CHECKOUT / "build" / "sam3-random-real-arch.safetensors"

# Both procedures import the same modules first (not timed): what is compared is loading the model.
IMPORTS = """
import time, torch
import sam3.model.decoder, sam3.model.encoder, sam3.model.sam3_image, sam3.model.vitdet
"""
PROCEDURES = {
    "stock": """
from gen3d.sam3 import compat
from gen3d.sam3.architecture import build_sam3_model
from gen3d.sam3.checkpoint import read_state_dict, to_model_layout
from gen3d.sam3.presets import PRESETS
compat.apply()
started = time.perf_counter()
model = build_sam3_model(PRESETS["sam3"], BPE)
model.load_state_dict(to_model_layout(read_state_dict(CHECKPOINT)), strict=True)
""",
    "ours": """
from gen3d.sam3.loading import load_sam3
started = time.perf_counter()
model = load_sam3("sam3", CHECKPOINT, BPE, torch.device("cpu"), SHA256, SIZE).model
""",
}
TOUCH = """
with torch.no_grad():
    total = sum(float(t.float().sum()) for t in model.state_dict().values())
print("SECONDS", time.perf_counter() - started)
"""


def make_checkpoint(path: Path = CHECKPOINT) -> tuple[Path, str]:
    """A random-weight checkpoint of the published architecture (3.45 GB, made once) and its SHA-256."""
    import torch
    from safetensors.torch import save_file

    from gen3d.files import file_sha256
    from gen3d.sam3.architecture import build_sam3_model_for_checkpoint
    from gen3d.sam3.assets import bpe_vocab_path
    from gen3d.sam3.presets import PRESETS

    digest_file = path.with_suffix(".sha256")
    if not path.exists():
        print(f"making {path} (random weights of the published architecture, once)", flush=True)
        model = build_sam3_model_for_checkpoint(PRESETS["sam3"], str(bpe_vocab_path()))
        generator = torch.Generator().manual_seed(0)
        state = {}
        for name, value in model.state_dict().items():
            if not value.is_meta:
                state[name] = value.detach().clone().contiguous()
            elif value.is_floating_point():
                state[name] = torch.randn(value.shape, generator=generator) * 0.02
            else:
                state[name] = torch.zeros(value.shape, dtype=value.dtype)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
        digest_file.unlink(missing_ok=True)
    if not digest_file.exists():
        digest_file.write_text(file_sha256(path))
    return path, digest_file.read_text().strip()


def time_procedure(name: str, checkpoint: Path, digest: str) -> float:
    """Seconds the procedure takes in a fresh interpreter (imports excluded)."""
    from gen3d.sam3.assets import bpe_vocab_path

    prelude = (
        f"CHECKPOINT = {str(checkpoint)!r}\nBPE = {str(bpe_vocab_path())!r}\n"
        f"SHA256 = {digest!r}\nSIZE = {checkpoint.stat().st_size}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + IMPORTS + PROCEDURES[name] + TOUCH], capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("SECONDS "))
    return float(line.split()[1])


def run(repeats: int = 2) -> dict[str, object]:
    """Alternating runs of both procedures; the best of each and their ratio."""
    checkpoint, digest = make_checkpoint()
    times: dict[str, list[float]] = {"stock": [], "ours": []}
    for _ in range(repeats):
        for name in times:
            times[name].append(time_procedure(name, checkpoint, digest))
    best = {name: min(values) for name, values in times.items()}
    return {
        "checkpoint_gb": round(checkpoint.stat().st_size / 1e9, 2),
        "seconds": {name: [round(v, 2) for v in values] for name, values in times.items()},
        "ratio": round(best["ours"] / best["stock"], 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
