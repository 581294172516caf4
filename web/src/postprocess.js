// sam3's mask post-processing (SAM2Transforms.postprocess_masks) on the decoder's low-resolution logits (decoder
// formats v2 and v3): fill small 8-connected components at low resolution, then resize bilinearly to the picture and
// threshold, computing full-resolution pixels only where a low-resolution neighbour is the object.

/**
 * A copy of `logits` (Float32Array, height x width, row-major) where every 8-connected component of
 * `logits <= threshold` (background) of at most `maxHoleArea` pixels is set to threshold + 10, and, when
 * `maxSprinkleArea` > 0, every component of `logits > threshold` of at most that many pixels to threshold - 10.
 * Both sets of components are those of the given logits, as sam3 labels them (skimage, 8-connectivity).
 */
export function fillSmallComponents(logits, height, width, threshold, maxHoleArea, maxSprinkleArea) {
  const out = Float32Array.from(logits);
  const fills = [
    [maxHoleArea, (v) => v <= threshold, threshold + 10],
    [maxSprinkleArea, (v) => v > threshold, threshold - 10],
  ];
  const seen = new Uint8Array(height * width);
  const component = new Int32Array(height * width); // the current component's pixels, visited breadth-first
  for (const [maxArea, selected, fillValue] of fills) {
    if (!(maxArea > 0)) continue;
    seen.fill(0);
    for (let start = 0; start < seen.length; start++) {
      if (seen[start] || !selected(logits[start])) continue;
      seen[start] = 1;
      component[0] = start;
      let size = 1;
      for (let head = 0; head < size; head++) {
        const p = component[head];
        const y = (p / width) | 0;
        const x = p - y * width;
        for (let dy = -1; dy <= 1; dy++) {
          const ny = y + dy;
          if (ny < 0 || ny >= height) continue;
          for (let dx = -1; dx <= 1; dx++) {
            const nx = x + dx;
            if (nx < 0 || nx >= width) continue;
            const q = ny * width + nx;
            if (seen[q] || !selected(logits[q])) continue;
            seen[q] = 1;
            component[size++] = q;
          }
        }
      }
      if (size <= maxArea) for (let i = 0; i < size; i++) out[component[i]] = fillValue;
    }
  }
  return out;
}

/** torch's bilinear source taps (align_corners=False) of each of `outSize` pixels: {i0, i1, w1} per pixel. */
function taps(inSize, outSize) {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w1 = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(scale * (d + 0.5) - 0.5, 0);
    i0[d] = Math.floor(src);
    i1[d] = Math.min(i0[d] + 1, inSize - 1);
    w1[d] = src - i0[d];
  }
  return { i0, i1, w1 };
}

/**
 * The mask (Uint8Array outHeight x outWidth, 1 = object) of low-resolution logits (Float32Array, height x width)
 * resized bilinearly as torch's F.interpolate(align_corners=False) does: the object where > threshold. An output
 * pixel whose four source pixels are all <= threshold is a convex combination of them, hence background: only the
 * output rows and columns that read the object's bounding box are computed.
 */
export function upsampleMask(logits, height, width, outHeight, outWidth, threshold) {
  const mask = new Uint8Array(outHeight * outWidth);
  let [top, bottom, left, right] = [height, -1, width, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (logits[y * width + x] > threshold) {
        if (y < top) top = y;
        bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return mask;
  const rows = taps(height, outHeight);
  const cols = taps(width, outWidth);
  const reads = (t, d, lo, hi) => t.i1[d] >= lo && t.i0[d] <= hi;
  let x0 = 0;
  while (!reads(cols, x0, left, right)) x0++;
  let x1 = outWidth - 1;
  while (!reads(cols, x1, left, right)) x1--;
  const span = x1 - x0 + 1;
  // each low-resolution row resized horizontally once (columns x0..x1), rows top-1..bottom+1 as needed
  const rowTop = Math.max(top - 1, 0);
  const across = new Float32Array((Math.min(bottom + 1, height - 1) - rowTop + 1) * span);
  for (let r = rowTop; r <= Math.min(bottom + 1, height - 1); r++) {
    const base = r * width;
    const at = (r - rowTop) * span;
    for (let x = x0; x <= x1; x++) {
      const w = cols.w1[x];
      across[at + x - x0] = (1 - w) * logits[base + cols.i0[x]] + w * logits[base + cols.i1[x]];
    }
  }
  for (let y = 0; y < outHeight; y++) {
    if (!reads(rows, y, top, bottom)) continue;
    const w = rows.w1[y];
    const a = (rows.i0[y] - rowTop) * span;
    const b = (rows.i1[y] - rowTop) * span;
    const at = y * outWidth + x0;
    for (let i = 0; i < span; i++) mask[at + i] = (1 - w) * across[a + i] + w * across[b + i] > threshold ? 1 : 0;
  }
  return mask;
}
