"""Fields in a template's script: how they are written, where they may stand, and how they are filled.

The syntax is `{{ name }}`: two braces, optional spaces, the field's name (a lower-case word), two
braces. The shell gives a doubled brace no meaning of its own, so every form of bash stays bash's:
`$VAR`, `${VAR}`, `${VAR:-x}`, `${#list[@]}` and brace expansion `{a,b}` are never read as a field,
and a template needs no escaping. (Django's template language is not used for the same reason: it
reads the `{#` of `${#list[@]}` as the start of a comment, and a body could run its tags.) Anything
else between double braces, such as awk's `{{print $1}}`, is left as written.

Filling never lets a value become shell code (the rule, in order):

1. every value is checked by its kind first (jobs_templates.values): a number, a time, a partition
   name or one of the administrator's choices is a single word with no character the shell treats
   specially; a text value is one line of letters, digits, spaces and `. , : = + @ % / _ -`, never
   starting with `-`, so it cannot close a quote, start a substitution, separate a command,
   redirect, glob, or read as an option;
2. a text value is then inserted as one shell word, quoted by POSIX rules (`shlex.quote`): its spaces
   do not split it, in a command or on an `#SBATCH` line (sbatch splits those lines with the same
   quoting); the other kinds are inserted as they are;
3. for the quoting to mean what it says, a text field must stand where a shell word can start: in a
   command, an assignment (`NAME={{ name }}`), `$(…)` or an `#SBATCH` line, and not inside `'…'`,
   `"…"`, `${…}` or a here-document, where quotes would be printed or where no quoting is possible.
   A template that places one there is refused when it is saved; the sentence says to assign the
   field to a variable and use `"$NAME"` instead. Comments may hold any field.

Step 3 reads the script with a small scanner of shell quoting, not a full shell parser; if a
construct it does not know fooled it, the worst a text value could do is split into several words:
by step 1 it can never hold anything the shell would run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAGIC = "#SBATCH"
# A field's name as an administrator defines it.
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# A placeholder in a body: any word, so `{{ Partition }}` is caught as a field that does not exist.
PLACEHOLDER = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}")

# Contexts of the scanner; a text field may stand in the first four (a shell word can start there).
COMMAND, SUBSHELL, SUBSTITUTION, BACKTICKS = "command", "subshell", "$(…)", "`…`"
SINGLE, DOUBLE, ANSI, PARAMETER, ARITHMETIC = "'…'", '"…"', "$'…'", "${…}", "$((…))"
HEREDOC, COMMENT = "a here-document", "#"
WORD_CONTEXTS = frozenset({COMMAND, SUBSHELL, SUBSTITUTION, BACKTICKS, COMMENT})


@dataclass(frozen=True)
class Use:
    """One placeholder in a body: the field it names, its line, and the context it stands in."""

    name: str
    line: int
    context: str


def names(body: str) -> list[str]:
    """The field names a body uses, each once, in order of first use."""
    return list(dict.fromkeys(m[1] for m in PLACEHOLDER.finditer(body)))


def problems(body: str, fields: Mapping[str, str]) -> list[str]:
    """Why a body and its fields (name -> kind) do not fit together, one sentence each; [] if they do."""
    found: list[str] = []
    if not body.startswith("#!"):
        found.append(
            "The script must start with '#!' (for example #!/bin/bash): sbatch refuses a script without it."
        )
    used = names(body)
    for name in used:
        if name not in fields:
            found.append(
                f"The script uses {{{{ {name} }}}}, but the template has no field named {name}: "
                "add the field, or correct the name (names are lower-case)."
            )
    for name in fields:
        if name not in used:
            found.append(
                f"The field {name} is not used in the script: write {{{{ {name} }}}} where its value goes, "
                "or remove the field."
            )
    for use in uses(body):
        if fields.get(use.name) == "text" and use.context not in WORD_CONTEXTS:
            found.append(
                f"Line {use.line}: the text field {use.name} stands inside {use.context}. A text value is "
                f"inserted as one quoted shell word, so write it where a word starts, e.g. "
                f'{use.name.upper()}={{{{ {use.name} }}}} on a line of its own, then "${use.name.upper()}".'
            )
    return found


def fill(body: str, kinds: Mapping[str, str], values: Mapping[str, str]) -> str:
    """The script with each placeholder replaced by its field's value (checked before, by its kind)."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        text = values[name]
        return shlex.quote(text) if kinds[name] == "text" else text

    return PLACEHOLDER.sub(value, body)


# --- where each placeholder stands --------------------------------------------------------------


