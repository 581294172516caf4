"""A variant's start-up timeouts, derived from the archive it serves.

The container's ``serve`` gives up (exit 3, "models [...] not READY within N s") after the archive's
``startupTimeout`` + ``GEN3D_READY_MARGIN_S``. SageMaker's ``ContainerStartupHealthCheckTimeoutInSeconds`` must
be longer, or SageMaker fails the endpoint with a bare "did not pass the ping health check" before the container
says why. So, with the archive's own model-config.yaml:

- health check = startupTimeout + ready margin + ``HEALTH_CHECK_SLACK_S`` (the JVM start and serve's checks run
  before serve's clock starts); a flag may raise it, never lower it;
- model data download = the health-check value, and never below ``60 s + size / DOWNLOAD_FLOOR_MIB_S`` (a
  conservative S3-to-instance copy rate), so a flag cannot set a timeout the archive's size cannot meet.

SageMaker accepts 60..3600 s for both; an archive that needs more is refused, naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from gen3d.archives import ArchiveError, archive_contents, archive_name
from gen3d.sagemaker.clients import is_not_found
from gen3d.sagemaker.entrypoint import DEFAULT_READY_MARGIN_S, Archive
from gen3d.sagemaker.errors import DeployRefused, TimeoutSettingError
from gen3d.sagemaker.names import parse_s3_uri

SAGEMAKER_MIN_S, SAGEMAKER_MAX_S = 60, 3600
HEALTH_CHECK_SLACK_S = 60
DOWNLOAD_FLOOR_MIB_S = 20


@dataclass(frozen=True)
class ArchiveNeeds:
    """What the archive's model-config.yaml says about its start-up and its weights (gen3d-build-archives writes
    the handler section); ``startup_timeout_s`` and ``preset`` are None when its config was not found."""

    source: str
    startup_timeout_s: float | None
    response_timeout_s: float | None = None
    size_bytes: int | None = None
    preset: str | None = None
    demo_weights: bool | None = None  # None: the config does not say
    checkpoint_sha256: str | None = None

    def model_id_prefix(self, model: str) -> str | None:
        """How the ``model_id`` of this archive's answers starts: ``<model>/<preset>/`` and, when the archive
        records its checkpoint's digest, its first 16 hex digits; None when the preset is unknown."""
        if not self.preset:
            return None
        return f"{model}/{self.preset}/{(self.checkpoint_sha256 or '')[:16]}"

    def check_weights(self, allow_demo: bool) -> str:
        """A line saying which weights the archive holds; DeployRefused for demo (or unknown) weights unless
        ``allow_demo``."""
        if self.demo_weights is False:
            return f"weights: archive {self.source} holds the production weights of preset {self.preset}"
        if self.demo_weights:
            what = (f"archive {self.source} was built from demo weights (preset {self.preset}, random weights: its "
                    "answers mean nothing)")
            fix = "build it with --checkpoint (sam3, sam3d_body) or --pipeline-dir (sam3d)"
        else:
            what = f"cannot tell whether {self.source} holds demo weights (its model-config.yaml was not read)"
            fix = "deploy an archive directory built by gen3d-build-archives"
        if not allow_demo:
            raise DeployRefused(f"refusing to deploy: {what}; {fix}, or pass --allow-demo-weights")
        return f"WARNING: {what}; deployed anyway (--allow-demo-weights)"


@dataclass(frozen=True)
class Timeouts:
    """The variant's timeouts and how they were reached."""

    health_check_s: int
    download_s: int
    explanation: str


def local_needs(archive: Path, model: str) -> ArchiveNeeds:
    """Read model-config.yaml of a local archive (directory or .mar) that will serve ``model``."""
    if archive_name(archive) != model:
        raise TimeoutSettingError(
            f"archive {archive} is named {archive_name(archive)!r}, but the container serves GEN3D_MODEL={model} "
            f"and looks for {model}.mar or {model}/ in /opt/ml/model; rename it or pick --model")
    if not archive.exists():
        raise TimeoutSettingError(f"model archive not found: {archive}")
    if archive.is_dir() and not (archive / "MAR-INF").is_dir():
        raise TimeoutSettingError(f"{archive} is not a model archive directory (no MAR-INF/, so serve would not "
                                  "find it); build it with gen3d-build-archives")
    try:
        _, config = archive_contents(archive)
    except (ArchiveError, OSError) as err:
        raise TimeoutSettingError(f"cannot read the archive's model-config.yaml: {err}") from err
    files = [archive] if archive.is_file() else [p for p in archive.rglob("*") if p.is_file()]
    return _needs(str(archive), Archive(model, archive, config), sum(p.stat().st_size for p in files))


