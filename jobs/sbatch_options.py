"""Every sbatch option the console knows: what its value means and which JobSpec field it sets.

One table, read by `jobs.directives` for `#SBATCH` lines and for the `options` object of a submit
request, so a script and a request can say the same things in the same words. An option is either
carried to Slurm (`OPTIONS`), harmless to sbatch's own output and ignored (`IGNORED`), or refused
with what to do instead (`REFUSED`, and anything unknown). Which options slurmrestd can express, and
under which key, is each adapter's business (clusters/slurm/v0038.py, v0040.py); an option one API
version cannot carry is refused there with the same kind of sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from access import arrays
from clusters.slurm import options as slurm_options


class OptionError(ValueError):
    """A value the option cannot take; the sentence names the option, the caller adds the line."""


@dataclass(frozen=True)
class Option:
    name: str
    short: str | None
    read: Callable[[str, str], Any]
    # The JobSpec field the value goes to.
    field: str
    # "required": always takes a value; "none": a flag (the value is True); "optional": a flag that may
    # take a value after "=" only, as getopt's optional arguments do (--exclusive, --exclusive=user).
    takes: str = "required"


# --- reading values ------------------------------------------------------------------------------------

_TIME_FORMS = (
    # (pattern, how its groups become (days, hours, minutes, seconds))
    (re.compile(r"^(\d+)$"), lambda g: (0, 0, int(g[0]), 0)),
    (re.compile(r"^(\d+):(\d+)$"), lambda g: (0, 0, int(g[0]), int(g[1]))),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), lambda g: (0, int(g[0]), int(g[1]), int(g[2]))),
    (re.compile(r"^(\d+)-(\d+)$"), lambda g: (int(g[0]), int(g[1]), 0, 0)),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), lambda g: (int(g[0]), int(g[1]), int(g[2]), 0)),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), lambda g: (int(g[0]), int(g[1]), int(g[2]), int(g[3]))),
)
TIME_FORMATS = (
    '"minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours", '
    '"days-hours:minutes" or "days-hours:minutes:seconds"'
)
_MEMORY = re.compile(r"^(\d+)([KMGTkmgt]?)[Bb]?$")
_MEMORY_FACTORS = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
_COUNT = re.compile(r"^\d+$")
_GPU_COUNT = re.compile(r"^(?:(?P<type>[A-Za-z0-9_.-]+):)?(?P<count>\d+)$")
# A name, partition, account, QOS, reservation: what Slurm accepts without quoting games.
_WORD = re.compile(r"^[A-Za-z0-9_.@+-]+$")
_WORDS = re.compile(r"^[A-Za-z0-9_.@+-]+(,[A-Za-z0-9_.@+-]+)*$")
# Node names and host lists: node[1-4,7],gpu01
_HOSTS = re.compile(r"^[A-Za-z0-9_.,\[\]-]+$")
_ARRAY = re.compile(r"^[0-9,\-:]+(%\d+)?$")
_MAIL_TYPES = frozenset(
    [
        "NONE",
        "BEGIN",
        "END",
        "FAIL",
        "REQUEUE",
        "ALL",
        "INVALID_DEPEND",
        "STAGE_OUT",
        "TIME_LIMIT",
        "TIME_LIMIT_90",
        "TIME_LIMIT_80",
        "TIME_LIMIT_50",
        "ARRAY_TASKS",
    ]
)
_SIGNAL = re.compile(r"^(?:(?P<flags>[BR]{1,2}):)?(?P<signal>(?:SIG)?[A-Z0-9]+)(?:@(?P<delay>\d+))?$")
_DEPENDENCY = re.compile(r"^[A-Za-z0-9_:+,?]+$")
_OPEN_MODES = ("append", "truncate")
_EXCLUSIVE = ("exclusive", "user", "mcs", "topo")


def parse_time(value: str) -> int:
    """Minutes from a Slurm time string, rounded up to a whole minute as Slurm does (time_str2mins).

    Zero, "INFINITE" and "UNLIMITED" are refused: the console reserves budget for
    the walltime asked, so a job must have a finite one.
    """
    text = value.strip()
    if text.upper() in ("INFINITE", "UNLIMITED", "-1"):
        raise OptionError(
            f"time {value!r} means no limit; the console needs a finite time limit to reserve budget for"
        )
    for pattern, parts in _TIME_FORMS:
        match = pattern.match(text)
        if match:
            days, hours, minutes, seconds = parts(match.groups())
            total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
            result = math.ceil(total / 60)
            if result < 1:
                raise OptionError(
                    f"time {value!r} is zero, which Slurm reads as no limit; give a finite time limit"
                )
            return result
    raise OptionError(f"time {value!r} is not a Slurm time; use {TIME_FORMATS}")


def parse_memory(value: str) -> int:
    """Megabytes from an sbatch memory value: a number with an optional K, M, G or T (default M)."""
    match = _MEMORY.match(value.strip())
    if not match:
        raise OptionError(f"memory {value!r} is not a size; write e.g. 500M, 4G or 2048")
    megabytes = math.ceil(int(match[1]) * _MEMORY_FACTORS[match[2].upper()])
    if megabytes < 1:
        raise OptionError(f"memory {value!r} is zero, which Slurm reads as all of a node's memory")
    return megabytes


def _time(name: str, value: str) -> int:
    return parse_time(value)


def _memory(name: str, value: str) -> int:
    return parse_memory(value)


def _positive(what: str) -> Callable[[str, str], int]:
    def read(name: str, value: str) -> int:
        value = value.strip()
        if not _COUNT.match(value) or int(value) < 1:
            raise OptionError(f"--{name}={value} is not a positive number of {what}")
        return int(value)

    return read


def _whole(name: str, value: str) -> int:
    value = value.strip()
    if not re.match(r"^-?\d+$", value):
        raise OptionError(f"--{name}={value} is not a whole number")
    return int(value)


def _word(name: str, value: str) -> str:
    value = value.strip()
    if not _WORD.match(value):
        raise OptionError(f"--{name}={value!r} has characters Slurm does not allow there")
    return value


def _partition(name: str, value: str) -> str:
    if "," in value:
        raise OptionError(
            f"--partition={value.strip()} names several partitions; the console checks the policy of one, "
            "so pick one"
        )
    return _word(name, value)


def _words(name: str, value: str) -> str:
    value = value.strip()
    if not _WORDS.match(value):
        raise OptionError(f"--{name}={value!r} is not a comma-separated list of names")
    return value


def _text(name: str, value: str) -> str:
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise OptionError(f"--{name} needs a value without control characters")
    if len(value) > 4096:
        raise OptionError(f"--{name} is longer than 4096 characters")
    return value


def _hosts(name: str, value: str) -> str:
    value = value.strip()
    if not _HOSTS.match(value):
        raise OptionError(f"--{name}={value!r} is not a node list such as node[1-4],gpu01")
    return value


def _nodes(name: str, value: str) -> tuple[int, int]:
    """--nodes=N or a range min-max; the console prices the maximum."""
    text = value.strip()
    low, dash, high = text.partition("-")
    if not _COUNT.match(low) or (dash and not _COUNT.match(high)):
        raise OptionError(f"--nodes={text} is not a number of nodes or a range such as 2-4")
    least, most = int(low), int(high) if dash else int(low)
    if least < 1 or most < least:
        raise OptionError(f"--nodes={text} is not a positive number of nodes or a rising range")
    return least, most


def _gpus(name: str, value: str) -> str:
    """A GPU count with an optional type, kept as written ("2", "a100:2"): Slurm reads the type."""
    match = _GPU_COUNT.match(value.strip())
    if not match or int(match["count"]) < 1:
        raise OptionError(f"--{name}={value} is not [type:]count, e.g. 2 or a100:2")
    return value.strip()


def gpu_count(value: str | None) -> int:
    """The number in a [type:]count GPU value."""
    if not value:
        return 0
    match = _GPU_COUNT.match(value)
    return int(match["count"]) if match else 0


def _gres(name: str, value: str) -> str:
    """`--gres=gpu[:type][:count][,name[:count]…]`, kept as written; only GPUs are priced."""
    text = value.strip()
    for item in text.split(","):
        parts = item.removeprefix("gres/").split(":")
        if not parts[0] or not _WORD.match(parts[0]) or len(parts) > 3:
            raise OptionError(f"--gres={text} is not name[:type][:count][,…], e.g. gpu:2 or gpu:a100:1")
        if len(parts) == 3 and not parts[2].isdigit():
            raise OptionError(f"--gres={text} is not name[:type][:count][,…], e.g. gpu:2 or gpu:a100:1")
    return text


def gres_gpus(value: str | None) -> int:
    """GPUs per node in a --gres value (gpu, gpu:2, gpu:a100, gpu:a100:2)."""
    total = 0
    for item in (value or "").split(","):
        parts = item.strip().removeprefix("gres/").split(":")
        if parts[0] != "gpu":
            continue
        if len(parts) == 1:
            total += 1
        elif parts[-1].isdigit():
            total += int(parts[-1])
        else:
            total += 1  # gpu:a100 asks for one GPU of that type
    return total


def _array(name: str, value: str) -> str:
    value = value.strip()
    if not _ARRAY.match(value):
        raise OptionError(f"--array={value} is not an index list such as 0-9 or 1,3,5%2")
    try:
        arrays.array_tasks(value)
    except ValueError as e:
        raise OptionError(f"--array={value}: {e}") from None
    return value


def _mail_type(name: str, value: str) -> str:
    kinds = [v.strip().upper() for v in value.split(",") if v.strip()]
    unknown = [k for k in kinds if k not in _MAIL_TYPES]
    if not kinds or unknown:
        raise OptionError(f"--mail-type={value} is not a list of {', '.join(sorted(_MAIL_TYPES))}")
    return ",".join(kinds)


def _signal(name: str, value: str) -> str:
    text = value.strip()
    match = _SIGNAL.match(text.upper())
    if not match or not slurm_options.signal_number(match["signal"]):
        raise OptionError(f"--signal={text} is not [{{R}}{{B}}:]SIGNAL[@seconds], e.g. B:USR1@60")
    return text


def _dependency(name: str, value: str) -> str:
    text = value.strip()
    if not _DEPENDENCY.match(text):
        raise OptionError(f"--dependency={text} is not type:jobid[:jobid…][,…], e.g. afterok:123")
    return text


def _choice(*choices: str) -> Callable[[str, str], str]:
    def read(name: str, value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise OptionError(f"--{name}={value} is not one of {', '.join(choices)}")
        return text

    return read


def _exclusive(name: str, value: Any) -> str:
    if value is True:
        return "exclusive"
    return _choice(*_EXCLUSIVE)(name, value)


def _flag(name: str, value: Any) -> bool:
    if value is True:
        return True
    raise OptionError(f"--{name} takes no value")


def _yes_no(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("yes", "no"):
        raise OptionError(f"--{name}={value} must be yes or no")
    return text == "yes"


def _when(name: str, value: str) -> str:
    """A --begin/--deadline time; Slurm's forms are read where the API needs a number (options.when)."""
    text = value.strip()
    try:
        slurm_options.when(text)
    except ValueError as e:
        raise OptionError(f"--{name}={text}: {e}") from None
    return text


