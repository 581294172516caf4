"""TorchServe handler of model ``sam3``: thin glue around :class:`gen3d.sam3.service.Sam3Service`."""

from gen3d.sam3.service import Sam3Service
from gen3d.torchserve.handler import ServiceHandler


class Sam3Handler(ServiceHandler):
    """Loads SAM 3 once per worker; answers each batch with at most one encoder pass."""

    service_class = Sam3Service
