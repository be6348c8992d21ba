"""`#SBATCH` directives read the way sbatch reads them, turned into the fields the console submits.

slurmrestd ignores `#SBATCH` lines (they reach Slurm as plain comments), so the
console parses them itself, like the sbatch client does (`src/sbatch/opt.c`):

- only lines that start with exactly `#SBATCH` count; parsing stops at the first
  line that is neither blank nor a comment (the `#!` line is a comment);
- each directive line is split into words as sbatch does: whitespace separates,
  single and double quotes group, a backslash escapes, an unquoted `#` starts a comment;
- options take the short (`-p gpu`, `-pgpu`) or long (`--partition=gpu`,
  `--partition gpu`) form; a later directive overrides an earlier one.

Which options exist, what their values mean and which are refused is `jobs.sbatch_options`.
What sbatch would accept but the console cannot carry is refused with the line number and what
to do instead, never silently dropped: a job that ran without its `--signal` would be a worse
surprise than a clear error. Long-option abbreviations (getopt's `--part`) are not accepted, to
keep the accepted set exactly the one the console documents. A request's `options` object is read
by the same table (`from_request`), so a script and a request say the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs import sbatch_options
from jobs.sbatch_options import OptionError, parse_memory, parse_time

MAGIC = "#SBATCH"

__all__ = [
    "Directive",
    "DirectiveError",
    "Directives",
    "TimeFormatError",
    "parse",
    "parse_memory",
    "parse_time",
]

# A time limit not in one of Slurm's formats (or not a finite one).
TimeFormatError = OptionError


class DirectiveError(ValueError):
    """A directive the console cannot use; `line` is 1-based, or 0 for a value not from the script."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = f"line {line}: {message}" if line else message
        super().__init__(self.message)


@dataclass(frozen=True)
class Directive:
    """One option found in the script, as written and as understood."""

    line: int
    option: str
    value: Any
    text: str


@dataclass(frozen=True)
class Directives:
    """What the script asks for: JobSpec field -> value for each option it sets; `lines` keeps each found."""

    values: dict[str, Any] = field(default_factory=dict)
    lines: tuple[Directive, ...] = field(default=())

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def line_of(self, name: str) -> int | None:
        """The line that set the field `name` last, for "from the script, line N" in a preview."""
        found = [d.line for d in self.lines if sbatch_options.OPTIONS[d.option].field == name]
        return found[-1] if found else None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


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
    return _merge(found)


def from_request(options: dict[str, Any]) -> Directives:
    """A request's `options` object (long names, string values, true for flags), read like a line."""
    found: list[Directive] = []
    for name, value in options.items():
        spelled = f"options.{name}"
        try:
            option = sbatch_options.option(str(name).removeprefix("--"))
        except OptionError as e:
            if str(name).removeprefix("--") in sbatch_options.IGNORED:
                continue
            raise DirectiveError(0, f"{spelled}: {e}") from None
        if value is True and option.takes == "required":
            raise DirectiveError(0, f'{spelled} needs a value, e.g. {{"{name}": "…"}}')
        if value is False or value is None:
            continue  # "not said"
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise DirectiveError(0, f"{spelled} must be a string, a number or true")
        if option.takes == "none" and value is not True:
            raise DirectiveError(0, f"{spelled} is a flag: write true")
        found.append(Directive(0, option.name, value, f"{name}={value}"))
    return _merge(found, where="options")


def options_from_text(text: str) -> dict[str, Any]:
    """Options written as on an #SBATCH line ("--ntasks-per-node=4 --exclusive"), as a request's `options`."""
    found: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for d in _options(line, " " + line, number):
            found[d.option] = d.value
    return found


def _merge(found: list[Directive], where: str = "") -> Directives:
    values: dict[str, Any] = {}
    read: list[Directive] = []
    for d in found:
        option = sbatch_options.OPTIONS[d.option]
        try:
            value = option.read(option.name, d.value)
        except OptionError as e:
            prefix = f"{where}." if where else ""
            raise DirectiveError(d.line, f"{prefix}{e}" if where else str(e)) from None
        # A later directive overrides an earlier one, as with getopt.
        values[option.field] = value
        read.append(Directive(d.line, d.option, d.value, d.text))
    return Directives(values, tuple(read))


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
            if name in sbatch_options.IGNORED:
                continue
            try:
                option = sbatch_options.option(name)
            except OptionError as e:
                raise DirectiveError(number, str(e)) from None
            if option.takes == "none":
                if has_value:
                    raise DirectiveError(number, f"--{name} takes no value")
                value = True
            elif option.takes == "optional":
                value = value if has_value else True
            elif not has_value:
                if i >= len(words):
                    raise DirectiveError(number, f"--{name} needs a value, e.g. --{name}=…")
                value = words[i]
                i += 1
            result.append(Directive(number, option.name, value, raw.rstrip()))
        elif word.startswith("-") and len(word) > 1 and word[1] != "-":
            letter, value = word[1], word[2:]
            if letter in sbatch_options.IGNORED_SHORT:
                continue
            option = sbatch_options.SHORT.get(letter)
            if option is None:
                refused = sbatch_options.REFUSED_SHORT.get(letter)
                if refused:
                    why = sbatch_options.REFUSED[refused]
                    raise DirectiveError(number, f"-{letter} (--{refused}) is not used by the console: {why}")
                raise DirectiveError(number, f"-{letter} is not an sbatch option the console knows")
            if option.takes == "none":
                if value:
                    raise DirectiveError(number, f"-{letter} takes no value")
                value = True
            else:
                if value.startswith("="):
                    # getopt keeps "=" as part of a short option's value; "-p=gpu" is a mistake.
                    raise DirectiveError(
                        number, f"write -{letter} VALUE or --{option.name}=VALUE, not -{letter}{value}"
                    )
                if not value:
                    if i >= len(words):
                        raise DirectiveError(number, f"-{letter} needs a value")
                    value = words[i]
                    i += 1
            result.append(Directive(number, option.name, value, raw.rstrip()))
        else:
            raise DirectiveError(number, f"{word!r} is not an option; write '#SBATCH --option=value'")
    return result
