"""GPUs of SageMaker instance types, and the check that a model fits one of them before anything is deployed."""

from __future__ import annotations

from dataclasses import dataclass

from gen3d.models import MODELS
from gen3d.sagemaker.errors import GpuMemoryError


@dataclass(frozen=True)
class GpuSpec:
    """GPUs of one instance type: model name, memory per GPU, count."""

    gpu: str
    memory_gib: int
    count: int


def instance_family(prefix: str, gpu: str, gib: int) -> dict[str, GpuSpec]:
    """Every size of an instance family: one GPU up to 16xlarge, then 4 or 8."""
    counts = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
              "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}
    return {f"{prefix}.{size}": GpuSpec(gpu, gib, n) for size, n in counts.items()}


INSTANCE_GPUS: dict[str, GpuSpec] = {
    **instance_family("ml.g5", "NVIDIA A10G", 24),
    **instance_family("ml.g6", "NVIDIA L4", 24),
    **instance_family("ml.g6e", "NVIDIA L40S", 48),
    "ml.p4d.24xlarge": GpuSpec("NVIDIA A100", 40, 8),
    "ml.p4de.24xlarge": GpuSpec("NVIDIA A100", 80, 8),
    "ml.p5.4xlarge": GpuSpec("NVIDIA H100", 80, 1),
    "ml.p5.48xlarge": GpuSpec("NVIDIA H100", 80, 8),
}


def check_gpu_memory(model: str, instance_type: str) -> GpuSpec:
    """Return the instance's GPU spec, or raise GpuMemoryError if the model does not fit."""
    if model not in MODELS:
        raise GpuMemoryError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    need = MODELS[model].gpu_memory_gib  # one TorchServe worker holds the whole model on one GPU
    fitting = sorted({t.rsplit(".", 1)[0] + ".*" for t, s in INSTANCE_GPUS.items() if s.memory_gib >= need})
    spec = INSTANCE_GPUS.get(instance_type)
    if spec is None:
        raise GpuMemoryError(
            f"unknown GPU instance type {instance_type!r}: cannot check that {model} "
            f"(needs >= {need} GiB per GPU) fits; known types: {', '.join(sorted(INSTANCE_GPUS))}"
        )
    if spec.memory_gib < need:
        raise GpuMemoryError(
            f"refusing to deploy {model} on {instance_type}: it needs >= {need} GiB of GPU "
            f"memory on one GPU, but {instance_type} has {spec.count}x {spec.gpu} with "
            f"{spec.memory_gib} GiB each; use one of {', '.join(fitting)}"
        )
    return spec
