"""Run TorchServe in the foreground on the archives in model-store/ (what `make serve` runs).

Inference on 127.0.0.1:8080 (all interfaces only with GEN3D_BIND=0.0.0.0 or --bind 0.0.0.0: token auth is off,
so anyone who can reach the port can use the models), management on 127.0.0.1:8081, metrics on 127.0.0.1:8082.
Logs go to logs/. Ctrl-C stops the server and its workers. S3 is reached through the standard AWS environment
(AWS_ENDPOINT_URL_S3, AWS_PROFILE, ...), only in the buckets GEN3D_ALLOWED_BUCKETS names (`make serve BUCKETS=...`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from gen3d.serving.buckets import BucketPolicy
from gen3d.torchserve import runner

REPO = Path(__file__).resolve().parents[2]  # the checkout: config.properties, model-store/, logs/


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config.properties", help="TorchServe config")
    parser.add_argument("--model-store", type=Path, default=REPO / "model-store", help="folder of archives")
    parser.add_argument("--startup-timeout", type=float, default=900, help="seconds for every model to be READY")
    parser.add_argument("--logs", type=Path, default=REPO / "logs", help="TorchServe's logs and its config copy")
    parser.add_argument(
        "--bind",
        default=os.environ.get("GEN3D_BIND", "127.0.0.1"),
        help="address of the inference API (default GEN3D_BIND or 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    archives = sorted(p.name for p in args.model_store.iterdir() if p.suffix == ".mar" or (p / "MAR-INF").is_dir())
    if not archives:
        print(f"no model archives in {args.model_store}; run `make archives` first", file=sys.stderr)
        return 2
    models = [Path(a).stem for a in archives]
    base = runner.read_config(args.config)
    port = urlparse(base.get("inference_address", "http://0.0.0.0:8080")).port or 8080
    metrics = args.config.resolve().parent / base.get("metrics_config", "metrics.yaml")  # absolute stays absolute
    args.logs.mkdir(parents=True, exist_ok=True)
    config = runner.write_config(  # the copy lives in logs/, so every path in it is absolute
        args.config,
        args.logs / "config.properties",
        {
            "inference_address": f"http://{args.bind}:{port}",
            "model_store": str(args.model_store.resolve()),
            "metrics_config": str(metrics),
        },
    )
    if args.bind not in ("127.0.0.1", "localhost", "::1"):
        logging.warning("inference API on %s:%d: reachable from the network, without authentication", args.bind, port)
    logging.info("S3 buckets requests may use (GEN3D_ALLOWED_BUCKETS): %s", BucketPolicy.from_env().describe())
    server = runner.start(config, args.model_store.resolve(), "all", args.logs)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        server.wait_ready(models, args.startup_timeout)
        logging.info(
            "serving %s at %s (management %s, metrics %s)",
            ", ".join(models),
            server.inference_url,
            server.management_url,
            server.metrics_url,
        )
        return server.process.wait()
    except KeyboardInterrupt:
        return server.stop()
    except (RuntimeError, TimeoutError) as err:
        logging.error("%s; see %s", err, args.logs / "model_log.log")
        server.stop()
        return 1


def console() -> None:
    sys.exit(main())
