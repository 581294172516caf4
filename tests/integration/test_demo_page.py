"""The demo page in a real browser: Debian's Chromium, headless, driven by Playwright, against the page server and
a real TorchServe (CORS opened for the page's origin, as `make serve` does).

Screenshots go to the test's tmp folder; with GEN3D_SCREENSHOT_DIR set (e.g. docs/) they are written there too.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from gen3d.bench.browser import CHROMIUM, FLAGS
from gen3d.sam3.embedding_file import EMBEDDING_FORMAT
from gen3d.sam3.onnx_export import click_graph_path, read_metadata
from gen3d.serving.masks import mask_from_rle, rle_from_mask
from tests.conftest import REPO
from tests.integration.http_support import post, post_ok
from tests.integration.local_serve import serve_local

pytestmark = [pytest.mark.sam3, pytest.mark.sam3d]  # the page uses both models
SAMPLE = REPO / "web" / "samples" / "still-life.png"


@pytest.fixture(scope="module")
def page_server(decoder_export, torchserve, decoder_onnx, page_port):
    from gen3d.web.page_server import PageServer

    server = PageServer(torchserve.inference_url, page_port).start(decoder_onnx, click_graph_path(decoder_onnx))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: `make test` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def loaded_page(browser, page_server):
    """One page for the module (loading onnxruntime-web and the decoder takes seconds); each test opens the sample
    again, which resets the prompts, the instances and the error."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(page_server.url)
    page.wait_for_function("window.gen3d && (window.gen3d.ready || window.gen3d.error)", timeout=60_000)
    assert page.evaluate("window.gen3d.error") is None
    yield page, errors
    context.close()


@pytest.fixture
def page(loaded_page):
    page, errors = loaded_page
    yield page
    page.unroute_all()
    assert errors == []  # no uncaught error in the page


