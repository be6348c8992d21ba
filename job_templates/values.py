"""What a template field's value may be, kind by kind: the one check for an administrator's default
and for what a person types.

Each kind allows only characters that mean nothing to the shell or to sbatch (job_templates.placeholders
says why this, and then quoting, keeps values from becoming code); a refusal names the field by its
label and says what it takes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

from django.core.exceptions import ValidationError

from jobs import directives

# The kinds of field (TemplateField.Kind names them for the admin).
TEXT, INTEGER, CHOICE = "text", "integer", "choice"
PARTITION, TIME_LIMIT, GPUS = "partition", "time_limit", "gpus"

# Text: letters and digits of any script, spaces, and these. Nothing here quotes, substitutes, separates
# commands, redirects or globs, in bash or on an #SBATCH line.
TEXT_PUNCTUATION = " .,:=+@%/_-"
TEXT_MAX_LENGTH = 200
TEXT_HARD_MAX = 1000
# An administrator's choice: one word of the same kind (no spaces: it is inserted unquoted).
CHOICE_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]{1,100}$")
# Slurm's partition names, as the submit API takes them.
PARTITION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A Slurm time: minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s.
TIME_CHARACTERS = re.compile(r"^[0-9:-]{1,20}$")
LARGEST = 1_000_000
# Unicode categories never allowed in text: controls (newline, tab, NUL…), format characters (which can
# hide or reorder what a reader sees), line and paragraph separators, and what is not a character.
NOT_TEXT = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class FieldLike(Protocol):
    label: str
    kind: str
    minimum: int | None
    maximum: int | None

    @property
    def choice_list(self) -> list[str]: ...


def check(field: FieldLike, raw: str) -> str:
    """The value to insert for `raw` (whitespace around it dropped); ValidationError says why not."""
    value = raw.strip()
    if not value:
        raise ValidationError(f"{field.label} is required.")
    check_of = {
        TEXT: _text,
        INTEGER: _integer,
        GPUS: _integer,
        CHOICE: _choice,
        PARTITION: _partition,
        TIME_LIMIT: _time_limit,
    }[field.kind]
    return check_of(field, value)


def text_refusal(label: str, value: str) -> str:
    """Why `value` is not a text value ("" if it is one), before any length rule."""
    for ch in value:
        if ch in "\n\r" or unicodedata.category(ch) in ("Zl", "Zp"):
            return f"{label} must be one line: it may not contain a line break."
        if unicodedata.category(ch) in NOT_TEXT:
            return f"{label} may not contain the control character U+{ord(ch):04X}."
        if not (ch.isalnum() or ch in TEXT_PUNCTUATION):
            return (
                f"{label} may not contain {ch!r}: a text field takes letters, digits, spaces and "
                f"{' '.join(TEXT_PUNCTUATION.strip())}"
                "."
            )
    if value.startswith("-"):
        return f"{label} may not start with '-': the script would read it as an option."
    return ""


def _text(field: FieldLike, value: str) -> str:
    refusal = text_refusal(field.label, value)
    if refusal:
        raise ValidationError(refusal)
    most = min(field.maximum or TEXT_MAX_LENGTH, TEXT_HARD_MAX)
    if len(value) > most:
        raise ValidationError(f"{field.label} is longer than {most} characters.")
    if field.minimum and len(value) < field.minimum:
        raise ValidationError(f"{field.label} must be at least {field.minimum} characters.")
    return value


def _integer(field: FieldLike, value: str) -> str:
    least = field.minimum if field.minimum is not None else (0 if field.kind == GPUS else None)
    if not (value.isascii() and value.isdigit()):
        words = "a whole number, 0 or more" if field.kind == GPUS or least == 0 else "a whole number"
        raise ValidationError(f"{field.label} must be {words}, not {_shown(value)}.")
    # Counted before int() reads it: a thousand digits cost nothing to refuse.
    if len(value.lstrip("0")) > len(str(LARGEST)) or int(value) > LARGEST:
        raise ValidationError(f"{field.label} is implausibly large.")
    number = int(value)
    _bounds(field, number, least, "")
    return str(number)


def _choice(field: FieldLike, value: str) -> str:
    if value not in field.choice_list:
        raise ValidationError(f"{field.label} must be one of {', '.join(field.choice_list)}.")
    return value


def _partition(field: FieldLike, value: str) -> str:
    if not PARTITION_NAME.match(value):
        raise ValidationError(f"{field.label} must be a partition name such as cpu or gpu.")
    return value


def _time_limit(field: FieldLike, value: str) -> str:
    words = f"{field.label} must be minutes or a Slurm time such as 1:30:00 or 2-00"
    if not TIME_CHARACTERS.match(value):
        raise ValidationError(f"{words}, not {_shown(value)}.")
    try:
        minutes = directives.parse_time(value)
    except directives.TimeFormatError as e:
        raise ValidationError(f"{words} ({e}).") from None
    _bounds(field, minutes, field.minimum, " minutes")
    return value


def _bounds(field: FieldLike, number: int, least: int | None, unit: str) -> None:
    if least is not None and number < least:
        raise ValidationError(f"{field.label} must be at least {least}{unit}.")
    if field.maximum is not None and number > field.maximum:
        raise ValidationError(f"{field.label} may be at most {field.maximum}{unit}.")


def check_choice_values(choices: list[str]) -> str:
    """Why an administrator's list of choices cannot be used ("" if it can)."""
    if not choices:
        return "A choice field needs its choices, one per line."
    for choice in choices:
        if not CHOICE_VALUE.match(choice):
            return (
                f"The choice {_shown(choice)} is not one word of letters, digits and . , : = + @ % / _ -: "
                "choices are inserted into the script as they are."
            )
    return ""


def _shown(value: str) -> str:
    return repr(value if len(value) <= 20 else value[:20] + "…")
