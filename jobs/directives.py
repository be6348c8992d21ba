"""`#SBATCH` directives read the way sbatch reads them, turned into the fields the console submits.

slurmrestd ignores `#SBATCH` lines (they reach Slurm as plain comments), so the
console parses them itself, like the sbatch client does (`src/sbatch/opt.c`):

- only lines that start with exactly `#SBATCH` count; parsing stops at the first
  line that is neither blank nor a comment (the `#!` line is a comment);
- each directive line is split into words as sbatch does: whitespace separates,
  single and double quotes group, a backslash escapes, an unquoted `#` starts a comment;
- options take the short (`-p gpu`, `-pgpu`) or long (`--partition=gpu`,
  `--partition gpu`) form; a later directive overrides an earlier one.

What sbatch would accept but the console cannot honour is refused with the line
number, rather than silently dropped: a job that ran without its `--mem-per-cpu`
or `--exclusive` would be a worse surprise than a clear error. Long-option
abbreviations (getopt's `--part`) are not accepted, to keep the accepted set
exactly the one the console documents.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace

MAGIC = "#SBATCH"

# Every option the console understands: canonical long name → (short letter, takes a value).
OPTIONS: dict[str, str | None] = {
    "partition": "p",
    "time": "t",
    "nodes": "N",
    "ntasks": "n",
    "cpus-per-task": "c",
    "gpus": "G",
    "gres": None,
    "gpus-per-node": None,
    "mem": None,
    "job-name": "J",
    "output": "o",
    "error": "e",
    "chdir": "D",
    "account": "A",
    "qos": "q",
    "array": "a",
}
SHORT = {short: long for long, short in OPTIONS.items() if short}
# sbatch's old spelling of --chdir, still common in scripts.
ALIASES = {"workdir": "chdir"}

# Options sbatch knows that the console deliberately does not translate; named so the
# error can say "not supported" instead of "unknown" (a typo).
KNOWN_UNSUPPORTED = frozenset(
    {
        "mem-per-cpu",
        "mem-per-gpu",
        "ntasks-per-node",
        "ntasks-per-socket",
        "ntasks-per-core",
        "exclusive",
        "constraint",
        "dependency",
        "begin",
        "mail-type",
        "mail-user",
        "export",
        "export-file",
        "get-user-env",
        "hold",
        "nodelist",
        "exclude",
        "reservation",
        "requeue",
        "no-requeue",
        "signal",
        "wrap",
        "licenses",
        "gpus-per-task",
        "cpus-per-gpu",
        "tres-per-task",
        "time-min",
        "deadline",
        "open-mode",
        "input",
        "oversubscribe",
        "wckey",
        "comment",
        "priority",
        "nice",
        "distribution",
        "threads-per-core",
        "hint",
        "switches",
        "container",
        "uid",
        "gid",
        "kill-on-invalid-dep",
        "parsable",
        "test-only",
        "wait",
        "verbose",
        "quiet",
    }
)
SHORT_UNSUPPORTED = {
    "C": "constraint",
    "d": "dependency",
    "b": "begin",
    "H": "hold",
    "w": "nodelist",
    "x": "exclude",
    "i": "input",
    "s": "oversubscribe",
    "W": "wait",
    "v": "verbose",
    "Q": "quiet",
    "m": "distribution",
    "L": "licenses",
    "k": "no-kill",
    "F": "nodefile",
}

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
_MEMORY = re.compile(r"^(\d+)([KMGTkmgt]?)$")
_MEMORY_FACTORS = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
_COUNT = re.compile(r"^\d+$")
_GPU_COUNT = re.compile(r"^(?:(?P<type>[A-Za-z0-9_.-]+):)?(?P<count>\d+)$")
_ARRAY = re.compile(r"^[0-9,\-:]+(%\d+)?$")
# A name, partition, account or QOS: what Slurm itself accepts without quoting games.
_WORD = re.compile(r"^[A-Za-z0-9_.@+-]+$")


class DirectiveError(ValueError):
    """A directive the console cannot use; `line` is 1-based, or 0 for a value not from the script."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = f"line {line}: {message}" if line else message
        super().__init__(self.message)


class TimeFormatError(ValueError):
    """A time limit not in one of Slurm's formats (or not a finite one)."""


@dataclass(frozen=True)
class Directive:
    """One option found in the script, as written and as understood."""

    line: int
    option: str
    value: str
    text: str


@dataclass(frozen=True)
class Directives:
    """What the script asks for. None means the script does not say; `lines` keeps every option found.

    `gpus` is a total for the job (`--gpus`); `gpus_per_node` comes from `--gres=gpu:N` or
    `--gpus-per-node` and becomes a total only once the node count is known.
    """

    partition: str | None = None
    time_limit: int | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus_per_task: int | None = None
    gpus: int | None = None
    gpus_per_node: int | None = None
    memory_mb: int | None = None
    name: str | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    account: str | None = None
    qos: str | None = None
    array: str | None = None
    lines: tuple[Directive, ...] = field(default=())

    def line_of(self, attribute: str) -> int | None:
        """The line that set `attribute` last, for "from the script, line N" in a preview."""
        options = _ATTRIBUTE_OPTIONS.get(attribute, ())
        found = [d.line for d in self.lines if d.option in options]
        return found[-1] if found else None

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lines"}


