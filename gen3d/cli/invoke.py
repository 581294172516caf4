"""Send one request to a sam3 / sam3d / sam3d_body SageMaker endpoint and print the JSON response.

The request is a JSON file (--payload, '-' for stdin) or is built from flags (docs/http-api.md: get_embedding,
segment, generate_3d, generate_body):

  get_embedding  --image-s3-key KEY --bucket B        (or --image-file photo.png: uploaded, or inline without B)
  segment        --text "red chair" | --points X,Y [X,Y ...] [--labels 1 0 ...] | --box X0,Y0,X1,Y1 (repeatable)
                 [--box-labels true ...] [--embedding-id ID instead of an image] [--multimask] [--return-png-masks]
  generate_3d    --mask-s3-key KEY | --mask-png FILE (uploaded) | --mask-rle JSON | --mask-polygon X,Y X,Y X,Y ...
                 [--seed N] [--decode-formats gaussian mesh] [--ss-steps N] [--slat-steps N]
  generate_body  --box X0,Y0,X1,Y1 (one person each, repeatable) and/or one person's mask per --mask-* flag
                 [--focal-length PIXELS] [--inference-type full|body|hand]
                 [--scene: every mask flag, repeated, is one object of one scene (masks): the --mask-s3-key ones
                 first, then --mask-png, --mask-rle and --mask-polygon, each in the order given]

Local files go to s3://<bucket>/gen3d-inputs/<user-id>/<session-id>/. Real-time endpoints get invoke_endpoint;
async endpoints get the request uploaded to S3, invoke_endpoint_async (InvocationTimeoutSeconds from
--invocation-timeout) and the output (or failure) object polled in S3. --verify checks status == "success" and
that the S3 outputs named exist; --out DIR writes the answer and its files (embedding, mask PNGs, PLY/GLB/pose;
a scene's scene.glb, scene.ply and object-<i>-object.ply/.glb, object-<i>-pose.json; people.glb and each
person's person-<i>.glb and person-<i>.json).
A real-time request is refused before it is sent when its body, or its answer (get_embedding with an inline image
answers with the embedding inline, sized from --preset), would pass SageMaker's 6 MB real-time limit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from gen3d.errors import InvalidField
from gen3d.models import MODELS, model_serving
from gen3d.sagemaker import clients as aws
from gen3d.sagemaker import deploy, errors, invoke, payloads, timeouts
from gen3d.sam3 import presets as sam3_presets

DEFAULT_POLL_TIMEOUT_S = 1800.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint-name", required=True)
    p.add_argument("--mode", choices=deploy.MODES, default="realtime", help="endpoint type (default realtime)")
    p.add_argument("--payload", help="JSON request file, or '-' for stdin (the flags below are then ignored)")
    tasks = [task for spec in MODELS.values() for task in spec.tasks]
    p.add_argument("--task", choices=tasks, default=tasks[0])
    p.add_argument("--bucket", help="bucket of the image and uploads (and of the async input unless --async-input-s3)")
    p.add_argument("--image-s3-key")
    p.add_argument("--image-file", type=Path, help="local image: uploaded with --bucket, else sent as image_base64")
    p.add_argument("--session-id", default=None, help="default: a random smoke-... id")
    p.add_argument("--user-id", default="cli")
    p.add_argument("--preset", choices=sorted(sam3_presets.PRESETS), default="sam3", help="the endpoint's sam3 "
                   "preset (default sam3, the production one gen3d-deploy requires; tiny: a demo archive): it sizes "
                   "an inline get_embedding answer, refused on real-time endpoints above SageMaker's 6 MB")
    g = p.add_argument_group("segment")
    g.add_argument("--text", help="concept prompt (noun phrase)")
    g.add_argument("--points", nargs="+", default=[], metavar="X,Y", help="click points in original pixels")
    g.add_argument("--labels", nargs="+", type=int, default=[], metavar="0|1",
                   help="one per point: 1 object, 0 background (default: all 1)")
    g.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box (repeatable); generate_body: one person's box")
    g.add_argument("--box-labels", nargs="+", default=[], metavar="true|false", help="with --text: one per box")
    g.add_argument("--embedding-id", help="cached features of an earlier call instead of an image")
    g.add_argument("--multimask", action="store_true", help="3 candidates for one ambiguous click")
    g.add_argument("--score-threshold", type=float)
    g.add_argument("--return-png-masks", action="store_true", help="also write each mask as a PNG to S3")
    g = p.add_argument_group("generate_3d (and generate_body: each --mask-* flag is one person's mask)")
    g.add_argument("--mask-s3-key", action="append", default=[], help="mask PNG already in --bucket")
    g.add_argument("--mask-png", type=Path, action="append", default=[], help="local mask PNG, uploaded to --bucket")
    g.add_argument("--mask-rle", action="append", default=[],
                   help='COCO RLE JSON {"size": [h, w], "counts": ...}, or @FILE')
    g.add_argument("--mask-polygon", nargs="+", action="append", default=[], metavar="X,Y",
                   help="polygon corners in pixels (repeat the flag for several polygons; with --scene, objects)")
    g.add_argument("--scene", action="store_true",
                   help="each mask flag is one object: several objects placed in one scene (masks)")
    g.add_argument("--seed", type=int)
    g.add_argument("--decode-formats", nargs="+", choices=("gaussian", "mesh"), default=[])
    g.add_argument("--ss-steps", type=int)
    g.add_argument("--slat-steps", type=int)
    g = p.add_argument_group("generate_body")
    g.add_argument("--focal-length", type=float, help="camera focal length in pixels (default: upstream's)")
    g.add_argument("--inference-type", choices=("full", "body", "hand"), help="full (default): body then hands")
    p.add_argument("--out", type=Path, help="write response.json and the files it names into this folder")
    p.add_argument("--async-input-s3", help="async: S3 URI to upload the request to "
                                            "(default s3://<bucket>/gen3d/async/input/<session>.json)")
    p.add_argument("--invocation-timeout", type=int, help="async: InvocationTimeoutSeconds, 1..3600 "
                   "(default: the task's TorchServe responseTimeout + 60 s)")
    p.add_argument("--timeout", type=float, help="async: seconds to wait for the result "
                   f"(default max({DEFAULT_POLL_TIMEOUT_S:.0f}, invocation timeout + 300))")
    p.add_argument("--poll", type=float, default=5.0, help="async: seconds between S3 polls")
    p.add_argument("--verify", action="store_true", help="fail unless status is success and outputs exist")
    p.add_argument("--region", help="AWS region (default: boto3's chain)")
    p.add_argument("--dry-run", action="store_true", help="print every AWS call as JSON and send none")
    return p.parse_args(argv)


def build_payload(args: argparse.Namespace, s3) -> dict:
    """The request: --payload as is, else built from the flags (uploading --image-file / --mask-png)."""
    if args.payload:
        text = sys.stdin.read() if args.payload == "-" else Path(args.payload).read_text()
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ValueError("the payload must be a JSON object")
        return payload
    session = args.session_id or invoke.new_session_id()
    options = payloads.PayloadOptions(
        task=args.task, bucket=args.bucket, image_s3_key=args.image_s3_key, session_id=session,
        user_id=args.user_id, points=args.points, labels=args.labels, boxes=args.box, box_labels=args.box_labels,
        text=args.text, embedding_id=args.embedding_id, multimask=args.multimask,
        score_threshold=args.score_threshold, return_png_masks=args.return_png_masks, seed=args.seed,
        decode_formats=args.decode_formats, ss_steps=args.ss_steps, slat_steps=args.slat_steps,
        focal_length=args.focal_length, inference_type=args.inference_type)
    several = args.scene or args.task == "generate_body"  # a body request's masks are one per person
    if not several:
        for flag, given in (("--mask-s3-key", args.mask_s3_key), ("--mask-png", args.mask_png),
                            ("--mask-rle", args.mask_rle)):
            if len(given) > 1:
                raise ValueError(f"{flag} given {len(given)} times: add --scene for several objects")
        options.mask_s3_key = next(iter(args.mask_s3_key), None)
        options.mask_polygons = args.mask_polygon
        options.mask_rle = next((rle_json(text) for text in args.mask_rle), None)
    if args.image_file:
        if args.image_s3_key:
            raise ValueError("give --image-s3-key or --image-file, not both")
        if args.bucket:
            key = payloads.input_key(args.user_id, session, args.image_file)
            options.image_s3_key = payloads.upload_input(s3, args.bucket, key, args.image_file)
            print(f"uploaded {args.image_file} to s3://{args.bucket}/{key}", file=sys.stderr)
        else:
            options.image_base64 = payloads.inline_image(args.image_file)
    if args.mask_png and (not args.bucket or (args.mask_s3_key and not several)):
        raise ValueError("--mask-png needs --bucket (it is uploaded there) and excludes --mask-s3-key")
    uploaded = []
    for path in args.mask_png:
        key = payloads.input_key(args.user_id, session, path)
        uploaded.append(payloads.upload_input(s3, args.bucket, key, path))
        print(f"uploaded {path} to s3://{args.bucket}/{key}", file=sys.stderr)
    if not several:
        options.mask_s3_key = options.mask_s3_key or next(iter(uploaded), None)
        return payloads.build_payload(options)
    options.masks = [{"mask_s3_key": key} for key in [*args.mask_s3_key, *uploaded]]
    options.masks += [{"mask_rle": rle_json(text)} for text in args.mask_rle]
    options.masks += [{"mask_polygon": payloads.polygon(corners)} for corners in args.mask_polygon]
    return payloads.build_payload(options)


def rle_json(text: str) -> dict:
    """--mask-rle's value: the JSON, or @FILE holding it."""
    return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)


