#!/usr/bin/env python3
"""Thin wrapper: `scripts/build_archives.py --help` is gen3d.cli.build_archives (console script in pyproject.toml)."""

from gen3d.cli.build_archives import main

if __name__ == "__main__":
    main()
