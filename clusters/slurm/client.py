"""The slurmrestd client the console uses: picks the API version, then hands each call to its adapter."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from typing import Any

from clusters.slurm.base import Adapter
from clusters.slurm.errors import SlurmAuthError, SlurmError, SlurmProtocolError, SlurmUnavailable
from clusters.slurm.http import Timeout, Transport
from clusters.slurm.types import ClusterInfo, Job, JobList, JobSpec, Node, Partition, SubmitResult
from clusters.slurm.v0038 import V0038Adapter
from clusters.slurm.v0040 import V0040Adapter

log = logging.getLogger("clusters.slurm")

# Highest first: auto-detection takes the first one the server offers. v0.0.39 is left
# out on purpose: every release that serves it also serves v0.0.38 or v0.0.40.
SUPPORTED_VERSIONS: tuple[str, ...] = (
    "v0.0.45",
    "v0.0.44",
    "v0.0.43",
    "v0.0.42",
    "v0.0.41",
    "v0.0.40",
    "v0.0.38",
)
_ADAPTERS: dict[str, type[Adapter]] = {
    **{v: V0040Adapter for v in V0040Adapter.versions},
    **{v: V0038Adapter for v in V0038Adapter.versions},
}
_SERVED_PATH = re.compile(r"^/slurm/(v\d+\.\d+\.\d+)/")

_detected: dict[str, str] = {}
_detecting: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def _key(base_url: str) -> str:
    return base_url.rstrip("/")


def forget_api_version(base_url: str | None = None) -> None:
    """Drop the cached version of one slurmrestd (all of them with no argument), e.g. after an upgrade."""
    with _registry_lock:
        if base_url is None:
            _detected.clear()
        else:
            _detected.pop(_key(base_url), None)


def cached_api_version(base_url: str) -> str | None:
    with _registry_lock:
        return _detected.get(_key(base_url))


def _discovery_headers(user_name: str | None, token: str) -> dict[str, str]:
    # Both headers work on every release; 22.05 needs both even for /openapi/v3.
    headers = {"X-SLURM-USER-TOKEN": token}
    if user_name:
        headers["X-SLURM-USER-NAME"] = user_name
    return headers


def versions_in_document(document: dict[str, Any]) -> set[str]:
    paths = document.get("paths")
    if not isinstance(paths, dict):
        return set()
    return {m.group(1) for p in paths if (m := _SERVED_PATH.match(p))}


def detect_api_version(
    base_url: str, *, user_name: str | None, token: str, timeout: Timeout | None = None
) -> str:
    """The highest version both sides speak, from the served OpenAPI document or, failing that, by pings.

    The answer is cached for the process; `forget_api_version` drops it. One thread
    detects per slurmrestd while the others wait for its answer.
    """
    key = _key(base_url)
    with _registry_lock:
        if key in _detected:
            return _detected[key]
        lock = _detecting.setdefault(key, threading.Lock())
    with lock:
        with _registry_lock:
            if key in _detected:
                return _detected[key]
        version = _detect(key, user_name, token, timeout)
        with _registry_lock:
            _detected[key] = version
        log.info("slurmrestd at %s speaks %s", key, version)
        return version


def _detect(base_url: str, user_name: str | None, token: str, timeout: Timeout | None) -> str:
    transport = Transport(base_url, _discovery_headers(user_name, token), timeout=timeout)
    try:
        offered = versions_in_document(dict(transport.get("/openapi/v3").data))
    except (SlurmAuthError, SlurmUnavailable):
        raise
    except SlurmError:
        # Some builds or proxies do not serve the document; the pings below still tell.
        offered = set()
    for version in SUPPORTED_VERSIONS:
        if version in offered:
            return version
    if offered:
        raise SlurmProtocolError(
            f"slurmrestd offers {', '.join(sorted(offered))}, none of which the console speaks "
            f"({', '.join(SUPPORTED_VERSIONS)}); load one with slurmrestd -s / -d"
        )
    for version in SUPPORTED_VERSIONS:
        try:
            transport.get(f"/slurm/{version}/ping")
        except SlurmUnavailable:
            raise
        except SlurmError as e:
            if e.status == 404:
                continue
            if e.status == 401:
                # 401 comes before routing, so it says nothing about the version.
                raise
            # Any other refusal came from that version's own handler: it is served.
        return version
    raise SlurmProtocolError(
        f"slurmrestd answers none of {', '.join(SUPPORTED_VERSIONS)} (every ping path was 404)",
        404,
        said_by_slurm=False,
    )


class SlurmClient:
    """A slurmrestd client acting as one Slurm user with one token; cheap to create per request."""

    SUPPORTED_VERSIONS = SUPPORTED_VERSIONS

    def __init__(
        self,
        base_url: str,
        *,
        user_name: str | None,
        token: str,
        api_version: str | None = None,
        timeout: Timeout | None = None,
    ) -> None:
        if api_version is not None and api_version not in _ADAPTERS:
            raise ValueError(
                f"unsupported slurmrestd API version {api_version!r}; use one of {SUPPORTED_VERSIONS}"
            )
        self.base_url = _key(base_url)
        self.user_name = user_name
        self._token = token
        self._requested_version = api_version
        self._timeout = timeout
        self._adapter: Adapter | None = None

    def __repr__(self) -> str:
        # Never the token.
        version = self._requested_version or cached_api_version(self.base_url) or "auto"
        return f"<SlurmClient {self.base_url} as {self.user_name or '(token user)'} {version}>"

    @property
    def api_version(self) -> str:
        return self.adapter.version

    @property
    def adapter(self) -> Adapter:
        if self._adapter is None:
            version = self._requested_version or detect_api_version(
                self.base_url, user_name=self.user_name, token=self._token, timeout=self._timeout
            )
            self._adapter = _ADAPTERS[version](
                self.base_url,
                user_name=self.user_name,
                token=self._token,
                version=version,
                timeout=self._timeout,
            )
        return self._adapter

    def forget_api_version(self) -> None:
        """Detect again on the next call (this client and every other one for this slurmrestd)."""
        forget_api_version(self.base_url)
        if self._requested_version is None:
            self._adapter = None

    def info(self) -> ClusterInfo:
        return self.adapter.info()

    def partitions(self) -> list[Partition]:
        """Partitions; where their TRES omit GPUs (no AccountingStorageTRES=gres/gpu), nodes' GRES count."""
        partitions = self.adapter.partitions()
        if any(p.gpus is None for p in partitions):
            nodes = self.adapter.nodes()
            partitions = [
                p
                if p.gpus is not None
                else dataclasses.replace(p, gpus=sum(n.gpus for n in nodes if p.name in n.partitions))
                for p in partitions
            ]
        return partitions

    def nodes(self) -> list[Node]:
        return self.adapter.nodes()

    def jobs(self, update_time: int | None = None) -> JobList:
        """The queue as this user may see it; with `update_time`, `not_modified` if nothing changed since."""
        return self.adapter.jobs(update_time)

    def job(self, job_id: int | str) -> Job:
        """One job; SlurmNotFound once slurmctld forgot it (MinJobAge after it ended) or never had it."""
        return self.adapter.job(job_id)

    def submit(self, spec: JobSpec) -> SubmitResult:
        return self.adapter.submit(spec)

    def cancel(self, job_id: int | str, signal: str | None = None) -> None:
        """Cancel (or signal) a job. One that already ended is fine; an unknown id is SlurmNotFound."""
        self.adapter.cancel(job_id, signal)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document this slurmrestd serves (it needs a token like every other path)."""
        transport = Transport(
            self.base_url, _discovery_headers(self.user_name, self._token), timeout=self._timeout
        )
        return dict(transport.get("/openapi/v3").data)
