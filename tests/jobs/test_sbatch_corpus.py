"""Real job scripts go in through the console exactly as sbatch takes them (issue 17, item 4).

Each script of tests/jobs/corpus/ is copied into a person's project folder and submitted held twice: by
`sbatch --hold` as the person, from that folder, and through the console's own submit flow (what
`POST /v1/clusters/{id}/jobs` runs) with the `hold` option. The two jobs' `scontrol show job` records are
then compared field by field, each job's own number written as {id} so that `slurm-%j.out` paths compare.
The batch script Slurm stored is compared too, and so are the environment entries that --export and
--open-mode set (Slurm shows them nowhere else). Fields that differ between any two submits whatever the
script says are in NOT_COMPARED, each with its reason. `--signal` is in no record Slurm 22.05 shows, so
the scripts that use it are checked on everything else.

Scripts that depend on an earlier job name a made-up job id: it is rewritten to a job queued (held) just
before, so both submits of the script depend on the same job. A script whose header says
`# not through slurmrestd vX: OPTION (why)` uses an option that API version cannot carry: on a cluster
speaking it the console must refuse the script naming the line and the option, and it is counted apart.
A first run submits every script twice with sbatch, to prove the comparison finds no difference where
there is none.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from access.models import Grant
from clusters.refusal import Refusal
from jobs.models import JobRecord
from jobs.submit import submit
from jobs.submit_request import SubmitRequest

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db, pytest.mark.every_release]

CORPUS = Path(__file__).with_name("corpus")
# The project folder the scripts are copied into, and the folders a researcher would have made in it
# (sbatch does not need an output folder to exist at submit time; --chdir=runs needs runs/ when it starts).
PROJECT = "project"
FOLDERS = ("logs", "runs", "out", "frames")
# reservation_hackathon.sh runs in it; the test makes it for the person, a month ahead on a paper node.
RESERVATION = "corpus-hackathon"

# The job the dependency scripts wait for.
PREPROCESS = "#!/bin/bash\n#SBATCH --job-name=preprocess -p debug -t 5\npython preprocess.py\n"

# Fields that differ between two submits of the same script, whatever the script says.
NOT_COMPARED = {
    "JobId": "each job's own number (written as {id} wherever else it appears)",
    "SubmitTime": "the moment of each submit",
    "LastSchedEval": "when the scheduler last looked at each job",
    "AccrueTime": "set by the scheduler when a job starts to age; no option sets it",
    "Scheduler": "which of slurmctld's schedulers (main or backfill) last looked at the job",
    "AllocNode:Sid": "who sent the job: the person's shell for sbatch, slurmrestd for the console",
    "Command": "the path sbatch was given; slurmrestd is sent the script's text, compared as Script instead",
    "AdminComment": "the job_submit plugin's price stamp, written by Slurm, not by the script",
    "SubmitLine": "the command line sbatch was run with (26.05); a REST submit has none",
}
# Times an option sets relative to "now" (--begin=now+2hours, --deadline=now+3days): each submit reads its
# own clock, so these may differ by the seconds between the two submits, and by no more.
TIMES = ("EligibleTime", "StartTime", "EndTime", "Deadline")
# Fields that hold job ids (its own, its array's, those it depends on), beside the free text ones.
JOB_IDS = ("JobId", "ArrayJobId", "Dependency", "HetJobId")
# Environment entries that are the script's options in disguise: srun inside the job reads them.
ENV_FIELDS = ("SLURM_EXPORT_ENV", "SLURM_OPEN_MODE")

# The fields `scontrol show job -o` prints (22.05), so that values with spaces (a job name, a comment, a
# path) are read whole: a record is split only before one of these names.
_FIELD_NAMES = """
JobId ArrayJobId ArrayTaskId ArrayTaskThrottle HetJobId HetJobOffset HetJobIdSet JobName UserId GroupId
MCS_label Priority Nice Account QOS WCKey JobState Reason Dependency Requeue Restarts BatchFlag Reboot
ExitCode DerivedExitCode RunTime TimeLimit TimeMin SubmitTime EligibleTime AccrueTime StartTime EndTime
Deadline PreemptEligibleTime PreemptTime SuspendTime SecsPreSuspend LastSchedEval ResizeTime Scheduler
Partition AllocNode:Sid ReqNodeList ExcNodeList NodeList BatchHost SchedNodeList NumNodes NumCPUs
NumTasks CPUs/Task ReqB:S:C:T TRES Socks/Node NtasksPerN:B:S:C CoreSpec ThreadSpec MinCPUsNode
MinMemoryNode MinMemoryCPU MinTmpDiskNode Features Prefer ClusterFeatures BatchFeatures Reservation
DelayBoot OverSubscribe Contiguous Licenses Network Command WorkDir AdminComment SystemComment Comment
StdErr StdIn StdOut BurstBuffer BurstBufferState CpuFreqMin CpuFreqMax CpuFreqGov Switches Wait4Switch
CpusPerTres MemPerTres TresBind TresFreq TresPerJob TresPerNode TresPerSocket TresPerTask NtasksPerTRES
MailUser MailType Power Container KillOInInvalidDependent SpreadJob SELinuxContext Extra CronJob
CrontabSpec FedOrigin FedViableSiblings FedActiveSiblings
ReqTRES AllocTRES MinMemoryTRES Exclusive LicensesAlloc SubmitLine OOMKillStep ResvPorts SegmentSize
"""
KEYS = tuple(_FIELD_NAMES.split())
FREE_TEXT = {
    "JobName", "Comment", "AdminComment", "SystemComment", "Command", "WorkDir", "StdErr", "StdIn", "StdOut",
    "SubmitLine", "Extra",
}  # fmt: skip
_SPLIT = re.compile(r" (?=(?:{})=)".format("|".join(re.escape(k) for k in KEYS)))
# A script header saying which option an API version cannot carry (22.05's REST parser refuses
# --signal=B:…, which sbatch takes); on a cluster speaking that version the console refuses the script.
_NOT_THROUGH = re.compile(r"^# not through slurmrestd (v[\d.]+): (\S+)", re.M)
_DEPENDENCY = re.compile(r"\b(after(?:ok|any|notok|corr|burstbuffer)?)((?::\d+)+)")


# Queues a held job for the script; the job id, or None and why not.
Submitter = Callable[[Any, Any, Path], tuple[int | None, str]]


@dataclass
class Compared:
    script: str
    differences: list[tuple[str, str, str]] = field(default_factory=list)
    jobs: tuple[int, ...] = ()
    # The option the cluster's slurmrestd cannot carry, when the console refused the script for it as it must.
    refused_for: str = ""


def not_carried(path: Path, api_version: str) -> tuple[str, int] | None:
    """The option a `# not through slurmrestd VERSION: OPTION (why)` header names for this API version,
    and the line it is on: the console must refuse the script there, naming both."""
    text = path.read_text()
    for version, option in _NOT_THROUGH.findall(text):
        if version == api_version:
            lines = text.splitlines()
            number = next(n for n, ln in enumerate(lines, 1) if ln.startswith("#SBATCH") and option in ln)
            return option, number
    return None


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.sh"))


def depending_on(text: str, job_id: int) -> str:
    """The script with every job id of its #SBATCH dependency lines replaced by `job_id`."""

    def rewrite(match: re.Match) -> str:
        return match[1] + f":{job_id}" * match[2].count(":")

    return "".join(
        _DEPENDENCY.sub(rewrite, line) if line.startswith("#SBATCH") else line
        for line in text.splitlines(keepends=True)
    )


