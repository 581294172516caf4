#!/usr/bin/env python3
"""Thin wrapper: `scripts/sagemaker_teardown.py --help` is gen3d.cli.teardown (console script in pyproject.toml)."""

from gen3d.cli.teardown import console

if __name__ == "__main__":
    console()
