"""Export SAM 3's interactive prompt decoder of a served sam3 archive to ONNX, for clients that hold a
get_embedding file (the demo page, onnxruntime in Python or in the browser).

  gen3d-export-onnx --archive model-store/sam3.mar --out decoder.onnx     # K=1: segment's single mask
  gen3d-export-onnx --archive model-store/sam3 --out decoder.onnx --multimask-out decoder-k3.onnx   # and K=3
(scripts/export_decoder_onnx.py takes the same arguments.)

The archive's model is loaded as a worker loads it (its checkpoint and BPE vocabulary, on the CPU), so the file
records the same model_id as the server's answers and the embedding files. Format v4 (docs/demo-page.md has the
table): an embedding's first run takes image_embed, high_res_feats_0, high_res_feats_1 (float32: the get_embedding
tensors, upcast) and empty prepared_*_in, and answers the embedding's preparation as prepared_* outputs; later runs
take those as prepared_*_in with empty embedding tensors and only decode the click. Every run: point_coords [1,N,2]
(original pixels; a box's corners first with labels 2 and 3; no padding point), point_labels [1,N], orig_im_size
int64 [2] (height, width); optionally (Python) mask_input [1,1,4G,4G] / has_mask_input [1] with the embedding.
Outputs: low_res_logits [1,K,4G,4G], which the client post-processes (holes filled, resized to the picture:
gen3d.sam3.onnx_client, the page's postprocess.js), iou_predictions [1,K], low_res_masks [1,K,4G,4G], prepared_*.
Beside each file, <stem>.click.onnx: its click graph alone, the prepared_* tensors its initializers as external data
named by the outputs (a session per prepared embedding; each click feeds the prompts only: what the page runs).
Exporting takes ~20-60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from gen3d.errors import StartupError
from gen3d.sam3.onnx_export import click_graph_path, export_archive


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, required=True, help="sam3 archive: model-store/sam3.mar or a directory")
    parser.add_argument("--out", type=Path, required=True, help="the K=1 decoder (segment's single mask) to write")
    parser.add_argument(
        "--multimask-out", type=Path, help="also write the K=3 decoder (segment's multimask candidates) here"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gen3d").setLevel(logging.INFO)  # the exporter's own INFO lines are per-pass chatter
    warnings.filterwarnings("ignore", module=r"torch\..*")  # the exporter's tracing chatter about sam3's asserts
    warnings.filterwarnings("ignore", message="CUDA is not available")  # sam3 builds autocasts at import
    try:
        written = export_archive(args.archive, args.out, args.multimask_out)
    except StartupError as err:
        print(f"gen3d-export-onnx: {err}", file=sys.stderr)
        return 2
    for path, metadata in zip([args.out, args.multimask_out], written, strict=False):
        k, model_id = metadata["outputs_k"], metadata["model_id"]
        click_graph = click_graph_path(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, K={k}) and {click_graph} "
              f"({click_graph.stat().st_size / 1e6:.1f} MB) for {model_id} from {args.archive}")  # fmt: skip
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `python -m gen3d.cli.export_onnx`, as gen3d-serve-local runs it
    console()