def screenshot(target, name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    target.screenshot(path=str(path))
    if os.environ.get("GEN3D_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["GEN3D_SCREENSHOT_DIR"]) / name)
    return path


def open_sample(page) -> dict:
    page.evaluate("window.gen3d.state.embedding = null; window.gen3d.error = null")  # what the last test left
    page.click("[data-sample]")
    page.wait_for_function("window.gen3d.state.embedding || window.gen3d.error", timeout=60_000)
    assert page.evaluate("window.gen3d.error") is None
    return page.evaluate("window.gen3d.state.embedding.metadata")


def click_image(page, x: float, y: float, shift: bool = False) -> None:
    """Clicks the picture at its pixel (x, y)."""
    box = page.locator("#prompts").bounding_box()
    width, height = page.evaluate("[window.gen3d.state.width, window.gen3d.state.height]")
    before = page.evaluate("window.gen3d.state.decodes")
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height)
    if shift:
        page.keyboard.up("Shift")
    page.wait_for_function(f"window.gen3d.state.decodes > {before} || window.gen3d.error", timeout=30_000)


def drag_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    box = page.locator("#prompts").bounding_box()
    width, height = page.evaluate("[window.gen3d.state.width, window.gen3d.state.height]")
    before = page.evaluate("window.gen3d.state.decodes")
    page.mouse.move(box["x"] + x0 * box["width"] / width, box["y"] + y0 * box["height"] / height)
    page.mouse.down()
    page.mouse.move(box["x"] + x1 * box["width"] / width, box["y"] + y1 * box["height"] / height, steps=5)
    page.mouse.up()
    page.wait_for_function(f"window.gen3d.state.decodes > {before} || window.gen3d.error", timeout=30_000)


def overlay_mask(page) -> np.ndarray:
    """What the page drew: the mask canvas's pixels with alpha > 0."""
    width, height, alpha = page.evaluate(
        """() => {
        const c = document.getElementById("mask");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const alpha = new Array(c.width * c.height);
        for (let i = 0; i < alpha.length; i++) alpha[i] = d[i * 4 + 3];
        return [c.width, c.height, alpha];
    }"""
    )
    return np.array(alpha, np.uint8).reshape(height, width) > 0


def server_mask(server, prompts: dict) -> np.ndarray:
    """The server's segment mask for the page's own prompts (its points and box, as it holds them)."""
    body = {"task": "segment", "image_base64": base64.b64encode(SAMPLE.read_bytes()).decode()}
    if prompts["points"]:
        body["points"] = [[p["x"], p["y"]] for p in prompts["points"]]
        body["point_labels"] = [p["label"] for p in prompts["points"]]
    if prompts["box"]:
        b = prompts["box"]
        body["boxes"] = [[b["x0"], b["y0"], b["x1"], b["y1"]]]
    masks = post_ok(server, body).json()["masks"]
    assert len(masks) == 1
    return mask_from_rle(masks[0]["rle"], masks[0]["rle"]["size"])


@contextmanager
def posted_content_types(page) -> Iterator[list[str]]:
    """The Content-Type of each POST the page sends to TorchServe meanwhile."""
    sent = []

    def record(request) -> None:
        if request.method == "POST" and "/predictions/" in request.url:
            sent.append(request.headers.get("content-type"))

    page.on("request", record)
    try:
        yield sent
    finally:
        page.remove_listener("request", record)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_click_masks_equal_the_servers_and_make_3d_draws_the_mesh(page, torchserve, decoder_onnx, tmp_path):
    metadata = open_sample(page)
    assert metadata["model_id"] == read_metadata(decoder_onnx)["model_id"]
    assert page.evaluate("crossOriginIsolated")  # COOP/COEP: onnxruntime-web may use threads

    click_image(page, 150, 220)  # the red ball
    prompts = page.evaluate("({points: window.gen3d.state.points, box: window.gen3d.state.box})")
    assert prompts["points"][0]["label"] == 1 and prompts["box"] is None
    drawn = overlay_mask(page)
    assert drawn.shape == (360, 480) and drawn.any()
    assert iou(drawn, server_mask(torchserve, prompts)) >= 0.9
    assert "mask decoded in the browser in" in page.inner_text("#decode-time")
    screenshot(page, "demo-page-click.png", tmp_path)

    click_image(page, 60, 60, shift=True)  # background
    drag_box(page, 70, 140, 235, 300)  # a box around the ball
    prompts = page.evaluate("({points: window.gen3d.state.points, box: window.gen3d.state.box})")
    assert [p["label"] for p in prompts["points"]] == [1, 0] and prompts["box"]["x1"] > prompts["box"]["x0"]
    assert iou(overlay_mask(page), server_mask(torchserve, prompts)) >= 0.9

    page.click("#make3d")
    page.wait_for_function("window.gen3d.generation || window.gen3d.error", timeout=180_000)
    assert page.evaluate("window.gen3d.error") is None
    answer = page.evaluate("({mesh: window.gen3d.generation.mesh, pose: window.gen3d.generation.pose})")
    viewer = page.evaluate("({renders: window.gen3d.viewer.renders, vertices: window.gen3d.viewer.vertices})")
    assert viewer["renders"] > 0 and viewer["vertices"] == answer["mesh"]["vertices"] > 0
    assert "rotation wxyz" in page.inner_text("#pose")
    model_id = re.escape(page.evaluate("window.gen3d.generation.model_id"))
    status = rf"{model_id}: \d+ vertices, \d+ Gaussians in \d+\.\d s"
    assert re.fullmatch(status + r" \(demo weights: random, the shape means nothing\)", page.inner_text("#gen-status"))
    assert [a.get_attribute("download") for a in page.locator("#downloads a").all()] == [
        "object.glb",
        "object.ply",
        "pose.json",
    ]
    page.mouse.move(*center(page.locator("#viewer").bounding_box()))  # orbit: a drag re-renders
    page.mouse.down()
    page.mouse.move(*np.add(center(page.locator("#viewer").bounding_box()), (60, 20)), steps=4)
    page.mouse.up()
    assert page.evaluate("window.gen3d.viewer.renders") > viewer["renders"]
    shot = np.asarray(Image.open(screenshot(page.locator("#viewer"), "demo-page-viewer.png", tmp_path)).convert("RGB"))
    background = np.array([0x20, 0x24, 0x2B])
    assert (np.abs(shot.astype(int) - background).sum(axis=2) > 30).mean() > 0.01  # the mesh covers pixels
    screenshot(page, "demo-page-3d.png", tmp_path)


def test_the_page_warms_its_decoder_up_before_the_first_picture(page):
    """Once loaded, the page runs its decoder on an all-zero embedding (its preparation, then WARM_UP_CLICKS clicks)
    so that Chromium has compiled onnxruntime's kernels with its optimizing tier before a visitor's first click (at
    1008 px a fresh page's first clicks took 2-3x a click's time: docs/performance.md)."""
    warmed_ms = page.evaluate("window.gen3d.state.warmUp")  # the page's warm-up, a promise of its ms
    assert warmed_ms > 0
    assert re.search(r"decoder warmed up in \d+ ms", page.inner_text("#model"))
    seen = page.evaluate(
        """async () => {
        const { warmUpDecoder } = await import("/src/decoder.js");
        const decoder = window.gen3d.state.decoder;
        const sessions = Object.getPrototypeOf(decoder.session);  // onnxruntime-web's InferenceSession
        const run = sessions.run;
        const runs = [];
        const progress = [];
        sessions.run = function (feeds, fetches) {
          const what = this === decoder.session ? feeds.image_embed.dims.slice(2).join("x") : "click graph";
          runs.push(`${what}: ${Object.keys(feeds).filter((name) => name.startsWith("point_")).join(", ")}`);
          return run.call(this, feeds, fetches);
        };
        try {
          await warmUpDecoder(decoder, 2, (done, total) => progress.push([done, total]));
        } finally {
          sessions.run = run;
        }
        return { runs, progress, grid: Number(decoder.metadata.grid) };
    }"""
    )
    grid = seen["grid"]
    # the decoder prepares the zeros, then its click graph's session (the preparation its initializers) clicks
    clicks = "click graph: point_coords, point_labels"
    assert seen["runs"] == [f"{grid}x{grid}: point_coords, point_labels", clicks, clicks]
    assert seen["progress"] == [[1, 3], [2, 3], [3, 3]]


def test_the_decoders_runs_never_overlap(page):
    """Clicks and another embedding's preparation (which releases the click graph session the clicks run on) asked
    for at once run one at a time: onnxruntime never has two of the page's runs in flight, and the masks are the
    same."""
    open_sample(page)
    seen = page.evaluate(
        """async () => {
        const { decode } = await import("/src/decoder.js");
        const { decoder, embedding } = window.gen3d.state;
        const sessions = Object.getPrototypeOf(decoder.session);
        const run = sessions.run;
        let inFlight = 0;
        let most = 0;
        sessions.run = async function (...args) {
          most = Math.max(most, ++inFlight);
          try {
            return await run.apply(this, args);
          } finally {
            inFlight--;
          }
        };
        try {
          const ball = { points: [{ x: 150, y: 220, label: 1 }], box: null };
          // the sample's click, a copy's (another embedding: prepared, and the sample's session released), the
          // sample's again (prepared again)
          const [first, copy, again] = await Promise.all([
            decode(decoder, embedding, ball), decode(decoder, { ...embedding }, ball), decode(decoder, embedding, ball),
          ]);
          const same = [copy, again].every((other) => first.mask.every((v, i) => v === other.mask[i]));
          return { most, pixels: first.mask.reduce((a, v) => a + v, 0), same };
        } finally {
          sessions.run = run;
        }
    }"""
    )
    assert seen["most"] == 1 and seen["pixels"] > 0 and seen["same"]


@pytest.mark.sam3d_body
def test_make_3d_person_shows_the_mesh_and_its_keypoints(page, torchserve, tmp_path):
    open_sample(page)
    click_image(page, 150, 220)
    drawn = overlay_mask(page)
    page.click("#make3dperson")
    page.wait_for_function("window.gen3d.person || window.gen3d.error", timeout=180_000)
    assert page.evaluate("window.gen3d.error") is None
    person = page.evaluate("window.gen3d.person.people[0]")
    ys, xs = np.nonzero(drawn)
    assert person["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the mask's tight box
    viewer = page.evaluate("({vertices: window.gen3d.viewer.vertices, keypoints: window.gen3d.viewer.keypoints})")
    assert viewer == {"vertices": 18_439, "keypoints": 70}
    status = rf"{re.escape(page.evaluate('window.gen3d.person.model_id'))}: 18439 vertices, 70 keypoints in \d+\.\d s"
    assert re.fullmatch(status + r" \(demo weights: random, the pose means nothing\)", page.inner_text("#gen-status"))
    assert [a.get_attribute("download") for a in page.locator("#downloads a").all()] == ["people.glb", "person_0.json"]
    screenshot(page, "demo-page-person.png", tmp_path)


def test_kept_masks_make_a_3d_scene_with_every_object_placed(page, tmp_path):
    open_sample(page)
    for x, y in ((150, 220), (295, 200), (390, 220)):  # the ball, the mug, the box
        click_image(page, x, y)
        page.click("#keep")
    kept = page.evaluate("window.gen3d.state.kept.map(k => k.mask.reduce((a, v) => a + v, 0))")
    assert len(kept) == 3 and all(kept) and page.locator("#kept li").count() == 3
    assert page.evaluate("window.gen3d.state.points.length") == 0  # each kept mask clears the prompts
    page.click("#make-scene")
    page.wait_for_function("window.gen3d.scene || window.gen3d.error", timeout=300_000)
    assert page.evaluate("window.gen3d.error") is None
    answer = page.evaluate(
        "({objects: window.gen3d.scene.objects, outputs: Object.keys(window.gen3d.scene.outputs_base64)})"
    )
    assert [o["status"] for o in answer["objects"]] == ["success"] * 3 and answer["outputs"] == [
        "scene_glb",
        "scene_ply",
    ]
    placed = page.evaluate(
        """() => [0, 1, 2].map(i => window.gen3d.viewer.object.getObjectByName(`object_${i}`)).map(n => ({
            vertices: n.geometry.attributes.position.count,
            moved: !n.matrix.equals(new n.matrix.constructor()),
        }))"""
    )
    assert [p["vertices"] for p in placed] == [o["mesh"]["vertices"] for o in answer["objects"]]
    assert all(p["moved"] for p in placed)  # each node carries its object's placement
    exported = page.evaluate("window.gen3d.viewer.nodeGlb('object_0').then(b => Array.from(new Uint8Array(b, 0, 4)))")
    assert bytes(exported) == b"glTF"  # the object's own GLB, for its download link
    assert page.evaluate("window.gen3d.viewer.vertices") == sum(o["mesh"]["vertices"] for o in answer["objects"])
    names = [a.get_attribute("download") for a in page.locator("#downloads a").all()]
    assert names == ["scene.glb", "scene.ply"] + [f"object-{i}{s}" for i in range(3) for s in (".glb", "-pose.json")]
    assert "3 of 3 objects placed" in page.inner_text("#gen-status")
    shot = np.asarray(Image.open(screenshot(page.locator("#viewer"), "demo-page-scene-viewer.png", tmp_path)))
    background = np.array([0x20, 0x24, 0x2B])
    assert (np.abs(shot[..., :3].astype(int) - background).sum(axis=2) > 30).mean() > 0.01
    screenshot(page, "demo-page-scene.png", tmp_path)


def center(box: dict) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_concept_segment_overlays_every_instance(page, torchserve):
    with posted_content_types(page) as sent:  # the server runs a task for JSON and image types only
        page.evaluate("window.gen3d.state.embedding = null; window.gen3d.error = null")
        page.set_input_files("#file", str(SAMPLE))  # "Open image": a file of this computer
        page.wait_for_function("window.gen3d.state.embedding || window.gen3d.error", timeout=60_000)
        assert page.evaluate("window.gen3d.error") is None
        assert page.inner_text("#status").startswith("still-life.png: embedding")
        page.fill("#text", "red ball")
        page.fill("#threshold", "0")
        page.click("#concept-form button")
        page.wait_for_function("window.gen3d.state.instances.length > 0 || window.gen3d.error", timeout=60_000)
    assert sent == ["image/png", "application/json"]
    body = {
        "task": "segment",
        "image_base64": base64.b64encode(SAMPLE.read_bytes()).decode(),
        "text": "red ball",
        "score_threshold": 0,
    }
    served = post(torchserve, body).json()["masks"]
    # each instance's mask as the page decoded it, encoded again by rle.js (checked against pycocotools below)
    instances = page.evaluate(
        "window.gen3d.state.instances.map(i => ({score: i.score, rle: window.gen3d.rle.encodeRle(i.mask, 360, 480)}))"
    )
    assert len(instances) == len(served) == page.locator("#instances li").count()
    assert [i["score"] for i in instances] == [m["score"] for m in served]
    assert [i["rle"] for i in instances] == [m["rle"] for m in served]
    drawn = page.evaluate(
        """() => {
        const c = document.getElementById("concepts");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
        return n;
    }"""
    )
    union = np.any([mask_from_rle(m["rle"], m["rle"]["size"]) for m in served], axis=0)
    assert drawn == union.sum()  # every instance is overlaid


def test_a_picture_the_browser_calls_something_else_is_sent_as_octets(page):
    """The server takes an image body as image/* or application/octet-stream only: a file whose type the browser
    does not know as an image (a .heic on some systems, a misnamed file) still gets an embedding."""
    page.evaluate("window.gen3d.state.embedding = null; window.gen3d.error = null")
    misnamed = {"name": "still-life.txt", "mimeType": "text/plain", "buffer": SAMPLE.read_bytes()}
    with posted_content_types(page) as sent:
        page.set_input_files("#file", files=[misnamed])
        page.wait_for_function("window.gen3d.state.embedding || window.gen3d.error", timeout=60_000)
    assert page.evaluate("window.gen3d.error") is None
    assert sent == ["application/octet-stream"]


def test_server_errors_are_shown_as_the_json_says(page):
    open_sample(page)
    page.evaluate("document.getElementById('text').value = 'x'.repeat(300)")  # over the 256-character limit
    page.click("#concept-form button")
    page.wait_for_function("window.gen3d.error", timeout=60_000)
    error = page.evaluate("window.gen3d.error")
    assert error["status"] == 400
    assert error["body"]["error"]["field"] == "text" and error["body"]["request_id"]
    shown = page.inner_text("#error")
    assert shown.startswith("The server answered HTTP 400:")
    assert json.loads(shown.split("\n", 1)[1]) == error["body"]


def test_a_failed_make_3d_says_so_and_gives_its_button_back(page):
    """The server refuses an empty mask (400): the status line says the task failed, the error shows the server's
    JSON, and the button is on again for the next try."""
    open_sample(page)
    page.evaluate(
        "() => { const s = window.gen3d.state; s.mask = new Uint8Array(s.height * s.width); window.gen3d.error = null;"
        " document.getElementById('make3d').disabled = false; }"
    )
    page.click("#make3d")
    page.wait_for_function("window.gen3d.error", timeout=60_000)
    error = page.evaluate("window.gen3d.error")
    assert error["status"] == 400 and "mask is empty" in error["body"]["error"]["message"]
    page.wait_for_function("!document.getElementById('make3d').disabled", timeout=10_000)
    assert page.inner_text("#gen-status") == "generate_3d failed"
    assert page.inner_text("#error").startswith("The server answered HTTP 400:")


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("model_id", "sam3/sam3/0123456789abcdef", "this decoder to sam3/"),
        ("format", "gen3d.sam3.other-embedding/v0", f"this decoder takes {EMBEDDING_FORMAT}"),  # the decoder file's
    ],
)
def test_the_page_refuses_an_embedding_of_another_model(page, key, value, says):
    """The get_embedding answer is rewritten on its way to the page to name another model (or another format than
    the decoder file's embedding_format)."""

    def other_model(route):
        response = route.fetch()
        data = response.body()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        header["__metadata__"][key] = value
        encoded = json.dumps(header).encode()
        encoded += b" " * (-len(encoded) % 8)
        route.fulfill(response=response, body=len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])

    page.route("**/predictions/sam3", other_model)
    page.evaluate("window.gen3d.error = null")
    page.click("[data-sample]")
    page.wait_for_function("window.gen3d.error", timeout=60_000)
    message = page.evaluate("window.gen3d.error.message")
    assert value in message and says in message, message
    assert page.evaluate("window.gen3d.state.embedding") is None
    assert "no embedding" in page.inner_text("#status")


