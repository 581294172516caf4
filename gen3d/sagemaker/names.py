"""Names of the resources the control plane makes: SageMaker names, S3 URIs, log groups, scaling names."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
SUFFIX_FMT = "%Y%m%d-%H%M%S"
SUFFIX_RE = r"-\d{8}-\d{6}"
ECR_IMAGE_RE = re.compile(
    r"^(?P<registry>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def parse_image_uri(uri: str) -> dict[str, str | None] | None:
    """``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY[:TAG][@DIGEST]`` -> its parts (registry, region,
    repository, tag, digest); None when it is not an ECR image URI."""
    match = ECR_IMAGE_RE.match(uri)
    return match.groupdict() if match else None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key)."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if not match:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return match.group(1), match.group(2)


def validate_name(name: str) -> str:
    """Check a SageMaker resource name (1-63 chars, alphanumerics and hyphens)."""
    if not NAME_RE.match(name):
        raise ValueError(f"invalid SageMaker name {name!r}: 1-63 chars of [a-zA-Z0-9-], "
                         "starting and ending alphanumeric")
    return name


def default_endpoint_name(model: str, mode: str) -> str:
    """``<model>-<mode>`` with the model name's underscores as hyphens, which SageMaker names do not allow
    (sam3d_body -> sam3d-body-realtime)."""
    return validate_name(f"{model.replace('_', '-')}-{mode}")


def name_base(base: str) -> str:
    """``base`` in lower case (as SageMaker writes names in ARNs, where teardown reads them), cut to 47 characters
    to leave room for "-YYYYmmdd-HHMMSS"; a longer one ends in a hash of all of it, so two endpoints whose names
    share 47 characters never share model or config names."""
    base = base.lower()
    if len(base) <= 63 - 16:
        return base
    return f"{base[:40].rstrip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:6]}"


def unique_name(base: str, now: datetime | None = None) -> str:
    """``<name_base(base)>-YYYYmmdd-HHMMSS`` (UTC), within SageMaker's 63-character limit."""
    stamp = (now or datetime.now(UTC)).strftime(SUFFIX_FMT)
    return validate_name(f"{name_base(base)}-{stamp}")


def log_group(endpoint_name: str) -> str:
    """CloudWatch log group of an endpoint's containers."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"


def scaling_names(endpoint_name: str, variant_name: str = "AllTraffic") -> dict[str, str]:
    """Resource id and the policy / alarm names autoscaling uses for an endpoint."""
    return {
        "resource_id": f"endpoint/{endpoint_name}/variant/{variant_name}",
        "target_policy": f"{endpoint_name}-backlog-target-tracking",
        "step_policy": f"{endpoint_name}-scale-out-from-zero",
        "invocations_policy": f"{endpoint_name}-invocations-target-tracking",
        "alarm": f"{endpoint_name}-has-backlog-without-capacity",
    }


def alarm_names(endpoint_name: str) -> dict[str, str]:
    """The failure alarms of an endpoint, by kind: deploy creates those of its mode, teardown looks for all."""
    return {
        "invocation_5xx": f"{endpoint_name}-invocation-5xx-errors",
        "model_errors": f"{endpoint_name}-invocation-model-errors",
        "async_failures": f"{endpoint_name}-invocation-failures",
        "notification_failures": f"{endpoint_name}-notification-failures",
        "oldest_request": f"{endpoint_name}-oldest-request-age",
    }