def s3_needs(s3: Any, model_data_s3_uri: str, model: str) -> ArchiveNeeds:
    """Read ``<prefix><model>/model-config.yaml`` under an S3 model-data prefix (an uncompressed archive, as
    the deploy uploads it); a ``<model>.mar`` there is not opened (startup_timeout_s None)."""
    bucket, prefix = parse_s3_uri(model_data_s3_uri.rstrip("/") + "/")
    folder = f"{prefix}{model}/"
    size, config_key, token = 0, None, None
    while True:  # list_objects_v2 pages by hand: the dry-run client has no paginators
        page = s3.list_objects_v2(Bucket=bucket, Prefix=folder, **({"ContinuationToken": token} if token else {}))
        for obj in page.get("Contents", []):
            size += int(obj.get("Size", 0))
            config_key = obj["Key"] if obj["Key"] == f"{folder}model-config.yaml" else config_key
        token = page.get("NextContinuationToken")
        if not token:
            break
    where = f"s3://{bucket}/{folder}model-config.yaml"
    if config_key is None:
        return ArchiveNeeds(f"{where} (not found; a {model}.mar is not opened)", None)
    try:
        config = yaml.safe_load(s3.get_object(Bucket=bucket, Key=config_key)["Body"].read()) or {}
    except (ClientError, yaml.YAMLError) as err:
        if isinstance(err, ClientError) and not is_not_found(err):
            raise
        return ArchiveNeeds(f"{where} (unreadable: {err})", None)
    return _needs(where, Archive(model, Path(folder), config), size)


def _needs(source: str, archive: Archive, size: int) -> ArchiveNeeds:
    handler = archive.config.get("handler") or {}
    demo = handler.get("demo_weights")
    return ArchiveNeeds(source, archive.startup_timeout, _number(archive.config.get("responseTimeout")), size,
                        preset=str(handler["preset"]) if handler.get("preset") else None,
                        demo_weights=demo if isinstance(demo, bool) else None,
                        checkpoint_sha256=str(handler.get("checkpoint_sha256") or "") or None)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _in_range(name: str, value: int) -> int:
    if not SAGEMAKER_MIN_S <= value <= SAGEMAKER_MAX_S:
        raise TimeoutSettingError(f"{name} {value} s is outside SageMaker's {SAGEMAKER_MIN_S}..{SAGEMAKER_MAX_S} s")
    return value


def derive_timeouts(
    needs: ArchiveNeeds,
    *,
    ready_margin_s: int = DEFAULT_READY_MARGIN_S,
    health_check_s: int | None = None,
    download_s: int | None = None,
) -> Timeouts:
    """Timeouts for the archive ``needs`` describes; flags may raise them, never lower them below the need."""
    if ready_margin_s < 0:
        raise TimeoutSettingError(f"GEN3D_READY_MARGIN_S must be >= 0, got {ready_margin_s}")
    if needs.startup_timeout_s is None:
        if health_check_s is None or download_s is None:
            raise TimeoutSettingError(
                f"cannot derive the start-up timeouts: no model-config.yaml at {needs.source}; give "
                "--health-check-timeout and --download-timeout (seconds, 60..3600)")
        return Timeouts(_in_range("--health-check-timeout", health_check_s),
                        _in_range("--download-timeout", download_s),
                        f"from the flags (the archive's startupTimeout is unknown: {needs.source})")
    startup = math.ceil(needs.startup_timeout_s)
    need = startup + ready_margin_s + HEALTH_CHECK_SLACK_S
    reason = (f"startupTimeout {startup} s + GEN3D_READY_MARGIN_S {ready_margin_s} s + "
              f"{HEALTH_CHECK_SLACK_S} s slack = {need} s")
    if need > SAGEMAKER_MAX_S:
        raise TimeoutSettingError(
            f"archive {needs.source} needs a health-check timeout of {reason}, above SageMaker's "
            f"{SAGEMAKER_MAX_S} s limit; rebuild it with a smaller --startup-timeout")
    if health_check_s is not None and health_check_s < need:
        raise TimeoutSettingError(
            f"--health-check-timeout {health_check_s} s is below what archive {needs.source} needs ({reason}): "
            "SageMaker would stop the container before it can report why its model did not load")
    health = _in_range("--health-check-timeout", health_check_s or need)
    size_need = SAGEMAKER_MIN_S + math.ceil((needs.size_bytes or 0) / (DOWNLOAD_FLOOR_MIB_S * 2**20))
    if size_need > SAGEMAKER_MAX_S:
        raise TimeoutSettingError(
            f"archive {needs.source} is {(needs.size_bytes or 0) / 2**30:.1f} GiB: copying it at "
            f"{DOWNLOAD_FLOOR_MIB_S} MiB/s takes longer than SageMaker's {SAGEMAKER_MAX_S} s download limit")
    if download_s is not None and download_s < size_need:
        raise TimeoutSettingError(
            f"--download-timeout {download_s} s is below the {size_need} s archive {needs.source} "
            f"({(needs.size_bytes or 0) / 2**30:.2f} GiB) needs at {DOWNLOAD_FLOOR_MIB_S} MiB/s")
    download = _in_range("--download-timeout", download_s or max(health, size_need))
    return Timeouts(health, download, f"archive {needs.source}: {reason}")


def invocation_timeout(needs: ArchiveNeeds | None, default_response_s: float, margin_s: int = 60) -> int:
    """An async InvocationTimeoutSeconds for one request: the archive's responseTimeout (TorchServe's own limit
    per batch) plus a margin, within SageMaker's 1..3600 s."""
    response = needs.response_timeout_s if needs and needs.response_timeout_s else default_response_s
    return max(1, min(SAGEMAKER_MAX_S, math.ceil(response) + margin_s))
