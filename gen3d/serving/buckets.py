"""Which S3 buckets requests may name: ``GEN3D_ALLOWED_BUCKETS``, comma-separated bucket names or globs
(``gen3d-*``). The server reads and writes S3 with its own role, so without this a caller could make it read
objects from, or plant files in, any bucket that role reaches (a confused deputy)."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from gen3d.errors import Forbidden

ENV = "GEN3D_ALLOWED_BUCKETS"


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
