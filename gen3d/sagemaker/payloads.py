"""Requests of the client contract built from command-line values, local inputs uploaded to S3, and the
files an answer names written to a local folder (see docs/http-api.md: get_embedding, segment, generate_3d,
generate_body)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen3d.models import model_serving
from gen3d.serving.masks import mask_from_rle, mask_png

SAM3D_FILE_NAMES = {
    "ply": "object.ply",
    "glb": "object.glb",
    "pose": "pose.json",
    "scene_glb": "scene.glb",
    "scene_ply": "scene.ply",
}
BODY_FILE_NAMES = {"people_glb": "people.glb"}  # each person's files: person-<i>.glb and person-<i>.json
# what generate_body takes of the segment / generate_3d flags: its people are boxes and masks
BODY_TAKES = {"boxes", "masks"}
FLAGS = {"boxes": "--box", "point_labels": "--labels", "masks": "--mask-*"}  # fields whose flag is named otherwise
INPUT_PREFIX = "gen3d-inputs"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def numbers(text: str, count: int, what: str) -> list[float]:
    """``"x,y"`` -> ``[x, y]`` (``count`` comma-separated numbers); ValueError naming ``what`` otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count or not all(re.fullmatch(_NUMBER, p) for p in parts):
        raise ValueError(f"{what} expects {count} comma-separated numbers, got {text!r}")
    return [float(p) if "." in p or "e" in p.lower() else int(p) for p in parts]


@dataclass
class PayloadOptions:
    """Everything a request can carry, as the invoke script's flags give it (None: not given)."""

    task: str
    bucket: str | None = None
    image_s3_key: str | None = None
    image_base64: str | None = None
    session_id: str = "cli"
    user_id: str = "cli"
    points: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    boxes: list[str] = field(default_factory=list)
    box_labels: list[str] = field(default_factory=list)
    text: str | None = None
    embedding_id: str | None = None
    multimask: bool = False
    score_threshold: float | None = None
    return_png_masks: bool = False
    mask_s3_key: str | None = None
    mask_rle: dict[str, Any] | None = None
    mask_polygons: list[list[str]] = field(default_factory=list)
    masks: list[dict[str, Any]] = field(default_factory=list)  # a scene: one entry per object (``masks``)
    seed: int | None = None
    decode_formats: list[str] = field(default_factory=list)
    ss_steps: int | None = None
    slat_steps: int | None = None
    focal_length: float | None = None
    inference_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_payload(o: PayloadOptions) -> dict[str, Any]:
    """The JSON request of ``o.task``; ValueError naming the flag when a value belongs to another task or is
    malformed (the server checks the rest and answers 400 naming the field)."""
    spec = model_serving(o.task)
    if spec is None:
        raise ValueError(f"unknown task {o.task!r}")
    payload: dict[str, Any] = {"task": o.task, "session_id": o.session_id, "user_id": o.user_id}
    if o.image_base64:
        payload["image_base64"] = o.image_base64
    elif o.image_s3_key:
        payload["image_s3_key"] = o.image_s3_key
    elif not (o.task == "segment" and o.embedding_id):
        raise ValueError("give an image: --image-s3-key with --bucket, or --image-file")
    if o.bucket:
        payload["bucket"] = o.bucket
    segment, generate, body = _segment_fields(o), _generate_fields(o), _body_fields(o)
    given = {**segment, **generate, **body}
    applies = {"segment": segment.keys(), "generate_3d": generate.keys(),
               "generate_body": body.keys() | (BODY_TAKES & given.keys())}.get(o.task, set())
    wrong = sorted(given.keys() - applies)
    if wrong:
        flags = ", ".join(FLAGS.get(name, "--" + name.replace("_", "-")) for name in wrong)
        raise ValueError(f"{flags} do not apply to task {o.task} (model {spec.name})")
    if o.task == "segment" and not ({"points", "boxes", "text"} & segment.keys()):
        raise ValueError("segment needs a prompt: --text, --points or --box")
    if o.task == "generate_3d" and not ({"mask_s3_key", "mask_rle", "mask_polygon", "masks"} & generate.keys()):
        raise ValueError("generate_3d needs a mask: --mask-s3-key, --mask-png, --mask-rle or --mask-polygon")
    if o.task == "generate_body":
        people = _body_people(o)
        if not people:
            raise ValueError("generate_body needs its people: --box (one per person, repeatable) and/or a mask "
                             "(--mask-s3-key, --mask-png, --mask-rle, --mask-polygon: one person each)")
        return {**payload, **people, **body, **o.extra}
    return {**payload, **segment, **generate, **o.extra}