def test_the_pages_file_readers_agree_with_python(page, decoder_onnx, tmp_path):
    """rle.js against pycocotools (rle_from_mask), safetensors.js's float16 against numpy, onnx_metadata.js
    against onnx."""
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.5, np.zeros((20, 30), bool), np.ones((4, 5), bool)]
    masks.append(np.pad(np.ones((300, 200), bool), ((70, 10), (5, 90))))  # long runs: multi-character counts
    cases = [{"size": list(m.shape), "mask": m.astype(np.uint8).ravel().tolist()} for m in masks]
    results = page.evaluate(
        """async (cases) => {
        const { encodeRle, decodeRle } = await import("/src/rle.js");
        return cases.map((c) => {
            const rle = encodeRle(Uint8Array.from(c.mask), c.size[0], c.size[1]);
            return { rle, back: Array.from(decodeRle(rle)) };
        });
    }""",
        cases,
    )
    for mask, result in zip(masks, results, strict=True):
        assert result["rle"] == rle_from_mask(mask)
        np.testing.assert_array_equal(np.array(result["back"], bool).reshape(mask.shape), mask)

    from safetensors.numpy import save

    halves = np.arange(65536, dtype=np.uint16).view(np.float16)  # every float16, subnormals, inf and NaN included
    data = save({"t": halves.reshape(256, 256)}, metadata={"model_id": "m"})
    widened = page.evaluate(
        """async (b64) => {
        const { parseSafetensors } = await import("/src/safetensors.js");
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const parsed = parseSafetensors(bytes.buffer);
        const t = parsed.tensors.t;
        return { meta: parsed.metadata, dims: t.dims, bits: Array.from(new Uint32Array(t.data.buffer)) };
    }""",
        base64.b64encode(data).decode(),
    )
    assert widened["meta"] == {"model_id": "m"} and widened["dims"] == [256, 256]
    got = np.array(widened["bits"], np.uint32).view(np.float32)
    want = halves.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(want)], want[~np.isnan(want)])

    metadata = page.evaluate(
        """async () => {
        const { readOnnxMetadata } = await import("/src/onnx_metadata.js");
        return readOnnxMetadata(new Uint8Array(await (await fetch("/decoder.onnx")).arrayBuffer()));
    }"""
    )
    assert metadata == read_metadata(decoder_onnx)


