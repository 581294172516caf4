#!/usr/bin/env python3
"""Thin wrapper over gen3d.cli.bench_sam3d_gpu (console script gen3d-bench-sam3d-gpu); see --help."""

from gen3d.cli.bench_sam3d_gpu import console

if __name__ == "__main__":
    console()
