"""Build a model's image target (sam3, sam3d or sam3d_body) and push it to ECR; print the image pinned by digest.

Creates the ECR repository if missing (scan on push, tagged project=gen3d and each --tag, encrypted with
--kms-key-id if given), logs docker in with a token from ecr:GetAuthorizationToken (docker login
--password-stdin), runs docker build --target <target> and docker push, and checks the pushed digest is in
ECR. Progress goes to stderr; stdout is one line, REPOSITORY@sha256:..., what gen3d-deploy --image-uri takes:

  IMAGE=$(gen3d-push --target sam3 --region us-east-1)
  gen3d-deploy --model sam3 --image-uri "$IMAGE" ...

Needs docker (with BuildKit) on PATH and the deployer's ECR permissions (gen3d-iam-policy --deployer).
Credentials and region: boto3's default chain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.models import MODELS
from gen3d.sagemaker import clients as aws
from gen3d.sagemaker import errors, push, tags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=sorted(MODELS), required=True, help="Dockerfile target (one per model)")
    p.add_argument("--repository", default="gen3d", help="ECR repository (default gen3d)")
    p.add_argument("--image-tag", help="image tag (default: the target)")
    p.add_argument("--context", type=Path, default=Path("."), help="docker build context (default .)")
    p.add_argument("--file", type=Path, help="Dockerfile (default: <context>/Dockerfile)")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tag of the repository if it is created (repeatable; project=gen3d is added)",
    )
    p.add_argument("--kms-key-id", help="KMS key of the repository if it is created (default: AES256)")
    p.add_argument("--docker", default="docker", help="docker executable (default: docker on PATH)")
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        repo_tags = {tags.PROJECT_TAG: tags.PROJECT, **tags.parse_pairs("--tag", args.tag)}
        ecr = aws.make_clients(args.region).ecr
        result = push.push_image(
            ecr,
            target=args.target,
            repository=args.repository,
            tag=args.image_tag or args.target,
            context=args.context,
            dockerfile=args.file or args.context / "Dockerfile",
            tags=repo_tags,
            kms_key_id=args.kms_key_id,
            docker_bin=args.docker,
            out=sys.stderr,
        )
    except (errors.PushError, ClientError, BotoCoreError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(f"pushed {result.repository_uri}:{result.tag} as {result.digest}", file=sys.stderr)
    print(result.image_uri)
    return 0


def console() -> None:
    sys.exit(main())
