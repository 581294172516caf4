// SAM 3's prompt decoder in the browser: the ONNX file exported from the served sam3 archive
// (gen3d-export-onnx), run by onnxruntime-web's WebAssembly backend on the get_embedding tensors.
import * as ort from "onnxruntime-web";
import { readOnnxMetadata } from "./onnx_metadata.js";

ort.env.wasm.wasmPaths = "/vendor/onnxruntime-web/"; // served from web/node_modules, never a CDN

/** {session, metadata} of the decoder file at url. */
export async function loadDecoder(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  const metadata = readOnnxMetadata(bytes);
  // logSeverityLevel 3 (errors): mask_input/has_mask_input have defaults (initializers), which ORT warns about
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], logSeverityLevel: 3 });
  return { session, metadata };
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

/**
 * Masks for prompts: points [{x, y, label}] (1 object, 0 background) and an optional box {x0, y0, x1, y1}, in
 * pixels of the original image. The box's corners go first (labels 2, 3); no padding point (the graph adds it).
 * Returns {mask: Uint8Array row-major (1 = object), score, ms}.
 */
export async function decode(decoder, embedding, prompts) {
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
  const t = embedding.tensors;
  const feeds = {
    image_embed: new ort.Tensor("float32", t["image_embed"].data, t["image_embed"].dims),
    high_res_feats_0: new ort.Tensor("float32", t["high_res_feats.0"].data, t["high_res_feats.0"].dims),
    high_res_feats_1: new ort.Tensor("float32", t["high_res_feats.1"].data, t["high_res_feats.1"].dims),
    point_coords: new ort.Tensor("float32", Float32Array.from(coords), [1, labels.length, 2]),
    point_labels: new ort.Tensor("float32", Float32Array.from(labels), [1, labels.length]),
    orig_im_size: new ort.Tensor("int64", BigInt64Array.from([BigInt(height), BigInt(width)]), [2]),
  };
  const started = performance.now();
  const out = await decoder.session.run(feeds);
  const ms = performance.now() - started;
  const logits = out.masks.data; // [1, 1, height, width]: object where > 0
  const mask = new Uint8Array(height * width);
  for (let i = 0; i < mask.length; i++) mask[i] = logits[i] > 0 ? 1 : 0;
  return { mask, score: out.iou_predictions.data[0], ms };
}
