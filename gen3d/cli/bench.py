"""Measure the serving goals in one run and print them (a benchmark, not a test: ratios from one run on a
shared, noisy machine). `make bench` runs it.

1. serving overhead at one client (round trip minus the handler's own time) for an echo handler (the floor),
   get_embedding and clicks, per maxBatchDelay; mean batch size, throughput and p50 at 32 concurrent clients
   (tiny demo model through a real TorchServe);
2. cold start of the published architecture (random 3.45 GB checkpoint, made once in build/): the project's
   loader against random init + read + load_state_dict;
3. what a click reads from the feature store at 1008 px, and what repeated clicks read;
4. peak memory of concept-mask post-processing for a 64-megapixel image with score_threshold 0;
5. the worst segment batch against sam3's responseTimeout: 4 concept requests on 64-megapixel pictures with
   score_threshold 0, the default max_masks and PNG masks written to S3 (gen3d.bench.segment_worst);
6. click-to-mask in the browser at the published size: the page's decoder code in headless Chromium, median ms
   per click on one thread and on the page's threads (gen3d.bench.browser; keys ``browser_*`` at the top level).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from gen3d.models import SAM3

PARTS = ("serving", "cold-start", "cache", "masks", "segment-worst", "browser")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable)")
    parser.add_argument(
        "--max-batch-delays",
        default=f"100,{SAM3.max_batch_delay_ms}",
        help="comma-separated maxBatchDelay values (ms) to compare (default: the old 100 and the configured)",
    )
    parser.add_argument("--requests", type=int, default=60, help="requests per path at one client")
    parser.add_argument("--concurrent-requests", type=int, default=256, help="requests at 32 clients")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--cold-start-runs", type=int, default=2, help="fresh processes per procedure")
    parser.add_argument("--mask-side", type=int, default=8000, help="image side for the mask memory (8000: 64 MP)")
    parser.add_argument(
        "--mask-queries", type=int, default=16, help="queries kept (the published model has 200; peak is per chunk)"
    )
    parser.add_argument("--worst-side", type=int, default=8000, help="segment-worst: picture side (8000: 64 MP)")
    parser.add_argument(
        "--worst-requests", type=int, default=SAM3.batch_size, help="segment-worst: requests in the batch"
    )
    parser.add_argument("--worst-device", default="cpu", help="segment-worst: where the post-processing runs")
    parser.add_argument(
        "--worst-masks", choices=("noisy", "objects"), default="noisy", help="segment-worst: the masks' shapes"
    )
    parser.add_argument(
        "--browser-clicks", type=int, default=20, help="browser: clicks timed after a picture's first 3"
    )
    parser.add_argument(
        "--browser-decoder",
        type=Path,
        help="browser: measure this decoder file (format v4, its <stem>.click.onnx beside it) instead",
    )
    parser.add_argument(
        "--browser-page-warm-up",
        type=int,
        help="browser: the page's warm-up clicks before the picture (default: the page's WARM_UP_CLICKS; 0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args(argv)


def print_report(report: dict) -> None:
    if "serving" in report:
        print("serving overhead at one client, p50 ms (round trip minus the handler's own time)")
        print(f"  {'maxBatchDelay':>13} {'echo':>7} {'get_emb':>8} {'inline':>7} {'click':>7}   "
              "at 32 clients: batch  req/s  p50 ms")  # fmt: skip
        for row in report["serving"]:
            one = row["one_client_p50_ms"]
            print(
                f"  {row['max_batch_delay_ms']:>11}ms {one['echo']:>7.1f} {one['get_embedding']:>8.1f} "
                f"{one['get_embedding_inline']:>7.1f} {one['click']:>7.1f}   {row['concurrent_mean_batch']:>19.2f} "
                f"{row['concurrent_throughput_rps']:>6.1f} {row['concurrent_p50_ms']:>7.0f}"
            )
            print(f"  {'':>13} one client: {row['device_cache_hits']:.0f} device-cache hits, "
                  f"{row['cache_read_bytes'] / 1e6:.2f} MB read from disk")  # fmt: skip
        print("  (get_emb: image in S3, file written to S3 (moto); inline: base64 image in, base64 file out)")
    if "cold_start" in report:
        cold = report["cold_start"]
        seconds = cold["seconds"]
        print(f"cold start, {cold['checkpoint_gb']} GB checkpoint, seconds per fresh process: stock "
              f"{seconds['stock']}, ours {seconds['ours']}; best ours / best stock = {cold['ratio']}")  # fmt: skip
    if "cache" in report:
        cache = report["cache"]
        print(f"feature store at 1008 px: first click in a worker reads {cache['first_click_read_mb']} MB; the next "
              f"{cache['next_clicks']} read {cache['next_clicks_read_mb']} MB "
              f"({cache['next_clicks_device_hits']} device hits); a concept prompt reads "
              f"{cache['concept_prompt_read_mb']} MB; images per GB: {cache['images_per_gb']}")  # fmt: skip
    if "masks" in report:
        masks = report["masks"]
        print(f"concept masks at {masks['megapixels']} MP, threshold 0, {masks['queries']} kept: peak "
              f"{masks['peak_above_inputs_mb']} MB above the inputs in {masks['seconds']} s; all at once would need "
              f"{masks['all_at_once_gb']} GB")  # fmt: skip
    if "segment_worst" in report:
        worst = report["segment_worst"]
        print(f"worst segment batch on {worst['device']} ({worst['masks']} masks): {worst['requests']} requests x "
              f"{worst['megapixels']} MP, "
              f"{worst['masks_per_answer']} of {worst['masks_total']} masks each, {worst['pngs_written']} PNGs: "
              f"{worst['seconds']} s, {worst['cpu_s']} CPU s (responseTimeout {worst['response_timeout_s']} s); "
              f"upsampling {worst['upsample_s_per_mask']} s (wall, CPU) per mask; largest answer "
              f"{worst['answer_mb']} MB; peak RSS "
              f"{worst['peak_rss_mb']} MB; per request {worst['timings_ms']}")  # fmt: skip
    if "browser_click_ms_p50" in report:
        print(f"click-to-mask in the browser at {report['browser_picture']} (1008 px model): median "
              f"{report['browser_click_ms_p50']} ms per click on {report['browser_threads']} threads (the decoder's "
              f"run {report['browser_click_run_ms_p50']} ms, post-processing "
              f"{report['browser_click_postprocess_ms_p50']} ms), "
              f"{report['browser_click_ms_p50_one_thread']} ms on one (post-processing of a whole-picture mask "
              f"{report['browser_postprocess_ms_p50_full_picture']} ms); a picture's first click "
              f"{report['browser_first_click_ms']} ms, its preparation {report['browser_prepare_embedding_ms']} ms "
              f"after the page's warm-up ({report['browser_page_warm_up_clicks']} clicks, "
              f"{report['browser_page_warm_up_ms']} ms); {report['browser']}; "
              f"{report['browser_machine']}, load average {report['browser_load_average']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or PARTS)
    report: dict[str, object] = {}
    if "serving" in parts:
        from gen3d.bench import serving

        delays = [int(v) for v in args.max_batch_delays.split(",")]
        rows = serving.run(delays, args.requests, args.concurrent_requests, args.clients)
        report["serving"] = [asdict(row) for row in rows]
    if "cold-start" in parts:
        from gen3d.bench import cold_start

        report["cold_start"] = cold_start.run(args.cold_start_runs)
    if "cache" in parts:
        from gen3d.bench import memory

        report["cache"] = memory.cache_per_click()
    if "masks" in parts:
        from gen3d.bench import memory

        report["masks"] = memory.mask_peak(args.mask_side, args.mask_queries)
    if "segment-worst" in parts:
        from gen3d.bench import segment_worst

        report["segment_worst"] = segment_worst.in_fresh_process(
            args.worst_side, args.worst_requests, args.worst_device, args.worst_masks
        )
    if "browser" in parts:
        from gen3d.bench import browser

        warm_up = args.browser_page_warm_up
        report.update(browser.run(args.browser_clicks, decoder=args.browser_decoder, page_warm_up=warm_up))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0


def console() -> None:
    sys.exit(main())
