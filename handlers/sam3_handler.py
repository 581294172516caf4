"""TorchServe handler of model ``sam3``: thin glue around :class:`gen3d.sam3_service.Sam3Service`."""

from __future__ import annotations

import logging

from gen3d.sam3_service import Sam3Service
from gen3d.torchserve_glue import handler_config, metric_sink, raw_requests, send, worker_device

log = logging.getLogger(__name__)


class Sam3Handler:
    """Loads SAM 3 once per worker; answers each batch with one encoder pass."""

    def __init__(self) -> None:
        self.service: Sam3Service | None = None

    def initialize(self, context) -> None:
        """Builds the model from the archive; any missing piece stops the worker with one clear line."""
        model_dir = context.system_properties["model_dir"]
        self.service = Sam3Service.from_model_dir(
            model_dir, handler_config(context), worker_device(context), metric_sink(context)
        )
        log.info("sam3 ready: %s", self.service.loaded.describe())

    def handle(self, data: list[dict], context) -> list:
        """decode -> predict -> encode for one TorchServe batch."""
        return send(self.service.handle(raw_requests(data, context)), context)
