// The demo page: open an image -> get_embedding (the safetensors file) -> every click, shift-click or box drag is
// decoded here by the ONNX decoder, without a server call; a text box runs concept segment on the server;
// "Make 3D" sends the current mask to sam3d's generate_3d and shows the GLB; "Keep mask" adds it to the scene's
// masks, and "Make 3D scene" sends them all (scene.js) and shows every object placed; "Make 3D person" sends the
// mask to sam3d_body's generate_body and shows the person's mesh with its 70 keypoints (those three: generation.js).
import { Api, ServerError, base64Of } from "./api.js";
import { checkEmbedding, decode, loadDecoder, prepareEmbedding, warmUpDecoder } from "./decoder.js";
import { make3d, make3dPerson, makeScene } from "./generation.js";
import { decodeRle, encodeRle } from "./rle.js";
import { parseSafetensors } from "./safetensors.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const MASK_RGBA = [30, 144, 255, 140];
const INSTANCE_COLOURS = [[255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209], [255, 140, 0]];

const state = {
  api: null,
  decoder: null,
  warmUp: null, // the decoder's warm-up (a promise of its ms): an embedding's preparation waits for it
  file: null, // the image file as sent to the server
  width: 0,
  height: 0,
  embedding: null,
  points: [], // {x, y, label} in image pixels
  box: null, // {x0, y0, x1, y1}
  mask: null, // the current mask: Uint8Array row-major, 1 = object
  maskSource: "",
  instances: [],
  kept: [], // masks kept for "Make 3D scene": {mask, source}
  decodes: 0,
  lastDecodeMs: null,
  decoding: false,
  pending: false,
};
const gen3d = { state, ready: false, error: null, viewer: null, rle: { encodeRle, decodeRle } };
window.gen3d = gen3d; // for the browser test and the console

function setStatus(text) {
  $("status").textContent = text;
}

function showError(err) {
  const box = $("error");
  if (err instanceof ServerError) {
    gen3d.error = { status: err.status, body: err.body };
    box.textContent = `The server answered HTTP ${err.status}:\n${JSON.stringify(err.body, null, 2)}`;
  } else {
    gen3d.error = { message: err.message };
    box.textContent = err.message;
  }
  box.hidden = false;
  console.error(err);
}

function clearError() {
  $("error").hidden = true;
  gen3d.error = null;
}

// -- drawing ---------------------------------------------------------------------------------------------
/** Sets the pixels of `image` (ImageData) where mask is 1 to rgba: whole pixels at once (4x faster than bytes). */
function colour(image, mask, rgba) {
  const pixels = new Uint32Array(image.data.buffer);
  const [value] = new Uint32Array(Uint8ClampedArray.from(rgba).buffer); // rgba's bytes, in this machine's order
  for (let i = 0; i < mask.length; i++) if (mask[i]) pixels[i] = value;
}

function paint(canvas, mask, rgba) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!mask) return;
  const image = ctx.createImageData(canvas.width, canvas.height);
  colour(image, mask, rgba);
  ctx.putImageData(image, 0, 0);
}

