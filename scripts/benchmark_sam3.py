#!/usr/bin/env python3
"""Thin wrapper: `scripts/benchmark_sam3.py --help` is gen3d.cli.bench_sam3 (console script in pyproject.toml)."""

from gen3d.cli.bench_sam3 import console

if __name__ == "__main__":
    console()