# The release under test: its commands (a chroot's wrappers) and the root its paths are under.
RELEASE = {"bin": "/usr/bin", "root": "/"}
SLURM_COMMANDS = {"sbatch", "scontrol", "scancel"}


@pytest.fixture(autouse=True)
def _release_commands(slurm_env):
    """Slurm's commands and state for the release this test runs on (tests/conftest.py, every_release)."""
    RELEASE.update(bin=slurm_env.bin, root=slurm_env.root)


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """A command of the release under test (sbatch, scontrol, scancel by its path) or of this host."""
    found = [f"{RELEASE['bin']}/{c}" if c in SLURM_COMMANDS else c for c in command]
    return subprocess.run(found, capture_output=True, text=True, timeout=30, check=False, **kwargs)


RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


def sbatch_held(person, path: Path, *options: str) -> tuple[int | None, str]:
    """`sbatch --hold` as the person, from the script's folder, with a plain login-like environment."""
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(person.home),
        "USER": person.name,
        "LOGNAME": person.name,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
    }
    if "TZ" in os.environ:
        environment["TZ"] = os.environ["TZ"]
    done = run(
        RUNUSER, "-u", person.name, "--", "sbatch", "--hold", "--parsable", *options, str(path),
        cwd=path.parent, env=environment,
    )  # fmt: skip
    words = done.stdout.strip().split(";")[0]
    if done.returncode == 0 and words.isdigit():
        return int(words), ""
    return None, (done.stderr or done.stdout).strip()


