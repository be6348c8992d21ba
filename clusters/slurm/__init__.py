"""A plain slurmrestd client (no Django): one adapter per API version, the same dataclasses from each."""

from __future__ import annotations

from clusters.slurm.client import (
    SUPPORTED_VERSIONS,
    SlurmClient,
    cached_api_version,
    detect_api_version,
    forget_api_version,
)
from clusters.slurm.errors import (
    SlurmAuthError,
    SlurmError,
    SlurmErrorItem,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmProtocolError,
    SlurmRejected,
    SlurmUnavailable,
)
from clusters.slurm.http import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
from clusters.slurm.types import (
    DEFAULT_PATH,
    FINISHED_JOB_STATES,
    ClusterInfo,
    Controller,
    Job,
    JobList,
    JobSpec,
    Node,
    OptionNotCarried,
    Partition,
    SubmitResult,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_PATH",
    "DEFAULT_READ_TIMEOUT",
    "FINISHED_JOB_STATES",
    "SUPPORTED_VERSIONS",
    "ClusterInfo",
    "Controller",
    "Job",
    "JobList",
    "JobSpec",
    "Node",
    "OptionNotCarried",
    "Partition",
    "SlurmAuthError",
    "SlurmClient",
    "SlurmError",
    "SlurmErrorItem",
    "SlurmNotFound",
    "SlurmPermissionDenied",
    "SlurmProtocolError",
    "SlurmRejected",
    "SlurmUnavailable",
    "SubmitResult",
    "cached_api_version",
    "detect_api_version",
    "forget_api_version",
]
