"""TorchServe glue: what every handler needs from TorchServe's context (requests in, replies out, device,
metrics) and :class:`ServiceHandler`, the handler class around one model's :class:`Service`."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from gen3d.errors import StartupError
from gen3d.serving.replies import Reply
from gen3d.serving.schema import RawRequest, request_id_from
from gen3d.serving.service import MetricSink, Service

log = logging.getLogger(__name__)


def _header(headers: dict[str, Any], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name and isinstance(value, str):
            return value
    return ""


def raw_requests(data: list[dict], context) -> list[RawRequest]:
    """TorchServe's batch as :class:`RawRequest` objects (body, Content-Type, Accept, request id).

    The Content-Type is the request's own header, never a part's: TorchServe splits a multipart form into parts,
    and decodes a part that calls itself ``application/json`` into a dict, but the form itself is what a web page
    may send anywhere without a CORS preflight (its header says ``multipart/form-data``: 415)."""
    raws = []
    for idx, item in enumerate(data):
        name = "body" if "body" in item else "data" if "data" in item else next(iter(item), "body")
        headers = context.get_all_request_header(idx) or {}
        raws.append(
            RawRequest(
                body=item.get(name, b""),
                content_type=_header(headers, "content-type").lower(),
                accept=_header(headers, "accept").lower(),
                request_id=request_id_from(headers),
            )
        )
    return raws


def send(replies: list[Reply], context) -> list:
    """Sets each reply's status, content type and X-Request-Id; returns the bodies TorchServe writes back."""
    bodies = []
    for idx, reply in enumerate(replies):
        context.set_response_status(code=reply.status, phrase="OK" if reply.status < 400 else "Error", idx=idx)
        context.set_response_content_type(idx, reply.content_type)
        if reply.request_id:
            context.set_response_header(idx, "X-Request-Id", reply.request_id)
        bodies.append(reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body))
    return bodies


def worker_device(context, require_gpu: bool = False) -> torch.device:
    """The GPU TorchServe assigned to this worker, or the CPU when there is none.

    With ``require_gpu`` (real-weight archives, see ``handler.require_gpu``) a worker without CUDA stops
    instead of quietly running a GPU model on the CPU.
    """
    gpu_id = context.system_properties.get("gpu_id")
    if gpu_id is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(gpu_id))
        return torch.device("cuda", int(gpu_id))
    if require_gpu:
        raise StartupError(
            f"model-config.yaml sets handler.require_gpu but this worker has no GPU "
            f"(gpu_id={gpu_id}, torch.cuda.is_available()={torch.cuda.is_available()}); "
            "build the archive with --allow-cpu to run it on the CPU"
        )
    return torch.device("cpu")


def metric_sink(context) -> MetricSink:
    """A ``(name, increment)`` callable that records a custom model counter (declared in metrics.yaml)."""

    def record(name: str, value: float) -> None:
        try:
            context.metrics.add_counter(name, value)
        except Exception:  # noqa: BLE001 - a metrics failure must not fail the request; it is logged
            log.warning("could not record metric %s", name, exc_info=True)

    return record


def handler_config(context) -> dict:
    """The ``handler`` section of the archive's model-config.yaml, plus its ``responseTimeout`` as
    ``response_timeout_s`` (TorchServe's limit per batch, which a service may plan its work against)."""
    yaml_config = getattr(context, "model_yaml_config", None) or {}
    config = dict(yaml_config.get("handler") or {})
    if "responseTimeout" in yaml_config:
        config["response_timeout_s"] = yaml_config["responseTimeout"]
    return config


class ServiceHandler:
    """A TorchServe handler class around one service (TorchServe's ``BaseHandler`` lifecycle): ``initialize``
    loads it, ``handle`` answers a batch. Subclasses only name ``service_class``."""

    service_class: type[Service]

    def __init__(self) -> None:
        self.service: Service | None = None

    def initialize(self, context) -> None:
        """Builds the model from the archive; any missing piece stops the worker with one clear line."""
        config = handler_config(context)
        self.service = self.service_class.from_model_dir(
            context.system_properties["model_dir"],
            config,
            worker_device(context, bool(config.get("require_gpu", False))),
            metric_sink(context),
        )
        log.info("%s ready: %s", self.service.spec.name, self.service.describe())

    def handle(self, data: list[dict], context) -> list:
        """decode -> predict -> encode for one TorchServe batch."""
        return send(self.service.handle(raw_requests(data, context)), context)
