// The get_embedding file (safetensors): an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the tensors' bytes.
// Tensors come back as float32 (float16 is widened exactly), as the ONNX decoder takes them.

let halfToFloat = null; // float16 bit pattern -> float32 value, all 65536 of them (every one is exact in float32)

function halfTable() {
  if (halfToFloat) return halfToFloat;
  halfToFloat = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) halfToFloat[h] = sign * fraction * 2 ** -24; // zero and subnormals
    else if (exponent === 31) halfToFloat[h] = fraction ? NaN : sign * Infinity;
    else halfToFloat[h] = sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return halfToFloat;
}

function toFloat32(dtype, bytes, name) {
  // typed arrays use the platform's byte order: little-endian on every platform browsers run on
  if (dtype === "F32") return new Float32Array(bytes);
  if (dtype === "F16") {
    const table = halfTable();
    const half = new Uint16Array(bytes);
    const out = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) out[i] = table[half[i]];
    return out;
  }
  throw new Error(`tensor ${name} has dtype ${dtype}; the embedding file holds F16 or F32`);
}

/** Parses a safetensors ArrayBuffer: {metadata: {key: string}, tensors: {name: {dims, data: Float32Array}}}. */
export function parseSafetensors(buffer) {
  if (buffer.byteLength < 8) throw new Error("not a safetensors file: shorter than its 8-byte header length");
  const headerLength = Number(new DataView(buffer).getBigUint64(0, true));
  if (headerLength > buffer.byteLength - 8) throw new Error("not a safetensors file: header longer than the file");
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
  const metadata = header.__metadata__ ?? {};
  delete header.__metadata__;
  const start = 8 + headerLength;
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    const [begin, end] = info.data_offsets;
    tensors[name] = { dims: info.shape, data: toFloat32(info.dtype, buffer.slice(start + begin, start + end), name) };
  }
  return { metadata, tensors };
}
