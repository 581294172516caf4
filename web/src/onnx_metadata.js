// ModelProto.metadata_props (field 14: StringStringEntryProto {key = 1, value = 2}) read straight from the file's
// protobuf wire format: onnxruntime-web has no API for a model's custom metadata.

function reader(bytes) {
  let pos = 0;
  const varint = () => {
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) throw new Error("not an ONNX file: truncated varint");
      result += (b & 0x7f) * scale; // arithmetic, not bit shifts: lengths may pass 2**31
      if (!(b & 0x80)) return result;
      scale *= 128;
    }
  };
  return {
    get pos() { return pos; },
    set pos(value) { pos = value; },
    varint,
  };
}

function parseFields(bytes, onField) {
  const r = reader(bytes);
  while (r.pos < bytes.length) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) r.varint();
    else if (wire === 1) r.pos += 8;
    else if (wire === 5) r.pos += 4;
    else if (wire === 2) {
      const length = r.varint();
      onField(field, bytes.subarray(r.pos, r.pos + length));
      r.pos += length;
    } else throw new Error(`not an ONNX file: wire type ${wire}`);
  }
}

/** {key: value} of an ONNX file's metadata_props (model_id, format, ...), from its bytes (Uint8Array). */
export function readOnnxMetadata(bytes) {
  const text = new TextDecoder();
  const metadata = {};
  parseFields(bytes, (field, value) => {
    if (field !== 14) return;
    const entry = {};
    parseFields(value, (f, v) => {
      if (f === 1) entry.key = text.decode(v);
      else if (f === 2) entry.value = text.decode(v);
    });
    metadata[entry.key] = entry.value ?? "";
  });
  return metadata;
}