def sbatch_again(person, cluster, path: Path) -> tuple[int | None, str]:
    return sbatch_held(person, path)


# What the console priced each job it queued at, by job id: checked against what Slurm recorded.
PRICED: dict[int, Any] = {}


def console_held(person, cluster, path: Path) -> tuple[int | None, str]:
    """The console's submit flow, as `POST /v1/clusters/{id}/jobs` runs it, asked to hold the job."""
    try:
        parsed = SubmitRequest.model_validate({"script_path": str(path), "options": {"hold": True}})
        outcome = submit(person.user, cluster, parsed)
    except Refusal as e:
        return None, f"{e.code}: {e.message}"
    except Exception as e:
        # Not a refusal a person would read: a bug to report, but the other scripts still tell their story.
        return None, f"error {type(e).__name__}: {e}"
    PRICED[outcome.record.slurm_job_id] = outcome.plan.resources
    return outcome.record.slurm_job_id, ""


def underpriced(job_id: int) -> list[tuple[str, str, str]]:
    """Where the policy priced the job below the TRES Slurm asks of it (per array task): nodes, CPUs, GPUs.

    The TRES string, not NumNodes/NumCPUs: a pending job's NumNodes is the scheduler's estimate of where it
    might fit (2 for a one-task job on `wide`), while TRES is the request its limits are checked against.

    A job Slurm holds for more than the console priced would spend budget the policy never saw; pricing
    more (a node range at its top, an exclusive job's whole nodes) is the console's choice and allowed.
    """
    priced, slurm = PRICED[job_id], record(job_id)
    tres = dict(item.partition("=")[::2] for item in slurm.get("TRES", "").split(",") if "=" in item)
    found = []
    for what, asked, recorded in (
        ("priced nodes", priced.nodes, int(tres.get("node", 1))),
        ("priced CPUs", priced.cpus, int(tres.get("cpu", 1))),
        ("priced GPUs", priced.gpus, int(tres.get("gres/gpu", 0))),
    ):
        if asked < recorded:
            found.append((what, f"Slurm holds {recorded}", f"console priced {asked}"))
    return found


def record(job_id: int, user: str = "") -> dict[str, str]:
    """`scontrol show job -o` for the job (the meta record of an array), as field → value."""
    out = run("scontrol", "show", "job", "-o", str(job_id)).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(f"JobId={job_id} ")), None)
    assert line is not None, f"scontrol shows no job {job_id}: {out!r}"
    fields: dict[str, str] = {}
    for part in _SPLIT.split(line.strip()):
        key, _, value = part.partition("=")
        value = value.rstrip()
        if key not in FREE_TEXT and " " in value:
            raise AssertionError(f"a field this test does not know is inside {key}={value!r}: add it to KEYS")
        # The person's name first: a job id may be part of it (ct1ce46p0 and job 46).
        if user:
            value = value.replace(user, "{user}")
        # Only where a job's own number can appear (its name, paths, comments, its array's and dependencies'
        # ids) is it written as {id}: elsewhere a job numbered 500 is also 500M of memory, and a small one (a
        # fresh chroot's 12) is also a month or an hour.
        if key in FREE_TEXT or key in JOB_IDS:
            fields[key] = _as_recorded(value, job_id)
            # As Slurm wrote it too: a name may hold one job's number by chance ("a100-infer" and job 100),
            # and a value both jobs share word for word is no difference.
            fields[RAW + key] = value
        else:
            fields[key] = value
    return fields


# record()'s key for a field's value before its job id was written as {id}.
RAW = "raw "


def _as_recorded(value: str, job_id: int) -> str:
    """`value` with the job's own id written as {id}, as record() keeps every field."""
    # Not \b: in "asm_271.log" or "%A_%a" paths the number follows a word character.
    return re.sub(rf"(?<!\d){job_id}(?!\d)", "{id}", value)


def batch_script(job_id: int) -> str:
    return run("scontrol", "write", "batch_script", str(job_id), "-").stdout


def state_dir() -> Path:
    out = run("scontrol", "show", "config").stdout
    match = re.search(r"^StateSaveLocation\s*=\s*(\S+)", out, re.M)
    assert match, "scontrol show config names no StateSaveLocation"
    # A chroot's slurmctld names a path inside the chroot.
    return Path(RELEASE["root"]) / match[1].lstrip("/")