function paintInstances() {
  const canvas = $("concepts");
  const image = canvas.getContext("2d").createImageData(canvas.width, canvas.height);
  const masks = [...state.instances, ...state.kept];
  masks.forEach((instance, n) => colour(image, instance.mask, [...INSTANCE_COLOURS[n % INSTANCE_COLOURS.length], 110]));
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function paintPrompts(dragBox) {
  const canvas = $("prompts");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const unit = Math.max(canvas.width, canvas.height) / 300; // about 1 px on screen
  const box = dragBox ?? state.box;
  if (box) {
    ctx.strokeStyle = "#ffd400";
    ctx.lineWidth = 2 * unit;
    ctx.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
  }
  for (const p of state.points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, 4 * unit, 0, 2 * Math.PI);
    ctx.fillStyle = p.label === 1 ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = unit;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function setMask(mask, source) {
  state.mask = mask;
  state.maskSource = source;
  paint($("mask"), mask, MASK_RGBA);
  $("make3d").disabled = $("make3dperson").disabled = !mask || !mask.some((v) => v);
  $("keep").disabled = $("make3d").disabled;
}

// -- masks kept for a scene ---------------------------------------------------------------------------------
function keepMask() {
  if (!state.mask) return;
  state.kept.push({ mask: state.mask, source: state.maskSource });
  clearPrompts();
  paintInstances();
  listKept();
}

function listKept() {
  const items = state.kept.map((entry, n) => {
    const item = document.createElement("li");
    const remove = document.createElement("button");
    remove.textContent = "remove";
    remove.addEventListener("click", () => {
      state.kept.splice(n, 1);
      paintInstances();
      listKept();
    });
    item.append(`object ${n}: ${entry.source}, ${entry.mask.reduce((a, v) => a + v, 0)} px `, remove);
    return item;
  });
  $("kept").replaceChildren(...items);
  $("make-scene").disabled = !state.kept.length;
}

// -- prompts -> masks, in the browser -----------------------------------------------------------------------
async function runDecode() {
  if (state.decoding) {
    state.pending = true; // decode the latest prompts once this run ends
    return;
  }
  state.decoding = true;
  try {
    do {
      state.pending = false;
      if (!state.points.length && !state.box) {
        setMask(null, "");
        $("decode-time").textContent = "";
        continue;
      }
      const n = state.points.length;
      const result = await decode(state.decoder, state.embedding, { points: state.points, box: state.box });
      const drawing = performance.now();
      state.decodes++;
      state.lastDecodeMs = result.ms;
      setMask(result.mask, "prompts");
      $("decode-time").textContent =
        `mask decoded in the browser in ${result.ms.toFixed(1)} ms and drawn in ` +
        `${(performance.now() - drawing).toFixed(1)} ms more ` +
        `(${n} point${n === 1 ? "" : "s"}${state.box ? " and a box" : ""}, ` +
        `predicted IoU ${result.score.toFixed(3)})`;
    } while (state.pending);
  } catch (err) {
    showError(err);
  } finally {
    state.decoding = false;
  }
}

function imagePoint(event) {
  const r = $("prompts").getBoundingClientRect();
  const x = ((event.clientX - r.left) / r.width) * state.width;
  const y = ((event.clientY - r.top) / r.height) * state.height;
  return { x: Math.min(Math.max(x, 0), state.width - 1), y: Math.min(Math.max(y, 0), state.height - 1) };
}

function listenToPrompts() {
  const canvas = $("prompts");
  let start = null;
  const boxFrom = (a, b) => ({
    x0: Math.min(a.x, b.x),
    y0: Math.min(a.y, b.y),
    x1: Math.max(a.x, b.x),
    y1: Math.max(a.y, b.y),
  });
  const dragged = (a, b) => {
    const r = canvas.getBoundingClientRect();
    return Math.hypot(((b.x - a.x) * r.width) / state.width, ((b.y - a.y) * r.height) / state.height) > 5;
  };
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.embedding) return;
    start = imagePoint(event);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (start && dragged(start, imagePoint(event))) paintPrompts(boxFrom(start, imagePoint(event)));
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!start) return;
    const end = imagePoint(event);
    if (dragged(start, end)) state.box = boxFrom(start, end);
    else state.points.push({ ...start, label: event.shiftKey ? 0 : 1 });
    start = null;
    paintPrompts();
    clearError();
    runDecode();
  });
}

function clearPrompts() {
  state.points = [];
  state.box = null;
  paintPrompts();
  setMask(null, "");
  $("decode-time").textContent = "";
}

// -- server calls -------------------------------------------------------------------------------------------
async function openImage(file, name) {
  clearError();
  clearPrompts();
  state.embedding = null;
  state.instances = [];
  state.kept = [];
  listKept();
  $("instances").replaceChildren();
  const bitmap = await createImageBitmap(file); // EXIF orientation applied, as the server does
  state.file = file;
  state.width = bitmap.width;
  state.height = bitmap.height;
  for (const canvas of document.querySelectorAll("#stage canvas")) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  $("image").getContext("2d").drawImage(bitmap, 0, 0);
  paintInstances();
  setStatus(`get_embedding of ${name} (${bitmap.width}x${bitmap.height})...`);
  try {
    const started = performance.now();
    const buffer = await state.api.getEmbedding(file);
    const parsed = parseSafetensors(buffer);
    const size = [Number(parsed.metadata.original_height), Number(parsed.metadata.original_width)];
    const embedding = { ...parsed, size, bytes: buffer.byteLength };
    checkEmbedding(state.decoder, embedding);
    if (size[0] !== state.height || size[1] !== state.width) {
      throw new Error(`the server saw a ${size[1]}x${size[0]} image, the browser ${state.width}x${state.height}`);
    }
    const ms = performance.now() - started;
    // after the warm-up's last run: a warm-up click queued behind this preparation would prepare the zeros again;
    // a failed warm-up is its own error (shown when it failed), and each picture then tries on its own
    await state.warmUp?.catch(() => {});
    const prepareMs = await prepareEmbedding(state.decoder, embedding); // once: later clicks only decode
    state.embedding = embedding;
    setStatus(
      `${name}: embedding ${embedding.metadata.embedding_id.slice(0, 8)} (${embedding.metadata.dtype}, ` +
        `${(buffer.byteLength / 1e6).toFixed(2)} MB) in ${ms.toFixed(0)} ms, prepared for clicks in ` +
        `${prepareMs.toFixed(0)} ms. Click the object.`,
    );
  } catch (err) {
    setStatus(`${name}: no embedding`);
    showError(err);
  }
}

