"""Errors of the SageMaker control plane."""

from __future__ import annotations


class DeployError(RuntimeError):
    """Base error of this module."""


class GpuMemoryError(DeployError):
    """The instance type's GPUs are too small for the model (or unknown)."""


class EndpointFailedError(DeployError):
    """The endpoint reached a failed state."""


class AsyncInferenceError(DeployError):
    """An async invocation wrote its failure object."""


class SmokeTestError(DeployError):
    """A response did not report success or its outputs are missing."""


class DeployRefused(DeployError):
    """The deploy is refused before anything is uploaded or created; the message names the flag or command that
    gets past it."""


class TimeoutSettingError(DeployRefused):
    """A start-up timeout cannot be set: the archive needs more than the flag (or SageMaker) allows, or its
    needs cannot be read."""


class PushError(DeployError):
    """Building or pushing the image failed (docker missing or failing, or the pushed digest not in ECR)."""