def check_realtime_size(payload: dict, preset: str) -> None:
    """ValueError when a real-time request, or the answer it gets, would pass SageMaker's 6 MB: the request's JSON,
    and a get_embedding answer with the embedding inline (image_base64 in, embedding_base64 out), whose size the
    preset's tensors fix (the safetensors file, base64-encoded; its header and the JSON around it add < 1 KB)."""
    limit_mb = invoke.REALTIME_PAYLOAD_BYTES // 2**20
    request = len(json.dumps(payload).encode())
    if request > invoke.REALTIME_PAYLOAD_BYTES:
        raise ValueError(f"the request is {request / 1e6:.1f} MB, over SageMaker's {limit_mb} MB real-time "
                         "limit; send the image by S3 key (--bucket with --image-file uploads it), or use an async "
                         "endpoint (--mode async)")
    if payload.get("task") != "get_embedding" or "image_base64" not in payload:
        return
    itemsize = 4 if payload.get("embedding_dtype") == "float32" else 2
    shapes = sam3_presets.get_preset(preset).interactive_shapes.values()
    embedding = sum(math.prod(shape) for shape in shapes) * itemsize
    answer = 4 * math.ceil(embedding / 3)
    if answer > invoke.REALTIME_PAYLOAD_BYTES:
        raise ValueError(f"refusing to send: the get_embedding answer of preset {preset} carries its "
                         f"{embedding / 1e6:.1f} MB embedding inline as {answer / 1e6:.1f} MB of base64, over "
                         f"SageMaker's {limit_mb} MB real-time response limit; send the image by S3 key so the "
                         "embedding is written to S3 (--bucket with --image-file uploads it), or use an async "
                         "endpoint (--mode async)")


