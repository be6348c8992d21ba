"""Running access/slurm/job_submit.lua outside slurmctld: the same Lua 5.1, a `slurm` table as 22.05 gives it.

slurmctld hands the plugin `job_desc` and `part_list` tables and fills `slurm.jobs`; here they are
built from plain values (the field names and "not given" markers of docs/slurm-enforcement.md §1.4)
and every case of a batch runs in one interpreter, one after the other, as slurmctld calls it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from access.policy import Resources
from access.snapshot import lua_value
from tests.conftest import REPO, require

PLUGIN = REPO / "access" / "slurm" / "job_submit.lua"
LUA = "lua5.1"
NO_VAL = 4294967294
NO_VAL16 = 65534
NO_VAL64 = 18446744073709551614
INFINITE = 4294967295
# The error codes 22.05 exports to Lua (their values from slurm_errno.h).
CODES = {
    "ESLURM_ACCESS_DENIED": 2002,
    "ESLURM_ACCOUNTING_POLICY": 2050,
    "ESLURM_INVALID_ACCOUNT": 2045,
    "ESLURM_INVALID_TIME_LIMIT": 2051,
    "ESLURM_MISSING_TIME_LIMIT": 2079,
}
PARTITIONS = {
    "cpu": {"name": "cpu", "flag_default": 1, "default_time": NO_VAL, "max_time": INFINITE},
    "gpu": {"name": "gpu", "flag_default": 0, "default_time": NO_VAL, "max_time": INFINITE},
    "debug": {"name": "debug", "flag_default": 0, "default_time": 10, "max_time": 30},
}


@dataclass(frozen=True)
class Answer:
    rc: int
    messages: tuple[str, ...]
    stamp: str | None

    @property
    def accepted(self) -> bool:
        return self.rc == 0

    @property
    def sentence(self) -> str:
        return " ".join(self.messages)


def lua_available() -> None:
    require(
        shutil.which(LUA) is not None, f"{LUA} not installed (apt install lua5.1; make test does it as root)"
    )


def desc(uid: int, user: str = "someone", **fields: Any) -> dict[str, Any]:
    """A job_desc as sbatch --wrap sends it, plus `fields`."""
    base = {
        "user_id": uid,
        "user_name": user,
        "name": "wrap",
        "time_limit": NO_VAL,
        "min_nodes": NO_VAL,
        "num_tasks": NO_VAL,
        "ntasks_per_node": NO_VAL16,
        "cpus_per_task": NO_VAL16,
        "min_cpus": 1,
        "pn_min_memory": NO_VAL64,
        "environment": {},
    }
    return base | fields


def desc_for(resources: Resources, uid: int) -> dict[str, Any]:
    """The job_desc of `sbatch` asking for exactly `resources` (one task per CPU on one node's worth)."""
    fields: dict[str, Any] = {"partition": resources.partition or None, "min_nodes": resources.nodes}
    if resources.time_limit:
        fields["time_limit"] = resources.time_limit
    if resources.cpus > resources.nodes:
        fields["num_tasks"] = resources.cpus
        fields["min_cpus"] = resources.cpus
    else:
        fields["min_cpus"] = resources.nodes
    if resources.gpus:
        fields["tres_per_job"] = f"gres:gpu:{resources.gpus}"
    if resources.memory_mb:
        if resources.memory_mb % resources.nodes:
            raise ValueError("memory must split evenly over the nodes")
        fields["min_mem_per_node"] = resources.memory_mb // resources.nodes
    if resources.account:
        fields["account"] = resources.account
    if resources.qos:
        fields["qos"] = resources.qos
    if resources.array:
        fields["array_inx"] = resources.array
    return desc(uid, **fields)


def live_job(uid: int, *, state: int = 0, cpus: int = 1, gpus: int = 0, minutes: int = 60, **fields) -> dict:
    """An entry of slurm.jobs: a job the plugin accepted (stamped), PENDING (0) unless told."""
    return {
        "user_id": uid,
        "job_state": state,
        "time_limit": minutes,
        "total_cpus": cpus if state else 0,
        "admin_comment": f"clusterra:v1 cpus={cpus} gpus={gpus} minutes={minutes}",
    } | fields


def run(
    tmp: Path,
    cases: list[dict[str, Any]],
    *,
    policy: str | None,
    uid_min: int = 200000,
    uid_max: int = 299999,
    partitions: dict | None = None,
    together: bool = False,
) -> list[Answer]:
    """Each case is {"desc": …, "jobs": [...]}; the answers come back in order.

    Each case meets a freshly loaded plugin, unless `together`: then they run one after the other
    in one plugin state, as slurmctld calls it. A job it accepts is not in slurm.jobs for the next
    case (slurmctld has not created it yet), unless that case says `"created": True`: then every
    job accepted so far is listed too.

    Each case gets a newly built slurm.jobs, unless it says `"reuse": True`: then it gets the previous
    case's table itself, as slurmctld hands out its cache when its job table has not changed in a later
    second. `"purge": [i, ...]` (1-based, into that case's jobs) turns those entries into what a purged
    job's entry is in slurmctld, freed memory: reading any of their fields is an error here.
    `"later": seconds` moves the plugin's clock (os.time) that far past the real one, from that case on."""
    lua_available()
    policy_file = tmp / "policy.lua"
    if policy is not None:
        policy_file.write_text(policy)
    elif policy_file.exists():
        policy_file.unlink()
    settings = {
        "policy_file": str(policy_file),
        "refusal_log": str(tmp / "refusals.log"),
        "uid_min": uid_min,
        "uid_max": uid_max,
    }
    lines = [
        f"clusterra_settings = {lua_value(settings)}",
        "slurm = {SUCCESS = 0, ERROR = -1, NO_VAL = 4294967294, NO_VAL16 = 65534}",
        *(f"slurm.{name} = {value}" for name, value in CODES.items()),
        "local said = {}",
        "slurm.user_msg = function(s) table.insert(said, s) end",
        "slurm.log_user = function(fmt, ...) table.insert(said, string.format(fmt, ...)) end",
        "slurm.log_error = function(fmt, ...) io.stderr:write(string.format(fmt, ...), '\\n') end",
        "slurm.log_info = function() end",
        "local function clean(s) return (string.gsub(tostring(s), '[\\t\\n]', ' ')) end",
        "local made = {}",
        "local real_time, shift = os.time, 0",
        "os.time = function(...)",
        "  if select('#', ...) > 0 then return real_time(...) end",
        "  return real_time() + shift",
        "end",
        "local function purge(job)",
        "  for k in pairs(job) do job[k] = nil end",
        "  setmetatable(job, {__index = function(_, k) error('read ' .. k .. ' of a purged job') end})",
        "end",
        f"assert(dofile({lua_value(str(PLUGIN))}) == 0)",
    ]
    parts = lua_value(partitions or PARTITIONS)
    for case in cases:
        jobs = {i + 1: job for i, job in enumerate(case.get("jobs", []))}
        if not together:
            lines.append(f"assert(dofile({lua_value(str(PLUGIN))}) == 0)")
        if case.get("reuse") and ("jobs" in case or "created" in case):
            raise ValueError("a reused slurm.jobs is the previous case's: it takes no jobs of its own")
        lines += [
            "do",
            *([] if case.get("reuse") else [f"slurm.jobs = {lua_value(jobs)}"]),
            *(f"purge(slurm.jobs[{i}])" for i in case.get("purge", ())),
            *([f"shift = {int(case['later'])}"] if "later" in case else []),
            # slurmctld has created the jobs accepted so far: they are listed, pending, with their stamps.
            *(["for _, j in ipairs(made) do table.insert(slurm.jobs, j) end"] if case.get("created") else []),
            "said = {}",
            f"local d = {lua_value(case['desc'])}",
            f"local rc = slurm_job_submit(d, {parts}, d.user_id)",
            "io.write(tostring(rc), '\\t', clean(table.concat(said, '\\031')), '\\t')",
            "io.write(clean(d.admin_comment), '\\n')",
            "if rc == 0 and d.admin_comment then",
            "  table.insert(made, {user_id = d.user_id, job_state = 0, time_limit = d.time_limit,",
            "                      admin_comment = d.admin_comment})",
            "end",
            "end",
        ]
    script = tmp / "driver.lua"
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run([LUA, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answers = []
    for line in done.stdout.splitlines():
        rc, said, stamp = line.split("\t")
        answers.append(
            Answer(
                int(float(rc)), tuple(m for m in said.split("\x1f") if m), None if stamp == "nil" else stamp
            )
        )
    assert len(answers) == len(cases), done.stdout + done.stderr
    return answers
