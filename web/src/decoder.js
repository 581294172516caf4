// SAM 3's prompt decoder in the browser: the ONNX file exported from the served sam3 archive
// (gen3d-export-onnx), run by onnxruntime-web's WebAssembly backend on the get_embedding tensors; the mask's
// post-processing (hole filling at low resolution, upsampling, threshold) is postprocess.js's. An embedding's first
// run prepares it (its prompt-independent tensors, the prepared_* outputs), and those become the initializers of a
// session of the decoder's click graph (its companion file), which decodes each later click from the prompts alone.
import * as ort from "onnxruntime-web";
import { readOnnxMetadata } from "./onnx_metadata.js";
import { fillSmallComponents, upsampleMask } from "./postprocess.js";

// v4: low-res logits out, the embedding's preparation handed back, factored (gen3d/sam3/onnx_export.py)
export const DECODER_FORMAT = "gen3d.sam3.interactive-decoder-onnx/v4";
export const CLICK_GRAPH_FORMAT = "gen3d.sam3.click-graph-onnx/v1"; // the decoder's click graph: <stem>.click.onnx
// the graph's input: the embedding file's tensor, and its side / the decoder's grid
const EMBEDDING_INPUTS = {
  image_embed: { tensor: "image_embed", scale: 1 },
  high_res_feats_0: { tensor: "high_res_feats.0", scale: 4 },
  high_res_feats_1: { tensor: "high_res_feats.1", scale: 2 },
};
const MASK_OUTPUTS = ["low_res_logits", "iou_predictions"];

ort.env.wasm.wasmPaths = "/vendor/onnxruntime-web/"; // served from web/node_modules, never a CDN

/** WebAssembly threads the page asks for: one per core, at most 4 (a click's graph gains little beyond). */
export function pageThreads() {
  return Math.min(4, navigator.hardwareConcurrency || 1);
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Where the click graph of the decoder file at url is: beside it, <stem>.click.onnx (gen3d-export-onnx). */
export function clickGraphUrl(url) {
  return url.replace(/\.onnx$/, "") + ".click.onnx";
}

/**
 * {session, metadata, clickGraph} of the decoder file at url and its click graph's bytes, run on `threads`
 * WebAssembly threads (one without cross-origin isolation). onnxruntime-web starts its WebAssembly once per page:
 * the first call's `threads` holds for the page.
 */
export async function loadDecoder(url, threads = pageThreads()) {
  const [bytes, clickGraph] = await Promise.all([fetchBytes(url), fetchBytes(clickGraphUrl(url))]);
  const metadata = readOnnxMetadata(bytes);
  if (metadata.format !== DECODER_FORMAT) {
    throw new Error(`${url} is a decoder of format ${metadata.format}; this page takes ${DECODER_FORMAT}`);
  }
  const clickMetadata = readOnnxMetadata(clickGraph);
  const same = ["model_id", "export_code", "grid", "outputs_k"];
  const paired = same.every((key) => clickMetadata[key] === metadata[key]);
  if (clickMetadata.format !== CLICK_GRAPH_FORMAT || !paired) {
    throw new Error(`${clickGraphUrl(url)} is not the ${CLICK_GRAPH_FORMAT} file exported with ${url}`);
  }
  ort.env.wasm.numThreads = threads;
  // logSeverityLevel 3 (errors): mask_input/has_mask_input have defaults (initializers), which ORT warns about
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], logSeverityLevel: 3 });
  return { session, metadata, clickGraph, prepared: null, queue: Promise.resolve() };
}

/** fn() once the decoder's earlier runs have ended: one run, or change of its click graph session, at a time. */
function serially(decoder, fn) {
  const next = decoder.queue.then(() => fn());
  decoder.queue = next.catch(() => {}); // a failed run answers its caller; the next one still runs
  return next;
}

/**
 * Throws unless the embedding file belongs to the decoder's model and is the format the decoder takes (both
 * recorded in the decoder file's metadata: model_id, embedding_format).
 */
export function checkEmbedding(decoder, embedding) {
  const meta = embedding.metadata;
  const format = decoder.metadata.embedding_format;
  if (meta.format !== format) {
    throw new Error(`the embedding's format is ${meta.format}; this decoder takes ${format}`);
  }
  if (meta.model_id !== decoder.metadata.model_id) {
    throw new Error(`the embedding belongs to model ${meta.model_id}; this decoder to ${decoder.metadata.model_id}`);
  }
}

function emptyTensor(dims) {
  return new ort.Tensor("float32", new Float32Array(0), dims);
}

/** The decoder's feeds for an embedding's first run: its tensors, and empty prepared_*_in. */
function embeddingFeeds(decoder, embedding) {
  const feeds = {};
  for (const input of decoder.session.inputMetadata) {
    const source = EMBEDDING_INPUTS[input.name];
    if (source) {
      const t = embedding.tensors[source.tensor];
      feeds[input.name] = new ort.Tensor("float32", t.data, t.dims);
    } else if (input.name.startsWith("prepared_")) feeds[input.name] = emptyTensor([0, input.shape[1]]);
  }
  return feeds;
}

function promptFeeds(embedding, prompts) {
  const [height, width] = embedding.size;
  const coords = [];
  const labels = [];
  if (prompts.box) {
    const { x0, y0, x1, y1 } = prompts.box;
    coords.push(x0, y0, x1, y1);
    labels.push(2, 3);
  }
  for (const p of prompts.points) {
    coords.push(p.x, p.y);
    labels.push(p.label);
  }
  return {
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, labels.length, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
    orig_im_size: new ort.Tensor("int64", BigInt64Array.from([BigInt(height), BigInt(width)]), [2]),
  };
}

