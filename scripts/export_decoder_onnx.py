#!/usr/bin/env python3
"""Thin wrapper: `scripts/export_decoder_onnx.py --help` is gen3d.cli.export_onnx (console script gen3d-export-onnx)."""

import sys

from gen3d.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