async function segmentConcept(event) {
  event.preventDefault();
  if (!state.file) return;
  clearError();
  const text = $("text").value;
  const threshold = Number($("threshold").value);
  setStatus(`segment "${text}" on the server...`);
  try {
    const answer = await state.api.segment({
      image_base64: await base64Of(state.file),
      text,
      score_threshold: threshold,
      model_id: state.decoder.metadata.model_id,
    });
    state.instances = answer.masks.map((m) => ({ ...m, mask: decodeRle(m.rle) }));
    paintInstances();
    listInstances();
    setStatus(`segment "${text}": ${state.instances.length} instance(s) scoring above ${threshold}`);
  } catch (err) {
    setStatus(`segment "${text}" failed`);
    showError(err);
  }
}

function listInstances() {
  const items = state.instances.map((instance, n) => {
    const item = document.createElement("li");
    const [r, g, b] = INSTANCE_COLOURS[n % INSTANCE_COLOURS.length];
    item.style.borderLeftColor = `rgb(${r}, ${g}, ${b})`;
    const use = document.createElement("button");
    use.textContent = "use for 3D";
    use.addEventListener("click", () => {
      clearPrompts();
      setMask(instance.mask, `instance ${n + 1}`);
    });
    item.append(`#${n + 1} score ${instance.score.toFixed(3)}, ${instance.area} px `, use);
    return item;
  });
  $("instances").replaceChildren(...items);
}

// -- start --------------------------------------------------------------------------------------------------
async function start() {
  try {
    const config = await (await fetch("/config.json")).json();
    state.api = new Api(config.inference_url);
    setStatus("loading the ONNX decoder...");
    state.decoder = await loadDecoder(config.decoder_url);
    const meta = state.decoder.metadata;
    $("model").textContent = `${meta.model_id} · decoder K=${meta.outputs_k} · TorchServe ${config.inference_url}`;
    state.warmUp = warmUpDecoder(state.decoder, undefined, (done, total) => {
      if (!state.file) setStatus(`open an image or a sample (warming up the decoder: run ${done} of ${total})`);
    });
    state.warmUp.then(
      (ms) => {
        $("model").textContent += ` · decoder warmed up in ${ms.toFixed(0)} ms`;
        if (!state.file) setStatus("open an image or a sample");
      },
      (err) => {
        setStatus("the decoder could not run");
        showError(err);
      },
    );
    gen3d.viewer = new Viewer($("viewer"));
    listenToPrompts();
    $("file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      if (file) openImage(file, file.name);
    });
    for (const button of document.querySelectorAll("[data-sample]")) {
      button.addEventListener("click", async () => {
        const response = await fetch(button.dataset.sample);
        openImage(await response.blob(), button.dataset.sample.split("/").pop());
      });
    }
    $("clear").addEventListener("click", () => {
      clearPrompts();
      clearError();
    });
    $("concept-form").addEventListener("submit", segmentConcept);
    const page = { state, gen3d, clearError, showError };
    $("make3d").addEventListener("click", () => make3d(page));
    $("make3dperson").addEventListener("click", () => make3dPerson(page));
    $("keep").addEventListener("click", keepMask);
    $("make-scene").addEventListener("click", () => makeScene(page));
    setStatus("open an image or a sample");
    gen3d.ready = true;
  } catch (err) {
    setStatus("the page could not start");
    showError(err);
  }
}

gen3d.openImage = openImage;
start();
