"""S3 access for request inputs and outputs (standard AWS environment: credentials chain, region,
``AWS_ENDPOINT_URL_S3``), and the output key layout.

Every S3 call names the account that must own the bucket (``ExpectedBucketOwner``, see
:func:`gen3d.serving.buckets.bucket_owner`) and ends within :class:`S3Timeouts`' deadline, so that an S3 that
accepts connections and never answers costs a request a 504, never the worker its ``responseTimeout``."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from gen3d.errors import Forbidden, InvalidField, NotFound, ServingError, StorageError, StorageTimeout, TooLarge
from gen3d.serving.buckets import BucketPolicy, bucket_owner
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


@dataclass(frozen=True)
class S3Timeouts:
    """How long one S3 call may take: ``connect_s`` per connection, ``read_s`` per wait for data, ``attempts``
    tries in all (botocore's standard retry mode), and ``deadline_s`` for the whole call: an S3 that never answers
    is given up after :attr:`unanswered_s`, and a read's body transfer counts against it too. botocore's defaults
    (60 s connect, 60 s read, several attempts) could hold a batch past TorchServe's ``responseTimeout`` (sam3
    300 s), which kills the worker."""

    connect_s: float = 3.0
    read_s: float = 10.0
    attempts: int = 2
    deadline_s: float = 30.0

    @property
    def retry_wait_s(self) -> float:
        """The most botocore's standard mode waits between attempts: 2**(n - 1) s before retry n at its throttling
        scale (1 s); after a time-out it waits at most 50 ms times that."""
        return float(sum(2 ** (n - 1) for n in range(1, self.attempts)))

    @property
    def unanswered_s(self) -> float:
        """The longest a call can wait for an S3 that never answers: every attempt times out."""
        return self.attempts * (self.connect_s + self.read_s) + self.retry_wait_s

    def config(self) -> Config:
        return Config(
            connect_timeout=self.connect_s,
            read_timeout=self.read_s,
            retries={"mode": "standard", "total_max_attempts": self.attempts},
            max_pool_connections=16,
        )


S3_TIMEOUTS = S3Timeouts()
READ_CHUNK_BYTES = 256 * 1024  # the body is read in chunks so the deadline is checked as it arrives


def storage_failure(
    err: Exception, field: str, bucket_field: str, action: str, loc: S3Location, timeouts: S3Timeouts
) -> ServingError:
    """The answer for an S3 call that failed: 504 when S3 did not answer in time, 404/403 for a missing or
    forbidden object (an ``ExpectedBucketOwner`` mismatch is S3's 403), 404 naming ``bucket_field`` for a
    missing bucket, else 502; the others name ``field``."""
    if isinstance(err, (ConnectTimeoutError, ReadTimeoutError)):
        waited = f"{timeouts.read_s:g} s, {timeouts.attempts} tries"
        return StorageTimeout(field, f"{action} {loc.uri} timed out: S3 did not answer within {waited}")
    code = err.response.get("Error", {}).get("Code", "") if isinstance(err, ClientError) else ""
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound(field, f"{loc.uri} does not exist")
    if code == "NoSuchBucket":
        return NotFound(bucket_field, f"bucket {loc.bucket} does not exist")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return Forbidden(
            field,
            f"{action} {loc.uri} denied: the bucket belongs to another account than the server's (GEN3D_BUCKET_OWNER), "
            "or the server's credentials may not use it",
        )
    return StorageError(field, f"{action} {loc.uri} failed ({code or err.__class__.__name__})")


class S3Store:
    """Reads inputs and writes outputs in the buckets the allow-list names, owned by ``owner`` (every call
    passes it as ``ExpectedBucketOwner``); maps S3 errors to answers that name the request field."""

    def __init__(self, client, buckets: BucketPolicy, owner: str | None, timeouts: S3Timeouts = S3_TIMEOUTS) -> None:
        if buckets.patterns and not owner:
            raise ValueError("a store that may use buckets needs the account that must own them")
        self.client = client
        self.buckets = buckets
        self.owner = owner
        self.timeouts = timeouts

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, sts=None) -> S3Store:
        """The store the environment describes: ``GEN3D_ALLOWED_BUCKETS``, and their owner (``GEN3D_BUCKET_OWNER``,
        else the account of the server's credentials from ``sts``); no STS call when no bucket is allowed."""
        env = os.environ if env is None else env
        buckets = BucketPolicy.from_env(env)
        owner = None
        if buckets.patterns:
            owner = bucket_owner(env, sts or boto3.client("sts", config=S3_TIMEOUTS.config()))
        return cls(boto3.client("s3", config=S3_TIMEOUTS.config()), buckets, owner)

    def describe(self) -> str:
        owned = f" (owned by account {self.owner})" if self.owner else ""
        return self.buckets.describe() + owned

    def get_bytes(self, loc: S3Location, field: str, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
        """The object's bytes; 404/403/413 naming ``field`` when it is missing, forbidden or too large, 504 when
        S3 does not answer (or send it) within the deadline."""
        self.buckets.check(loc.bucket, "bucket")
        started = time.monotonic()
        try:
            obj = self.client.get_object(Bucket=loc.bucket, Key=loc.key, ExpectedBucketOwner=self.owner)
            if obj.get("ContentLength", 0) > max_bytes:
                raise TooLarge(field, f"{loc.uri} is larger than {max_bytes} bytes")
            chunks, size = [], 0
            for chunk in obj["Body"].iter_chunks(READ_CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(field, f"{loc.uri} is larger than {max_bytes} bytes")
                if time.monotonic() - started > self.timeouts.deadline_s:
                    raise StorageTimeout(
                        field, f"reading {loc.uri} took longer than {self.timeouts.deadline_s:g} s; S3 is too slow"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        except (BotoCoreError, ClientError) as err:
            raise storage_failure(err, field, "bucket", "reading", loc, self.timeouts) from err

    def put_bytes(
        self, loc: S3Location, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        """Writes ``data`` to ``loc`` (boto3 retries transient failures); 403/404/504/502 naming ``output_bucket``
        when S3 refuses, lacks the bucket, does not answer in time or still fails."""
        self.buckets.check(loc.bucket, "output_bucket")
        try:
            self.client.put_object(
                Bucket=loc.bucket,
                Key=loc.key,
                Body=data,
                ContentType=content_type,
                Metadata=metadata or {},
                ExpectedBucketOwner=self.owner,
            )
        except (BotoCoreError, ClientError) as err:
            raise storage_failure(err, "output_bucket", "output_bucket", "writing", loc, self.timeouts) from err
