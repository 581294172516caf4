"""TorchServe handler of model ``sam3d_body``: thin glue around :class:`gen3d.sam3d_body.service.BodyService`."""

from gen3d.sam3d_body.service import BodyService
from gen3d.torchserve.handler import ServiceHandler


class Sam3dBodyHandler(ServiceHandler):
    """Loads SAM 3D Body (the preset the archive names) once per worker; answers generate_body requests."""

    service_class = BodyService
