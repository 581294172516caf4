"""Load test a running server (loopback only): N requests at C concurrent clients over a realistic mix of S3
payloads (get_embedding of images in S3, outputs written back), inline images and clicks on embedded images.
Prints throughput, p50/p90/p99 latency per kind, and every non-200 answer by status. Bounded in count and time.

  gen3d-loadtest --requests 400 --concurrency 32                        # inline images and clicks
  gen3d-loadtest --bucket gen3d-data-bucket --requests 400              # also S3 payloads (standard AWS env)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlparse

from gen3d.bench.serving import AnswerError, Client, png_base64, png_bytes

KINDS = ("s3", "inline", "click")


@dataclass
class Outcome:
    kind: str
    status: int
    ms: float
    error: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        by_kind = {}
        for kind in sorted({o.kind for o in self.outcomes}):
            ms = sorted(o.ms for o in self.outcomes if o.kind == kind)
            by_kind[kind] = {
                "requests": len(ms),
                "p50_ms": round(percentile(ms, 50), 1),
                "p90_ms": round(percentile(ms, 90), 1),
                "p99_ms": round(percentile(ms, 99), 1),
            }
        failures = Counter(o.status for o in self.outcomes if o.status != 200)
        return {
            "requests": len(self.outcomes),
            "seconds": round(self.seconds, 1),
            "throughput_rps": round(len(self.outcomes) / self.seconds, 2) if self.seconds else 0.0,
            "by_kind": by_kind,
            "non_200_by_status": dict(sorted(failures.items())),
            "first_errors": sorted({o.error for o in self.outcomes if o.error})[:5],
        }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to load {url}: only loopback addresses (127.0.0.0/8, ::1, localhost)")
    return url.rstrip("/")


def upload_images(bucket: str, count: int) -> list[str]:
    import boto3

    s3 = boto3.client("s3")
    keys = []
    for i in range(count):
        key = f"loadtest/image-{i}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=png_bytes(10_000 + i, (240, 320)))
        keys.append(key)
    return keys


def run(args: argparse.Namespace) -> Report:
    url = loopback_only(args.url)
    kinds = [kind for kind in KINDS if kind != "s3" or args.bucket]
    keys = upload_images(args.bucket, args.images) if args.bucket else []
    images = [png_base64(20_000 + i, (240, 320)) for i in range(args.images)]
    _, embedded = Client(url).post(args.path, {"task": "get_embedding", "image_base64": images[0]})
    rng = random.Random(args.seed)
    plan = [rng.choice(kinds) for _ in range(args.requests)]
    report, lock, deadline = Report(), threading.Lock(), time.monotonic() + args.time_limit
    cursor = iter(range(args.requests))

    def body(kind: str, i: int) -> dict:
        if kind == "s3":
            key = keys[i % len(keys)]
            return {"task": "get_embedding", "image_s3_key": key, "bucket": args.bucket, "user_id": "loadtest",
                    "session_id": f"run-{args.seed}"}  # fmt: skip
        if kind == "inline":
            return {"task": "get_embedding", "image_base64": images[i % len(images)]}
        x, y = rng.uniform(5, 315), rng.uniform(5, 235)
        return {"task": "segment", "embedding_id": embedded["embedding_id"], "points": [[x, y]], "point_labels": [1]}

    def client() -> None:
        conn = Client(url)
        for i in cursor:
            if time.monotonic() > deadline:
                return
            kind = plan[i]
            started = time.perf_counter()
            try:
                _, answer = conn.post(args.path, body(kind, i))
                outcome = Outcome(kind, 200, (time.perf_counter() - started) * 1000)
            except AnswerError as err:  # a non-200 answer
                outcome = Outcome(kind, err.status, (time.perf_counter() - started) * 1000, str(err)[:300])
                conn = Client(url)
            with lock:
                report.outcomes.append(outcome)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - started
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="inference API (loopback only)")
    parser.add_argument("--path", default="/predictions/sam3", help="model route (or /invocations?model_name=sam3)")
    parser.add_argument("--requests", type=int, default=200, help="requests in all")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--time-limit", type=float, default=300, help="stop sending after this many seconds")
    parser.add_argument("--bucket", help="also S3 payloads: images uploaded here first (standard AWS environment)")
    parser.add_argument("--images", type=int, default=16, help="distinct pictures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run(args).summary()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{summary['requests']} requests in {summary['seconds']} s: {summary['throughput_rps']} req/s")
    for kind, row in summary["by_kind"].items():
        print(f"  {kind:<7} {row['requests']:>5} requests  p50 {row['p50_ms']:>8.1f} ms  p90 {row['p90_ms']:>8.1f} ms"
              f"  p99 {row['p99_ms']:>8.1f} ms")  # fmt: skip
    print(f"non-200 answers by status: {summary['non_200_by_status'] or 'none'}")
    for error in summary["first_errors"]:
        print(f"  {error}")
    return 0


def console() -> None:
    sys.exit(main())