/**
 * Runs the decoder for prompts on the embedding. The embedding's first run (the decoder file given its tensors)
 * answers its preparation too; that becomes the initializers of a click graph session (decoder.prepared, one
 * embedding at a time: the previous one's session is released), which runs every later click on it; runs never
 * overlap (a picture's preparation may release the session a click was decoding on). As constants
 * the prepared tensors are not copied per run and onnxruntime pre-packs their products (docs/performance.md).
 */
function run(decoder, embedding, prompts) {
  return serially(decoder, () => runNow(decoder, embedding, prompts));
}

async function runNow(decoder, embedding, prompts) {
  const feeds = promptFeeds(embedding, prompts);
  if (decoder.prepared?.embedding === embedding) return decoder.prepared.session.run(feeds, MASK_OUTPUTS);
  const session = decoder.session;
  const out = await session.run({ ...embeddingFeeds(decoder, embedding), ...feeds }, session.outputNames);
  const bytesOf = ({ data }) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const externalData = session.outputNames
    .filter((name) => name.startsWith("prepared_"))
    .map((name) => ({ path: name, data: bytesOf(out[name]) })); // the click graph's initializers, by their names
  const previous = decoder.prepared;
  decoder.prepared = null;
  if (previous) await previous.session.release();
  const options = { executionProviders: ["wasm"], externalData };
  const clickSession = await ort.InferenceSession.create(decoder.clickGraph, options);
  decoder.prepared = { embedding, session: clickSession };
  return out;
}

/**
 * Prepares the embedding for clicks (a run on one click at its centre, whose answer is dropped) unless it is
 * prepared; returns the ms it took (0 when it was prepared).
 */
export async function prepareEmbedding(decoder, embedding) {
  if (decoder.prepared?.embedding === embedding) return 0;
  const started = performance.now();
  const [height, width] = embedding.size;
  await run(decoder, embedding, { points: [{ x: width / 2, y: height / 2, label: 1 }], box: null });
  return performance.now() - started;
}

// V8 runs a WebAssembly function on its baseline compiler until the function has run enough, then compiles it with
// its optimizing tier in the background. In Chromium 156 on the published size, a fresh page's first ~6 clicks took
// 2-3x a click's time and the first embedding's preparation twice its time (docs/performance.md); after an
// embedding's preparation and 6 clicks on zeros they did not, and after 12 a picture's first clicks on its click graph
// session were ~15-20 ms faster again (the click graph's kernels are run by the warm-up's click session only).
export const WARM_UP_CLICKS = 12;

/**
 * Runs the decoder on an all-zero embedding of its shapes (its preparation, then `clicks` clicks, post-processing
 * included) so that the browser has compiled onnxruntime's kernels with its optimizing tier before the visitor's
 * first picture and click. Yields to the page before each run and calls onProgress(done, total) after it. Returns
 * the ms it took.
 */
export async function warmUpDecoder(decoder, clicks = WARM_UP_CLICKS, onProgress = () => {}) {
  const started = performance.now();
  const grid = Number(decoder.metadata.grid);
  const side = 16 * grid; // any picture size: only the clicks' coordinates depend on it
  const tensors = {};
  for (const input of decoder.session.inputMetadata) {
    const source = EMBEDDING_INPUTS[input.name];
    if (!source) continue;
    const n = grid * source.scale;
    tensors[source.tensor] = { dims: [1, input.shape[1], n, n], data: new Float32Array(input.shape[1] * n * n) };
  }
  const zeros = { size: [side, side], metadata: {}, tensors };
  const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0)); // the page paints, takes events
  await yieldToPage();
  await prepareEmbedding(decoder, zeros);
  onProgress(1, clicks + 1);
  for (let i = 0; i < clicks; i++) {
    await yieldToPage();
    const at = ((i + 1) * side) / (clicks + 1);
    await decode(decoder, zeros, { points: [{ x: at, y: side - at, label: 1 }], box: null });
    onProgress(i + 2, clicks + 1);
  }
  return performance.now() - started;
}

/**
 * Masks for prompts: points [{x, y, label}] (1 object, 0 background) and an optional box {x0, y0, x1, y1}, in
 * pixels of the original image. The box's corners go first (labels 2, 3); no padding point (the graph adds it).
 * Returns {mask: Uint8Array row-major (1 = object), score, ms, runMs}: ms from the inputs to the mask,
 * post-processing included (and the embedding's preparation, on its first run); runMs the part before the
 * post-processing (the decoder's run, and any wait for an earlier run to end).
 */
export async function decode(decoder, embedding, prompts) {
  const started = performance.now();
  const [height, width] = embedding.size;
  const out = await run(decoder, embedding, prompts);
  const runMs = performance.now() - started;
  const [, , lowHeight, lowWidth] = out.low_res_logits.dims; // [1, K, 4G, 4G]: the first (K=1: the only) mask
  const meta = decoder.metadata;
  const threshold = Number(meta.mask_threshold);
  const low = out.low_res_logits.data.subarray(0, lowHeight * lowWidth);
  const filled = fillSmallComponents(
    low, lowHeight, lowWidth, threshold, Number(meta.max_hole_area), Number(meta.max_sprinkle_area),
  );
  const mask = upsampleMask(filled, lowHeight, lowWidth, height, width, threshold);
  return { mask, score: out.iou_predictions.data[0], ms: performance.now() - started, runMs };
}
