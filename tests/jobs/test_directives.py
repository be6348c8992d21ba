"""jobs.directives: #SBATCH lines read the way sbatch reads them, and refused with the line when unusable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.directives import (
    DirectiveError,
    TimeFormatError,
    from_request,
    parse,
    parse_memory,
    parse_time,
    split_words,
)

pytestmark = pytest.mark.filterwarnings("ignore")


def script(*lines: str) -> str:
    return "\n".join(["#!/bin/bash", *lines, "srun hostname", ""])


# --- time formats -------------------------------------------------------------------------------

FORMS = {
    "minutes": lambda d, h, m, s: (f"{m}", m * 60),
    "minutes:seconds": lambda d, h, m, s: (f"{m}:{s}", m * 60 + s),
    "hours:minutes:seconds": lambda d, h, m, s: (f"{h}:{m}:{s}", (h * 60 + m) * 60 + s),
    "days-hours": lambda d, h, m, s: (f"{d}-{h}", (d * 24 + h) * 3600),
    "days-hours:minutes": lambda d, h, m, s: (f"{d}-{h}:{m}", ((d * 24 + h) * 60 + m) * 60),
    "days-hours:minutes:seconds": lambda d, h, m, s: (f"{d}-{h}:{m}:{s}", ((d * 24 + h) * 60 + m) * 60 + s),
}


@given(
    form=st.sampled_from(sorted(FORMS)),
    days=st.integers(0, 30),
    hours=st.integers(0, 23),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    pad=st.booleans(),
)
def test_every_slurm_time_format_gives_minutes_rounded_up(form, days, hours, minutes, seconds, pad):
    text, total_seconds = FORMS[form](days, hours, minutes, seconds)
    if pad:
        # Slurm reads "01:05:00" like "1:5:0".
        text = ":".join(part.zfill(2) for part in text.split(":"))
    expected = math.ceil(total_seconds / 60)
    if expected == 0:
        with pytest.raises(TimeFormatError, match="zero"):
            parse_time(text)
    else:
        assert parse_time(text) == expected
        assert parse(script(f"#SBATCH --time={text}")).get("time_limit") == expected
        assert parse(script(f"#SBATCH -t {text}")).get("time_limit") == expected


@given(st.text(alphabet="0123456789:-x. ", min_size=1, max_size=12))
def test_a_time_is_either_understood_or_refused_with_the_formats(text):
    try:
        minutes = parse_time(text)
    except TimeFormatError as e:
        message = str(e)
        minutes = None
    if minutes is None:
        assert "time" in message
    else:
        assert minutes >= 1


@pytest.mark.parametrize("text", ["INFINITE", "unlimited", "-1", "0", "0:0", "1:2:3:4", "1-2-3", "1h", ""])
def test_unusable_times_are_refused(text):
    with pytest.raises(TimeFormatError):
        parse_time(text)


def test_a_bad_time_names_the_line():
    with pytest.raises(DirectiveError, match=r"^line 3: time '90m' is not a Slurm time"):
        parse(script("#SBATCH --job-name=x", "#SBATCH --time=90m"))


# --- every directive, short and long --------------------------------------------------------------


def test_every_supported_directive_in_its_long_form():
    found = parse(
        script(
            "#SBATCH --partition=gpu",
            "#SBATCH --time=1:30:00",
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks=4",
            "#SBATCH --cpus-per-task=3",
            "#SBATCH --mem=4G",
            "#SBATCH --job-name=train",
            "#SBATCH --output=out-%j.txt",
            "#SBATCH --error=err-%j.txt",
            "#SBATCH --chdir=/home/ada/run",
            "#SBATCH --account=ml",
            "#SBATCH --qos=high",
            "#SBATCH --array=0-9%2",
            "#SBATCH --gpus=4",
        )
    )
    assert found.as_dict() == {
        "partition": "gpu",
        "time_limit": 90,
        "nodes": (2, 2),
        "ntasks": 4,
        "cpus_per_task": 3,
        "gpus": "4",
        "memory_per_node": 4096,
        "name": "train",
        "standard_output": "out-%j.txt",
        "standard_error": "err-%j.txt",
        "chdir": "/home/ada/run",
        "account": "ml",
        "qos": "high",
        "array": "0-9%2",
    }
    assert [d.line for d in found.lines] == list(range(2, 16))
    assert found.line_of("gpus") == 15


def test_the_layout_memory_gpu_and_scheduling_options_a_torchrun_script_uses():
    found = parse(
        script(
            "#SBATCH --nodes=2-4 --ntasks-per-node=8 --gpus-per-task=1",
            "#SBATCH --mem-per-cpu=4G --mem-per-gpu=40G --cpus-per-gpu=6",
            "#SBATCH --exclusive --constraint='a100&ib' --hold",
            "#SBATCH --dependency=afterok:12:13 --nodelist=gpu[01-02] --exclude=gpu07",
            "#SBATCH --begin=now+1hour --deadline=2030-01-01T08:00 --signal=B:USR1@120",
            "#SBATCH --mail-type=END,FAIL --mail-user=ada@example.org --export=ALL,WANDB_MODE=offline",
            "#SBATCH --open-mode=append --no-requeue --comment='sweep 3' --licenses=matlab:1",
            "#SBATCH --reservation=maint --time-min=30 --nice=10 --ntasks-per-socket=2",
        )
    )
    assert found.as_dict() == {
        "nodes": (2, 4),
        "tasks_per_node": 8,
        "gpus_per_task": "1",
        "memory_per_cpu": 4096,
        "memory_per_gpu": 40960,
        "cpus_per_gpu": 6,
        "exclusive": "exclusive",
        "constraint": "a100&ib",
        "hold": True,
        "dependency": "afterok:12:13",
        "nodelist": "gpu[01-02]",
        "exclude": "gpu07",
        "begin": "now+1hour",
        "deadline": "2030-01-01T08:00",
        "signal": "B:USR1@120",
        "mail_type": "END,FAIL",
        "mail_user": "ada@example.org",
        "export": "ALL,WANDB_MODE=offline",
        "open_mode": "append",
        "requeue": False,
        "comment": "sweep 3",
        "licenses": "matlab:1",
        "reservation": "maint",
        "time_min": 30,
        "nice": 10,
        "tasks_per_socket": 2,
    }


def test_exclusive_takes_a_value_only_after_an_equals_sign():
    found = parse(script("#SBATCH --exclusive --job-name=x", "#SBATCH --exclusive=user"))
    assert (found.get("exclusive"), found.get("name")) == ("user", "x")
    assert parse(script("#SBATCH --exclusive")).get("exclusive") == "exclusive"


def test_every_short_form_with_and_without_a_space():
    found = parse(
        script(
            "#SBATCH -p gpu -t 10",
            "#SBATCH -N2 -n 4 -c2",
            "#SBATCH -G 1 -J short",
            "#SBATCH -o o.txt -e e.txt",
            "#SBATCH -D /tmp/x -A acct -q low -a 1,3",
            "#SBATCH -C fast -w node1 -x node2 -d afterany:5 -H -i in.txt -L lic -s -b now",
        )
    )
    got = found.as_dict()
    assert (got["partition"], got["time_limit"], got["nodes"], got["ntasks"], got["cpus_per_task"]) == (
        "gpu",
        10,
        (2, 2),
        4,
        2,
    )
    assert (got["gpus"], got["name"], got["standard_output"], got["standard_error"]) == (
        "1",
        "short",
        "o.txt",
        "e.txt",
    )
    assert (got["chdir"], got["account"], got["qos"], got["array"]) == ("/tmp/x", "acct", "low", "1,3")
    assert (got["constraint"], got["nodelist"], got["exclude"], got["dependency"]) == (
        "fast",
        "node1",
        "node2",
        "afterany:5",
    )
    assert (got["hold"], got["standard_input"], got["licenses"], got["oversubscribe"], got["begin"]) == (
        True,
        "in.txt",
        "lic",
        True,
        "now",
    )


def test_long_options_take_their_value_after_a_space_too():
    assert parse(script("#SBATCH --partition debug --time 5")).get("partition") == "debug"


def test_flags_sbatch_prints_differently_for_change_nothing():
    assert parse(script("#SBATCH --parsable -Q --verbose -p gpu")).as_dict() == {"partition": "gpu"}


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("#SBATCH --gres=gpu:2", "gres", "gpu:2"),
        ("#SBATCH --gres=gpu", "gres", "gpu"),
        ("#SBATCH --gres=gpu:a100:3", "gres", "gpu:a100:3"),
        ("#SBATCH --gres=gpu:a100,mps:100", "gres", "gpu:a100,mps:100"),
        ("#SBATCH --gpus-per-node=2", "gpus_per_node", "2"),
        ("#SBATCH --gpus=a100:2", "gpus", "a100:2"),
        ("#SBATCH --gpus-per-socket=1", "gpus_per_socket", "1"),
    ],
)
def test_every_gpu_form_is_kept_as_written(line, field, value):
    assert parse(script(line)).as_dict() == {field: value}


@pytest.mark.parametrize(
    ("value", "mb"),
    [("500", 500), ("500M", 500), ("2G", 2048), ("1t", 1024 * 1024), ("1024K", 1), ("4GB", 4096)],
)
def test_memory_units(value, mb):
    assert parse_memory(value) == mb


def test_a_later_directive_wins_as_with_getopt():
    assert parse(script("#SBATCH -p cpu", "#SBATCH --partition=gpu")).get("partition") == "gpu"
    assert parse(script("#SBATCH --requeue", "#SBATCH --no-requeue")).get("requeue") is False


def test_the_old_spellings_sbatch_still_takes():
    assert parse(script("#SBATCH --workdir=/scratch")).get("chdir") == "/scratch"
    assert parse(script("#SBATCH --tasks-per-node=2")).get("tasks_per_node") == 2


def test_request_options_are_read_by_the_same_table():
    found = from_request(
        {"ntasks-per-node": "4", "exclusive": True, "hold": True, "mem": 2048, "parsable": True}
    )
    assert found.as_dict() == {
        "tasks_per_node": 4,
        "exclusive": "exclusive",
        "hold": True,
        "memory_per_node": 2048,
    }
    for options, words in (
        ({"ntasks-per-node": True}, "options.ntasks-per-node needs a value"),
        ({"hold": "yes"}, "options.hold is a flag: write true"),
        ({"uid": "0"}, "only root may submit as another user"),
        ({"bogus": "1"}, "--bogus is not an sbatch option the console knows"),
        ({"mem": "lots"}, "memory 'lots' is not a size"),
        ({"mem": ["4G"]}, "must be a string, a number or true"),
    ):
        with pytest.raises(DirectiveError) as caught:
            from_request(options)
        assert words in caught.value.message, (options, caught.value.message)


# --- where parsing stops, and words --------------------------------------------------------------


def test_parsing_stops_at_the_first_command_like_sbatch():
    found = parse("#!/bin/sh\n# a comment\n\n#SBATCH -p gpu\necho hi\n#SBATCH -p debug\n#SBATCH --bogus\n")
    assert found.get("partition") == "gpu"
    assert len(found.lines) == 1


def test_indented_or_spaced_magic_words_are_comments_as_for_sbatch():
    found = parse("#!/bin/sh\n  #SBATCH -p gpu\n# SBATCH -p debug\n#SBATCH -p cpu\n")
    assert found.get("partition") == "cpu"


def test_quotes_escapes_and_trailing_comments():
    found = parse(
        script("#SBATCH --job-name='my job' # the name", '#SBATCH --output="a b/%j.out"', r"#SBATCH -J x\ y")
    )
    assert found.get("standard_output") == "a b/%j.out"
    assert found.get("name") == "x y"
    assert split_words(" --job-name='my job' # c", 1) == ["--job-name=my job"]


def test_a_script_without_directives_says_nothing():
    assert parse("#!/bin/bash\nhostname\n").as_dict() == parse("#!/bin/bash\n").as_dict()
    assert parse("#!/bin/bash\nhostname\n").lines == ()


# --- refused, naming the line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("#SBATCH --mail-type=SOMETIMES", "--mail-type=SOMETIMES is not a list of"),
        ("#SBATCH --exclusive=always", "--exclusive=always is not one of exclusive, user, mcs, topo"),
        ("#SBATCH --wrap='hostname'", "--wrap is not used by the console: it makes sbatch write a script"),
        ("#SBATCH --uid=0", "only root may submit as another user"),
        ("#SBATCH -W", "-W (--wait) is not used by the console"),
        ("#SBATCH --priority=1000", "use --nice"),
        ("#SBATCH --hold=1", "--hold takes no value"),
        ("#SBATCH --signal=B:NOTASIG@60", "--signal=B:NOTASIG@60 is not"),
        ("#SBATCH --begin=whenever", "'whenever' is not a time the console reads"),
        ("#SBATCH --export=1BAD=x", "'1BAD' is not a variable name"),
        ("#SBATCH --open-mode=sometimes", "is not one of append, truncate"),
        ("#SBATCH --dependency='afterok:1;rm'", "is not type:jobid"),
        ("#SBATCH --frobnicate=1", "--frobnicate is not an sbatch option the console knows"),
        ("#SBATCH -Z 1", "-Z is not an sbatch option"),
        ("#SBATCH --nodes=4-2", "--nodes=4-2 is not a positive number of nodes or a rising range"),
        ("#SBATCH --nodes=zero", "--nodes=zero is not a number of nodes"),
        ("#SBATCH --ntasks=0", "--ntasks=0 is not a positive number of tasks"),
        ("#SBATCH --cpus-per-task=-1", "--cpus-per-task=-1 is not a positive number"),
        ("#SBATCH --gres=gpu:a:b:c", "--gres=gpu:a:b:c is not name[:type][:count]"),
        ("#SBATCH --gpus=lots", "--gpus=lots is not [type:]count"),
        ("#SBATCH --mem=4XB", "memory '4XB' is not a size"),
        ("#SBATCH --mem=0", "memory '0' is zero"),
        ("#SBATCH --array=all", "--array=all is not an index list"),
        ("#SBATCH --partition=a;b", "has characters Slurm does not allow"),
        ("#SBATCH --job-name='unclosed", "the quote ' is never closed"),
        ("#SBATCH --time", "--time needs a value"),
        ("#SBATCH -p", "-p needs a value"),
        ("#SBATCH -p=gpu", "write -p VALUE or --partition=VALUE"),
        ("#SBATCH partition=gpu", "'partition=gpu' is not an option"),
        ("#SBATCHX -p gpu", "is not a directive"),
        ("#SBATCH --time=INFINITE", "needs a finite time limit"),
    ],
)
def test_unusable_directives_are_refused_naming_the_line(line, words):
    with pytest.raises(DirectiveError) as caught:
        parse(script("#SBATCH --job-name=ok", line))
    assert caught.value.line == 3
    assert caught.value.message.startswith("line 3: ")
    assert words in caught.value.message


@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
        ),
        max_size=40,
    )
)
def test_any_directive_line_is_understood_or_refused_with_its_line_never_a_crash(rest):
    line = 2
    try:
        parse(f"#!/bin/sh\n#SBATCH {rest}\nhostname\n")
    except DirectiveError as e:
        line = e.line
    assert line == 2