_ATTRIBUTE_OPTIONS = {
    "partition": ("partition",),
    "time_limit": ("time",),
    "nodes": ("nodes",),
    "ntasks": ("ntasks",),
    "cpus_per_task": ("cpus-per-task",),
    "gpus": ("gpus", "gres", "gpus-per-node"),
    "gpus_per_node": ("gres", "gpus-per-node"),
    "memory_mb": ("mem",),
    "name": ("job-name",),
    "output": ("output",),
    "error": ("error",),
    "chdir": ("chdir",),
    "account": ("account",),
    "qos": ("qos",),
    "array": ("array",),
}


def parse_time(value: str) -> int:
    """Minutes from a Slurm time string, rounded up to a whole minute as Slurm does (time_str2mins).

    Zero, "INFINITE" and "UNLIMITED" are refused: the console reserves budget for
    the walltime asked, so a job must have a finite one.
    """
    text = value.strip()
    if text.upper() in ("INFINITE", "UNLIMITED", "-1"):
        raise TimeFormatError(
            f"time {value!r} means no limit; the console needs a finite time limit to reserve budget for"
        )
    for pattern, parts in _TIME_FORMS:
        match = pattern.match(text)
        if match:
            days, hours, minutes, seconds = parts(match.groups())
            total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
            result = math.ceil(total / 60)
            if result < 1:
                raise TimeFormatError(
                    f"time {value!r} is zero, which Slurm reads as no limit; give a finite time limit"
                )
            return result
    raise TimeFormatError(f"time {value!r} is not a Slurm time; use {TIME_FORMATS}")


def parse_memory(value: str) -> int:
    """Megabytes from an sbatch --mem value: a number with an optional K, M, G or T (default M)."""
    match = _MEMORY.match(value.strip())
    if not match:
        raise ValueError(f"memory {value!r} is not a size; write e.g. 500M, 4G or 2048")
    megabytes = math.ceil(int(match[1]) * _MEMORY_FACTORS[match[2].upper()])
    if megabytes < 1:
        raise ValueError(f"memory {value!r} is zero; Slurm would give the job the whole node's memory")
    return megabytes


