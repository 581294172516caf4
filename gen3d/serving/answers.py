"""What every JSON answer holds, as pydantic models: the success envelope each task's answer extends
(``gen3d.sam3.answers``, ``gen3d.sam3d.answers``), the error answer every model gives, and TorchServe's own
answers (``/ping``, and errors its frontend gives before a worker sees the request).

They describe the answers :mod:`gen3d.serving.replies` builds; ``gen3d-schema --openapi`` publishes them in
docs/openapi.json, and the integration tests validate real answers against them. Unknown fields are refused
(``extra="forbid"``), so an answer that gains a field fails those tests until its model documents it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gen3d.errors import ERROR_TYPES

ErrorType = Literal[tuple(sorted({cls.error_type for cls in ERROR_TYPES}))]  # type: ignore[valid-type]
Milliseconds = Annotated[float, Field(ge=0)]


class AnswerModel(BaseModel):
    """Strict about fields: every field an answer carries is documented here."""

    model_config = ConfigDict(extra="forbid")


class Answer(AnswerModel):
    """The success envelope: ``status``, ``task``, the request's id, the model that answered, and timings."""

    status: Literal["success"]
    task: str = Field(description="the task answered")
    request_id: str = Field(description="the client's X-Request-Id when it is a plain token, else a new one")
    model_id: str = Field(description="<model>/<preset>/<checkpoint digest>: the weights that answered")
    session_id: str | None = Field(None, description="echoed from the request")
    user_id: str | None = Field(None, description="echoed from the request")
    timings_ms: dict[str, Milliseconds | dict[str, Milliseconds] | list[dict[str, Any]]] = Field(
        description="time per step of this request (the model's steps, and total; a scene's per object)"
    )


class ErrorDetail(AnswerModel):
    code: int = Field(description="the HTTP status")
    type: ErrorType = Field(description="stable error type: branch on it, not on the message")
    field: str | None = Field(description="the request field (or header) at fault, or the step that failed")
    message: str = Field(description="what went wrong, in words")


class ErrorAnswer(AnswerModel):
    """Every error a model answers: a 4xx/5xx status, this body, and the same ``X-Request-Id`` header."""

    status: Literal["error"]
    task: str | None = Field(description="the task asked for, when the request named one")
    request_id: str
    error: ErrorDetail
    preset: str | None = Field(None, description="sam3d: the preset that answered (errors included)")


class TorchServeError(AnswerModel):
    """An error TorchServe's frontend answers itself, before a worker sees the request (an unknown model, a body
    over max_request_size, no worker free, a worker that died while answering)."""

    code: int
    type: str = Field(description="TorchServe's exception name, e.g. ModelNotFoundException")
    message: str


class PingAnswer(AnswerModel):
    """TorchServe's health answer (SageMaker's health check)."""

    status: Literal["Healthy", "Partial Healthy", "Unhealthy"]
