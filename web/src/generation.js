// The page's 3D actions on the server: "Make 3D" (sam3d's generate_3d of the current mask), "Make 3D person"
// (sam3d_body's generate_body) and "Make 3D scene" (generate_3d of every kept mask); each shows its answer in the
// viewer with download links. `page` is main.js's: {state, gen3d, clearError, showError}.
import { base64Of, bytesOf } from "./api.js";
import { answerSummary, downloadLink } from "./answer_view.js";
import { encodeRle } from "./rle.js";
import { sceneLinks, sceneRequest, sceneSummary } from "./scene.js";

const $ = (id) => document.getElementById(id);

/** Shows "`label`..." in the status line, then "`label`... N s" every 0.5 s until the function it returns is
 * called. */
function showElapsed(label) {
  const started = performance.now();
  $("gen-status").textContent = `${label}...`;
  const timer = setInterval(() => {
    $("gen-status").textContent = `${label}... ${((performance.now() - started) / 1000).toFixed(0)} s`;
  }, 500);
  return () => clearInterval(timer);
}

/** Runs `work`, one of the page's server tasks: its button off and the time elapsed shown meanwhile; if it throws,
 * `failed` in the status line and the error shown; then the button on again where `enabled()`. */
async function onServer({ clearError, showError }, { button, doing, failed, enabled }, work) {
  clearError();
  $(button).disabled = true;
  const stopElapsed = showElapsed(doing);
  try {
    await work();
  } catch (err) {
    $("gen-status").textContent = failed;
    showError(err);
  } finally {
    stopElapsed();
    $(button).disabled = !enabled();
  }
}

export async function make3d(page) {
  const { state, gen3d } = page;
  if (!state.mask) return;
  const task = {
    button: "make3d",
    doing: "generate_3d on the server",
    failed: "generate_3d failed",
    enabled: () => state.mask,
  };
  await onServer(page, task, async () => {
    const answer = await state.api.generate3d({
      image_base64: await base64Of(state.file),
      mask_rle: encodeRle(state.mask, state.height, state.width),
      seed: 42,
    });
    const files = answer.outputs_base64;
    await gen3d.viewer.show(bytesOf(files.glb));
    showPose(answer);
    showDownloads([
      [files.glb, "object.glb", "model/gltf-binary"],
      [files.ply, "object.ply", "application/octet-stream"],
      [files.pose, "pose.json", "application/json"],
    ]);
    const made = `${answer.mesh?.vertices ?? "?"} vertices, ${answer.gaussians ?? "?"} Gaussians`;
    $("gen-status").textContent = answerSummary(answer, made, "the shape means");
    gen3d.generation = answer;
  });
}

export async function make3dPerson(page) {
  const { state, gen3d } = page;
  if (!state.mask) return;
  const task = {
    button: "make3dperson",
    doing: "generate_body on the server",
    failed: "generate_body failed",
    enabled: () => state.mask,
  };
  await onServer(page, task, async () => {
    // the mask alone: the server uses its tight box, as upstream conditions a mask on its box
    const answer = await state.api.generateBody({
      image_base64: await base64Of(state.file),
      masks: [{ mask_rle: encodeRle(state.mask, state.height, state.width) }],
    });
    const [person] = answer.people;
    // keypoints in the GLB's frame: the camera frame (keypoints_3d + translation) turned to glTF's, (x, -y, -z)
    const t = person.camera.translation;
    const keypoints = person.keypoints_3d.map(([x, y, z]) => [x + t[0], -(y + t[1]), -(z + t[2])]);
    await gen3d.viewer.show(bytesOf(answer.outputs_base64.people_glb), keypoints);
    $("pose").textContent =
      `camera translation [${t.map((v) => v.toFixed(3)).join(", ")}], focal length ` +
      `${person.camera.focal_length.toFixed(1)} px`;
    showDownloads([
      [answer.outputs_base64.people_glb, "people.glb", "model/gltf-binary"],
      [person.outputs_base64.params, "person_0.json", "application/json"],
    ]);
    const made = `${person.mesh.vertices} vertices, ${keypoints.length} keypoints`;
    $("gen-status").textContent = answerSummary(answer, made, "the pose means");
    gen3d.person = answer;
  });
}

export async function makeScene(page) {
  const { state, gen3d } = page;
  if (!state.kept.length) return;
  const task = {
    button: "make-scene",
    doing: `generate_3d of ${state.kept.length} objects on the server`,
    failed: "generate_3d of the scene failed",
    enabled: () => state.kept.length,
  };
  await onServer(page, task, async () => {
    const answer = await state.api.generate3d({
      image_base64: await base64Of(state.file),
      ...sceneRequest(state.kept, state.height, state.width),
    });
    await gen3d.viewer.show(bytesOf(answer.outputs_base64.scene_glb));
    $("pose").textContent = "";
    $("downloads").replaceChildren(...(await sceneLinks(answer, gen3d.viewer)));
    $("gen-status").textContent = sceneSummary(answer);
    gen3d.scene = answer;
  });
}

function showPose(answer) {
  const fmt = (values) => values.map((v) => v.toFixed(3)).join(", ");
  const { rotation, translation, scale } = answer.pose;
  $("pose").textContent =
    `pose (object -> camera): rotation wxyz [${fmt(rotation)}], translation [${fmt(translation)}], ` +
    `scale [${fmt(scale)}]`;
}

/** Download links of [base64, file name, media type] triples. */
function showDownloads(files) {
  $("downloads").replaceChildren(...files.map(([data, name, type]) => downloadLink(bytesOf(data), name, type)));
}
