"""Run TorchServe in the foreground on the archives in model-store/ (what `make serve` runs), and the demo page.

Inference on 127.0.0.1:8080 (all interfaces only with GEN3D_BIND=0.0.0.0 or --bind 0.0.0.0: token auth is off,
so anyone who can reach the port can use the models), management on 127.0.0.1:8081, metrics on 127.0.0.1:8082.
Logs go to logs/. Ctrl-C stops the server and its workers. S3 is reached through the standard AWS environment
(AWS_ENDPOINT_URL_S3, AWS_PROFILE, ...), only in the buckets GEN3D_ALLOWED_BUCKETS names (`make serve BUCKETS=...`).

The demo page (http://127.0.0.1:8090/, loopback only; --page-port, --no-page) decodes clicks in the browser with
the ONNX decoder of the served sam3 archive: exported on the first start (logs/export_onnx.log, ~30 s, while
TorchServe starts) and cached in build/onnx/ by the model the archive holds. TorchServe's CORS is opened for the
page's origin in logs/config.properties only (never in the SageMaker container's config).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from gen3d.archives import archive_name, archives_in
from gen3d.errors import StartupError
from gen3d.sam3.onnx_export import CACHED_DECODER, cached_decoder_path, click_graph_path
from gen3d.serving.buckets import BucketPolicy
from gen3d.torchserve import runner
from gen3d.web.page_server import DEFAULT_PORT, HOST, PageServer, torchserve_cors

REPO = Path(__file__).resolve().parents[2]  # the checkout: config.properties, model-store/, logs/, web/
log = logging.getLogger("serve_local")


class DecoderExport:
    """The ONNX decoder of the sam3 archive: the cached file, or an export running beside TorchServe's start."""

    def __init__(self, archive: Path, cache_dir: Path, log_path: Path):
        self.path = cached_decoder_path(cache_dir, archive)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        if self.path.is_file() and click_graph_path(self.path).is_file():
            log.info("ONNX decoder of %s: %s (cached)", archive, self.path)
            return
        log.info("exporting the ONNX decoder of %s to %s while TorchServe starts (%s)", archive, self.path, log_path)
        with open(log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gen3d.cli.export_onnx", "--archive", str(archive), "--out", str(self.path)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> Path:
        """The decoder file, once exported; older exports in the cache folder are removed."""
        if self.process is not None:
            code = self.process.wait()
            if code != 0:
                raise RuntimeError(f"exporting the ONNX decoder failed (exit {code}); see {self.log_path}")
            keep = (self.path, click_graph_path(self.path))
            for old in self.path.parent.glob(CACHED_DECODER.format(key="*")):  # the click graphs too
                if old not in keep:
                    old.unlink()
        return self.path

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--page-port", type=int, default=DEFAULT_PORT, help=f"demo page port on {HOST} (default {DEFAULT_PORT})"
    )
    parser.add_argument("--no-page", action="store_true", help="no demo page (and no CORS opened)")
    parser.add_argument(
        "--decoder-cache", type=Path, default=REPO / "build" / "onnx", help="where exported ONNX decoders are kept"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    archives = {archive_name(p): p for p in archives_in(args.model_store)}
    if not archives:
        print(f"no model archives in {args.model_store}; run `make archives` first", file=sys.stderr)
        return 2
    models = list(archives)
    sam3_archive = archives.get("sam3")
    base = runner.read_config(args.config)
    port = urlparse(base.get("inference_address", "http://0.0.0.0:8080")).port or 8080
    overrides = {"inference_address": f"http://{args.bind}:{port}", "model_store": str(args.model_store.resolve())}
    page = None
    if not args.no_page and sam3_archive is not None:
        try:  # bound now: a taken port or a missing `npm ci` stops start-up before TorchServe runs
            page = PageServer(f"http://127.0.0.1:{port}", args.page_port)
        except StartupError as err:
            print(f"gen3d-serve-local: {err}", file=sys.stderr)
            return 2
        overrides.update(torchserve_cors(page.url.rstrip("/")))
    args.logs.mkdir(parents=True, exist_ok=True)
    # the copy lives in logs/, so every path in it is absolute
    config = runner.write_config(args.config, args.logs / "config.properties", overrides)
    if args.bind not in ("127.0.0.1", "localhost", "::1"):
        logging.warning("inference API on %s:%d: reachable from the network, without authentication", args.bind, port)
    logging.info("S3 buckets requests may use (GEN3D_ALLOWED_BUCKETS): %s", BucketPolicy.from_env().describe())
    server = runner.start(config, args.model_store.resolve(), "all", args.logs)
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    export = None
    try:
        if page is not None:
            args.decoder_cache.mkdir(parents=True, exist_ok=True)
            export = DecoderExport(sam3_archive, args.decoder_cache, args.logs / "export_onnx.log")
        server.wait_ready(models, args.startup_timeout)
        logging.info(
            "serving %s at %s (management %s, metrics %s)",
            ", ".join(models),
            server.inference_url,
            server.management_url,
            server.metrics_url,
        )
        if page is not None:
            decoder = export.wait()
            page.start(decoder, click_graph_path(decoder))
            logging.info("demo page: open %s (click to mask, Make 3D)", page.url)
        return server.process.wait()
    except KeyboardInterrupt:
        return server.stop()
    except (RuntimeError, TimeoutError, StartupError) as err:
        logging.error("%s; see %s", err, args.logs / "model_log.log")
        server.stop()
        return 1
    finally:
        if export is not None:
            export.stop()
        if page is not None:
            page.stop()


def console() -> None:
    sys.exit(main())
