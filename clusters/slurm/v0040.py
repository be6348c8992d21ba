"""The adapter for the data_parser family, slurmrestd API v0.0.40 … v0.0.45 (Slurm 23.11 to 26.05)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from clusters.slurm import options
from clusters.slurm.base import Adapter, environment_with_path, items_of, job_path
from clusters.slurm.errors import SlurmAuthError, SlurmError, SlurmErrorItem, error_for
from clusters.slurm.http import SlurmResponse
from clusters.slurm.parsing import (
    decode_verbose_exit,
    gpus_in_tres,
    number,
    release_from_meta,
    split_state,
    string_list,
    text,
)
from clusters.slurm.types import (
    ClusterInfo,
    Controller,
    JobList,
    JobSpec,
    OptionNotCarried,
    Partition,
    SubmitResult,
)

# Slurm's 16-bit "no value": the field was not given.
NO_VAL16 = 0xFFFE
# What a v0.0.45 ping says of a controller that refused the caller's token.
_AUTH_REFUSED = "Protocol authentication error"


def _set(value: int) -> dict[str, Any]:
    # The servers take a plain int too, but the documents only allow the object, and
    # sending what the document says keeps the bodies checkable against it.
    return {"set": True, "infinite": False, "number": value}


class V0040Adapter(Adapter):
    """One class for v0.0.40 … v0.0.45; the few differences are branches on `self.minor`."""

    versions = ("v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45")
    idle_cpus_key = "alloc_idle_cpus"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.minor = int(self.version.rsplit(".", 1)[1])

    @staticmethod
    def auth_headers(user_name: str | None, token: str) -> dict[str, str]:
        # From 23.02 the user name is optional (the token names the user), and AWS PCS
        # refuses impersonation, so it is sent only when known. Never together with a
        # Bearer header: slurmrestd rejects two credentials as ambiguous.
        headers = {"X-SLURM-USER-TOKEN": token}
        if user_name:
            headers["X-SLURM-USER-NAME"] = user_name
        return headers

    def submit_body(self, spec: JobSpec) -> dict[str, Any]:
        environment = environment_with_path(spec)
        if spec.get_user_environment:
            # What sbatch --get-user-env sends; this family has no field for it.
            environment["SLURM_GET_USER_ENV"] = "1"
        job: dict[str, Any] = {
            # Inside `job` in every version: top-level `script` is deprecated in v0.0.41/42.
            "script": spec.script,
            "current_working_directory": spec.working_directory,
            "environment": [f"{k}={v}" for k, v in environment.items()],
        }
        optional = {
            "name": spec.name,
            "partition": spec.partition,
            "tasks": spec.ntasks,
            "tasks_per_node": spec.tasks_per_node,
            "tasks_per_socket": spec.tasks_per_socket,
            "tasks_per_core": spec.tasks_per_core,
            "ntasks_per_tres": spec.tasks_per_gpu,
            "cpus_per_task": spec.cpus_per_task,
            "cpus_per_tres": _gpu_tres(spec.cpus_per_gpu),
            "minimum_cpus_per_node": spec.min_cpus_per_node,
            "sockets_per_node": spec.sockets_per_node,
            "threads_per_core": spec.threads_per_core,
            "tres_per_job": _gpu_tres(spec.gpus),
            "tres_per_node": _per_node_tres(spec),
            "tres_per_task": _per_task_tres(spec),
            "tres_per_socket": _gpu_tres(spec.gpus_per_socket),
            "memory_per_tres": _gpu_tres(spec.memory_per_gpu),
            "temporary_disk_per_node": spec.tmp_disk_per_node,
            "constraints": spec.constraint,
            "prefer": spec.prefer,
            "required_nodes": [spec.nodelist] if spec.nodelist else None,
            "excluded_nodes": [spec.exclude] if spec.exclude else None,
            "dependency": spec.dependency,
            "mail_type": _mail_types(spec.mail_type),
            "mail_user": spec.mail_user,
            "open_mode": [spec.open_mode.upper()] if spec.open_mode else None,
            "standard_output": spec.standard_output,
            "standard_error": spec.standard_error,
            "standard_input": spec.standard_input,
            "account": spec.account,
            "qos": spec.qos,
            "reservation": spec.reservation,
            "licenses": spec.licenses,
            "wckey": spec.wckey,
            "nice": spec.nice,
            "distribution": spec.distribution,
            "array": spec.array,
            "comment": spec.comment,
            # `extra` is free text Slurm keeps and lists back, and leaves the person's comment theirs.
            "extra": spec.tag,
        }
        job.update({k: v for k, v in optional.items() if v is not None})
        if spec.cores_per_socket is not None:
            if self.minor not in (40, 45):
                raise OptionNotCarried(
                    "cores_per_socket",
                    f"slurmrestd {self.version} has no field for --cores-per-socket; "
                    "remove it, or submit with sbatch from a terminal.",
                )
            job["cores_per_socket"] = spec.cores_per_socket
        if spec.exclusive == "topo" and self.minor < 41:
            raise OptionNotCarried(
                "exclusive", "--exclusive=topo needs Slurm 24.05 or later; this cluster runs an older one."
            )
        shared = []
        if spec.exclusive:
            # Slurm's job "shared" value: none is --exclusive, user/mcs/topo its named forms.
            shared.append("none" if spec.exclusive == "exclusive" else spec.exclusive)
        if spec.oversubscribe:
            shared.append("oversubscribe")
        if shared:
            job["shared"] = shared
        for name, minutes in (("time_limit", spec.time_limit), ("time_minimum", spec.time_min)):
            if minutes is not None:
                job[name] = _set(minutes)
        for name, megabytes in (
            ("memory_per_node", spec.memory_per_node),
            ("memory_per_cpu", spec.memory_per_cpu),
        ):
            if megabytes is not None:
                job[name] = _set(megabytes)
        if spec.nodes or spec.max_nodes:
            least = spec.nodes or 1
            most = spec.max_nodes or least
            job["nodes"] = str(least) if most == least else f"{least}-{most}"
        if spec.begin:
            job["begin_time"] = _set(options.when(spec.begin))
        if spec.deadline:
            job["deadline"] = options.when(spec.deadline)
        if spec.signal:
            signal = options.parse_signal(spec.signal)
            job["kill_warning_signal"] = signal.name
            job["kill_warning_delay"] = _set(signal.delay)
            flags = (["BATCH_JOB"] if signal.batch_only else []) + (
                ["RESERVATION_JOB"] if signal.reservation else []
            )
            if flags:
                job["kill_warning_flags"] = flags
        flags = []
        if spec.spread_job:
            flags.append("SPREAD_JOB")
        if spec.kill_on_invalid_dependency is not None:
            flags.append(
                "KILL_INVALID_DEPENDENCY" if spec.kill_on_invalid_dependency else "NO_KILL_INVALID_DEPENDENCY"
            )
        if flags:
            job["flags"] = flags
        if spec.gpus_per_task:
            # What sbatch (24.11, 26.05) sends with --gpus-per-task: each task bound to its own GPUs.
            job["tres_bind"] = f"gres/gpu:per_task:{spec.gpus_per_task.rpartition(':')[2]}"
        if self.minor >= 42:
            # NO_VAL16, "not said", as sbatch leaves it: without the key the parser writes 0 (never kill the
            # step on an OOM), overriding the site's default (seen on 24.11.5 and 26.05.5).
            job["oom_kill_step"] = NO_VAL16
        if spec.hold:
            job["hold"] = True
        if spec.requeue is not None:
            job["requeue"] = spec.requeue
        return {"job": job}

    def parse_submit(self, response: SlurmResponse) -> SubmitResult:
        data = response.data
        result = data.get("result")
        if self.minor <= 41 and isinstance(result, Mapping) and data.get("job_id") is None:
            # v0.0.40/41 also nest the answer in a deprecated `result`; trust it only when the top is empty.
            data = {
                **data,
                "job_id": result.get("job_id"),
                "job_submit_user_msg": result.get("job_submit_user_msg"),
            }
            response = SlurmResponse(response.status, data, response.errors, response.warnings)
        submitted = super().parse_submit(response)
        if isinstance(result, Mapping) and number(result.get("error_code")) and result.get("error"):
            extra = str(result["error"])
            if extra not in submitted.warnings:
                return SubmitResult(submitted.job_id, (*submitted.warnings, extra), submitted.user_message)
        return submitted

    def decode_exit(self, raw: Any) -> tuple[int | None, int | None]:
        return decode_verbose_exit(raw)

    def info(self) -> ClusterInfo:
        """The ping, with a refused token told apart from a controller that is down.

        From 24.11 slurmrestd passes the token on to slurmctld, and a token slurmctld refuses (expired,
        wrong key) comes back as a 200 ping whose controllers do not respond (seen on 24.11.5 and
        26.05.5). v0.0.45 says why in `status`; before it one cheap query (the queue since a moment in
        the future, 511 for a refused token) tells the two apart.
        """
        info = super().info()
        if info.controllers and not info.is_up:
            if any(c.status == _AUTH_REFUSED for c in info.controllers):
                raise SlurmAuthError(_AUTH_REFUSED, 200)
            if self.minor < 45:
                try:
                    self.jobs(update_time=int(time.time()) + 3600)
                except SlurmAuthError:
                    raise
                except SlurmError:
                    pass  # slurmctld is down indeed: the ping said so
        return info

    def parse_info(self, data: Mapping[str, Any]) -> ClusterInfo:
        release, cluster = release_from_meta(data.get("meta"))
        controllers = []
        for p in items_of(data, "pings"):
            if "responding" in p:
                # v0.0.42+: a boolean; `pinged` and `mode` are deprecated and gone in v0.0.45.
                state = "UP" if p.get("responding") else "DOWN"
            else:
                state = text(p.get("pinged")).upper() or "DOWN"
            if "primary" in p:
                primary = bool(p.get("primary"))
            else:
                primary = (text(p.get("mode")) == "primary") if p.get("mode") else None
            controllers.append(Controller(text(p.get("hostname")), state, primary, text(p.get("status"))))
        return ClusterInfo(self.version, release, tuple(controllers), cluster)

    def parse_partition(self, raw: Mapping[str, Any]) -> Partition:
        def part(key: str) -> Mapping[str, Any]:
            value = raw.get(key)
            return value if isinstance(value, Mapping) else {}

        state, _ = split_state(part("partition").get("state"), frozenset({"UP", "DOWN", "DRAIN", "INACTIVE"}))
        is_default = None
        if "flags" in raw:
            # Only v0.0.45 reports partition flags; earlier versions cannot say which is the default.
            is_default = "DEFAULT" in {f.upper() for f in string_list(raw.get("flags"))}
        return Partition(
            name=text(raw.get("name")),
            state=state.upper(),
            is_default=is_default,
            max_time_limit=number(part("maximums").get("time")),
            default_time_limit=number(part("defaults").get("time")),
            total_nodes=number(part("nodes").get("total")),
            total_cpus=number(part("cpus").get("total")),
            nodes=text(part("nodes").get("configured")),
            gpus=gpus_in_tres(part("tres").get("configured")),
            max_nodes_per_job=number(part("maximums").get("nodes")),
        )

    def jobs(self, update_time: int | None = None) -> JobList:
        # The documents declare update_time a string here (a UNIX time in decimal).
        params = {"update_time": str(int(update_time))} if update_time is not None else None
        response = self.transport.get(f"{self.prefix}/jobs", params)
        if response.not_modified:
            return JobList((), update_time, True)
        response.raise_for_errors()
        jobs = tuple(self.parse_job(j) for j in items_of(response.data, "jobs"))
        last_update = number(response.data.get("last_update"))
        if update_time is not None and not jobs:
            # "No change" is HTTP 200, an empty list and a warning here, not 22.05's 304.
            unchanged = any("no job changes" in w.lower() for w in response.warnings)
            if unchanged or (last_update is not None and last_update <= update_time):
                return JobList((), last_update if last_update is not None else update_time, True)
        return JobList(jobs, last_update, False)

    def cancel(self, job_id: int | str, signal: str | None = None) -> None:
        params = {"signal": signal} if signal else None
        try:
            response = self.transport.request(
                "DELETE", f"{self.prefix}/job/{job_path(job_id)}", params=params
            )
            response.raise_for_errors()
            if self.minor >= 42:
                # v0.0.42+ reports each signalled job in `status[]`, errors included, under HTTP 200.
                failures = _kill_failures(response.data.get("status"))
                if failures:
                    raise error_for(response.status, failures)
        except SlurmError as e:
            self._cancel_failed(e)


def _kill_failures(status: Any) -> tuple[SlurmErrorItem, ...]:
    failures = []
    for entry in status if isinstance(status, list) else ():
        error = entry.get("error") if isinstance(entry, Mapping) else None
        if not isinstance(error, Mapping):
            continue
        code = number(error.get("code"))
        if not code:
            continue
        failures.append(
            SlurmErrorItem(
                code=code,
                text=text(error.get("string")),
                source="kill_job",
                description=text(error.get("message")) or None,
            )
        )
    return tuple(failures)


def _gpu_tres(value: str | int | None) -> str | None:
    """A per-GPU or GPU-count value as this family's TRES string: "a100:2" -> "gres/gpu:a100:2"."""
    return None if value is None else f"gres/gpu:{value}"