@pytest.mark.parametrize("max_sprinkle_area", [0.0, 30.0])
@pytest.mark.parametrize("size", [(203, 150), (40, 90)])  # larger than the logits; fewer rows (taps skip some)
def test_the_pages_post_processing_equals_sam3s(page, max_sprinkle_area, size):
    """postprocess.js (decoder format v2: low-res logits in, the picture's mask out) against sam3's own
    SAM2Transforms.postprocess_masks on random logit fields, smooth to noise: the hole filling exactly, the mask except
    where sam3's resized logit is a float-rounding tie (|logit| < 1e-4)."""
    import torch
    import torch.nn.functional as F
    from sam3.model.utils.sam1_utils import SAM2Transforms

    transforms = SAM2Transforms(112, 0.0, max_hole_area=256.0, max_sprinkle_area=max_sprinkle_area)
    generator = torch.Generator().manual_seed(3)
    fields = []
    for scale in (1, 2, 4, 8, 4, 2, 16):
        x = torch.randn(1, 1, 64 // scale + 1, 64 // scale + 1, generator=generator)
        fields.append(F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False) + 0.4 * (scale % 3 - 1))
    fields.append(torch.full((1, 1, 64, 64), -1.0))  # no object at all
    results = page.evaluate(
        """async ({fields, size, sprinkles}) => {
        const { fillSmallComponents, upsampleMask } = await import("/src/postprocess.js");
        return fields.map((f) => {
            const filled = fillSmallComponents(Float32Array.from(f), 64, 64, 0, 256, sprinkles);
            return { filled: Array.from(filled), mask: Array.from(upsampleMask(filled, 64, 64, size[0], size[1], 0)) };
        });
    }""",
        {"fields": [f.flatten().tolist() for f in fields], "size": size, "sprinkles": max_sprinkle_area},
    )
    filled = 0
    for field, result in zip(fields, results, strict=True):
        expected = transforms.postprocess_masks(field, field.shape[-2:])  # resized to its own size: the fill alone
        np.testing.assert_array_equal(np.array(result["filled"], np.float32).reshape(64, 64), expected[0, 0].numpy())
        filled += int((expected != field).sum())
        logits = transforms.postprocess_masks(field, size)[0, 0].numpy()
        differ = np.array(result["mask"], bool).reshape(size) != (logits > 0)
        assert np.abs(logits[differ]).max(initial=0) < 1e-4, f"{differ.sum()} pixels differ beyond ties"
    assert filled > 100 and not any(results[-1]["mask"])