def split_words(text: str, line: int) -> list[str]:
    """The words of one directive line after the magic word, split like sbatch's _get_argument."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
            in_word = True
        elif ch == "\\":
            escaped = True
            in_word = True
        elif quote:
            if ch == quote:
                quote = ""
            else:
                current.append(ch)
        elif ch in ('"', "'"):
            quote = ch
            in_word = True
        elif ch == "#":
            break
        elif ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(ch)
            in_word = True
    if quote:
        raise DirectiveError(line, f"the quote {quote} is never closed")
    if in_word:
        words.append("".join(current))
    return words


def _is_command(line: str) -> bool:
    """sbatch stops at the first line with anything before a `#` other than whitespace."""
    stripped = line.lstrip()
    return bool(stripped) and not stripped.startswith("#")


def parse(script: str) -> Directives:
    """The directives at the top of `script`; DirectiveError names the first line the console cannot use."""
    found: list[Directive] = []
    for number, raw in enumerate(script.splitlines(), start=1):
        if raw.startswith(MAGIC):
            found.extend(_options(raw, raw[len(MAGIC) :], number))
        elif _is_command(raw):
            break
    result = Directives(lines=tuple(found))
    for directive in found:
        result = _apply(result, directive)
    return result


def _options(raw: str, rest: str, number: int) -> list[Directive]:
    if rest and not rest[0].isspace() and not rest.startswith("-"):
        # "#SBATCHX": sbatch would read "X…" as an option word; it is almost always a typo.
        raise DirectiveError(number, f"{raw.strip()!r} is not a directive; write '#SBATCH --option=value'")
    words = split_words(rest, number)
    result: list[Directive] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--") and len(word) > 2:
            name, has_value, value = word[2:].partition("=")
            name = ALIASES.get(name, name)
            _check_known(name, number, f"--{name}")
            if not has_value:
                if i >= len(words):
                    raise DirectiveError(number, f"--{name} needs a value, e.g. --{name}=…")
                value = words[i]
                i += 1
            result.append(Directive(number, name, value, raw.rstrip()))
        elif word.startswith("-") and len(word) > 1 and word[1] != "-":
            letter, value = word[1], word[2:]
            if letter not in SHORT:
                long = SHORT_UNSUPPORTED.get(letter)
                if long:
                    raise DirectiveError(number, _unsupported(f"-{letter} (--{long})"))
                raise DirectiveError(number, f"-{letter} is not an sbatch option the console knows")
            name = SHORT[letter]
            if value.startswith("="):
                # getopt keeps "=" as part of a short option's value; "-p=gpu" is a mistake.
                raise DirectiveError(number, f"write -{letter} VALUE or --{name}=VALUE, not -{letter}{value}")
            if not value:
                if i >= len(words):
                    raise DirectiveError(number, f"-{letter} needs a value")
                value = words[i]
                i += 1
            result.append(Directive(number, name, value, raw.rstrip()))
        else:
            raise DirectiveError(number, f"{word!r} is not an option; write '#SBATCH --option=value'")
    return result


def _unsupported(what: str) -> str:
    return (
        f"{what} is not supported by the console; remove it from the script, "
        "or submit with sbatch from a terminal"
    )


def _check_known(name: str, number: int, spelled: str) -> None:
    if name in OPTIONS:
        return
    if name in KNOWN_UNSUPPORTED:
        raise DirectiveError(number, _unsupported(spelled))
    raise DirectiveError(number, f"{spelled} is not an sbatch option the console knows")


def _positive(directive: Directive, what: str) -> int:
    value = directive.value.strip()
    if not _COUNT.match(value) or int(value) < 1:
        raise DirectiveError(
            directive.line, f"--{directive.option}={value} is not a positive number of {what}"
        )
    return int(value)


def _word(directive: Directive) -> str:
    value = directive.value.strip()
    if not _WORD.match(value):
        raise DirectiveError(
            directive.line, f"--{directive.option}={value!r} has characters Slurm does not allow there"
        )
    return value


def _text(directive: Directive) -> str:
    value = directive.value
    if not value or any(ord(c) < 32 for c in value):
        raise DirectiveError(directive.line, f"--{directive.option} needs a value without control characters")
    return value


def _gpus_from_gres(directive: Directive) -> int:
    """GPUs per node in `--gres=gpu[:type][:count][,…]`; any other GRES is refused."""
    total = None
    for item in directive.value.split(","):
        item = item.strip()
        if item.startswith("gres/"):
            item = item[len("gres/") :]
        parts = item.split(":")
        if parts[0] != "gpu":
            raise DirectiveError(
                directive.line, _unsupported(f"the generic resource {parts[0]!r} in --gres={directive.value}")
            )
        if len(parts) == 1:
            count = 1
        elif parts[-1].isdigit():
            count = int(parts[-1])
        elif len(parts) == 2:
            count = 1  # gpu:a100 asks for one GPU of that type
        else:
            raise DirectiveError(directive.line, f"--gres={directive.value} is not gpu[:type][:count]")
        total = (total or 0) + count
    if not total:
        raise DirectiveError(directive.line, f"--gres={directive.value} asks for no GPU")
    return total


def _gpu_count(directive: Directive) -> int:
    match = _GPU_COUNT.match(directive.value.strip())
    if not match or int(match["count"]) < 1:
        raise DirectiveError(
            directive.line, f"--{directive.option}={directive.value} is not [type:]count, e.g. 2 or a100:2"
        )
    return int(match["count"])


def _apply(result: Directives, d: Directive) -> Directives:
    option = d.option
    if option == "partition":
        return replace(result, partition=_word(d))
    if option == "time":
        try:
            return replace(result, time_limit=parse_time(d.value))
        except TimeFormatError as e:
            raise DirectiveError(d.line, str(e)) from None
    if option == "nodes":
        value = d.value.strip()
        low, dash, high = value.partition("-")
        if dash and _COUNT.match(low) and _COUNT.match(high):
            if low != high:
                raise DirectiveError(
                    d.line, _unsupported(f"a node range (--nodes={value})") + "; ask for an exact count"
                )
            value = low
        return replace(result, nodes=_positive(replace(d, value=value), "nodes"))
    if option == "ntasks":
        return replace(result, ntasks=_positive(d, "tasks"))
    if option == "cpus-per-task":
        return replace(result, cpus_per_task=_positive(d, "CPUs"))
    if option == "gpus":
        return replace(result, gpus=_gpu_count(d), gpus_per_node=None)
    if option == "gres":
        return replace(result, gpus=None, gpus_per_node=_gpus_from_gres(d))
    if option == "gpus-per-node":
        return replace(result, gpus=None, gpus_per_node=_gpu_count(d))
    if option == "mem":
        try:
            return replace(result, memory_mb=parse_memory(d.value))
        except ValueError as e:
            raise DirectiveError(d.line, str(e)) from None
    if option == "job-name":
        return replace(result, name=_text(d))
    if option == "output":
        return replace(result, output=_text(d))
    if option == "error":
        return replace(result, error=_text(d))
    if option == "chdir":
        return replace(result, chdir=_text(d))
    if option == "account":
        return replace(result, account=_word(d))
    if option == "qos":
        return replace(result, qos=_word(d))
    if option == "array":
        value = d.value.strip()
        if not _ARRAY.match(value):
            raise DirectiveError(d.line, f"--array={value} is not an index list such as 0-9 or 1,3,5%2")
        return replace(result, array=value)
    raise AssertionError(f"option {option} has no handler")  # pragma: no cover - OPTIONS and this agree
