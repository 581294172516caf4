#!/usr/bin/env python3
"""Thin wrapper: `scripts/sagemaker_deploy.py --help` is gen3d.cli.deploy (console script in pyproject.toml)."""

from gen3d.cli.deploy import console

if __name__ == "__main__":
    console()