def test_make_serve_serves_the_page_and_opens_cors_for_it(model_store, aws_env, tmp_path, decoder_onnx):
    """gen3d-serve-local (what `make serve` runs) with the page: the decoder found in its cache, the page server on
    loopback naming TorchServe, and TorchServe's CORS opened for the page's origin in the config copy in logs/."""
    from gen3d.sam3.onnx_export import cached_decoder_path
    from gen3d.torchserve import runner

    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(model_store / "sam3.mar", store / "sam3.mar")
    cached = cached_decoder_path(tmp_path / "onnx", store / "sam3.mar")  # the session's export, as if cached
    cached.parent.mkdir()
    shutil.copy(decoder_onnx, cached)
    shutil.copy(click_graph_path(decoder_onnx), click_graph_path(cached))
    page_port = runner.free_ports(1)[0]
    env = dict(os.environ, **aws_env, GEN3D_CACHE_DIR=str(tmp_path / "cache"))
    args = ["--page-port", str(page_port), "--decoder-cache", str(tmp_path / "onnx")]
    with serve_local(tmp_path, store, env, *args, ready="demo page: open") as served:
        assert f"ONNX decoder of {store / 'sam3.mar'}: {cached} (cached)" in served.text()
        page, inference = f"http://127.0.0.1:{page_port}", f"http://127.0.0.1:{served.port}"
        written = runner.read_config(served.logs / "config.properties")
        assert written["cors_allowed_origin"] == page
        assert "cors_allowed_origin" not in runner.read_config(served.config)  # the config it was given stays closed
        assert requests.get(page + "/config.json", timeout=5).json()["inference_url"] == inference
        assert requests.get(page + "/decoder.onnx", timeout=5).content == decoder_onnx.read_bytes()
        preflight = requests.options(
            f"{inference}/predictions/sam3",
            timeout=5,
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == page


def test_api_page_renders_the_openapi_document_and_tries_an_operation(browser, page_server, torchserve):
    """/api: Swagger UI (npm's swagger-ui-dist, served from this server) renders docs/openapi.json's operations,
    and "Try it out" on POST /predictions/sam3 with the document's first example answers 200 from TorchServe (CORS
    opened for the page's origin), the server set from /config.json."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:")) else outside.append(r.url))
    try:
        page.goto(page_server.url + "api")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert {"/predictions/sam3", "/predictions/sam3d", "/invocations", "/ping"} <= {p.strip() for p in paths}
        operation = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/predictions/sam3"))
        operation = operation.filter(has_not_text="sam3d").first
        operation.locator(".opblock-summary").click()
        operation.locator(".try-out__btn").click()
        operation.locator(".execute").click()
        answer = operation.locator(".live-responses-table tbody tr.response").first
        answer.wait_for(timeout=60_000)
        assert answer.locator(".response-col_status").inner_text().strip() == "200", answer.inner_text()
        assert '"task": "get_embedding"' in answer.inner_text()
        servers = page.evaluate("window.gen3dApi.spec.servers")
        assert servers[0]["url"] == torchserve.inference_url
        assert errors == [] and outside == []  # nothing from a CDN, no validator badge
    finally:
        context.close()


def test_javascript_example_decodes_the_servers_mask(page, torchserve):
    """docs/demo-page.md's JavaScript example, run as written in the page's context (its import map names
    onnxruntime-web): only its relative imports, the picture's URL and TorchServe's address are replaced. Its mask
    has the pixels segment answers for the same box and click."""
    from tests.doc_blocks import examples_run_by

    (block,) = examples_run_by("tests/integration/test_demo_page.py")
    code = (
        block.code.replace('"./', '"/src/')
        .replace('fetch("photo.png")', 'fetch("/samples/still-life.png")')
        .replace("http://127.0.0.1:8080", torchserve.inference_url)
    )
    page.evaluate("window.exampleResult = null")
    page.add_script_tag(content=code + "\nwindow.exampleResult = { pixels: mask.reduce((a, b) => a + b, 0) };",
                        type="module")  # fmt: skip
    page.wait_for_function("window.exampleResult", timeout=60_000)
    pixels = page.evaluate("window.exampleResult.pixels")
    body = {"task": "segment", "image_base64": base64.b64encode(SAMPLE.read_bytes()).decode(),
            "boxes": [[70, 140, 235, 300]], "points": [[150, 220]], "point_labels": [1]}  # fmt: skip
    served = post_ok(torchserve, body).json()["masks"][0]["area"]
    assert pixels > 0 and abs(pixels - served) <= 480 * 360 * 1e-4  # onnxruntime-web's rounding at most