def _export(name: str, value: str) -> str:
    try:
        slurm_options.export_variables(value)
    except ValueError as e:
        raise OptionError(f"--export={value}: {e}") from None
    return value.strip()


def _login_environment(name: str, value: Any) -> bool:
    # --get-user-env[=timeout][S|L]: the console always asks for the login environment.
    return True


# --- the table -------------------------------------------------------------------------------------------

_TABLE = (
    Option("partition", "p", _partition, "partition"),
    Option("time", "t", _time, "time_limit"),
    Option("time-min", None, _time, "time_min"),
    Option("nodes", "N", _nodes, "nodes"),
    Option("ntasks", "n", _positive("tasks"), "ntasks"),
    Option("ntasks-per-node", None, _positive("tasks"), "tasks_per_node"),
    Option("ntasks-per-socket", None, _positive("tasks"), "tasks_per_socket"),
    Option("ntasks-per-core", None, _positive("tasks"), "tasks_per_core"),
    Option("ntasks-per-gpu", None, _positive("tasks"), "tasks_per_gpu"),
    Option("cpus-per-task", "c", _positive("CPUs"), "cpus_per_task"),
    Option("cpus-per-gpu", None, _positive("CPUs"), "cpus_per_gpu"),
    Option("mincpus", None, _positive("CPUs"), "min_cpus_per_node"),
    Option("sockets-per-node", None, _positive("sockets"), "sockets_per_node"),
    Option("cores-per-socket", None, _positive("cores"), "cores_per_socket"),
    Option("threads-per-core", None, _positive("threads"), "threads_per_core"),
    Option("gpus", "G", _gpus, "gpus"),
    Option("gpus-per-node", None, _gpus, "gpus_per_node"),
    Option("gpus-per-task", None, _gpus, "gpus_per_task"),
    Option("gpus-per-socket", None, _gpus, "gpus_per_socket"),
    Option("gres", None, _gres, "gres"),
    Option("mem", None, _memory, "memory_per_node"),
    Option("mem-per-cpu", None, _memory, "memory_per_cpu"),
    Option("mem-per-gpu", None, _memory, "memory_per_gpu"),
    Option("tmp", None, _memory, "tmp_disk_per_node"),
    Option("exclusive", None, _exclusive, "exclusive", takes="optional"),
    Option("oversubscribe", "s", _flag, "oversubscribe", takes="none"),
    Option("constraint", "C", _text, "constraint"),
    Option("prefer", None, _text, "prefer"),
    Option("nodelist", "w", _hosts, "nodelist"),
    Option("exclude", "x", _hosts, "exclude"),
    Option("dependency", "d", _dependency, "dependency"),
    Option("kill-on-invalid-dep", None, _yes_no, "kill_on_invalid_dependency"),
    Option("begin", "b", _when, "begin"),
    Option("deadline", None, _when, "deadline"),
    Option("signal", None, _signal, "signal"),
    Option("mail-type", None, _mail_type, "mail_type"),
    Option("mail-user", None, _text, "mail_user"),
    Option("export", None, _export, "export"),
    Option("get-user-env", None, _login_environment, "get_user_environment", takes="optional"),
    Option("open-mode", None, _choice(*_OPEN_MODES), "open_mode"),
    Option("requeue", None, _flag, "requeue", takes="none"),
    Option("no-requeue", None, lambda name, value: not _flag(name, value), "requeue", takes="none"),
    Option("comment", None, _text, "comment"),
    Option("licenses", "L", _text, "licenses"),
    Option("reservation", None, _words, "reservation"),
    Option("hold", "H", _flag, "hold", takes="none"),
    Option("array", "a", _array, "array"),
    Option("nice", None, _whole, "nice"),
    Option("wckey", None, _word, "wckey"),
    Option("distribution", "m", _text, "distribution"),
    Option("spread-job", None, _flag, "spread_job", takes="none"),
    Option("job-name", "J", _text, "name"),
    Option("output", "o", _text, "standard_output"),
    Option("error", "e", _text, "standard_error"),
    Option("input", "i", _text, "standard_input"),
    Option("chdir", "D", _text, "chdir"),
    Option("account", "A", _word, "account"),
    Option("qos", "q", _word, "qos"),
)
OPTIONS: dict[str, Option] = {o.name: o for o in _TABLE}
SHORT: dict[str, Option] = {o.short: o for o in _TABLE if o.short}
# Older or alternative spellings sbatch still takes, as getopt does.
ALIASES = {
    "workdir": "chdir",
    "tasks-per-node": "ntasks-per-node",
    "gpus-per-job": "gpus",
    "constraints": "constraint",
    "licences": "licenses",
    "share": "oversubscribe",
    "mem-per-node": "mem",
    "tmp-disk": "tmp",
}