def _per_task_tres(spec: JobSpec) -> str | None:
    """Per-task TRES as sbatch 24.11+ writes them: "cpu=6,gres/gpu=1" (--cpus-per-task, --gpus-per-task)."""
    items = [f"cpu={spec.cpus_per_task}"] if spec.cpus_per_task else []
    if spec.gpus_per_task:
        kind, _, count = spec.gpus_per_task.rpartition(":")
        items.append(f"gres/gpu:{kind}={count}" if kind else f"gres/gpu={count}")
    return ",".join(items) or None


def _per_node_tres(spec: JobSpec) -> str | None:
    """--gpus-per-node and --gres together, as one per-node TRES list (they are both per node)."""
    items = [f"gres/gpu:{spec.gpus_per_node}"] if spec.gpus_per_node else []
    for item in (spec.gres or "").split(","):
        item = item.strip().removeprefix("gres/")
        if item:
            items.append(f"gres/{item}")
    return ",".join(items) or None


# sbatch's --mail-type words as this family's enum; ALL is what Slurm's ALL means.
_MAIL = {
    "INVALID_DEPEND": ["INVALID_DEPENDENCY"],
    "TIME_LIMIT": ["TIME=100%"],
    "TIME_LIMIT_90": ["TIME=90%"],
    "TIME_LIMIT_80": ["TIME=80%"],
    "TIME_LIMIT_50": ["TIME=50%"],
    "ALL": ["BEGIN", "END", "FAIL", "REQUEUE", "STAGE_OUT", "INVALID_DEPENDENCY"],
    "NONE": [],
}


def _mail_types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    kinds: list[str] = []
    for word in value.split(","):
        for kind in _MAIL.get(word, [word]):
            if kind not in kinds:
                kinds.append(kind)
    return kinds
