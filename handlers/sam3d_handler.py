"""TorchServe handler of model ``sam3d``: thin glue around :class:`gen3d.sam3d.service.Sam3dService`."""

from gen3d.sam3d.service import Sam3dService
from gen3d.torchserve.handler import ServiceHandler


class Sam3dHandler(ServiceHandler):
    """Loads SAM 3D Objects (the preset the archive names) once per worker; answers generate_3d requests."""

    service_class = Sam3dService