def invocation_timeout(args: argparse.Namespace, payload: dict) -> int:
    if args.invocation_timeout is not None:
        return args.invocation_timeout
    spec = model_serving(str(payload.get("task"))) or MODELS[next(iter(MODELS))]
    return timeouts.invocation_timeout(None, spec.response_timeout_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        clients = aws.make_clients(args.region, dry_run=args.dry_run)
        payload = build_payload(args, clients.s3)
        if args.mode == "async":
            input_uri = args.async_input_s3
            if not input_uri:
                bucket = args.bucket or payload.get("bucket")
                if not bucket:
                    raise ValueError("async mode needs --async-input-s3 or a bucket")
                session = payload.get("session_id") or invoke.new_session_id()
                input_uri = f"s3://{bucket}/gen3d/async/input/{session}.json"
            limit = invocation_timeout(args, payload)
            response = invoke.invoke_async(clients.runtime, clients.s3, args.endpoint_name, payload,
                                           input_s3_uri=input_uri, invocation_timeout_s=limit,
                                           timeout_s=args.timeout or max(DEFAULT_POLL_TIMEOUT_S, limit + 300),
                                           poll_s=args.poll, out=sys.stderr)
        else:
            check_realtime_size(payload, args.preset)
            response = invoke.invoke_realtime(clients.runtime, args.endpoint_name, payload)
        print(json.dumps(response, indent=2))
        if args.verify and not args.dry_run:
            outputs = invoke.verify_response(clients.s3, response, str(payload.get("bucket", "")))
            print(f"verified: {', '.join(outputs.values())}", file=sys.stderr)
        if args.out and not args.dry_run:
            written = payloads.save_outputs(clients.s3, response, args.out, payload.get("bucket"))
            print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    except (errors.DeployError, TimeoutError, ClientError, BotoCoreError, ValueError, OSError, InvalidField) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    return 0


def console() -> None:
    sys.exit(main())
