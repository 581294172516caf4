"""TorchServe handler of model ``sam3d``: thin glue around :class:`gen3d.sam3d_service.Sam3dService`."""

from __future__ import annotations

import logging

from gen3d.sam3d_service import Sam3dService
from gen3d.torchserve_glue import handler_config, metric_sink, raw_requests, send, worker_device

log = logging.getLogger(__name__)


class Sam3dHandler:
    """Loads SAM 3D Objects (the preset the archive names) once per worker; answers generate_3d requests."""

    def __init__(self) -> None:
        self.service: Sam3dService | None = None

    def initialize(self, context) -> None:
        """Builds the model from the archive; any missing piece stops the worker with one clear line."""
        model_dir = context.system_properties["model_dir"]
        self.service = Sam3dService.from_model_dir(
            model_dir, handler_config(context), worker_device(context), metric_sink(context)
        )
        log.info("sam3d ready: %s", self.service.loaded.describe())

    def handle(self, data: list[dict], context) -> list:
        """decode -> generate -> encode for one TorchServe batch."""
        return send(self.service.handle(raw_requests(data, context)), context)