# Flags that change only what sbatch prints; the console has its own answer, so they change nothing.
IGNORED = frozenset({"parsable", "quiet", "verbose"})
IGNORED_SHORT = {"Q": "quiet", "v": "verbose"}

_FROM_A_TERMINAL = "remove it from the script, or submit with sbatch from a terminal"
# Options sbatch knows that the console refuses, each with why and what to do instead.
REFUSED: dict[str, str] = {
    "uid": "only root may submit as another user, and the console submits as you",
    "gid": "only root may submit as another group, and the console submits as you",
    "wrap": "it makes sbatch write a script of its own; put the command in the script instead",
    "wait": "the console answers when the job is queued; use `clusterra job wait ID` to wait for it to end",
    "test-only": "the console's preview shows what would be submitted without queuing it",
    "clusters": "pick the cluster in the console, which submits to that cluster only",
    "priority": "only operators set a job's priority; use --nice to lower your own job's",
    "export-file": "the console cannot read a file on your machine; write them as --export=NAME=value",
    "batch": "Slurm's REST API has no field for batch features; " + _FROM_A_TERMINAL,
    "bb": "Slurm's REST API does not take burst buffer lines from the console; " + _FROM_A_TERMINAL,
    "bbf": "Slurm's REST API does not take burst buffer files from the console; " + _FROM_A_TERMINAL,
    "container": "containers are not started by the console; " + _FROM_A_TERMINAL,
    "x11": "an X11 display needs a terminal session; " + _FROM_A_TERMINAL,
    "propagate": "the console's submits have no shell limits to pass on; " + _FROM_A_TERMINAL,
    "overcommit": "Slurm's REST API refuses it (a disabled key); " + _FROM_A_TERMINAL,
    "contiguous": "Slurm's REST API refuses it (a disabled key); " + _FROM_A_TERMINAL,
    "no-kill": "Slurm 22.05's REST API cannot express it; " + _FROM_A_TERMINAL,
    "hint": "Slurm's REST API has no field for it; use --ntasks-per-core / --threads-per-core instead",
    "use-min-nodes": "Slurm's REST API has no field for it; ask for an exact --nodes count",
    "switches": "not carried by the console; " + _FROM_A_TERMINAL,
    "core-spec": "only operators reserve cores; " + _FROM_A_TERMINAL,
    "thread-spec": "only operators reserve threads; " + _FROM_A_TERMINAL,
    "reboot": "only operators reboot nodes",
    "acctg-freq": "not carried by the console; " + _FROM_A_TERMINAL,
    "profile": "not carried by the console; " + _FROM_A_TERMINAL,
    "network": "not carried by the console; " + _FROM_A_TERMINAL,
    "cpu-freq": "not carried by the console; " + _FROM_A_TERMINAL,
    "gpu-bind": "binding applies to srun steps; put it on the srun line in the script",
    "gpu-freq": "not carried by the console; " + _FROM_A_TERMINAL,
    "mem-bind": "binding applies to srun steps; put it on the srun line in the script",
    "cpu-bind": "binding applies to srun steps; put it on the srun line in the script",
    "delay-boot": "not carried by the console; " + _FROM_A_TERMINAL,
    "wait-all-nodes": "not carried by the console; " + _FROM_A_TERMINAL,
    "ignore-pbs": "the console reads only #SBATCH lines",
    "nodefile": "the console cannot read a file on your machine; list the nodes with --nodelist",
    "mcs-label": "not carried by the console; " + _FROM_A_TERMINAL,
    "power": "not carried by the console; " + _FROM_A_TERMINAL,
    "tres-per-task": "write it as --gpus-per-task or --cpus-per-task, which the console prices",
    "cluster-constraint": "the console submits to one cluster",
    "extra-node-info": "write it as --sockets-per-node, --cores-per-socket and --threads-per-core",
    "get-user-env-file": "not carried by the console; " + _FROM_A_TERMINAL,
}
REFUSED_SHORT = {
    "M": "clusters",
    "W": "wait",
    "k": "no-kill",
    "F": "nodefile",
    "B": "extra-node-info",
    "O": "overcommit",
    "S": "core-spec",
}


def option(name: str) -> Option:
    """The option spelled `name` (long, without dashes), or OptionError saying why not."""
    name = ALIASES.get(name, name)
    found = OPTIONS.get(name)
    if found is not None:
        return found
    if name in REFUSED:
        raise OptionError(f"--{name} is not used by the console: {REFUSED[name]}")
    raise OptionError(f"--{name} is not an sbatch option the console knows")
