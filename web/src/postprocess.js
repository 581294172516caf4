// sam3's mask post-processing (SAM2Transforms.postprocess_masks) on the decoder's low-resolution logits (decoder
// formats v2 and later): fill small 8-connected components at low resolution, then resize bilinearly to the picture
// and threshold, interpolating only the output pixels whose four source pixels are not all on one side.

/**
 * Calls onSmall(row, start, end) for every run of pixels [start, end) of a row that belongs to an 8-connected
 * component of at most `maxArea` pixels where `selected` (Uint8Array, height x width) is 1. The components are
 * labelled by runs: each run joins (union-find) the runs of the row above that touch it, diagonals included.
 */
function smallComponents(selected, height, width, maxArea, onSmall) {
  const most = height * Math.ceil(width / 2); // runs are at least one pixel apart
  const [row, first, last] = [new Int32Array(most), new Int32Array(most), new Int32Array(most)];
  const rowRuns = new Int32Array(height + 1); // row y's runs are rowRuns[y] .. rowRuns[y + 1] - 1
  let runs = 0;
  for (let y = 0; y < height; y++) {
    rowRuns[y] = runs;
    const base = y * width;
    for (let x = 0; x < width; x++) {
      if (!selected[base + x]) continue;
      row[runs] = y;
      first[runs] = x;
      while (x < width && selected[base + x]) x++;
      last[runs++] = x; // one past the run
    }
  }
  rowRuns[height] = runs;
  const parent = new Int32Array(runs);
  for (let r = 0; r < runs; r++) parent[r] = r;
  const root = (r) => {
    while (parent[r] !== r) r = parent[r] = parent[parent[r]]; // path halving
    return r;
  };
  for (let y = 1; y < height; y++) {
    let above = rowRuns[y - 1];
    for (let r = rowRuns[y]; r < rowRuns[y + 1]; r++) {
      while (above < rowRuns[y] && last[above] < first[r]) above++; // ends left of r's left diagonal
      for (let a = above; a < rowRuns[y] && first[a] <= last[r]; a++) {
        const u = root(r);
        const v = root(a);
        if (u !== v) parent[Math.max(u, v)] = Math.min(u, v); // a root precedes its runs
      }
    }
  }
  const size = new Int32Array(runs);
  for (let r = 0; r < runs; r++) {
    parent[r] = parent[parent[r]]; // the parent is earlier, so already points at its root
    size[parent[r]] += last[r] - first[r];
  }
  for (let r = 0; r < runs; r++) if (size[parent[r]] <= maxArea) onSmall(row[r], first[r], last[r]);
}

/**
 * A copy of `logits` (Float32Array, height x width, row-major) where every 8-connected component of
 * `logits <= threshold` (background) of at most `maxHoleArea` pixels is set to threshold + 10, and, when
 * `maxSprinkleArea` > 0, every component of `logits > threshold` of at most that many pixels to threshold - 10.
 * Both sets of components are those of the given logits, as sam3 labels them (skimage, 8-connectivity).
 */
