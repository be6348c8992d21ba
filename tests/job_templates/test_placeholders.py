"""Placeholders and values: the syntax, where a text field may stand, and that no value becomes shell code.

Filled scripts are run by the real bash: what a value does there is the test, not what the text looks like.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from django.core.exceptions import ValidationError

from job_templates import placeholders, values
from jobs import directives


@dataclass
class Field:
    label: str = "Run name"
    kind: str = values.TEXT
    minimum: int | None = None
    maximum: int | None = None
    choices: list[str] = field(default_factory=list)

    @property
    def choice_list(self) -> list[str]:
        return self.choices


def bash(script: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )


def test_the_shells_own_braces_are_never_fields():
    body = '#!/bin/bash\necho ${HOME} $USER ${#list[@]} ${X:-y} {a,b} {{ n }}\nawk "{{print \\$1}}"\n'
    assert placeholders.names(body) == ["n"]
    assert placeholders.fill(body, {"n": "integer"}, {"n": "4"}) == body.replace("{{ n }}", "4")


def test_spaces_inside_the_braces_are_optional():
    assert placeholders.names("{{a}} {{  b\t}} {{ c }}") == ["a", "b", "c"]


def test_a_field_not_defined_and_a_field_not_used_are_both_named():
    body = "#!/bin/sh\necho {{ used }} {{ Typo }}\n"
    assert placeholders.problems(body, {"used": "text", "spare": "integer"}) == [
        "The script uses {{ Typo }}, but the template has no field named Typo: add the field, or correct the "
        "name (names are lower-case).",
        "The field spare is not used in the script: write {{ spare }} where its value goes, "
        "or remove the field.",
    ]


def test_a_script_without_a_shebang_is_refused():
    assert placeholders.problems("echo {{ n }}\n", {"n": "integer"}) == [
        "The script must start with '#!' (for example #!/bin/bash): sbatch refuses a script without it."
    ]


SCANNED = r"""#!/bin/bash
#SBATCH --job-name={{ a }} --comment="{{ b }}"
# a comment may hold {{ c }}
echo {{ d }} "{{ e }}" '{{ f }}'
X=$(echo {{ g }} "$(printf %s {{ h }})")
echo "${FOO:-{{ i }}}" $((1 << {{ j }}))
cat <<EOF
{{ k }}
EOF
cat <<-'EOT' >f
	{{ l }}
	EOT
echo \
  {{ m }} `echo {{ n }}` $'it\'s {{ o }}'
