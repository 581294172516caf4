// COCO run-length encoding (pycocotools' compressed string form), the masks' format in segment answers and in
// generate_3d's mask_rle. Masks here are row-major Uint8Array(height * width) with 1 for the object; COCO counts
// runs in column-major order, starting with a run of 0s.

/** {size: [h, w], counts: string} of a row-major mask. */
export function encodeRle(mask, height, width) {
  const runs = [];
  let value = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== value) {
        runs.push(run);
        run = 0;
        value = v;
      }
      run++;
    }
  }
  runs.push(run);
  let counts = "";
  for (let i = 0; i < runs.length; i++) {
    let x = i > 2 ? runs[i] - runs[i - 2] : runs[i]; // pycocotools' rleToString: deltas after the 3rd run
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5; // arithmetic shift: negative deltas end on -1
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      counts += String.fromCharCode(c + 48);
    }
  }
  return { size: [height, width], counts };
}

/** Row-major Uint8Array mask of a COCO RLE {size: [h, w], counts: string}. */
export function decodeRle(rle) {
  const [height, width] = rle.size;
  const s = rle.counts;
  const runs = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const mask = new Uint8Array(height * width);
  let index = 0; // column-major position
  for (let i = 0; i < runs.length; i++) {
    if (i % 2 === 1) {
      for (let j = index; j < index + runs[i]; j++) mask[(j % height) * width + Math.floor(j / height)] = 1;
    }
    index += runs[i];
  }
  if (index !== height * width) {
    throw new Error(`RLE covers ${index} pixels; its size ${height}x${width} has ${height * width}`);
  }
  return mask;
}
