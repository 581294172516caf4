"""Uploading a model archive to S3 uncompressed, with progress."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm


@dataclass
class UploadResult:
    """Where an archive went: the S3 prefix URI (ends with '/'), keys and byte count."""

    s3_uri: str
    keys: list[str]
    total_bytes: int


def upload_model_archive(
    s3: Any,
    archive: str | Path,
    bucket: str,
    prefix: str,
    *,
    progress: bool = True,
    tagging: str | None = None,
    kms_key_id: str | None = None,
) -> UploadResult:
    """Upload a model archive uncompressed under ``s3://bucket/prefix/``.

    A directory (``torch-model-archiver --archive-format no-archive`` output) keeps its
    own name as the first path level; a ``.mar`` file is uploaded as is.  SageMaker then
    copies ``prefix/<name>[.mar]`` to ``/opt/ml/model/<name>[.mar]``.  ``tagging`` (S3's
    ``key=value&...`` form) tags every object; ``kms_key_id`` encrypts them with SSE-KMS.
    """
    root = Path(archive)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    elif root.is_file():
        files = [root]
    else:
        raise FileNotFoundError(f"model archive not found: {root}")
    if not files:
        raise FileNotFoundError(f"model archive directory is empty: {root}")
    prefix = prefix.strip("/")
    keys = [f"{prefix}/{p.relative_to(root.parent).as_posix()}".lstrip("/") for p in files]
    total = sum(p.stat().st_size for p in files)
    extra: dict[str, str] = {"Tagging": tagging} if tagging else {}
    if kms_key_id:
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"upload {root.name}", disable=not progress) as bar:
        for path, key in zip(files, keys, strict=True):
            s3.upload_file(Filename=str(path), Bucket=bucket, Key=key, Callback=bar.update, ExtraArgs=extra or None)
    return UploadResult(f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/", keys, total)
