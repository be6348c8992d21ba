"""The adapter for slurmrestd API v0.0.38 (Slurm 22.05 to 23.11): sbatch-style submit, plain integers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusters.slurm.base import Adapter, environment_with_path, items_of, job_path
from clusters.slurm.errors import SlurmError
from clusters.slurm.parsing import (
    BASE_NODE_STATES,
    decode_wait_status,
    gpus_in_tres,
    number,
    release_from_meta,
    split_state,
    string_list,
    text,
)
from clusters.slurm.types import ClusterInfo, Controller, JobList, JobSpec, OptionNotCarried, Partition


class V0038Adapter(Adapter):
    versions = ("v0.0.38",)

    @staticmethod
    def auth_headers(user_name: str | None, token: str) -> dict[str, str]:
        # 22.05 answers 401 unless both headers are present; Bearer is not understood.
        headers = {"X-SLURM-USER-TOKEN": token}
        if user_name:
            headers["X-SLURM-USER-NAME"] = user_name
        return headers

    def submit_body(self, spec: JobSpec) -> dict[str, Any]:
        """`job` keys go to Slurm's own sbatch option parser here, so values are sbatch's strings.

        Unknown keys make the whole request fail, and the document is not the parser: `exclude_nodes` is
        what 22.05 reads for --exclude (the document has none), `excluded_nodes`, `export`, `overcommit`
        and `contiguous` are disabled keys, and an `argv` key kills 22.05's slurmrestd, so it is never sent
        (all seen on 22.05.8).
        """
        if spec.signal and ":" in spec.signal:
            # 22.05's REST parser refuses the [R][B]: prefix sbatch takes ("Invalid SIGNAL specification").
            raise OptionNotCarried(
                "signal",
                f"slurmrestd {self.version} cannot send --signal={spec.signal} (the B:/R: part); "
                f"write --signal={spec.signal.split(':', 1)[1]} to signal the whole job, "
                "or submit with sbatch from a terminal.",
            )
        if spec.exclusive == "topo":
            raise OptionNotCarried(
                "exclusive", "--exclusive=topo needs Slurm 24.05 or later; this cluster runs an older one."
            )
        if spec.tasks_per_gpu and not (spec.gpus or spec.gpus_per_node or spec.gpus_per_task or spec.gres):
            raise OptionNotCarried(
                "tasks_per_gpu", "--ntasks-per-gpu needs a GPU count (--gpus, --gpus-per-node or --gres)."
            )
        job: dict[str, Any] = {
            "current_working_directory": spec.working_directory,
            # A dict, and never empty: 22.05 rejects a list and a missing environment alike.
            "environment": environment_with_path(spec),
        }
        comment = spec.comment if spec.comment is not None else spec.tag
        optional = {
            "name": spec.name,
            "partition": spec.partition,
            "time_limit": spec.time_limit,
            "time_minimum": spec.time_min,
            "tasks": spec.ntasks,
            "tasks_per_node": spec.tasks_per_node,
            "tasks_per_socket": spec.tasks_per_socket,
            "tasks_per_core": spec.tasks_per_core,
            "ntasks_per_gpu": spec.tasks_per_gpu,
            "cpus_per_task": spec.cpus_per_task,
            # A string, as the document says; 22.05's option parser reads either.
            "cpus_per_gpu": str(spec.cpus_per_gpu) if spec.cpus_per_gpu else None,
            "minimum_cpus_per_node": spec.min_cpus_per_node,
            "sockets_per_node": spec.sockets_per_node,
            "cores_per_socket": spec.cores_per_socket,
            "threads_per_core": spec.threads_per_core,
            "gpus": spec.gpus,
            "gpus_per_node": spec.gpus_per_node,
            "gpus_per_task": spec.gpus_per_task,
            "gpus_per_socket": spec.gpus_per_socket,
            "gres": spec.gres,
            "memory_per_node": spec.memory_per_node,
            "memory_per_cpu": spec.memory_per_cpu,
            "memory_per_gpu": spec.memory_per_gpu,
            "temporary_disk_per_node": spec.tmp_disk_per_node,
            "exclusive": spec.exclusive,
            "constraints": spec.constraint,
            "prefer": spec.prefer,
            "nodelist": spec.nodelist,
            "exclude_nodes": spec.exclude,
            "dependency": spec.dependency,
            "kill_on_invalid_dependency": spec.kill_on_invalid_dependency,
            "begin_time": spec.begin,
            "deadline": spec.deadline,
            "signal": spec.signal,
            "mail_type": spec.mail_type,
            "mail_user": spec.mail_user,
            "open_mode": spec.open_mode,
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
            "comment": comment,
        }
        job.update({k: v for k, v in optional.items() if v is not None})
        if spec.nodes or spec.max_nodes:
            # sbatch's "N" or "min-max": 22.05 accepts the document's [min, max] and then ignores it, so a
            # job asked for 4 nodes and got 1 (seen on 22.05.8).
            least = spec.nodes or 1
            most = spec.max_nodes or least
            job["nodes"] = str(least) if most == least else f"{least}-{most}"
        if spec.oversubscribe:
            job["oversubscribe"] = True
        if spec.spread_job:
            job["spread_job"] = True
        if spec.hold:
            job["hold"] = True
        if spec.get_user_environment:
            # The document says boolean; the 22.05 parser only takes a string ("1", or a timeout like "10L").
            job["get_user_environment"] = "1"
        # 22.05 sets requeue on for a `requeue` key whatever its value, and off for `no_requeue`, a key the
        # document does not list (docs/slurm-enforcement.md §6).
        if spec.requeue is True:
            job["requeue"] = True
        elif spec.requeue is False:
            job["no_requeue"] = True
        return {"script": spec.script, "job": job}

    def decode_exit(self, raw: Any) -> tuple[int | None, int | None]:
        return decode_wait_status(raw)

    def parse_info(self, data: Mapping[str, Any]) -> ClusterInfo:
        release, cluster = release_from_meta(data.get("meta"))
        controllers = tuple(
            Controller(
                hostname=text(p.get("hostname")),
                state=text(p.get("ping")).upper() or "DOWN",
                primary=(text(p.get("mode")) == "primary") if p.get("mode") else None,
            )
            for p in items_of(data, "pings")
        )
        return ClusterInfo(self.version, release, controllers, cluster)

    def parse_partition(self, raw: Mapping[str, Any]) -> Partition:
        flags = {f.lower() for f in string_list(raw.get("flags"))}
        return Partition(
            name=text(raw.get("name")),
            state=text(raw.get("state")).upper(),
            is_default="default" in flags,
            max_time_limit=number(raw.get("max_time_limit")),
            default_time_limit=number(raw.get("default_time_limit")),
            total_nodes=number(raw.get("total_nodes")),
            total_cpus=number(raw.get("total_cpus")),
            nodes=text(raw.get("nodes")),
            gpus=gpus_in_tres(raw.get("tres")),
            max_nodes_per_job=number(raw.get("maximum_nodes_per_job")),
        )

    def node_state(self, raw: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
        # 22.05 writes the base state in lower case ("idle") and the flags apart.
        state, extra = split_state(raw.get("state"), BASE_NODE_STATES, upper=True)
        return state, extra + tuple(f.upper() for f in string_list(raw.get("state_flags")))

    def jobs(self, update_time: int | None = None) -> JobList:
        params = {"update_time": int(update_time)} if update_time is not None else None
        response = self.transport.get(f"{self.prefix}/jobs", params)
        if response.not_modified:
            # 22.05 answers 304 with an empty body when nothing changed since update_time.
            return JobList((), update_time, True)
        response.raise_for_errors()
        jobs = tuple(self.parse_job(j) for j in items_of(response.data, "jobs"))
        return JobList(jobs, None, False)

    def cancel(self, job_id: int | str, signal: str | None = None) -> None:
        params = {"signal": signal} if signal else None
        try:
            response = self.transport.request(
                "DELETE", f"{self.prefix}/job/{job_path(job_id)}", params=params
            )
            response.raise_for_errors()
        except SlurmError as e:
            self._cancel_failed(e)
