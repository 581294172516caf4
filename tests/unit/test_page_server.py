"""The demo page's server: loopback only, only the page's files, the API's documentation (/api, /openapi.json)
and three npm packages' folders, a clear start-up error without `npm ci`; and `make serve`'s CORS opening stays out
of the SageMaker config."""

from __future__ import annotations

import json

import pytest
import requests

from gen3d.errors import StartupError
from gen3d.torchserve import runner
from gen3d.web.page_server import PageServer, torchserve_cors
from tests.conftest import REPO


@pytest.fixture
def page_dir(tmp_path):
    """A web/ folder with stand-ins for npm's files."""
    web = tmp_path / "web"
    for name, text in {
        "index.html": "<html></html>",
        "style.css": "body {}",
        "src/main.js": "export {};",
        "samples/a.png": "png",
        "package.json": "{}",
        "node_modules/onnxruntime-web/dist/ort.wasm.min.mjs": "export {};",
        "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "wasm",
        "node_modules/onnxruntime-web/package.json": "{}",
        "node_modules/three/build/three.module.js": "export {};",
        "node_modules/three/examples/jsm/controls/OrbitControls.js": "export {};",
        "node_modules/three/src/Three.js": "export {};",
        "api.html": "<html></html>",
        "src/api_docs.js": "export {};",
        "node_modules/swagger-ui-dist/swagger-ui-bundle.js": "var SwaggerUIBundle;",
        "node_modules/swagger-ui-dist/swagger-ui.css": "body {}",
        "node_modules/swagger-ui-dist/index.html": "<html></html>",
        "node_modules/swagger-ui-dist/package.json": "{}",
    }.items():
        (web / name).parent.mkdir(parents=True, exist_ok=True)
        (web / name).write_text(text)
    (tmp_path / "secret.txt").write_text("no")
    return web


