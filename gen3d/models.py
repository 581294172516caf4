"""The served models, one record each: every place that needs a model's name, tasks, GPU memory need or
TorchServe defaults reads it here (archive builder, services, SageMaker entrypoint and deploy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """One TorchServe model (and Dockerfile target) and the tasks it answers."""

    name: str
    tasks: tuple[str, ...]
    gpu_memory_gib: int  # one worker holds the whole real model on one GPU: the need is per GPU
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int
    startup_timeout_s: int
    default_instance_type: str  # SageMaker instance type whose GPU fits gpu_memory_gib
    # The image's CUDA (what its torch wheels bundle; the Dockerfile target's LABEL repeats it, a test compares)
    # and the oldest NVIDIA driver that runs it: any CUDA 12.x build runs on a driver >= 525 through CUDA
    # minor-version compatibility (gen3d.sagemaker.gpus picks the endpoint's driver from it).
    cuda_version: str
    min_driver: int

    @property
    def default_task(self) -> str:
        return self.tasks[0]


SAM3 = ModelSpec(
    name="sam3",
    tasks=("get_embedding", "segment"),
    gpu_memory_gib=16,
    batch_size=4,
    # a lone request waits this long for a batch that never fills; under load the queue fills batches anyway
    # (gen3d-bench: at 1 ms, clicks cost about as much as an echo handler, and 32 clients still get batches of ~4)
    max_batch_delay_ms=1,
    response_timeout_s=300,
    startup_timeout_s=600,
    default_instance_type="ml.g5.2xlarge",
    cuda_version="12.6",  # torch 2.7.1+cu126 (locks/sam3-image.lock)
    min_driver=525,
)
SAM3D = ModelSpec(
    name="sam3d",
    tasks=("generate_3d",),
    gpu_memory_gib=32,  # 24 GiB cards run out of memory (upstream reports); sam3d answers one object per batch
    batch_size=1,
    max_batch_delay_ms=100,
    response_timeout_s=900,
    startup_timeout_s=1800,
    default_instance_type="ml.g6e.2xlarge",
    cuda_version="12.1",  # torch 2.5.1+cu121 (locks/sam3d-image.cuda121.txt)
    min_driver=525,
)
SAM3D_BODY = ModelSpec(
    name="sam3d_body",
    tasks=("generate_body",),
    gpu_memory_gib=12,  # users run it on 12 GB cards (upstream reports ~2-4 s per image there)
    batch_size=1,
    max_batch_delay_ms=50,
    response_timeout_s=300,
    startup_timeout_s=900,
    default_instance_type="ml.g5.xlarge",
    cuda_version="12.6",  # torch 2.7.1+cu126: runs in the sam3 image (locks/sam3-image.lock)
    min_driver=525,
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (SAM3, SAM3D, SAM3D_BODY)}


def model_serving(task: str) -> ModelSpec | None:
    """The model whose tasks include ``task``, or ``None``."""
    return next((spec for spec in MODELS.values() if task in spec.tasks), None)
