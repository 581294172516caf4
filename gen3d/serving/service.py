"""The contract between a TorchServe handler and a model (:class:`Service`), and the base every model's
service is built on (:class:`ModelService`).

The base owns what the models share: the batch loop, routing a task to the model that serves it, the output
prefix, echoing the client's ids, timings, metrics and the one place that turns an exception into an answer
(:meth:`ModelService.reply_for`). A model's service keeps three hooks, as LitServe's ``LitAPI`` does:
``decode`` (one request: task fields and inputs), ``run`` (the model over the batch's decoded requests) and
``encode`` (one request's answer). One request's failure never touches the others or the worker.
"""

from __future__ import annotations

import base64
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch

from gen3d.errors import InvalidField, OutOfResources, ServingError, TooLarge
from gen3d.models import ModelSpec, model_serving
from gen3d.serving.limits import INLINE_OUTPUT_BYTES
from gen3d.serving.replies import Reply, error_reply, success
from gen3d.serving.request_log import in_request
from gen3d.serving.request_log import install as install_request_log
from gen3d.serving.schema import ParsedRequest, RawRequest, parse_request
from gen3d.serving.storage import S3Location, S3Store, check_bucket, output_key, output_prefix

log = logging.getLogger(__name__)

MetricSink = Callable[[str, float], None]  # (name, increment): a custom TorchServe counter (metrics.yaml)
ECHOED_IDS = ("session_id", "user_id")


