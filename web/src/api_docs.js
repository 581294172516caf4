// The HTTP API's documentation: Swagger UI (the global SwaggerUIBundle of swagger-ui-bundle.js) showing
// /openapi.json (docs/openapi.json, written by gen3d-schema --openapi), its server set to the inference API this
// page server was told about (/config.json), so "Try it out" calls it (TorchServe's CORS names this origin).

async function json(url) {
  const answer = await fetch(url);
  if (!answer.ok) throw new Error(`${url}: HTTP ${answer.status}`);
  return answer.json();
}

const [config, spec] = await Promise.all([json("/config.json"), json("/openapi.json")]);
spec.servers = [{ url: config.inference_url, description: "the inference API this page talks to" }];
window.gen3dApi = {
  spec,
  ui: window.SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no badge from validator.swagger.io: nothing leaves this machine
  }),
};