export function fillSmallComponents(logits, height, width, threshold, maxHoleArea, maxSprinkleArea) {
  const out = logits.slice(); // a copy (Float32Array.from iterates: ~7x as long at 288x288)
  const fills = [
    [maxHoleArea, false, threshold + 10],
    [maxSprinkleArea, true, threshold - 10],
  ];
  for (const [maxArea, ofObject, fillValue] of fills) {
    if (!(maxArea > 0)) continue;
    const selected = new Uint8Array(logits.length); // of the given logits, not `out`; +(a comparison): see makeRows
    if (ofObject) for (let p = 0; p < logits.length; p++) selected[p] = +(logits[p] > threshold);
    else for (let p = 0; p < logits.length; p++) selected[p] = +(logits[p] <= threshold); // NaN: neither, as in sam3
    smallComponents(selected, height, width, maxArea, (y, start, end) => {
      out.fill(fillValue, y * width + start, y * width + end);
    });
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

/** The runs of consecutive output pixels that read the same two source pixels: {start, i0, i1, count}. */
function tapRuns({ i0, i1 }) {
  const [start, from, to] = [new Int32Array(i0.length + 1), new Int32Array(i0.length), new Int32Array(i0.length)];
  let count = 0;
  for (let d = 0; d < i0.length; d++) {
    if (count > 0 && from[count - 1] === i0[d] && to[count - 1] === i1[d]) continue;
    start[count] = d;
    from[count] = i0[d];
    to[count++] = i1[d];
  }
  start[count] = i0.length; // run k is start[k] .. start[k + 1] - 1
  return { start, i0: from, i1: to, count };
}

const [BACKGROUND, OBJECT, MIXED] = [0, 1, 2];
const SHORT = 16; // output pixels: a run this short beside a mixed one is interpolated with it (one loop, not a fill)

/**
 * How to make the output columns of a row that reads source rows r0 and r1, into `plan` (Int32Array of
 * start, end, kind triples; returns their count): OBJECT where all four source pixels are the object (`object`: 1
 * per source pixel), MIXED where they are to be interpolated (some are the object, and short runs beside those,
 * whose interpolation gives the same); background left out.
 */
function rowPlan(object, width, r0, r1, columnRuns, plan) {
  const { start, i0, i1, count } = columnRuns;
  const add = (at, first, end, kind) => {
    plan[3 * at] = first;
    plan[3 * at + 1] = end;
    plan[3 * at + 2] = kind;
  };
  const [a, b] = [r0 * width, r1 * width];
  let runs = 0; // first pass: the longest runs of one kind, background included
  for (let k = 0; k < count; k++) {
    const n = object[a + i0[k]] + object[a + i1[k]] + object[b + i0[k]] + object[b + i1[k]];
    const kind = n === 0 ? BACKGROUND : n === 4 ? OBJECT : MIXED;
    if (runs > 0 && plan[3 * runs - 1] === kind) plan[3 * runs - 2] = start[k + 1];
    else add(runs++, start[k], start[k + 1], kind);
  }
  let kept = 0; // then, in place: short runs beside a mixed one made mixed, runs of a kind merged, background dropped
  let previous = BACKGROUND;
  for (let r = 0; r < runs; r++) {
    const first = plan[3 * r];
    const end = plan[3 * r + 1];
    const next = r + 1 < runs ? plan[3 * r + 5] : BACKGROUND;
    const beside = previous === MIXED || next === MIXED;
    const own = plan[3 * r + 2];
    previous = own;
    const kind = end - first < SHORT && beside ? MIXED : own;
    if (kind === BACKGROUND) continue;
    if (kept > 0 && plan[3 * kept - 1] === kind && plan[3 * kept - 2] === first) plan[3 * kept - 2] = end;
    else add(kept++, first, end, kind);
  }
  return kept;
}

/** Source rows resized horizontally (rounded to float32), each over one range of output columns that covers those
 * asked for. */
class ResizedRows {
  constructor(logits, height, width, cols) {
    this.logits = logits;
    this.width = width;
    this.cols = cols;
    this.outWidth = cols.i0.length;
    this.values = new Float32Array(height * this.outWidth); // row r's output column x at r * outWidth + x
    this.start = new Int32Array(height); // row r is resized over [start[r], end[r])
    this.end = new Int32Array(height);
  }

  /** Resizes source row r over the output columns [start, end) too. */
  need(r, start, end) {
    if (this.start[r] >= this.end[r]) this.start[r] = this.end[r] = end; // nothing yet: grow from the end
    if (start < this.start[r]) {
      this.resize(r, start, this.start[r]);
      this.start[r] = start;
    }
    if (end > this.end[r]) {
      this.resize(r, this.end[r], end);
      this.end[r] = end;
    }
  }

  resize(r, start, end) {
    const { logits, values, cols } = this;
    const [i0, i1, w1] = [cols.i0, cols.i1, cols.w1];
    const [source, at] = [r * this.width, r * this.outWidth];
    for (let x = start; x < end; x++) {
      const w = w1[x];
      values[at + x] = (1 - w) * logits[source + i0[x]] + w * logits[source + i1[x]];
    }
  }
}

/**
 * Output rows `at` and `at2` (offsets into `mask`; the same row twice is fine) of source rows at offsets `a` and `b`
 * in `across`, of weights w and w2 for the second source row, by the plan's steps. Two rows a loop, each source value
 * read once for both: a noise mask at 1008x1344 in Node 4.3 against 5.0-5.3 ms a row at a time.
 */
function makeRows(mask, plan, steps, across, a, b, at, at2, w, w2, threshold) {
  for (let s = 0; s < steps; s++) {
    const start = plan[3 * s];
    const end = plan[3 * s + 1];
    if (plan[3 * s + 2] === OBJECT) {
      mask.fill(1, at + start, at + end);
      mask.fill(1, at2 + start, at2 + end);
      continue;
    }
    // +(a comparison) compiles to a set-on-condition, `? 1 : 0` to a branch that a noisy mask mispredicts on every
    // other pixel (a noise mask at 1008x1344 in Node: 5.1 against 8.0 ms)
    for (let x = start; x < end; x++) {
      const top = across[a + x]; // (not destructured: V8 makes the array in this loop, ~1.5x as long)
      const bottom = across[b + x];
      mask[at + x] = +((1 - w) * top + w * bottom > threshold);
      mask[at2 + x] = +((1 - w2) * top + w2 * bottom > threshold);
    }
  }
}

/**
 * The mask (Uint8Array outHeight x outWidth, 1 = object) of low-resolution logits (Float32Array, height x width)
 * resized bilinearly as torch's F.interpolate(align_corners=False) does: the object where > threshold. An output
 * pixel is a convex combination of its four source pixels, so (for finite logits) it is the object when all four are
 * and background when none is: only the pixels between are interpolated, and the rest are filled by runs.
 */
export function upsampleMask(logits, height, width, outHeight, outWidth, threshold) {
  const mask = new Uint8Array(outHeight * outWidth);
  const object = new Uint8Array(logits.length);
  for (let p = 0; p < logits.length; p++) object[p] = +(logits[p] > threshold);
  const rows = taps(height, outHeight);
  const cols = taps(width, outWidth);
  const columnRuns = tapRuns(cols);
  const resized = new ResizedRows(logits, height, width, cols);
  const plan = new Int32Array(3 * (columnRuns.count + 1));
  for (let y = 0; y < outHeight; ) {
    const [r0, r1] = [rows.i0[y], rows.i1[y]];
    let end = y + 1; // output rows y .. end - 1 read source rows r0 and r1: one plan
    while (end < outHeight && rows.i0[end] === r0 && rows.i1[end] === r1) end++;
    const steps = rowPlan(object, width, r0, r1, columnRuns, plan);
    for (let s = 0; s < steps; s++) {
      if (plan[3 * s + 2] !== MIXED) continue;
      resized.need(r0, plan[3 * s], plan[3 * s + 1]);
      resized.need(r1, plan[3 * s], plan[3 * s + 1]);
    }
    const [a, b] = [r0 * outWidth, r1 * outWidth];
    for (let j = y; j < end; j += 2) {
      const k = Math.min(j + 1, end - 1);
      makeRows(mask, plan, steps, resized.values, a, b, j * outWidth, k * outWidth, rows.w1[j], rows.w1[k], threshold);
    }
    y = end;
  }
  return mask;
}
