"""sbatch option values that an adapter must turn into numbers or lists for the newer API versions.

v0.0.38 hands most option strings to Slurm's own option parser, so Slurm reads them exactly as sbatch
does; from v0.0.40 the job description wants numbers (an epoch for --begin, a signal number and a delay
for --signal) and lists. These readers are the console's, for the forms people write; a form they do not
know is refused before anything is submitted rather than sent and misread.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass
from datetime import datetime, timedelta

_NOW = re.compile(r"^now(?:\+(?P<count>\d+)(?P<unit>[a-z]*))?$")
_UNITS = {
    "": 1,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
    "week": 604800,
    "weeks": 604800,
}
_CLOCK = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?$")
_DATE = re.compile(
    r"^(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})(?:[Tt](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?)?$"
)
_NAMED = {"midnight": 0, "noon": 12, "elevenses": 11, "fika": 15, "teatime": 16}
WHEN_FORMS = (
    "now+N[seconds|minutes|hours|days|weeks], HH:MM[:SS], YYYY-MM-DD[THH:MM[:SS]], today, tomorrow, noon"
)
_EXPORT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def when(text: str, now: datetime | None = None) -> int:
    """Seconds since the epoch for a --begin/--deadline time, read in the console's local time zone."""
    now = (now or datetime.now()).astimezone()
    value = text.strip().lower()
    match = _NOW.match(value)
    if match:
        if match["count"] is None:
            return int(now.timestamp())
        unit = _UNITS.get(match["unit"])
        if unit is None:
            raise ValueError(f"{match['unit']!r} is not a unit of time; use {WHEN_FORMS}")
        return int(now.timestamp()) + int(match["count"]) * unit
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if value in ("today", "tomorrow"):
        return int((today + timedelta(days=value == "tomorrow")).timestamp())
    if value in _NAMED:
        moment = today.replace(hour=_NAMED[value])
        return int((moment if moment > now else moment + timedelta(days=1)).timestamp())
    match = _CLOCK.match(value)
    if match:
        moment = _at(today, match["h"], match["m"], match["s"])
        # A clock time already past today means tomorrow, as Slurm reads it.
        return int((moment if moment > now else moment + timedelta(days=1)).timestamp())
    match = _DATE.match(value)
    if match:
        try:
            day = today.replace(year=int(match["y"]), month=int(match["mo"]), day=int(match["d"]))
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
        return int(_at(day, match["h"] or "0", match["m"] or "0", match["s"]).timestamp())
    raise ValueError(f"{text!r} is not a time the console reads; use {WHEN_FORMS}")


def _at(day: datetime, hour: str, minute: str, second: str | None) -> datetime:
    h, m, s = int(hour), int(minute), int(second or 0)
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"{hour}:{minute} is not a time of day")
    return day.replace(hour=h, minute=m, second=s)


def signal_number(name: str) -> int | None:
    """The number of a signal given as a number or a name (USR1, SIGUSR1); None when there is none."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        return number if 0 < number < 65 else None
    found = getattr(signals, text if text.startswith("SIG") else f"SIG{text}", None)
    return int(found) if isinstance(found, signals.Signals) else None


@dataclass(frozen=True)
class Signal:
    """--signal=[{R}{B}:]SIGNAL[@seconds]: which signal, how long before the end, to whom."""

    number: int
    name: str
    delay: int
    batch_only: bool
    reservation: bool


def parse_signal(text: str) -> Signal:
    flags, _, rest = text.strip().upper().rpartition(":")
    name, _, delay = rest.partition("@")
    number = signal_number(name)
    if number is None:
        raise ValueError(f"{name!r} is not a signal")
    name = signals.Signals(number).name.removeprefix("SIG") if number < 32 else str(number)
    # Slurm's default warning time is 60 seconds.
    return Signal(number, name, int(delay or 60), "B" in flags, "R" in flags)


@dataclass(frozen=True)
class Export:
    """--export: whether the job starts from the person's environment, and the variables it sets."""

    everything: bool
    variables: dict[str, str]
    names: tuple[str, ...]


def export_variables(value: str) -> Export:
    """ALL, NONE, NIL, or NAME=value / NAME entries (with ALL to keep the rest); sbatch's meaning."""
    everything = True
    said_mode = False
    variables: dict[str, str] = {}
    names: list[str] = []
    for item in value.strip().split(","):
        item = item.strip()
        if not item:
            continue
        if item.upper() == "ALL":
            everything, said_mode = True, True
        elif item.upper() in ("NONE", "NIL"):
            everything, said_mode = False, True
        else:
            name, has_value, text = item.partition("=")
            if not _EXPORT_NAME.match(name):
                raise ValueError(f"{name!r} is not a variable name")
            if has_value:
                variables[name] = text
            else:
                names.append(name)
            if not said_mode:
                # sbatch: naming variables without ALL exports only those (and SLURM_*).
                everything = False
    if not said_mode and not variables and not names:
        raise ValueError("give ALL, NONE or NAME=value entries")
    return Export(everything, variables, tuple(names))