echo {{ p }}
"""


def test_each_placeholder_is_seen_in_the_context_the_shell_reads_it_in():
    seen = {use.name: (use.line, use.context) for use in placeholders.uses(SCANNED)}
    assert seen == {
        "a": (2, "command"),
        "b": (2, '"…"'),
        "c": (3, "#"),
        "d": (4, "command"),
        "e": (4, '"…"'),
        "f": (4, "'…'"),
        "g": (5, "$(…)"),
        "h": (5, "$(…)"),
        "i": (6, "${…}"),
        "j": (6, "$((…))"),
        "k": (8, "a here-document"),
        "l": (11, "a here-document"),
        "m": (14, "command"),
        "n": (14, "`…`"),
        "o": (14, "$'…'"),
        "p": (15, "command"),
    }


def test_a_text_field_inside_quotes_or_a_here_document_is_refused_with_its_line():
    kinds = dict.fromkeys("abcdefghijklmnop", "text")
    problems = placeholders.problems(SCANNED, kinds)
    where = [p.split(". A text value")[0] for p in problems]
    assert where == [
        'Line 2: the text field b stands inside "…"',
        'Line 4: the text field e stands inside "…"',
        "Line 4: the text field f stands inside '…'",
        "Line 6: the text field i stands inside ${…}",
        "Line 6: the text field j stands inside $((…))",
        "Line 8: the text field k stands inside a here-document",
        "Line 11: the text field l stands inside a here-document",
        "Line 14: the text field o stands inside $'…'",
    ]
    assert problems[1].endswith(
        'write it where a word starts, e.g. E={{ e }} on a line of its own, then "$E".'
    )
    # Numbers and the other one-word kinds may stand anywhere: they hold nothing the shell reads.
    assert placeholders.problems(SCANNED, dict.fromkeys(kinds, "integer")) == []


@pytest.mark.parametrize(
    "attempt",
    [
        'x"; rm -rf ~; echo "',
        "x'; rm -rf ~; echo '",
        "$(touch pwned)",
        "`touch pwned`",
        "a\ntouch pwned",
        "a\rb",
        "a\x00b",
        "tab\there",
        "a;b",
        "a|b",
        "a&b",
        "a>pwned",
        "*",
        "~",
        "-rf",
        "--checkpoint-action=exec=sh",
        "a\u2028b",
        "a\u202eb",
        "${HOME}",
    ],
)
def test_text_that_could_be_shell_is_refused(attempt):
    with pytest.raises(ValidationError) as refused:
        values.check(Field(), attempt)
    assert refused.value.messages[0].startswith("Run name ")


def test_the_refusals_say_what_text_takes():
    with pytest.raises(ValidationError) as newline:
        values.check(Field(), "one\ntwo")
    assert newline.value.messages == ["Run name must be one line: it may not contain a line break."]
    with pytest.raises(ValidationError) as quote:
        values.check(Field(), 'x"; rm -rf ~; echo "')
    assert quote.value.messages == [
        "Run name may not contain '\"': a text field takes letters, digits, spaces and . , : = + @ % / _ -."
    ]
    with pytest.raises(ValidationError) as dash:
        values.check(Field(), "-rf")
    assert dash.value.messages == ["Run name may not start with '-': the script would read it as an option."]


def test_text_with_spaces_reaches_a_command_as_one_word_in_real_bash(tmp_path):
    body = (
        "#!/bin/bash\nNAME={{ name }}\n"
        "printf '<%s>\\n' {{ name }} \"$NAME\" \"$(printf '[%s]' {{ name }})\"\n"
    )
    assert placeholders.problems(body, {"name": "text"}) == []
    value = values.check(Field(), "  Ada Lovelace,  run 2 = 50%/x_y.z@host+1:2  ")
    script = placeholders.fill(body, {"name": "text"}, {"name": value})
    ran = bash(script, tmp_path)
    assert ran.returncode == 0, ran.stderr
    words = "Ada Lovelace,  run 2 = 50%/x_y.z@host+1:2"
    assert ran.stdout.splitlines() == [f"<{words}>", f"<{words}>", f"<[{words}]>"]


def test_text_on_an_sbatch_line_is_one_option_value_for_sbatchs_reader():
    body = "#!/bin/bash\n#SBATCH --job-name={{ name }} --time={{ t }}\nhostname\n"
    kinds = {"name": "text", "t": "time_limit"}
    script = placeholders.fill(body, kinds, {"name": "my run --partition=gpu", "t": "5"})
    said = directives.parse(script).values
    assert said["name"] == "my run --partition=gpu"
    assert "partition" not in said
    assert said["time_limit"] == 5


@pytest.mark.parametrize(
    ("kind", "raw", "said"),
    [
        (values.INTEGER, "1; rm -rf ~", "Run name must be a whole number, not '1; rm -rf ~'."),
        (values.INTEGER, "-1", "Run name must be a whole number, not '-1'."),
        (values.INTEGER, "9" * 5000, "Run name is implausibly large."),
        (values.INTEGER, "121", "Run name may be at most 120."),
        (values.GPUS, "x", "Run name must be a whole number, 0 or more, not 'x'."),
        (
            values.TIME_LIMIT,
            "$(reboot)",
            "Run name must be minutes or a Slurm time such as 1:30:00 or 2-00, not '$(reboot)'.",
        ),
        (values.TIME_LIMIT, "2:01:00", "Run name may be at most 120 minutes."),
        (values.PARTITION, "debug --qos=high", "Run name must be a partition name such as cpu or gpu."),
        (values.CHOICE, "gcc/13", "Run name must be one of gcc/12, clang."),
        (values.CHOICE, " ", "Run name is required."),
    ],
)
def test_the_one_word_kinds_refuse_anything_else(kind, raw, said):
    with pytest.raises(ValidationError) as refused:
        values.check(Field(kind=kind, maximum=120, choices=["gcc/12", "clang"]), raw)
    assert refused.value.messages == [said]


def test_the_one_word_kinds_are_inserted_as_checked():
    assert values.check(Field(kind=values.INTEGER, minimum=1, maximum=64), " 08 ") == "8"
    assert values.check(Field(kind=values.GPUS), "0") == "0"
    assert values.check(Field(kind=values.TIME_LIMIT, maximum=120), "1:30:00") == "1:30:00"
    assert values.check(Field(kind=values.PARTITION), "debug") == "debug"
    assert values.check(Field(kind=values.CHOICE, choices=["gcc/12", "clang"]), "gcc/12") == "gcc/12"


def test_an_administrators_choices_must_be_single_words():
    assert values.check_choice_values(["gcc/12", "python=3.11", "--exclusive"]) == ""
    assert values.check_choice_values([]) == "A choice field needs its choices, one per line."
    assert "is not one word" in values.check_choice_values(["two words"])
    assert "is not one word" in values.check_choice_values(["$(id)"])
