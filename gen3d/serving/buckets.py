"""Which S3 buckets requests may name: ``GEN3D_ALLOWED_BUCKETS``, comma-separated bucket names or globs
(``gen3d-*``). The server reads and writes S3 with its own role, so without this a caller could make it read
objects from, or plant files in, any bucket that role reaches (a confused deputy).

Bucket names are global: anyone can create ``gen3d-evil`` in their own account, and a glob would allow it. So
every S3 call also names the account that must own the bucket (:func:`bucket_owner`), and S3 refuses the call
(403) when another account owns it."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.errors import Forbidden, StartupError

ENV = "GEN3D_ALLOWED_BUCKETS"
OWNER_ENV = "GEN3D_BUCKET_OWNER"
ACCOUNT_ID = re.compile(r"^[0-9]{12}$")


@dataclass(frozen=True)
class BucketPolicy:
    """The allow-list; empty allows no bucket at all."""

    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, value: str | None) -> BucketPolicy:
        """The allow-list a ``GEN3D_ALLOWED_BUCKETS`` value (or a flag taking one) spells: comma-separated, blanks
        dropped."""
        return cls(tuple(p.strip() for p in (value or "").split(",") if p.strip()))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BucketPolicy:
        return cls.parse((os.environ if env is None else env).get(ENV))

    def allows(self, bucket: str) -> bool:
        return any(fnmatch.fnmatchcase(bucket, pattern) for pattern in self.patterns)

    def check(self, bucket: str, field: str) -> str:
        """``bucket``, or 403 naming ``field`` when it is not on the allow-list."""
        if not self.allows(bucket):
            raise Forbidden(field, f"bucket {bucket} is not one this server may use ({ENV})")
        return bucket

    def describe(self) -> str:
        return ", ".join(self.patterns) if self.patterns else "none (every request naming a bucket answers 403)"


def bucket_owner(env: Mapping[str, str], sts) -> str:
    """The account that must own every bucket the server uses: ``GEN3D_BUCKET_OWNER``, else the account of the
    server's own credentials (``sts``: an STS client, asked once at start-up); a :class:`StartupError` naming
    the variable when neither gives a 12-digit account id."""
    given = (env.get(OWNER_ENV) or "").strip()
    if given:
        if not ACCOUNT_ID.match(given):
            raise StartupError(f"{OWNER_ENV} must be a 12-digit AWS account id, got {given!r}")
        return given
    try:
        return sts.get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as err:
        raise StartupError(
            f"cannot tell which account must own the buckets of {ENV}: sts:GetCallerIdentity failed ({err}); "
            f"set {OWNER_ENV} to that account's id"
        ) from err
