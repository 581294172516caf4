// "Make 3D scene": the masks kept on the page go to generate_3d as `masks`, one object each; the answer's scene.glb
// (every object placed by its pose, in glTF's frame) is shown, with downloads of the scene and of each object.
import { bytesOf } from "./api.js";
import { answerSummary, downloadLink as link } from "./answer_view.js";
import { encodeRle } from "./rle.js";

/** The generate_3d request of the kept masks: only the scene's files come back (object_files false), so that
 * several objects fit the server's inline answer limit; each object's pose is in the answer. */
export function sceneRequest(kept, height, width, seed = 42) {
  return {
    masks: kept.map((entry) => ({ mask_rle: encodeRle(entry.mask, height, width) })),
    object_files: false,
    seed,
  };
}

/** Download links: scene.glb, scene.ply, then for each object its mesh (its node of the scene, exported back to
 * the object's own frame by the viewer) and its pose. */
export async function sceneLinks(answer, viewer) {
  const files = answer.outputs_base64;
  const links = [];
  if (files.scene_glb) links.push(link(bytesOf(files.scene_glb), "scene.glb", "model/gltf-binary"));
  if (files.scene_ply) links.push(link(bytesOf(files.scene_ply), "scene.ply", "application/octet-stream"));
  for (const object of answer.objects.filter((o) => o.status === "success")) {
    const glb = await viewer.nodeGlb(`object_${object.index}`);
    if (glb) links.push(link(glb, `object-${object.index}.glb`, "model/gltf-binary"));
    const pose = JSON.stringify({ index: object.index, seed: object.seed, ...object.pose }, null, 1);
    links.push(link(pose, `object-${object.index}-pose.json`, "application/json"));
  }
  return links;
}

/** One line: how many objects were placed, which failed and why. */
export function sceneSummary(answer) {
  const placed = answer.objects.filter((o) => o.status === "success");
  const failed = answer.objects.filter((o) => o.status !== "success");
  const gaussians = placed.reduce((n, o) => n + (o.gaussians ?? 0), 0);
  const errors = failed.map((o) => `; object ${o.index} failed: ${o.error.message}`).join("");
  const made = `${placed.length} of ${answer.objects.length} objects placed, ${gaussians} Gaussians`;
  return answerSummary(answer, made, "the shapes mean") + errors;
}