def no_metrics(name: str, value: float) -> None:
    """A :data:`MetricSink` that records nothing (services built outside TorchServe)."""


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` value), one decimal."""
    return round((time.perf_counter() - since) * 1000, 1)


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA out-of-memory, or the CPU allocator failing."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(err)
    )


class Service(Protocol):
    """What a TorchServe handler needs of a model's service (see ``gen3d.torchserve.handler``)."""

    spec: ModelSpec

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, config: dict, device: torch.device, metric: MetricSink) -> Service:
        """Loads the model an archive describes (``config``: model-config.yaml's ``handler`` section); raises
        :class:`gen3d.errors.StartupError` naming whatever is missing."""
        ...

    def handle(self, raws: list[RawRequest]) -> list[Reply]:
        """One answer per request of the batch, in order."""
        ...

    def describe(self) -> dict[str, object]:
        """What is loaded, for the worker's READY log line."""
        ...


@dataclass
class Job:
    """One request on its way through a batch; services add their task's state in a subclass."""

    raw: RawRequest
    started: float = field(default_factory=time.perf_counter)
    request: ParsedRequest | None = None
    timings_ms: dict[str, object] = field(default_factory=dict)
    reply: Reply | None = None
    # work ``encode`` left running on the io pool (outputs being written while the batch's next request is
    # encoded); the answer waits for it, and its first failure becomes the answer
    pending: list[Future] = field(default_factory=list)

    @property
    def task(self) -> str | None:
        return self.request.task if self.request else None


JobT = TypeVar("JobT", bound=Job)


class ModelService(ABC, Generic[JobT]):
    """A model's service: subclasses set ``spec`` and ``job_type`` and implement decode / run / encode."""

    spec: ClassVar[ModelSpec]
    job_type: ClassVar[type[Job]] = Job
    # timings_ms keys of the three hooks, as docs/http-api.md documents them per model
    stage_names: ClassVar[tuple[str, str, str]] = ("decode", "run", "encode")
    oom_advice: ClassVar[str] = "retry later"

    def __init__(self, store: S3Store, prefix_template: str, metric: MetricSink = no_metrics, io_threads: int = 8):
        self.store = store
        self.prefix_template = prefix_template
        self.metric = metric
        self.io = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix=f"{self.spec.name}-io")
        install_request_log()
        log.info("%s may use S3 buckets: %s", self.spec.name, store.describe() if store else "none")

    # -- hooks ----------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model runs."""

    @abstractmethod
    def decode(self, job: JobT) -> None:
        """Checks the task's fields and fetches the request's inputs; raises a :class:`ServingError`."""

    @abstractmethod
    def run(self, jobs: list[JobT]) -> None:
        """Runs the model for the decoded jobs of a batch. An exception fails every job still unanswered; use
        :meth:`attempt` to fail one job alone."""

    @abstractmethod
    def encode(self, job: JobT) -> dict[str, object] | Reply:
        """The job's success fields (the envelope is added), or a complete (binary) :class:`Reply`."""

    def answer_fields(self) -> dict[str, object]:
        """Fields every JSON answer of this model carries, errors included."""
        return {}

    def after_batch(self, jobs: list[JobT]) -> None:
        """Called once the batch is answered (or failed), e.g. to release device memory."""

    def describe(self) -> dict[str, object]:
        return {"model": self.spec.name, "device": str(self.device)}

    # -- what every model shares ----------------------------------------------------------------------
    def output_prefix(self, req: ParsedRequest) -> str:
        """The request's S3 output prefix (user_id and session_id required and checked)."""
        return output_prefix(self.prefix_template, req.get("user_id"), req.get("session_id"))

    def output_location(self, req: ParsedRequest, name: str) -> S3Location:
        """Where output ``name`` of the request goes: ``output_bucket`` (else the image's ``bucket``), under
        the request's prefix."""
        bucket = check_bucket(req.get("output_bucket") or req.get("bucket"), "bucket")
        return S3Location(bucket, output_key(self.output_prefix(req), name))

    def fetch(self, field_name: str, s3: S3Location | None, inline: bytes | None = None) -> bytes:
        """An input's bytes: ``inline``, or read from ``s3`` (errors name ``field_name``)."""
        return self.store.get_bytes(s3, field_name) if s3 is not None else inline or b""

    def write_outputs(
        self,
        req: ParsedRequest,
        folder: str,
        files: dict[str, bytes],
        content_type: Callable[[str], str],
        meta: dict[str, str],
        last: tuple[str, ...] = (),
    ) -> dict[str, S3Location]:
        """Writes ``files`` (names under ``folder`` of the request's output prefix) to S3 on the io threads, those
        of ``last`` (a manifest) only after every other one; where each went."""
        locations = {name: self.output_location(req, f"{folder}/{name}") for name in files}

        def put(name: str) -> None:
            self.store.put_bytes(locations[name], files[name], content_type(name), meta)

        list(self.io.map(put, [name for name in files if name not in last]))
        list(self.io.map(put, last))
        return locations

    @staticmethod
    def inline_outputs(files: dict[str, bytes]) -> dict[str, str]:
        """Output files as base64 for the answer; 413 asking for ``output_bucket`` above the inline limit."""
        total = sum(len(data) for data in files.values())
        if total > INLINE_OUTPUT_BYTES:
            raise TooLarge(
                "output_bucket",
                f"outputs are {total / 1e6:.1f} MB, above the {INLINE_OUTPUT_BYTES / 1e6:.1f} MB inline limit; "
                "give output_bucket, user_id and session_id to have them written to S3",
            )
        return {name: base64.b64encode(data).decode() for name, data in files.items()}

    def attempt(self, job: JobT, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; an exception becomes the job's answer (and ``None`` is returned)."""
        with in_request(job.raw.request_id):
            try:
                return fn(*args)
            except Exception as err:  # noqa: BLE001 - answered as this request's error, never swallowed
                job.reply = self.reply_for(job, stage, err)
                return None

    def reply_for(self, job: Job, stage: str, err: Exception) -> Reply:
        """The one place an exception becomes an answer: typed errors keep their status, an out-of-memory is
        507, anything else 500. A 5xx is logged with its traceback under the request id; its answer says what
        failed in words and gives the id, never the exception's text."""
        task = job.task
        with in_request(job.raw.request_id):
            if isinstance(err, ServingError) and type(err) is not ServingError:
                if err.status >= 500:
                    log.error("%s %s failed in %s: %s", self.spec.name, task, stage, err, exc_info=err)
                return error_reply(task, err)
            if is_out_of_memory(err):
                log.error("out of memory on %s during %s of %s: %s", self.device, stage, task, err)
                self.metric("OutOfMemory", 1)
                message = f"out of memory on {self.device} during {stage}; {self.oom_advice}"
                return error_reply(task, OutOfResources(stage, message))
            log.error("%s %s failed in %s", self.spec.name, task, stage, exc_info=err)
        message = (
            f"the {stage} step failed unexpectedly; the server's log has the details under request_id "
            f"{job.raw.request_id}"
        )
        return error_reply(task, ServingError(stage, message))

    def handle(self, raws: list[RawRequest]) -> list[Reply]:
        """Answers every request of a batch; one request's error never affects the others."""
        jobs: list[JobT] = [self.job_type(raw) for raw in raws]  # type: ignore[misc]
        self.metric("Batches", 1)
        self.metric("BatchRequests", len(jobs))
        decode, run, encode = self.stage_names
        try:
            list(self.io.map(lambda job: self._timed(job, decode, self._decode_job, job), jobs))
            ready = [job for job in jobs if job.reply is None]
            if ready:
                started = time.perf_counter()
                try:
                    with in_request(*(job.raw.request_id for job in ready)):
                        self.run(ready)
                except Exception as err:  # noqa: BLE001 - every unanswered job gets this answer
                    for job in ready:
                        if job.reply is None:
                            job.reply = self.reply_for(job, run, err)
                for job in ready:
                    job.timings_ms.setdefault(run, elapsed_ms(started))
            for job in ready:
                if job.reply is None:
                    self._timed(job, encode, self._encode_job, job)
            for job in ready:
                self._await_pending(job, encode)
        finally:
            self.after_batch(jobs)
        return [self._finish_job(job) for job in jobs]

    # -- internals ------------------------------------------------------------------------------------
    def _timed(self, job: JobT, stage: str, fn: Callable[[JobT], None], *args: Any) -> None:
        started = time.perf_counter()
        self.attempt(job, stage, fn, *args)
        job.timings_ms[stage] = elapsed_ms(started)

    def _await_pending(self, job: JobT, stage: str) -> None:
        """Waits for the work ``encode`` left running for ``job`` (its time counts in ``stage``'s); the first
        failure replaces a successful answer."""
        if not job.pending:
            return
        started = time.perf_counter()
        wait(job.pending)
        failures = [future.exception() for future in job.pending if future.exception() is not None]
        if failures and job.reply is not None and job.reply.status == 200:
            job.reply = self.reply_for(job, stage, failures[0])
        job.timings_ms[stage] = round(float(job.timings_ms.get(stage, 0.0)) + elapsed_ms(started), 1)

    def _decode_job(self, job: JobT) -> None:
        job.request = req = parse_request(job.raw, self.spec.default_task)
        if req.task not in self.spec.tasks:
            other = model_serving(req.task)
            if other is not None:
                raise InvalidField("task", f"task {req.task} is served by model {other.name}, not {self.spec.name}")
            served = list(self.spec.tasks)
            raise InvalidField("task", f"unknown task {req.task!r}; model {self.spec.name} serves {served}")
        # every bucket the request names is checked against the allow-list before any S3 call (an S3 image's
        # bucket is the body's "bucket": parse_request builds its S3Location from that field)
        for name in ("bucket", "output_bucket"):
            if isinstance(req.get(name), str):
                self.store.buckets.check(req.get(name), name)
        self.decode(job)

    def _encode_job(self, job: JobT) -> None:
        answer = self.encode(job)
        if isinstance(answer, Reply):
            job.reply = answer
            return
        fields = dict(answer)
        for name in ECHOED_IDS:
            if job.request.get(name) is not None:
                fields.setdefault(name, job.request.get(name))
        job.reply = Reply(200, success(job.request.task, **fields))

    def _finish_job(self, job: JobT) -> Reply:
        reply = job.reply
        reply.request_id = job.raw.request_id
        if isinstance(reply.body, dict):
            reply.body.setdefault("request_id", job.raw.request_id)
            for name, value in self.answer_fields().items():
                reply.body.setdefault(name, value)
            if reply.status == 200:
                job.timings_ms["total"] = elapsed_ms(job.started)
                reply.body["timings_ms"] = job.timings_ms
        with in_request(job.raw.request_id):
            log.info("%s %s -> %d in %.0f ms", self.spec.name, job.task, reply.status, elapsed_ms(job.started))
        return reply
