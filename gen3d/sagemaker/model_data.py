"""Superseded model data: the prefixes earlier deploys uploaded, deleted by teardown but for the current one and
the one before it (so the endpoint can be brought back with ``gen3d-deploy --model-data-s3``).

Each deploy uploads its archive to a fresh ``<prefix>/model/<config name>/``, each object tagged
``gen3d:endpoint=<endpoint name>``. Teardown reads which prefixes the endpoint's models used, lists their
``.../model/`` folders, and deletes every prefix there whose objects carry this endpoint's tag, except the
current model's and the previous deployment's (the newest other model an endpoint config served; a model whose
config failed never served, and an upload whose model failed has none). Data a deploy did not upload
(``--model-data-s3`` elsewhere) carries no tag and is never touched; neither is another endpoint's data in a
shared folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from botocore.exceptions import ClientError

from gen3d.sagemaker.clients import describe_or_none, say
from gen3d.sagemaker.names import parse_s3_uri
from gen3d.sagemaker.tags import object_tagged_for

DELETE_BATCH = 1000  # DeleteObjects' limit


@dataclass(frozen=True)
class ModelData:
    """A model and the S3 prefix it serves (None: not an S3 prefix, e.g. a .tar.gz or no data)."""

    model: str
    created: datetime
    s3_prefix: str | None


def describe_model_data(sm: Any, model: str) -> ModelData | None:
    """What ``model`` serves, or None when it is gone."""
    desc = describe_or_none(sm.describe_model, ModelName=model)
    if desc is None:
        return None
    container = desc.get("PrimaryContainer", {})
    uri = container.get("ModelDataSource", {}).get("S3DataSource", {}).get("S3Uri")
    return ModelData(model, desc["CreationTime"], uri if uri and uri.endswith("/") else None)


def kept_prefixes(models: list[ModelData], current: list[str], served: list[str]) -> set[str]:
    """The current models' prefixes (``current``: the endpoint's; when it is gone, the newest ``served`` model's)
    and the newest other ``served`` model's."""
    newest_first = sorted(
        (m for m in models if m.s3_prefix and m.model in served), key=lambda m: (m.created, m.model), reverse=True
    )
    names = set(current) or {m.model for m in newest_first[:1]}
    kept = {m.s3_prefix for m in models if m.model in names and m.s3_prefix}
    previous = next((m.s3_prefix for m in newest_first if m.s3_prefix not in kept), None)
    return {p for p in (*kept, previous) if p}


def child_prefixes(s3: Any, folder_uri: str) -> list[str]:
    """The ``s3://bucket/folder/<child>/`` prefixes directly under ``folder_uri``."""
    bucket, folder = parse_s3_uri(folder_uri)
    children: list[str] = []
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": folder, "Delimiter": "/"}
    while True:
        page = s3.list_objects_v2(**params)
        children += [f"s3://{bucket}/{p['Prefix']}" for p in page.get("CommonPrefixes", [])]
        if not page.get("NextContinuationToken"):
            return children
        params["ContinuationToken"] = page["NextContinuationToken"]


def prefix_keys(s3: Any, prefix_uri: str) -> list[str]:
    """Every key under ``prefix_uri``."""
    bucket, prefix = parse_s3_uri(prefix_uri)
    keys: list[str] = []
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = s3.list_objects_v2(**params)
        keys += [obj["Key"] for obj in page.get("Contents", [])]
        if not page.get("NextContinuationToken"):
            return keys
        params["ContinuationToken"] = page["NextContinuationToken"]


def delete_prefix(s3: Any, prefix_uri: str, keys: list[str]) -> None:
    """Delete ``keys`` (all under ``prefix_uri``), a DeleteObjects batch at a time; raise on any refusal."""
    bucket, _ = parse_s3_uri(prefix_uri)
    for start in range(0, len(keys), DELETE_BATCH):
        batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors", [])
        if errors:
            first = errors[0]
            raise ClientError(
                {
                    "Error": {
                        "Code": first.get("Code", "DeleteObjects"),
                        "Message": f"{len(errors)} objects under {prefix_uri} not deleted, e.g. "
                        f"{first.get('Key')}: {first.get('Message')}",
                    }
                },
                "DeleteObjects",
            )


def prune_model_data(
    s3: Any,
    endpoint_name: str,
    models: list[ModelData],
    *,
    current: list[str],
    served: list[str],
    out: IO[str] | None = None,
) -> list[str]:
    """Delete the endpoint's superseded model-data prefixes (see the module's docstring): ``models`` are the
    endpoint's, ``current`` those it served last, ``served`` those any of its endpoint configs served. Returns the
    prefixes deleted."""
    kept = kept_prefixes(models, current, served)
    folders = sorted({p.rstrip("/").rsplit("/", 1)[0] + "/" for m in models if (p := m.s3_prefix)})
    deleted: list[str] = []
    for folder in (f for f in folders if f.endswith("/model/")):  # the deploy's layout: <prefix>/model/<name>/
        for prefix in child_prefixes(s3, folder):
            if prefix in kept:
                continue
            keys = prefix_keys(s3, prefix)
            bucket = parse_s3_uri(prefix)[0]
            if keys and object_tagged_for(s3, f"s3://{bucket}/{keys[0]}", endpoint_name):
                delete_prefix(s3, prefix, keys)
                say(out, f"model data {prefix}: deleted ({len(keys)} objects, superseded)")
                deleted.append(prefix)
    for prefix in sorted(kept):
        say(out, f"model data {prefix}: kept (current or previous)")
    return deleted
