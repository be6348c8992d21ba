"""`clusterra job output ID --follow`: like `tail -f`, each part of the output printed once, as it grows,
until the job has ended; the route gives the file's last lines only, so the new part is found by overlap."""

from __future__ import annotations

import pytest

from clusterra_cli.client import USAGE
from clusterra_cli.watch import Follower, overlap

JOB = "/v1/clusters/demo/jobs/12"
OUTPUT = JOB + "/output"


def job(state: str) -> dict:
    started = None if state == "PENDING" else "2026-01-01T00:00:00Z"
    return {"job": {"id": 12, "state": state, "reason": "", "start_time": started}, "note": ""}


def output(stdout: str, stderr: str | None = None, *, error: str = "") -> dict:
    def stream(text: str, same: bool) -> dict:
        return {"path": "/h/x.out", "text": text, "error": error, "truncated": False, "same_as_stdout": same}

    body = {"job_id": 12, "lines": 2000, "stdout": stream(stdout, False)}
    body["stderr"] = stream(stdout, True) if stderr is None else stream(stderr, False)
    return body


def test_it_prints_each_new_part_once_until_the_job_ends(stub, clusterra):
    stub.on("GET", JOB, job("RUNNING"), job("RUNNING"), job("RUNNING"), job("COMPLETED"))
    stub.on(
        "GET",
        OUTPUT,
        output("step 1\n"),
        output("step 1\nstep 2\nhalf a li"),
        output("step 1\nstep 2\nhalf a li"),
        output("step 1\nstep 2\nhalf a line\ndone\n"),
    )
    result = clusterra("job", "output", "demo", "12", "--follow")
    assert result.code == 0, result.err
    assert result.out == "step 1\nstep 2\nhalf a line\ndone\n"
    assert stub.asked[1].query == {"lines": "2000", "stream": "both"}
    # Nothing new: the next look comes later; new output: soon again.
    assert clusterra.clock.slept == [1.0, 1.0, 1.5]


def test_a_job_already_running_starts_from_its_last_lines_like_tail(stub, clusterra):
    lines = "".join(f"line {n}\n" for n in range(1, 101))
    stub.on("GET", JOB, job("RUNNING"), job("COMPLETED"))
    stub.on("GET", OUTPUT, output(lines), output(lines + "line 101\n"))
    result = clusterra("job", "output", "demo", "12", "-f", "-n", "3")
    assert result.out == "line 98\nline 99\nline 100\nline 101\n"


def test_a_job_followed_from_before_it_started_is_printed_from_its_start(stub, clusterra):
    lines = "".join(f"line {n}\n" for n in range(1, 101))
    stub.on("GET", JOB, job("PENDING"), job("PENDING"), job("RUNNING"), job("COMPLETED"))
    stub.on("GET", OUTPUT, output(lines), output(lines + "the end\n"))
    result = clusterra("job", "output", "demo", "12", "--follow", "-n", "3")
    assert result.out == lines + "the end\n"
    # No output is asked for while the job waits in the queue.
    assert stub.paths() == [JOB, JOB, JOB, OUTPUT, JOB, OUTPUT]


def test_stderr_in_its_own_file_is_followed_on_stderr(stub, clusterra):
    stub.on("GET", JOB, job("RUNNING"), job("COMPLETED"))
    stub.on("GET", OUTPUT, output("out 1\n", "err 1\n"), output("out 1\nout 2\n", "err 1\nerr 2\n"))
    result = clusterra("job", "output", "demo", "12", "--follow")
    assert result.out == "out 1\nout 2\n"
    assert result.err == "err 1\nerr 2\n"


def test_a_lasting_error_is_said_once(stub, clusterra):
    stub.on("GET", JOB, *[job("RUNNING")] * 5, job("COMPLETED"))
    stub.on("GET", OUTPUT, output("", error="ada may not read /h/x.out (Permission denied)."))
    result = clusterra("job", "output", "demo", "12", "--follow", "--stdout")
    assert result.code == 0
    assert result.err == "clusterra: stdout: ada may not read /h/x.out (Permission denied).\n"


def test_follow_and_json_do_not_go_together(stub, clusterra):
    result = clusterra("job", "output", "demo", "12", "--follow", "--json")
    assert result.code == USAGE
    assert stub.asked == []


def test_a_window_that_slid_on_gives_only_what_follows_the_overlap():
    follower = Follower(None)
    assert follower.feed("a\nb\nc\n", whole=False) == "a\nb\nc\n"
    assert follower.feed("b\nc\nd\n", whole=False) == "d\n"
    assert follower.feed("d\ne\nf", whole=False) == "e\nf"
    assert follower.feed("d\ne\nfg\n", whole=False) == "g\n"
    assert follower.feed("d\ne\nfg\n", whole=False) == ""
    assert not follower.skipped


def test_a_window_past_what_was_seen_is_printed_whole_and_said():
    follower = Follower(None)
    follower.feed("a\nb\n", whole=False)
    assert follower.feed("x\ny\n", whole=False) == "x\ny\n"
    assert follower.skipped


def test_a_whole_file_that_was_rewritten_is_printed_again():
    follower = Follower(None)
    follower.feed("first run\n", whole=True)
    assert follower.feed("second\n", whole=True) == "second\n"
    assert not follower.skipped


@pytest.mark.parametrize(
    ("before", "after", "shared"),
    [
        ("abcab", "abx", 2),
        ("abc", "abc", 3),
        ("aaaa", "aaab", 3),
        ("xyz", "abc", 0),
        ("", "a", 0),
        ("ab", "b", 1),
    ],
)
def test_overlap_is_the_longest_end_the_next_text_starts_with(before, after, shared):
    assert overlap(before, after) == shared