@pytest.fixture
def server(page_dir, tmp_path):
    decoder, click_graph = tmp_path / "decoder.onnx", tmp_path / "decoder.click.onnx"
    decoder.write_bytes(b"onnx")
    click_graph.write_bytes(b"click")
    page = PageServer("http://127.0.0.1:8080", port=0, page_dir=page_dir).start(decoder, click_graph)
    yield page
    page.stop()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/src/main.js", "text/javascript; charset=utf-8"),
        ("/samples/a.png", "image/png"),
        ("/decoder.onnx", "application/octet-stream"),
        ("/decoder.click.onnx", "application/octet-stream"),
        ("/vendor/onnxruntime-web/ort.wasm.min.mjs", "text/javascript; charset=utf-8"),
        ("/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm", "application/wasm"),
        ("/vendor/three/build/three.module.js", "text/javascript; charset=utf-8"),
        ("/vendor/three/examples/jsm/controls/OrbitControls.js", "text/javascript; charset=utf-8"),
        ("/api", "text/html; charset=utf-8"),
        ("/src/api_docs.js", "text/javascript; charset=utf-8"),
        ("/openapi.json", "application/json"),
        ("/vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
        ("/vendor/swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    ],
)
def test_serves_the_page_and_its_packages(server, path, content_type):
    resp = requests.get(server.url.rstrip("/") + path, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == content_type
    # cross-origin isolation, so onnxruntime-web may use WebAssembly threads
    assert resp.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def test_config_names_torchserve_and_the_decoder(server):
    config = requests.get(server.url + "config.json", timeout=10).json()
    assert config == {"inference_url": "http://127.0.0.1:8080", "decoder_url": "/decoder.onnx"}


def test_api_shows_the_committed_openapi_document_with_swagger_ui(server):
    page = requests.get(server.url + "api", timeout=10).text
    assert (server.page_dir / "api.html").read_text() == page
    document = requests.get(server.url + "openapi.json", timeout=10)
    assert document.content == (REPO / "docs" / "openapi.json").read_bytes()
    assert document.json()["openapi"].startswith("3.1")


def test_the_real_api_page_loads_the_viewer_from_this_server():
    """web/api.html takes Swagger UI from /vendor/ (npm's swagger-ui-dist, pinned by the lockfile), never a CDN."""
    page = (REPO / "web" / "api.html").read_text()
    assert '<script src="/vendor/swagger-ui/swagger-ui-bundle.js">' in page and "/src/api_docs.js" in page
    assert "https:" not in page and "http:" not in page
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())
    pinned = json.loads((REPO / "web" / "package.json").read_text())["dependencies"]["swagger-ui-dist"]
    assert lock["packages"]["node_modules/swagger-ui-dist"]["version"] == pinned


def test_a_missing_openapi_document_stops_start(page_dir, tmp_path):
    with pytest.raises(StartupError, match=r"none\.json not found: gen3d-schema --openapi"):
        PageServer("http://127.0.0.1:8080", port=0, page_dir=page_dir, openapi=tmp_path / "none.json")


@pytest.mark.parametrize(
    "path",
    [
        "/package.json",
        "/node_modules/three/build/three.module.js",
        "/vendor/three/src/Three.js",
        "/vendor/onnxruntime-web/../package.json",
        "/vendor/onnxruntime-web/%2e%2e/package.json",
        "/src/../../secret.txt",
        "/vendor/other/x.js",
        "/vendor/swagger-ui/index.html",
        "/vendor/swagger-ui/package.json",
        "/vendor/swagger-ui/swagger-ui-bundle.js/x",
        "/samples",
    ],
)
def test_nothing_else_is_served(server, path):
    resp = requests.get(server.url.rstrip("/") + path, timeout=10, allow_redirects=False)
    assert resp.status_code == 404
    assert json.loads(resp.text)["error"]["code"] == 404


def test_raw_traversal_is_refused(server):
    """A path sent as is (requests would normalise it): still nothing outside web/."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/src/../../secret.txt", headers={"Host": f"127.0.0.1:{server.port}"})
    assert conn.getresponse().status == 404


def test_localhost_is_sent_to_127_0_0_1_and_other_names_refused(server):
    """TorchServe's CORS names the 127.0.0.1 origin; another host name (DNS rebinding) gets nothing."""
    url = f"http://127.0.0.1:{server.port}/"
    moved = requests.get(url, headers={"Host": f"localhost:{server.port}"}, allow_redirects=False, timeout=10)
    assert moved.status_code == 301 and moved.headers["Location"] == url
    refused = requests.get(url, headers={"Host": f"evil.example:{server.port}"}, timeout=10)
    assert refused.status_code == 403


def test_only_get_and_head(server):
    assert requests.head(server.url, timeout=10).status_code == 200
    assert requests.post(server.url, data=b"x", timeout=10).status_code == 501


def test_bound_to_loopback(server):
    assert server.httpd.server_address[0] == "127.0.0.1"


def test_without_npm_ci_start_up_names_the_missing_file(page_dir, tmp_path):
    (page_dir / "node_modules/three/build/three.module.js").unlink()
    with pytest.raises(StartupError, match=r"three\.module\.js not found: run `make web`"):
        PageServer("http://127.0.0.1:8080", port=0, page_dir=page_dir)


def test_a_missing_decoder_or_click_graph_stops_start(page_dir, tmp_path):
    page = PageServer("http://127.0.0.1:8080", port=0, page_dir=page_dir)
    (tmp_path / "there.onnx").write_bytes(b"onnx")
    try:
        cases = (
            ("none.onnx", "there.onnx", "ONNX decoder", "none"),
            ("there.onnx", "none.click.onnx", "its click graph", "none.click"),
        )
        for decoder, click_graph, what, missing in cases:
            with pytest.raises(StartupError, match=rf"{what} not found at .*/{missing}\.onnx$"):
                page.start(tmp_path / decoder, tmp_path / click_graph)
    finally:
        page.stop()


def test_a_taken_port_is_one_line(page_dir, tmp_path, server):
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        PageServer("x", port=server.port, page_dir=page_dir)


def test_cors_is_opened_by_make_serve_only():
    """The checkout's config.properties (the SageMaker container's too) opens no CORS; `make serve` adds it for the
    page's origin in logs/config.properties."""
    shipped = runner.read_config(REPO / "config.properties")
    assert not [key for key in shipped if key.startswith("cors_")]
    assert torchserve_cors("http://127.0.0.1:8090") == {
        "cors_allowed_origin": "http://127.0.0.1:8090",
        "cors_allowed_methods": "GET, POST, OPTIONS",
        "cors_allowed_headers": "Content-Type, Accept, X-Request-Id",
    }
    source = (REPO / "gen3d" / "sagemaker" / "entrypoint.py").read_text()
    assert "cors" not in source.lower()
