"""Error types that the handlers turn into HTTP answers or start-up failures."""

from __future__ import annotations


class RequestError(Exception):
    """A problem with one request: answered with ``status`` and a JSON body naming ``field``."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def to_dict(self) -> dict:
        """The ``error`` object of the JSON answer."""
        return {"code": self.status, "field": self.field, "message": self.message}


class StartupError(RuntimeError):
    """The model cannot be served (missing package, checkpoint or file); stops ``initialize``."""
