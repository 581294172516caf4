#!/usr/bin/env python3
"""Thin wrapper: `scripts/loadtest.py --help` is gen3d.cli.loadtest (console script gen3d-loadtest)."""

from gen3d.cli.loadtest import console

if __name__ == "__main__":
    console()
