"""S3 access for request inputs and outputs (standard AWS environment: credentials chain, region,
``AWS_ENDPOINT_URL_S3``), and the output key layout."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gen3d.errors import Forbidden, InvalidField, NotFound, StorageError, TooLarge
from gen3d.serving.buckets import BucketPolicy
from gen3d.serving.limits import MAX_ID_CHARS, MAX_INPUT_BYTES, MAX_KEY_BYTES

log = logging.getLogger(__name__)

SAFE_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID_CHARS - 1}}}$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DEFAULT_OUTPUT_PREFIX = "gen3d-outputs/{user_id}/{session_id}"


@dataclass(frozen=True)
class S3Location:
    """One object: bucket and key."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def check_bucket(bucket: object, field: str = "bucket") -> str:
    """``bucket`` if it is a valid S3 bucket name; 400 naming ``field`` otherwise."""
    if not isinstance(bucket, str) or not BUCKET_NAME.match(bucket):
        raise InvalidField(field, "must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    return bucket


def check_key(key: object, field: str) -> str:
    """``key`` if it is a plausible S3 object key; 400 naming ``field`` otherwise.

    No segment may be ``.`` or ``..``: botocore sends them as they are in the URL path (``/bucket/a/../b``), so
    a proxy or S3-compatible store that resolves dot segments would serve another object, or with path-style
    addressing another bucket, than the one the allow-list checked.
    """
    rule = f"must be a non-empty S3 key of at most {MAX_KEY_BYTES} bytes, not starting with '/', no '.' or '..' segment"
    if not isinstance(key, str) or not key or key.startswith("/"):
        raise InvalidField(field, rule)
    try:
        size = len(key.encode())
    except UnicodeEncodeError as err:
        raise InvalidField(field, "must be UTF-8 text (no lone surrogates)") from err
    if size > MAX_KEY_BYTES or any(part in (".", "..") for part in key.split("/")):
        raise InvalidField(field, rule)
    return key


def check_id(value: object, field: str) -> str:
    """A user or session id usable as one path segment; 400 naming ``field`` otherwise."""
    if not isinstance(value, str) or not SAFE_ID.match(value) or value in (".", ".."):
        raise InvalidField(
            field, f"must be 1-{MAX_ID_CHARS} characters of letters, digits, '.', '_', '-', not starting with '.'"
        )
    return value


def prefix_template(config: dict) -> str:
    """The output prefix template: ``GEN3D_OUTPUT_PREFIX``, else the archive's ``handler.output_prefix``."""
    return os.environ.get("GEN3D_OUTPUT_PREFIX") or config.get("output_prefix") or DEFAULT_OUTPUT_PREFIX


def output_prefix(template: str, user_id: object, session_id: object) -> str:
    """The request's output prefix from the server's template; ids are required and checked so no key can
    leave it."""
    for name, value in (("user_id", user_id), ("session_id", session_id)):
        if value is None:
            raise InvalidField(name, "required when outputs go to S3 (it names the output prefix)")
    prefix = template.format(user_id=check_id(user_id, "user_id"), session_id=check_id(session_id, "session_id"))
    return prefix.strip("/")


def output_key(prefix: str, name: str) -> str:
    """``prefix/name``, refusing any name that could climb out of ``prefix``."""
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"unsafe output name {name!r}")
    return f"{prefix}/{name}"


class S3Store:
    """Reads inputs and writes outputs in the buckets the allow-list names; maps S3 errors to answers that name
    the request field."""

    def __init__(self, client=None, buckets: BucketPolicy | None = None) -> None:
        self.buckets = buckets or BucketPolicy.from_env()
        self.client = client or boto3.client(
            "s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=16)
        )

    def get_bytes(self, loc: S3Location, field: str, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
        """The object's bytes; 404/403/413 naming ``field`` when it is missing, forbidden or too large."""
        self.buckets.check(loc.bucket, "bucket")
        try:
            obj = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
            if obj.get("ContentLength", 0) > max_bytes:
                raise TooLarge(field, f"{loc.uri} is larger than {max_bytes} bytes")
            return obj["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(field, f"{loc.uri} does not exist") from err
            if code == "NoSuchBucket":
                raise NotFound("bucket", f"bucket {loc.bucket} does not exist") from err
            if code in ("AccessDenied", "403", "AllAccessDisabled"):
                raise Forbidden(field, f"access to {loc.uri} denied") from err
            raise StorageError(field, f"reading {loc.uri} failed ({code or 'S3 error'})") from err
        except BotoCoreError as err:
            raise StorageError(field, f"reading {loc.uri} failed ({err.__class__.__name__})") from err

    def put_bytes(
        self, loc: S3Location, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        """Writes ``data`` to ``loc`` (boto3 retries transient failures); 502 when S3 still fails."""
        self.buckets.check(loc.bucket, "output_bucket")
        try:
            self.client.put_object(
                Bucket=loc.bucket, Key=loc.key, Body=data, ContentType=content_type, Metadata=metadata or {}
            )
        except (BotoCoreError, ClientError) as err:
            raise StorageError("output_bucket", f"writing {loc.uri} failed ({err.__class__.__name__})") from err