def environment(job_id: int) -> dict[str, str]:
    """The environment slurmctld keeps for the job's batch step (a count, then NUL-ended NAME=value)."""
    data = (state_dir() / f"hash.{job_id % 10}" / f"job.{job_id}" / "environment").read_bytes()
    count = int.from_bytes(data[:4], "little")
    entries = data[4:].split(b"\0")[:count]
    return dict(e.decode(errors="replace").partition("=")[::2] for e in entries)


def exported_names(env: dict[str, str]) -> list[str]:
    """The variables an --export list names (ALL and NONE are not variables)."""
    names = []
    for item in env.get("SLURM_EXPORT_ENV", "").split(","):
        name = item.partition("=")[0]
        if name and name not in ("ALL", "NONE", "NIL"):
            names.append(name)
    return names


def _time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def differences(sbatch: dict[str, str], console: dict[str, str], slack: float) -> list[tuple[str, str, str]]:
    found = []
    shown = set(sbatch) | set(console)
    for key in [k for k in KEYS if k in shown] + sorted(shown - set(KEYS)):
        if key in NOT_COMPARED or key.startswith(RAW):
            continue
        a, b = sbatch.get(key, "(absent)"), console.get(key, "(absent)")
        if a == b or sbatch.get(RAW + key, a) == console.get(RAW + key, b):
            continue
        when_a, when_b = _time(a), _time(b)
        if key in TIMES and when_a and when_b and abs((when_a - when_b).total_seconds()) <= slack:
            continue
        found.append((key, a, b))
    return found


def the_consoles_tag(difference: tuple[str, str, str], job_id: int) -> bool:
    """The console's submit tag, how a submit whose answer was lost is found (jobs.claims): from v0.0.40 in
    job's `extra`, which sbatch leaves empty; on v0.0.38 in the comment a script leaves empty, as 22.05's REST
    API keeps and lists back no other free field. That difference, and exactly that one, is the console's."""
    name, by_sbatch, by_console = difference
    if name not in ("Comment", "Extra") or by_sbatch not in ("(absent)", "(null)"):
        return False
    tag = JobRecord.objects.get(slurm_job_id=job_id).submit_tag
    # The record's values had the job's id written as {id}; the tag's hex may hold those digits too.
    return bool(tag) and by_console == _as_recorded(tag, job_id)


def script_difference(a: str, b: str) -> tuple[str, str, str] | None:
    if a == b:
        return None
    for number, (x, y) in enumerate(zip(a.splitlines(), b.splitlines(), strict=False), start=1):
        if x != y:
            return (f"Script line {number}", x, y)
    diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0))
    return ("Script", f"{len(a.splitlines())} lines", f"{len(b.splitlines())} lines; {' | '.join(diff[2:5])}")


def compare(
    person, cluster, path: Path, second: Submitter, cannot_carry: tuple[str, int] | None = None
) -> Compared:
    """The job sbatch queues for the script against the one `second` queues (the console's, normally).

    With `cannot_carry` (option, line), `second` must refuse the script, naming both, and queue nothing.
    """
    result = Compared(path.name)
    started = time.monotonic()
    by_sbatch, why = sbatch_held(person, path)
    if by_sbatch is None:
        result.differences.append(("sbatch", f"refused: {why}", "-"))
        return result
    by_console, refusal = second(person, cluster, path)
    slack = time.monotonic() - started + 1
    result.jobs = (by_sbatch,) if by_console is None else (by_sbatch, by_console)
    if cannot_carry:
        option, line = cannot_carry
        if by_console is None and option in refusal and f"line {line}" in refusal:
            result.refused_for = option
        else:
            said = f"refused: {refusal}" if by_console is None else "queued"
            result.differences.append(("submit", f"refused, naming line {line} and {option}", said))
        return result
    if by_console is None:
        result.differences.append(("submit", "queued", f"refused: {refusal}"))
        return result
    found = differences(record(by_sbatch, person.name), record(by_console, person.name), slack)
    if second is console_held:
        found = [d for d in found if not the_consoles_tag(d, by_console)] + underpriced(by_console)
    result.differences += found
    script = script_difference(batch_script(by_sbatch), batch_script(by_console))
    if script:
        result.differences.append(script)
    env_a, env_b = environment(by_sbatch), environment(by_console)
    for name in (*ENV_FIELDS, *exported_names(env_a), *exported_names(env_b)):
        a, b = env_a.get(name, "(unset)"), env_b.get(name, "(unset)")
        if a != b and (f"Environment {name}", a, b) not in result.differences:
            result.differences.append((f"Environment {name}", a, b))
    return result


