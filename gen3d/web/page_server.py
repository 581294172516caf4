"""The demo page's server (`make serve`: http://127.0.0.1:8090/), on loopback only.

It serves the checkout's ``web/`` folder (index.html, style.css, api.html, src/, samples/), three npm packages from
``web/node_modules`` (``npm ci``: onnxruntime-web's ``dist/``, three's ``build/`` and ``examples/jsm/``, and
swagger-ui-dist's bundle and stylesheet) under ``/vendor/``, the ONNX decoder exported from the served sam3 archive
at ``/decoder.onnx`` and its click graph at ``/decoder.click.onnx``, ``/config.json`` telling the page where
TorchServe's inference API is, and the API's documentation: ``/api`` (``web/api.html``: Swagger UI) showing
``/openapi.json`` (the checkout's docs/openapi.json).
GET and HEAD only; nothing outside those paths. The page is cross-origin isolated (COOP/COEP), so onnxruntime-web
may use WebAssembly threads.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gen3d.errors import StartupError

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parents[2] / "web"  # the checkout's web/ (gen3d is installed editable)
OPENAPI_FILE = PAGE_DIR.parent / "docs" / "openapi.json"  # gen3d-schema --openapi
HOST = "127.0.0.1"
DEFAULT_PORT = 8090
PAGE_FILES = ("index.html", "style.css", "api.html")
ROUTES = {"/": "/index.html", "/api": "/api.html"}
PAGE_FOLDERS = ("src", "samples")
# /vendor/<name>/... -> web/node_modules/<package>/<base>/...: only these folders (or files) of these packages
VENDOR = {
    "onnxruntime-web": ("onnxruntime-web", ("dist",), "dist"),
    "three": ("three", ("build", "examples/jsm"), ""),
    "swagger-ui": ("swagger-ui-dist", ("swagger-ui-bundle.js", "swagger-ui.css"), ""),
}
NEEDED = (
    "index.html",
    "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",
    "node_modules/three/build/three.module.js",
    "node_modules/swagger-ui-dist/swagger-ui-bundle.js",
)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".onnx": "application/octet-stream",
}


def check_page_dir(page_dir: Path) -> None:
    """Stops with one line naming what is missing (the page's files, or npm's packages)."""
    for name in NEEDED:
        if not (page_dir / name).is_file():
            hint = "run `make web` (npm ci in web/)" if name.startswith("node_modules") else "a checkout's web/ folder"
            raise StartupError(f"{page_dir / name} not found: {hint}")


class PageServer:
    """A threaded static server for the page, bound to 127.0.0.1:``port`` when created (so a taken port or a
    missing ``npm ci`` fails at once); :meth:`start` serves in a daemon thread once the decoder file exists."""

    def __init__(
        self, inference_url: str, port: int = DEFAULT_PORT, page_dir: Path = PAGE_DIR, openapi: Path = OPENAPI_FILE
    ):
        check_page_dir(page_dir)
        if not openapi.is_file():
            raise StartupError(f"{openapi} not found: gen3d-schema --openapi --out {openapi} writes it")
        self.page_dir = page_dir.resolve()
        self.openapi = openapi
        self.decoder: Path | None = None  # given to start()
        self.click_graph: Path | None = None
        self.config = json.dumps({"inference_url": inference_url, "decoder_url": "/decoder.onnx"}).encode()
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), self._handler())
        except OSError as err:
            raise StartupError(f"demo page: cannot listen on {HOST}:{port} ({err.strerror})") from err
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}/"
        self.thread: threading.Thread | None = None

    def start(self, decoder: Path, click_graph: Path) -> PageServer:
        """Serves from now on ``decoder`` at /decoder.onnx and its click graph at /decoder.click.onnx (both must
        exist)."""
        for what, path in (("ONNX decoder", decoder), ("its click graph", click_graph)):
            if not path.is_file():
                raise StartupError(f"{what} not found at {path}")
        self.decoder, self.click_graph = decoder, click_graph
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="page-server", daemon=True
        )
        self.thread.start()
        log.info("demo page at %s (decoder %s)", self.url, self.decoder)
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()

    def resolve(self, path: str) -> Path | bytes | None:
        """The file (or bytes) a URL path names, or None."""
        path = path.split("?", 1)[0].split("#", 1)[0]
        path = ROUTES.get(path, path)
        if path == "/config.json":
            return self.config
        if path == "/openapi.json":
            return self.openapi
        if path == "/decoder.onnx":
            return self.decoder
        if path == "/decoder.click.onnx":
            return self.click_graph
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") or "\\" in p for p in parts):
            return None
        if parts[0] == "vendor" and len(parts) > 2 and parts[1] in VENDOR:
            package, allowed, base = VENDOR[parts[1]]
            relative = "/".join(([base] if base else []) + parts[2:])
            if not any(relative == entry or relative.startswith(entry + "/") for entry in allowed):
                return None
            root = self.page_dir / "node_modules" / package
            candidate = root / relative
        elif (len(parts) == 1 and parts[0] in PAGE_FILES) or (len(parts) > 1 and parts[0] in PAGE_FOLDERS):
            root = self.page_dir
            candidate = root.joinpath(*parts)
        else:
            return None
        candidate = candidate.resolve()
        return candidate if candidate.is_file() and candidate.is_relative_to(root.resolve()) else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "gen3d-page"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(send_body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(send_body=False)

            def _answer(self, send_body: bool) -> None:
                host = self.headers.get("Host", "")
                if host == f"localhost:{server.port}":  # TorchServe's CORS names the 127.0.0.1 origin
                    self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                    self.send_header("Location", f"http://{HOST}:{server.port}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if host != f"{HOST}:{server.port}":  # another name resolving here (DNS rebinding): refused
                    self._error(HTTPStatus.FORBIDDEN, f"open the page as {server.url}")
                    return
                found = server.resolve(self.path)
                if found is None:
                    self._error(HTTPStatus.NOT_FOUND, f"{self.path} is not part of the page")
                    return
                if isinstance(found, bytes):
                    body_type, length = "application/json", len(found)
                else:
                    body_type, length = TYPES.get(found.suffix, "application/octet-stream"), found.stat().st_size
                self.send_response(HTTPStatus.OK)
                self._headers(body_type, length)
                if not send_body:
                    return
                if isinstance(found, bytes):
                    self.wfile.write(found)
                else:
                    with found.open("rb") as source:
                        shutil.copyfileobj(source, self.wfile)

            def _headers(self, content_type: str, length: int) -> None:
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length))
                self.send_header("Cache-Control", "no-cache")
                self.send_header("X-Content-Type-Options", "nosniff")
                # cross-origin isolation: SharedArrayBuffer, hence onnxruntime-web's WebAssembly threads
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.end_headers()

            def _error(self, status: HTTPStatus, message: str) -> None:
                body = json.dumps({"status": "error", "error": {"code": int(status), "message": message}}).encode()
                self.send_response(status)
                self._headers("application/json", len(body))
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
                log.debug("%s %s", self.address_string(), format % args)

        return Handler


def torchserve_cors(origin: str) -> dict[str, str]:
    """TorchServe config.properties keys that let the page at ``origin`` call the inference API (local config
    only: the SageMaker container's config.properties never opens CORS)."""
    return {
        "cors_allowed_origin": origin,
        "cors_allowed_methods": "GET, POST, OPTIONS",
        "cors_allowed_headers": "Content-Type, Accept, X-Request-Id",
    }
