#!/usr/bin/env python3
"""Thin wrapper: `scripts/sagemaker_invoke.py --help` is gen3d.cli.invoke (console script in pyproject.toml)."""

from gen3d.cli.invoke import console

if __name__ == "__main__":
    console()