@pytest.fixture
def researcher(people, demo_cluster):
    """A person who may use every partition, the default account and QOS, with budgets no script reaches."""
    person = people(quota={"gpu_hours": 100_000, "cpu_hours": 1_000_000})
    Grant.objects.filter(user=person.user, cluster=demo_cluster).update(accounts="demo", qos="normal")
    project = person.home / PROJECT
    for folder in (project, *(project / name for name in FOLDERS)):
        folder.mkdir(exist_ok=True)
        os.chown(folder, person.uid, person.uid)
    return person


@pytest.fixture
def reservation(researcher):
    run("scontrol", "delete", f"ReservationName={RESERVATION}")
    made = run(
        "scontrol", "create", "reservation", f"ReservationName={RESERVATION}", f"Users={researcher.name}",
        "StartTime=now+30days", "Duration=60", "Nodes=wide1", "Flags=MAINT",
    )  # fmt: skip
    assert made.returncode == 0, f"could not create the reservation {RESERVATION}: {made.stderr}"
    yield RESERVATION
    run("scontrol", "delete", f"ReservationName={RESERVATION}")


def submit_corpus(person, cluster, second: Submitter, api_version: str = "") -> list[Compared]:
    """Every corpus script, copied into the person's project folder, queued by sbatch and by `second`."""
    scripts = corpus()
    assert len(scripts) >= 44, f"the corpus has only {len(scripts)} scripts"
    project = person.home / PROJECT
    earlier, why = sbatch_held(person, Path(person.script("preprocess.sh", PREPROCESS)))
    assert earlier is not None, f"the job the dependency scripts wait for was not queued: {why}"
    results: list[Compared] = []
    try:
        for source in scripts:
            path = project / source.name
            path.write_text(depending_on(source.read_text(), earlier))
            os.chown(path, person.uid, person.uid)
            path.chmod(0o755)
            results.append(compare(person, cluster, path, second, not_carried(source, api_version)))
    finally:
        run("scancel", *[str(j) for r in results for j in r.jobs], str(earlier))
    refused = [
        f"{r.script} ({r.differences[0][1]})"
        for r in results
        if r.differences[:1] and r.differences[0][0] == "sbatch"
    ]
    assert not refused, f"sbatch itself refused {refused}: fix the corpus or the cluster"
    return results


def test_two_sbatch_submits_of_each_script_compare_equal(researcher, demo_cluster, reservation):
    """The comparison itself: what it leaves out and how it reads times and job ids hides nothing real and
    invents no difference, so every difference the console's run shows is the console's."""
    results = submit_corpus(researcher, demo_cluster, sbatch_again)
    assert [(r.script, r.differences) for r in results if r.differences] == []


def test_a_changed_option_is_a_difference(researcher, demo_cluster, slurm_release):
    path = Path(researcher.script("mem.sh", "#!/bin/bash\n#SBATCH -p debug -t 5 --mem=1G\ntrue\n"))

    def more_memory(person, cluster, path: Path) -> tuple[int | None, str]:
        return sbatch_held(person, path, "--mem=2G")

    result = compare(researcher, demo_cluster, path, more_memory)
    run("scancel", *map(str, result.jobs))
    # 24.11 and 26.05 print a pending job's TRES as ReqTRES.
    tres = "TRES" if slurm_release == "22.05" else "ReqTRES"
    assert ("MinMemoryNode", "1G", "2G") in result.differences
    assert (tres, "cpu=1,mem=1G,node=1,billing=1", "cpu=1,mem=2G,node=1,billing=1") in result.differences


def test_every_corpus_script_is_queued_by_the_console_as_sbatch_queues_it(
    researcher, demo_cluster, reservation
):
    version = demo_cluster.api_version
    results = submit_corpus(researcher, demo_cluster, console_held, version)
    for r in results:
        for name, by_sbatch, by_console in r.differences:
            print(f"{r.script}: {name}: sbatch {by_sbatch!r}, console {by_console!r}")
    refused = [r.refused_for for r in results if r.refused_for]
    compared = len(results) - len(refused)
    matching = sum(1 for r in results if not r.differences and not r.refused_for)
    beyond = f" (and {len(refused)} refused as slurmrestd {version} cannot carry {', '.join(refused)})"
    print(f"scripts matching sbatch: {matching} of {compared}{beyond if refused else ''}")
    assert matching == compared, f"{compared - matching} scripts differ; the lines above say how"
