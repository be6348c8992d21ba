"""What a person asks to submit: the fields the form and /v1 take, declared once, each with its own check.

This class is the one list of the fields: /v1 validates its body with it and the OpenAPI document
derives the body's schema from it; the submit form sends its cleaned values through it. A field
left out or empty means "not said": the script's #SBATCH line or a default decides. Each check
raises a Refusal that names the field, so a program and a person read the same sentence.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator

from clusters.refusal import Refusal
from jobs import directives as sbatch
from jobs import scripts

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_PARTITION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LARGEST = 1_000_000


def _invalid(message: str) -> Refusal:
    return Refusal(message, code="invalid_request")


def _script_path(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid("script_path must be a string.")
    return value


def _script(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid("script must be the text of the job script, as a string.")
    if len(value.encode()) > scripts.max_script_bytes():
        raise _invalid(
            f"script is larger than {scripts.max_script_bytes() // 1024} KiB; "
            "a job script should be small (put data in other files)."
        )
    return value


def _options(value: Any) -> dict[str, Any] | None:
    """sbatch long options by name, read by the same table as #SBATCH lines (jobs.sbatch_options)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid('options must be an object of sbatch options, e.g. {"ntasks-per-node": "4"}.')
    if len(value) > 100:
        raise _invalid("options has more than 100 entries.")
    try:
        sbatch.from_request(value)
    except sbatch.DirectiveError as e:
        raise _invalid(f"{e.message}.") from None
    return value


def _partition(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and _PARTITION.match(value)):
        raise _invalid("partition must be a partition name such as cpu or gpu.")
    return value


def _name(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and _NAME.match(value)):
        raise _invalid("name must be text of at most 200 characters without control characters.")
    return value


def _working_directory(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return scripts.check_path(value, what="working_directory")
    except scripts.ScriptError as e:
        # The same sentence as for a script path, but the request is what is wrong, not a script.
        raise _invalid(e.message) from None


def _time_limit(value: Any) -> int | None:
    """Minutes as a number, or any Slurm time string ("90", "1:30:00", "2-00")."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise _invalid("time_limit must be at least 1 minute.")
        return value
    if isinstance(value, str):
        try:
            return sbatch.parse_time(value)
        except sbatch.TimeFormatError as e:
            raise _invalid(f"time_limit: {e}.") from None
    raise _invalid("time_limit must be minutes (a number) or a Slurm time such as 1:30:00.")


def _whole(name: str, minimum: int) -> Callable[[Any], int | None]:
    """A check for a count field: a whole number (digits in a string will do) from `minimum`."""

    def check(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            words = "a positive whole number" if minimum else "a whole number, 0 or more"
            raise _invalid(f"{name} must be {words}, not {value!r}.")
        if value > LARGEST:
            raise _invalid(f"{name} is implausibly large ({value}).")
        return value

    return check


def _count(name: str, minimum: int, description: str) -> Any:
    return Annotated[
        int | None,
        BeforeValidator(_whole(name, minimum)),
        WithJsonSchema({"type": "integer", "minimum": minimum, "description": description}),
    ]


# A plain pydantic model, which ninja takes as a body schema like its own Schema: ninja's Schema would
# hand the checks below a wrapper for reading Django objects instead of the JSON object itself.
class SubmitRequest(BaseModel):
    """The job to submit: a script on the cluster, and what to say instead of its #SBATCH lines."""

    script_path: Annotated[str | None, BeforeValidator(_script_path), WithJsonSchema({"type": "string"})] = (
        Field(
            None,
            description="Absolute path of the script on the cluster, under one of its allowed folders; "
            "read as you. Give this or `script`, not both.",
        )
    )
    script: Annotated[str | None, BeforeValidator(_script), WithJsonSchema({"type": "string"})] = Field(
        None,
        description="The script itself (starting with #!), for callers with no file on the cluster; "
        "it runs in your home folder unless it says --chdir. Give this or `script_path`, not both.",
    )
    options: Annotated[
        dict[str, Any] | None,
        BeforeValidator(_options),
        WithJsonSchema(
            {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]
                },
                "description": "sbatch options by long name, as on an #SBATCH line: "
                '{"ntasks-per-node": "4", "exclusive": true, "hold": true}. They override the script\'s '
                "lines; the fields above override these.",
            }
        ),
    ] = Field(None, description="sbatch options by long name.")
    partition: Annotated[str | None, BeforeValidator(_partition), WithJsonSchema({"type": "string"})] = Field(
        None, description="Partition (default: the script's --partition, then Slurm's default)."
    )
    time_limit: Annotated[
        int | None,
        BeforeValidator(_time_limit),
        WithJsonSchema(
            {
                "oneOf": [
                    {"type": "integer", "minimum": 1},
                    {
                        "type": "string",
                        "description": "A Slurm time: minutes, m:s, h:m:s, d-h, d-h:m, d-h:m:s.",
                    },
                ]
            }
        ),
    ] = Field(
        None,
        description="Minutes (default: the script's --time, then the partition's default, "
        "then the console's).",
    )
    nodes: _count("nodes", 1, "Nodes (default: the script's --nodes, then 1).") = None
    cpus_per_task: _count(
        "cpus_per_task", 1, "CPUs per task (default: the script's --cpus-per-task, then 1)."
    ) = None
    gpus: _count("gpus", 0, "GPUs for the whole job (default: the script's --gpus / --gres, then 0).") = None
    name: Annotated[
        str | None, BeforeValidator(_name), WithJsonSchema({"type": "string", "maxLength": 200})
    ] = Field(None, description="Job name (default: the script's --job-name, then the file name).")
    working_directory: Annotated[
        str | None, BeforeValidator(_working_directory), WithJsonSchema({"type": "string"})
    ] = Field(
        None, description="Working directory (default: the script's --chdir, then the script's folder)."
    )

    model_config = {
        "extra": "forbid",
        # Exactly one of the two, as the check below says; the document says it the same way.
        "json_schema_extra": {"oneOf": [{"required": ["script_path"]}, {"required": ["script"]}]},
    }

    @model_validator(mode="before")
    @classmethod
    def _said(cls, data: Any) -> dict[str, Any]:
        """Only known fields; text trimmed; what is missing or empty becomes None ("not said")."""
        if not isinstance(data, dict):
            raise _invalid("The request body must be a JSON object.")
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise _invalid(f"Unknown field {unknown[0]!r}; the fields are {', '.join(cls.model_fields)}.")
        said = {}
        for name in cls.model_fields:
            value = data.get(name)
            if isinstance(value, str) and name != "script":
                value = value.strip()
            said[name] = None if value in (None, "", {}) else value
        if (said["script_path"] is None) == (said["script"] is None):
            raise _invalid(
                "Give exactly one of script_path (the path of a script on the cluster) and script "
                "(the script's text)."
            )
        return said

    def digest(self) -> str:
        """Identifies the request for Idempotency-Key reuse: the same key with other fields is a conflict."""
        canonical = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
