// Requests to TorchServe's inference API (CORS is opened for this page's origin by `make serve`).
// A failed request throws ServerError carrying the server's JSON error as it came:
// {status, task, request_id, error: {code, field, message}}.

export class ServerError extends Error {
  constructor(status, body) {
    const e = body?.error ?? {};
    super(`${status}${e.field ? ` ${e.field}` : ""}: ${e.message ?? JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

async function failure(response) {
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { status: "error", error: { code: response.status, message: text || response.statusText } };
  }
  return new ServerError(response.status, body);
}

export class Api {
  constructor(inferenceUrl) {
    this.url = inferenceUrl.replace(/\/$/, "");
  }

  async post(model, body, headers) {
    let response;
    try {
      response = await fetch(`${this.url}/predictions/${model}`, { method: "POST", headers, body });
    } catch (err) {
      throw new Error(`cannot reach TorchServe at ${this.url} (${err.message}); is \`make serve\` running?`);
    }
    if (!response.ok) throw await failure(response);
    return response;
  }

  async postJson(model, request) {
    const response = await this.post(model, JSON.stringify(request), { "Content-Type": "application/json" });
    return response.json();
  }

  /** get_embedding of the image file's bytes, as the safetensors file itself (ArrayBuffer). The server takes an
   * image body as image/* or application/octet-stream only (415 otherwise). */
  async getEmbedding(file) {
    const type = file.type.startsWith("image/") ? file.type : "application/octet-stream";
    const headers = { "Content-Type": type, Accept: "application/octet-stream" };
    return (await this.post("sam3", file, headers)).arrayBuffer();
  }

  segment(request) {
    return this.postJson("sam3", { task: "segment", ...request });
  }

  generate3d(request) {
    return this.postJson("sam3d", { task: "generate_3d", ...request });
  }

  generateBody(request) {
    return this.postJson("sam3d_body", { task: "generate_body", ...request });
  }
}

/** The file's bytes as base64 (for image_base64). */
export async function base64Of(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** base64 -> ArrayBuffer. */
export function bytesOf(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}