def uses(body: str) -> list[Use]:
    """Every placeholder in `body` with the shell context it stands in (see the module's step 3)."""
    at = {m.start(): m for m in PLACEHOLDER.finditer(body)}
    found: list[Use] = []
    stack: list[str] = []
    heredocs: list[tuple[str, bool]] = []  # (delimiter, leading tabs stripped) waiting for the next line
    line = 1
    i = 0
    n = len(body)
    comment = False

    def top() -> str:
        return stack[-1] if stack else COMMAND

    while i < n:
        if i in at:
            match = at[i]
            found.append(Use(match[1], line, COMMENT if comment else top()))
            i = match.end()
            continue
        ch = body[i]
        nxt = body[i + 1] if i + 1 < n else ""
        if ch == "\n":
            line += 1
            comment = False
            i += 1
            if heredocs:
                i, line = _heredoc_bodies(body, i, line, heredocs, at, found)
                heredocs = []
            continue
        if comment:
            i += 1
            continue
        if not stack and body.startswith(MAGIC, i) and (i == 0 or body[i - 1] == "\n"):
            i = _directive_line(body, i, line, at, found)
            continue
        context = top()
        if ch == "\\" and context != SINGLE:
            # An escaped character is no quote or substitution; an escaped newline continues the line.
            line += nxt == "\n"
            i += 2
            continue
        if context in (SINGLE, ANSI):
            if ch == "'":
                stack.pop()
        elif context == DOUBLE:
            if ch == '"':
                stack.pop()
            elif ch == "`":
                stack.append(BACKTICKS)
            elif body.startswith("$((", i):
                stack.append(ARITHMETIC)
                i += 2
            elif ch == "$" and nxt in "({":
                stack.append(SUBSTITUTION if nxt == "(" else PARAMETER)
                i += 1
        else:
            # Where words are read: a command, a subshell, a substitution, or ${…} (its quotes nest too).
            if ch == "'":
                stack.append(SINGLE)
            elif ch == '"':
                stack.append(DOUBLE)
            elif ch == "`":
                if context == BACKTICKS:
                    stack.pop()
                else:
                    stack.append(BACKTICKS)
            elif ch == "$" and nxt == "'":
                stack.append(ANSI)
                i += 1
            elif body.startswith("$((", i):
                stack.append(ARITHMETIC)
                i += 2
            elif ch == "$" and nxt in "({":
                stack.append(SUBSTITUTION if nxt == "(" else PARAMETER)
                i += 1
            elif ch == ")" and nxt == ")" and context == ARITHMETIC:
                stack.pop()
                i += 1
            elif ch == "(" and context != PARAMETER:
                stack.append(SUBSHELL)
            elif (ch == ")" and context in (SUBSHELL, SUBSTITUTION)) or (ch == "}" and context == PARAMETER):
                stack.pop()
            elif ch == "#" and context != PARAMETER and (i == 0 or body[i - 1] in " \t\n;&|("):
                comment = True
            elif body.startswith("<<", i) and not body.startswith("<<<", i) and context != ARITHMETIC:
                i, delimiter = _heredoc_delimiter(body, i + 2)
                if delimiter:
                    heredocs.append(delimiter)
                continue
        i += 1
    return found


def _directive_line(body: str, i: int, line: int, at: Mapping[int, re.Match[str]], found: list[Use]) -> int:
    """An `#SBATCH` line, read as sbatch splits it (quotes and backslashes only); where its newline is."""
    end = body.find("\n", i)
    end = len(body) if end < 0 else end
    quote = ""
    j = i + len(MAGIC)
    while j < end:
        if j in at:
            found.append(Use(at[j][1], line, {"'": SINGLE, '"': DOUBLE}.get(quote, COMMAND)))
            j = at[j].end()
            continue
        ch = body[j]
        if quote:
            quote = "" if ch == quote else quote
        elif ch == "\\":
            j += 1
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            # The rest is a comment to sbatch.
            found.extend(Use(m[1], line, COMMENT) for start, m in at.items() if j <= start < end)
            break
        j += 1
    return end


def _heredoc_delimiter(body: str, i: int) -> tuple[int, tuple[str, bool] | None]:
    """The word after `<<` (or `<<-`), unquoted as the shell would, and where it ends."""
    strip_tabs = body.startswith("-", i)
    i += strip_tabs
    while i < len(body) and body[i] in " \t":
        i += 1
    word = []
    quote = ""
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == quote:
                quote = ""
            else:
                word.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\":
            i += 1
            if i < len(body):
                word.append(body[i])
        elif ch.isspace() or ch in ";&|<>()":
            break
        else:
            word.append(ch)
        i += 1
    return i, (("".join(word), strip_tabs) if word else None)


def _heredoc_bodies(
    body: str,
    i: int,
    line: int,
    heredocs: Iterable[tuple[str, bool]],
    at: Mapping[int, re.Match[str]],
    found: list[Use],
) -> tuple[int, int]:
    """Skip the bodies of the here-documents opened on the line before, noting the fields inside them."""
    for delimiter, strip_tabs in heredocs:
        while i < len(body):
            end = body.find("\n", i)
            end = len(body) if end < 0 else end
            text = body[i:end]
            if (text.lstrip("\t") if strip_tabs else text) == delimiter:
                i = end + 1
                line += 1
                break
            found.extend(Use(m[1], line, HEREDOC) for start, m in at.items() if i <= start < end)
            i = end + 1
            line += 1
    return min(i, len(body)), line
