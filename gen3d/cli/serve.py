"""SageMaker `serve` entrypoint (`serve` on the image's PATH; `gen3d-serve` or scripts/serve in a checkout).

Checks the model directory, starts TorchServe on the models found there, and exits non-zero when one
cannot become READY within its startup timeout. Environment (see gen3d/sagemaker/entrypoint.py):
SM_MODEL_DIR (default /opt/ml/model), SAGEMAKER_BIND_TO_PORT (8080), GEN3D_MODEL, GEN3D_MANAGEMENT_PORT,
GEN3D_METRICS_PORT, GEN3D_LOG_DIR, GEN3D_HOME.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gen3d.sagemaker import entrypoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = sys.argv[1:] if argv is None else argv
    parser.parse_args([a for a in args if a != "serve"])  # SageMaker passes the word `serve`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return entrypoint.run()


def console() -> None:
    sys.exit(main())
