#!/usr/bin/env python3
"""Thin wrapper: `scripts/serve_local.py --help` is gen3d.cli.serve_local (console script in pyproject.toml)."""

from gen3d.cli.serve_local import console

if __name__ == "__main__":
    console()
