"""GPUs of SageMaker instance types and the NVIDIA drivers SageMaker runs on them, and the checks that a model fits
one of them and that its image runs on the driver, before anything is deployed."""

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


@dataclass(frozen=True)
class GpuDriver:
    """An NVIDIA driver branch and the newest CUDA version it supports."""

    branch: int
    cuda: str

    def __str__(self) -> str:
        return f"driver {self.branch}, CUDA {self.cuda}"


# ProductionVariant.InferenceAmiVersion -> its driver, as botocore's SageMaker service model documents them.
INFERENCE_AMIS: dict[str, GpuDriver] = {
    "al2-ami-sagemaker-inference-gpu-2": GpuDriver(535, "12.2"),
    "al2-ami-sagemaker-inference-gpu-2-1": GpuDriver(535, "12.2"),
    "al2-ami-sagemaker-inference-gpu-3-1": GpuDriver(550, "12.4"),
    "al2023-ami-sagemaker-inference-gpu-4-1": GpuDriver(580, "13.0"),
}
# Without InferenceAmiVersion, per instance family (AWS: "Best practices to minimize interruptions during GPU
# driver upgrades"); families it does not list (ml.g6e) get no default here.
FAMILY_DEFAULT_DRIVERS: dict[str, GpuDriver] = {
    **dict.fromkeys(("ml.g4dn", "ml.g5", "ml.p4d", "ml.p4de"), GpuDriver(470, "11.4")),
    **dict.fromkeys(("ml.p5", "ml.g6"), GpuDriver(535, "12.2")),
}
# Driver 550 runs both images (CUDA 12.x on a driver >= 525); the newest al2 AMI. The al2023 one is newer still,
# but nothing here has run on it.
DEFAULT_INFERENCE_AMI = "al2-ami-sagemaker-inference-gpu-3-1"
NO_INFERENCE_AMI = "none"  # --inference-ami-version none: send no InferenceAmiVersion (the family's default)


def choose_inference_ami(model: str, instance_type: str, requested: str | None = None) -> tuple[str | None, str]:
    """The InferenceAmiVersion to send (None: none) for ``model``'s image on ``instance_type``, and a line saying
    why it runs there; ValueError naming the instance type, the AMI and the flag when its driver cannot run it."""
    spec = MODELS[model]
    chosen = requested or DEFAULT_INFERENCE_AMI
    family = instance_type.rsplit(".", 1)[0]
    if chosen == NO_INFERENCE_AMI:
        driver, what, sent = FAMILY_DEFAULT_DRIVERS.get(family), f"{family}'s default AMI", None
    elif chosen in INFERENCE_AMIS:
        driver, what, sent = INFERENCE_AMIS[chosen], chosen, chosen
    else:
        raise ValueError(f"--inference-ami-version {chosen!r} is unknown; known: "
                         f"{', '.join([*INFERENCE_AMIS, NO_INFERENCE_AMI])}")
    image = f"the {model} image (CUDA {spec.cuda_version}) needs NVIDIA driver >= {spec.min_driver}"
    if driver is None:
        raise ValueError(f"{image}, and AWS documents no default driver for {family}: name one with "
                         f"--inference-ami-version (e.g. {DEFAULT_INFERENCE_AMI})")
    if driver.branch < spec.min_driver:
        raise ValueError(f"{image}, but {instance_type} with {what} runs {driver}: the container would find no "
                         f"usable GPU; use --inference-ami-version {DEFAULT_INFERENCE_AMI} "
                         f"({INFERENCE_AMIS[DEFAULT_INFERENCE_AMI]}), or leave the flag out")
    return sent, f"GPU driver: {instance_type} with {what} runs {driver}; {image}"


def driver_table() -> str:
    """docs/deploy-sagemaker.md's table: each --inference-ami-version value, its driver, whether each image runs."""
    families: dict[GpuDriver, list[str]] = {}
    for family, driver in FAMILY_DEFAULT_DRIVERS.items():
        families.setdefault(driver, []).append(family)
    rows = [(f"`{ami}`{' (default)' if ami == DEFAULT_INFERENCE_AMI else ''}", driver)
            for ami, driver in INFERENCE_AMIS.items()]
    rows += [(f"`{NO_INFERENCE_AMI}` on {', '.join(names)}", driver) for driver, names in families.items()]
    images = [f"{name} image (CUDA {spec.cuda_version})" for name, spec in MODELS.items()]
    lines = [f"| `--inference-ami-version` | NVIDIA driver | CUDA | {' | '.join(images)} |",
             "| --- | --- | --- |" + " --- |" * len(images)]
    for label, driver in rows:
        verdicts = ["runs" if driver.branch >= spec.min_driver else "refused" for spec in MODELS.values()]
        lines.append(f"| {label} | {driver.branch} | {driver.cuda} | {' | '.join(verdicts)} |")
    return "\n".join(lines)
