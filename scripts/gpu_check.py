#!/usr/bin/env python3
"""Thin wrapper over gen3d.cli.gpu_check (console script gen3d-gpu-check); see --help."""

from gen3d.cli.gpu_check import console

if __name__ == "__main__":
    console()