def _segment_fields(o: PayloadOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if o.points:
        fields["points"] = [numbers(p, 2, "--points") for p in o.points]
        labels = o.labels or [1] * len(o.points)
        if len(labels) != len(o.points) or any(v not in (0, 1) for v in labels):
            raise ValueError(f"--labels needs one 1 (object) or 0 (background) per point: {len(o.points)} points, "
                             f"labels {labels}")
        fields["point_labels"] = labels
    elif o.labels:
        raise ValueError("--labels given without --points")
    if o.boxes:
        fields["boxes"] = [numbers(b, 4, "--box") for b in o.boxes]
    if o.box_labels:
        if len(o.box_labels) != len(o.boxes) or any(v not in ("1", "0", "true", "false") for v in o.box_labels):
            raise ValueError("--box-labels needs one true/false (or 1/0) per --box")
        fields["box_labels"] = [v in ("1", "true") for v in o.box_labels]
    optional = {"text": o.text, "embedding_id": o.embedding_id, "score_threshold": o.score_threshold,
                "multimask": o.multimask or None, "return_png_masks": o.return_png_masks or None}
    return {**fields, **{k: v for k, v in optional.items() if v is not None}}


def _generate_fields(o: PayloadOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if o.mask_polygons:
        polygons = [polygon(corners) for corners in o.mask_polygons]
        fields["mask_polygon"] = polygons[0] if len(polygons) == 1 else polygons
    if o.masks:
        fields["masks"] = o.masks
    optional = {"mask_s3_key": o.mask_s3_key, "mask_rle": o.mask_rle, "seed": o.seed,
                "decode_formats": o.decode_formats or None, "ss_steps": o.ss_steps, "slat_steps": o.slat_steps}
    return {**fields, **{k: v for k, v in optional.items() if v is not None}}


def _body_fields(o: PayloadOptions) -> dict[str, Any]:
    optional = {"focal_length": o.focal_length, "inference_type": o.inference_type}
    return {k: v for k, v in optional.items() if v is not None}


def _body_people(o: PayloadOptions) -> dict[str, Any]:
    """generate_body's ``boxes`` and ``masks``: each --box one person, each mask flag one person's mask (the
    invoke script puts them in ``o.masks``); the server pairs boxes and masks in order."""
    people: dict[str, Any] = {}
    if o.boxes:
        people["boxes"] = [numbers(b, 4, "--box") for b in o.boxes]
    if o.masks:
        people["masks"] = o.masks
    return people


def polygon(corners: list[str]) -> list[list[float]]:
    """One --mask-polygon's X,Y corners (at least 3)."""
    points = [numbers(corner, 2, "--mask-polygon") for corner in corners]
    if len(points) < 3:
        raise ValueError("--mask-polygon needs at least 3 X,Y corners")
    return points


def input_key(user_id: str, session_id: str, path: Path, prefix: str = INPUT_PREFIX) -> str:
    """Where an uploaded local input goes: ``<prefix>/<user_id>/<session_id>/<file name>``."""
    return f"{prefix.strip('/')}/{user_id}/{session_id}/{path.name}"


def upload_input(s3: Any, bucket: str, key: str, path: Path) -> str:
    """Upload a local image or mask file; returns its key."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    s3.upload_file(Filename=str(path), Bucket=bucket, Key=key)
    return key


def inline_image(path: Path) -> str:
    """A local image as the request's ``image_base64``."""
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return base64.b64encode(path.read_bytes()).decode()


def save_outputs(s3: Any, response: dict[str, Any], folder: Path, bucket: str | None) -> list[Path]:
    """Write the answer and every file it names (S3 keys downloaded, base64 decoded, RLE masks as PNG) into
    ``folder``: response.json, the embedding's .safetensors, mask-<i>.png, object.ply/.glb and pose.json,
    people.glb and each person's person-<i>.glb / person-<i>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "response.json"]
    written[0].write_text(json.dumps(response, indent=2))
    out_bucket = str(response.get("output_bucket") or bucket or "")

    def fetch(key: str, name: str) -> None:
        if not out_bucket:
            raise ValueError(f"the answer names s3 key {key} but no bucket is known; give --bucket")
        s3.download_file(Bucket=out_bucket, Key=key, Filename=str(folder / name))
        written.append(folder / name)

    def write(data: bytes, name: str) -> None:
        (folder / name).write_bytes(data)
        written.append(folder / name)

    if response.get("output_s3_key"):
        fetch(str(response["output_s3_key"]), Path(str(response["output_s3_key"])).name)
    if response.get("embedding_base64"):
        name = f"{response.get('embedding_id', 'embedding')}.safetensors"
        write(base64.b64decode(response["embedding_base64"]), name)
    for i, entry in enumerate(response.get("masks") or []):
        if entry.get("png_s3_key"):
            fetch(str(entry["png_s3_key"]), f"mask-{i}.png")
        elif entry.get("rle"):
            rle = entry["rle"]  # the answer's own size: the mask is only written out
            size = rle.get("size") if isinstance(rle, dict) else None
            write(mask_png(mask_from_rle(rle, size, f"masks[{i}].rle")), f"mask-{i}.png")
    names = {**SAM3D_FILE_NAMES, **BODY_FILE_NAMES}
    for prefix, entry in [("", response), *((f"object-{o.get('index')}-", o) for o in response.get("objects") or [])]:
        for kind, key in (entry.get("outputs") or {}).items():
            if key:
                fetch(str(key), prefix + names.get(kind, Path(str(key)).name))
        for kind, data in (entry.get("outputs_base64") or {}).items():
            write(base64.b64decode(data), prefix + names.get(kind, kind))
    for i, person in enumerate(response.get("people") or []):
        for kind, key in (person.get("outputs") or {}).items():
            fetch(str(key), f"person-{i}.{'glb' if kind == 'glb' else 'json'}")
        for kind, data in (person.get("outputs_base64") or {}).items():
            write(base64.b64decode(data), f"person-{i}.{'glb' if kind == 'glb' else 'json'}")
    return written
