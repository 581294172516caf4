"""Click-to-mask in the browser at the published size: the page's own decoder code (web/src/decoder.js,
postprocess.js) in headless Debian Chromium (onnxruntime-web, WebAssembly, cross-origin isolated), on an ONNX
decoder of the published architecture (preset ``sam3``, random weights: time does not depend on them) and random
features of the published shapes, for a picture of ``HEIGHT`` x ``WIDTH``.

The decoder file is exported once and cached in ``.scratch/bench/`` by the export code's digest (~40 s on 2 cores).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from pathlib import Path

from gen3d.sam3.onnx_export import click_graph_path, code_digest

CHECKOUT = Path(__file__).resolve().parents[2]
CACHE = CHECKOUT / ".scratch" / "bench"
CHROMIUM = "/usr/bin/chromium"
# no sandbox as root; no GPU here (WebGL runs on SwiftShader, which Chromium enables only when asked); nothing of
# Chromium's own reaches the network (this machine has none but the package registries)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HEIGHT, WIDTH = 1008, 1344
BENCH_PAGE = "bench.html"  # a blank page of the page server's origin (routed by Playwright), so no main.js runs

# In the page: load the decoder on `threads` threads and warm it up as the page does (`pageWarmUp` clicks), make the
# features, prepare them, time decode() on the first `warmup` clicks and then on `clicks` clicks, and the
# post-processing alone on the last answer's logits.
CLICKS_JS = """async ({threads, clicks, warmup, height, width, pageWarmUp}) => {
  const { loadDecoder, decode, prepareEmbedding, warmUpDecoder } = await import("/src/decoder.js");
  const { fillSmallComponents, upsampleMask } = await import("/src/postprocess.js");
  const decoder = await loadDecoder("/decoder.onnx", threads);
  const warmUpMs = pageWarmUp > 0 ? await warmUpDecoder(decoder, pageWarmUp) : 0;
  const g = Number(decoder.metadata.grid);
  let seed = 1;
  const random = (n) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      a[i] = seed / 1073741824 - 1;
    }
    return a;
  };
  const feature = (dims) => ({ dims, data: random(dims.reduce((x, y) => x * y)) });
  const embedding = {
    size: [height, width],
    metadata: {},
    tensors: {
      image_embed: feature([1, 256, g, g]),
      "high_res_feats.0": feature([1, 32, 4 * g, 4 * g]),
      "high_res_feats.1": feature([1, 64, 2 * g, 2 * g]),
    },
  };
  const click = (i) => ({ points: [{ x: (97 * i) % width, y: (61 * i) % height, label: 1 }], box: null });
  const prepareMs = await prepareEmbedding(decoder, embedding); // as the page does when the embedding arrives
  const first = [];
  for (let i = 0; i < warmup; i++) first.push((await decode(decoder, embedding, click(i))).ms);
  const ms = [];
  const runMs = [];
  let object = 0;
  for (let i = 0; i < clicks; i++) {
    const result = await decode(decoder, embedding, click(warmup + i));
    ms.push(result.ms);
    runMs.push(result.runMs);
    object += result.mask.reduce((a, b) => a + b, 0) / result.mask.length;
  }
  const meta = decoder.metadata;
  const low = new Float32Array(16 * g * g);
  const post = [];
  for (let i = 0; i < 5; i++) {
    low.set(random(low.length));
    const started = performance.now();
    const filled = fillSmallComponents(low, 4 * g, 4 * g, 0, Number(meta.max_hole_area), 0);
    upsampleMask(filled.fill(1), 4 * g, 4 * g, height, width, 0);  // all object: the whole picture upsampled
    post.push(performance.now() - started);
  }
  return { ms, runMs, first, warmUpMs, prepareMs, object: object / clicks, post, isolated: crossOriginIsolated,
           cores: navigator.hardwareConcurrency, pageThreads: (await import("/src/decoder.js")).pageThreads() };
}"""


def decoder_file() -> Path:
    """The published-architecture decoder with random weights (seed 0), exported once per export code."""
    out = CACHE / f"sam3-random-decoder-{code_digest()[:16]}.onnx"
    if out.is_file():
        return out
    import torch

    from gen3d.sam3.architecture import interactive_predictor
    from gen3d.sam3.onnx_export import export_predictor
    from gen3d.sam3.presets import get_preset

    torch.manual_seed(0)
    preset = get_preset("sam3")
    identity = {"model_id": "bench/sam3-random-seed0", "checkpoint_sha256": "none (random weights)"}
    export_predictor(interactive_predictor(preset).eval(), preset, identity, out, False, None)
    return out


def bench_page_html() -> str:
    """A blank page with index.html's import map (so decoder.js's imports resolve as on the page)."""
    index = (CHECKOUT / "web" / "index.html").read_text()
    importmap = re.search(r'<script type="importmap">.*?</script>', index, re.S)
    if importmap is None:
        raise RuntimeError("web/index.html has no import map")
    return f"<!doctype html><html><head>{importmap.group(0)}</head><body></body></html>"


def run(clicks: int = 20, warmup: int = 3, decoder: Path | None = None, page_warm_up: int | None = None) -> dict:
    """Median ms per click on one thread and on the page's threads (post-processing included; the decoder warmed up
    and the embedding prepared first, as the page does), and more; ``decoder``: another decoder file (format v4) to
    measure than the published architecture's; ``page_warm_up``: the page's warm-up clicks (None: the page's
    ``WARM_UP_CLICKS``; 0: no warm-up, as the page was before it had one)."""
    from playwright.sync_api import sync_playwright

    from gen3d.web.page_server import PageServer

    decoder = decoder or decoder_file()
    server = PageServer("http://127.0.0.1:9", 0)  # no TorchServe: only the decoder is used
    server.start(decoder, click_graph_path(decoder))
    headers = {
        "Content-Type": "text/html",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Embedder-Policy": "require-corp",
    }
    html = bench_page_html()
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for name, threads in (("one_thread", 1), ("page_threads", None)):
                page = browser.new_page()
                page.route(server.url + BENCH_PAGE, lambda route: route.fulfill(body=html, headers=headers))
                page.goto(server.url + BENCH_PAGE)
                args = {"threads": threads, "clicks": clicks, "warmup": warmup, "height": HEIGHT, "width": WIDTH}
                args["pageWarmUp"] = (
                    page.evaluate("import('/src/decoder.js').then((m) => m.WARM_UP_CLICKS)")
                    if page_warm_up is None
                    else page_warm_up
                )
                if threads is None:
                    args["threads"] = page.evaluate("import('/src/decoder.js').then((m) => m.pageThreads())")
                results[name] = {"threads": args["threads"], "pageWarmUp": args["pageWarmUp"]}
                results[name].update(page.evaluate(CLICKS_JS, args))
                page.close()
            version = browser.version
            browser.close()
    finally:
        server.stop()
    one, many = results["one_thread"], results["page_threads"]
    rest = [total - run for total, run in zip(many["ms"], many["runMs"], strict=True)]
    if not (one["isolated"] and many["isolated"]):
        raise RuntimeError("the bench page is not cross-origin isolated: onnxruntime-web would run one thread")
    return {
        "browser_click_ms_p50": round(statistics.median(many["ms"]), 1),
        "browser_click_ms_p50_one_thread": round(statistics.median(one["ms"]), 1),
        "browser_threads": many["threads"],
        # the click's parts on the page's threads: the decoder's run, and the rest (post-processing of these masks)
        "browser_click_run_ms_p50": round(statistics.median(many["runMs"]), 1),
        "browser_click_postprocess_ms_p50": round(statistics.median(rest), 1),
        "browser_postprocess_ms_p50_full_picture": round(statistics.median(one["post"] + many["post"]), 1),
        "browser_prepare_embedding_ms": round(many["prepareMs"], 1),  # once per embedding, on its first run
        "browser_first_click_ms": round(many["first"][0], 1) if many["first"] else None,  # a picture's first click
        "browser_page_warm_up_ms": round(many["warmUpMs"], 1),  # once per page, after loading the decoder
        "browser_page_warm_up_clicks": many["pageWarmUp"],
        "browser_clicks": clicks,
        "browser_click_ms": {"one_thread": one["ms"], "page_threads": many["ms"]},
        "browser_first_clicks_ms": {"one_thread": one["first"], "page_threads": many["first"]},
        "browser_mask_object_fraction": round(many["object"], 4),
        "browser": f"Debian Chromium {version}, headless, onnxruntime-web {onnxruntime_web_version()} (wasm)",
        "browser_machine": machine(),
        "browser_load_average": [round(v, 2) for v in os.getloadavg()],
        "browser_decoder_mb": round(decoder.stat().st_size / 1e6, 1),
        "browser_picture": [HEIGHT, WIDTH],
    }


def onnxruntime_web_version() -> str:
    import json

    package = CHECKOUT / "web" / "node_modules" / "onnxruntime-web" / "package.json"
    return json.loads(package.read_text())["version"]


def machine() -> str:
    """CPU model and core count, as lscpu names them."""
    lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    info = dict(line.split(":", 1) for line in lines if ":" in line)
    return f"{info.get('Model name', '?').strip()}, {os.cpu_count()} cores"
