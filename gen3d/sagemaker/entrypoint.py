"""The container's ``serve`` entrypoint: check the model directory, start TorchServe, and exit when a
model cannot become READY, so SageMaker never sees an "InService" endpoint without a loaded model.

Environment: ``SM_MODEL_DIR`` (default /opt/ml/model), ``SAGEMAKER_BIND_TO_PORT`` (default 8080),
``GEN3D_MODEL`` (serve only this archive of the directory; default: every archive found),
``GEN3D_MANAGEMENT_PORT`` / ``GEN3D_METRICS_PORT`` (127.0.0.1 ports, default 8081 / 8082),
``GEN3D_GRPC_PORTS`` (TorchServe's two gRPC ports on 127.0.0.1, unused by SageMaker, default ``7070,7071``),
``GEN3D_READY_MARGIN_S`` (seconds beyond the largest startupTimeout before giving up, default 60),
``GEN3D_LOG_DIR`` (TorchServe's logs; default a temporary folder), ``GEN3D_HOME`` (the folder holding
config.properties and metrics.yaml; default: the checkout gen3d was imported from).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gen3d.archives import ArchiveError, archive_contents, archive_name, archives_in
from gen3d.serving.buckets import ENV as BUCKETS_ENV
from gen3d.serving.buckets import BucketPolicy
from gen3d.torchserve import runner

log = logging.getLogger("serve")
# Seconds beyond the largest startupTimeout before serve gives up (GEN3D_READY_MARGIN_S); the deploy's
# ContainerStartupHealthCheckTimeoutInSeconds is derived from it (gen3d/sagemaker/timeouts.py).
DEFAULT_READY_MARGIN_S = 60


@dataclass
class Archive:
    """One model archive found in the model directory."""

    name: str
    path: Path
    config: dict

    @property
    def startup_timeout(self) -> float:
        return float(self.config.get("startupTimeout", 120))

    @property
    def gpu_memory_gib(self) -> float:
        return float((self.config.get("handler") or {}).get("min_gpu_memory_gib", 0))


def find_archives(model_dir: Path, only: str | None = None) -> list[Archive]:
    """Every archive in ``model_dir`` (``NAME.mar`` or ``NAME/MAR-INF``), each checked for its checkpoint
    and assets; raises :class:`ArchiveError` naming what is missing (the one line the container prints)."""
    if not model_dir.is_dir():
        raise ArchiveError(f"model directory {model_dir} does not exist (looked for model archives there)")
    archives = []
    for path in archives_in(model_dir):
        name = archive_name(path)
        if only and name != only:
            continue
        names, config = archive_contents(path)
        handler = config.get("handler") or {}
        needed = [handler.get("checkpoint"), *(handler.get("assets") or [])]
        for wanted in needed:
            if not wanted:
                raise ArchiveError(f"{path}/model-config.yaml names no handler.checkpoint")
            if wanted not in names:
                raise ArchiveError(f"{path} lacks {wanted} (named by its model-config.yaml)")
        archives.append(Archive(name=name, path=path, config=config))
    if not archives:
        wanted = f"{only}.mar or {only}/MAR-INF" if only else "*.mar or */MAR-INF"
        raise ArchiveError(f"no model archive in {model_dir} (looked for {wanted})")
    return archives


def gpu_inventory() -> list[dict]:
    """GPUs as nvgpu reports them (index, type, mem_total in MiB); empty when none is visible."""
    try:
        import nvgpu

        return list(nvgpu.gpu_info())
    except Exception as err:  # noqa: BLE001 - no driver/nvidia-smi means no GPU; logged, not hidden
        log.info("no NVIDIA GPU visible (%s: %s); models run on the CPU", err.__class__.__name__, err)
        return []


def check_gpu_memory(archives: list[Archive], gpus: list[dict]) -> None:
    """Logs the GPU inventory and warns for every model that needs more memory than a GPU has."""
    for gpu in gpus:
        log.info(
            "GPU %s: %s, %s MiB total, %s MiB used",
            gpu.get("index"),
            gpu.get("type"),
            gpu.get("mem_total"),
            gpu.get("mem_used"),
        )
    largest_gib = max((float(g.get("mem_total", 0)) / 1024 for g in gpus), default=0.0)
    for archive in archives:
        need = archive.gpu_memory_gib
        if gpus and need > largest_gib:
            log.warning(
                "model %s needs >= %.0f GiB of GPU memory; the largest GPU here has %.1f GiB",
                archive.name,
                need,
                largest_gib,
            )


def run(environ: dict[str, str] | None = None) -> int:
    """Checks, starts and watches TorchServe; returns the process exit code."""
    env = dict(os.environ if environ is None else environ)
    model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
    port = int(env.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    try:
        archives = find_archives(model_dir, env.get("GEN3D_MODEL") or None)
    except ArchiveError as err:
        log.error("cannot serve: %s", err)
        return 2
    check_gpu_memory(archives, gpu_inventory())
    buckets = BucketPolicy.from_env(env)
    if not buckets.patterns:
        log.error(
            "cannot serve: %s is empty; set it to the buckets requests may use (gen3d-deploy --allowed-buckets)",
            BUCKETS_ENV,
        )
        return 2
    log.info("S3 buckets requests may use: %s", buckets.describe())

    try:
        home = runner.config_home(env)
    except FileNotFoundError as err:
        log.error("cannot serve: %s", err)
        return 2
    grpc_ports = [p.strip() for p in env.get("GEN3D_GRPC_PORTS", "7070,7071").split(",")]
    if len(grpc_ports) != 2 or not all(p.isdigit() for p in grpc_ports):
        log.error("cannot serve: GEN3D_GRPC_PORTS must be two port numbers, got %r", env.get("GEN3D_GRPC_PORTS"))
        return 2
    work = Path(tempfile.mkdtemp(prefix="gen3d-serve-"))
    config = runner.write_config(
        home / "config.properties",
        work / "config.properties",
        {
            "inference_address": f"http://0.0.0.0:{port}",
            "management_address": f"http://127.0.0.1:{env.get('GEN3D_MANAGEMENT_PORT', '8081')}",
            "metrics_address": f"http://127.0.0.1:{env.get('GEN3D_METRICS_PORT', '8082')}",
            "grpc_inference_port": grpc_ports[0],
            "grpc_management_port": grpc_ports[1],
            "model_store": str(model_dir),
        },
    )
    models = ",".join(f"{a.name}={a.path.name}" for a in archives)
    server = runner.start(config, model_dir, models, Path(env.get("GEN3D_LOG_DIR", work / "logs")), env)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    timeout = max(a.startup_timeout for a in archives) + float(env.get("GEN3D_READY_MARGIN_S", DEFAULT_READY_MARGIN_S))
    try:
        server.wait_ready([a.name for a in archives], timeout)
    except (RuntimeError, TimeoutError) as err:
        log.error("cannot serve: %s; stopping so the endpoint fails instead of answering without a model", err)
        server.stop()
        return 3
    log.info("serving %s on port %d", ", ".join(a.name for a in archives), port)
    return server.process.wait()
