"""Build an image target and push it to ECR; the deploy then uses it by digest.

Steps: the ECR repository (created if missing: scan on push, tagged, the KMS key if given), a registry login
from ``GetAuthorizationToken`` (``docker login --username AWS --password-stdin``: the password never appears in
a process list), ``docker build --target <target>``, ``docker push``, and the digest the push printed, checked in
ECR. ``REPOSITORY@sha256:...`` pins exactly the pushed image: a later push to the same tag cannot change what an
endpoint runs.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from botocore.exceptions import ClientError

from gen3d.sagemaker.clients import error_code, say
from gen3d.sagemaker.errors import PushError
from gen3d.sagemaker.tags import tag_list

DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")
Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class PushResult:
    """Where the image went: repository URI, tag and the digest ECR holds."""

    repository_uri: str
    tag: str
    digest: str

    @property
    def image_uri(self) -> str:
        """``REPOSITORY@sha256:...``: what gen3d-deploy --image-uri takes."""
        return f"{self.repository_uri}@{self.digest}"


def ensure_repository(
    ecr: Any, name: str, *, tags: dict[str, str], kms_key_id: str | None = None, out: IO[str] | None = None
) -> str:
    """The repository's URI; created (scan on push, ``tags``, encrypted with ``kms_key_id``) if missing."""
    try:
        return str(ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"])
    except ClientError as err:
        if error_code(err) != "RepositoryNotFoundException":
            raise
    encryption = {"encryptionType": "KMS", "kmsKey": kms_key_id} if kms_key_id else {"encryptionType": "AES256"}
    created = ecr.create_repository(
        repositoryName=name,
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration=encryption,
        tags=tag_list(tags),
    )
    uri = str(created["repository"]["repositoryUri"])
    say(out, f"created ECR repository {uri}")
    return uri


def docker(docker_bin: str, *args: str, run: Runner, stdin: str | None = None, capture: bool = False) -> str:
    """Run ``docker ARGS``; PushError naming the command when it fails. Returns its output when ``capture``."""
    done = run([docker_bin, *args], input=stdin, text=True, stdout=subprocess.PIPE if capture else None, check=False)
    if done.returncode != 0:
        raise PushError(f"docker {args[0]} failed (exit status {done.returncode}); its output is above")
    return done.stdout or ""


def push_image(
    ecr: Any,
    *,
    target: str,
    repository: str,
    tag: str,
    context: Path,
    dockerfile: Path,
    tags: dict[str, str],
    kms_key_id: str | None = None,
    docker_bin: str = "docker",
    run: Runner = subprocess.run,
    out: IO[str] | None = None,
) -> PushResult:
    """Create the repository if missing, log docker in, build ``target``, push it as ``tag``; the pushed digest."""
    found = shutil.which(docker_bin)
    if found is None:
        raise PushError(f"{docker_bin} not found on PATH: gen3d-push runs docker build and docker push")
    uri = ensure_repository(ecr, repository, tags=tags, kms_key_id=kms_key_id, out=out)
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
    docker(found, "login", "--username", user, "--password-stdin", auth["proxyEndpoint"], run=run, stdin=password)
    image = f"{uri}:{tag}"
    say(out, f"building target {target} of {dockerfile} as {image}")
    docker(found, "build", "--target", target, "--tag", image, "--file", str(dockerfile), str(context), run=run)
    pushed = docker(found, "push", image, run=run, capture=True)
    say(out, pushed.rstrip())
    digests = DIGEST_RE.findall(pushed)
    if not digests:
        raise PushError(f"docker push {image} printed no 'digest: sha256:...' line")
    found_images = ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digests[-1]}])
    if not found_images.get("imageDetails"):
        raise PushError(f"ECR has no image {digests[-1]} in {repository} after the push")
    return PushResult(uri, tag, digests[-1])
