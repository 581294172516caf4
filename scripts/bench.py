#!/usr/bin/env python3
"""Thin wrapper: `scripts/bench.py --help` is gen3d.cli.bench (console script gen3d-bench; `make bench`)."""

from gen3d.cli.bench import console

if __name__ == "__main__":
    console()
