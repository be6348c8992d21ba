"""`clusterra job wait ID`: asks further apart each time until the job has ended, honours a 429's Retry-After,
gives up at --timeout, and exits with the job's exit code or a documented number for an ending without one."""

from __future__ import annotations

import pytest

from clusterra_cli import watch
from clusterra_cli.client import NOT_FOUND, USAGE

JOB = "/v1/clusters/demo/jobs/12"


def job(
    state: str, *, reason: str = "", exit_code: int | None = None, exit_signal: int | None = None
) -> dict:
    return {
        "job": {
            "id": 12,
            "state": state,
            "reason": reason,
            "exit_code": exit_code,
            "exit_signal": exit_signal,
            "start_time": None if state == "PENDING" else "2026-01-01T00:00:00Z",
        },
        "note": "",
    }


def test_it_waits_with_back_off_and_exits_0_when_the_job_completed(stub, clusterra):
    stub.on(
        "GET",
        JOB,
        job("PENDING", reason="Priority"),
        job("PENDING", reason="Priority"),
        job("RUNNING"),
        job("RUNNING"),
        job("COMPLETED", exit_code=0),
    )
    result = clusterra("job", "wait", "demo", "12")
    assert result.code == 0
    assert result.out == "Job 12 ended COMPLETED, exit code 0.\n"
    # Each change once, on stderr: stdout stays the one final line.
    assert result.err == (
        "clusterra: job 12 is PENDING (Priority); waiting.\nclusterra: job 12 is RUNNING; waiting.\n"
    )
    assert clusterra.clock.slept == [1.0, 1.5, 2.25, 3.375]
    assert stub.paths() == [JOB] * 5


def test_the_pause_grows_to_at_most_thirty_seconds(stub, clusterra):
    stub.on("GET", JOB, *[job("RUNNING")] * 14, job("COMPLETED", exit_code=0))
    assert clusterra("job", "wait", "demo", "12").code == 0
    assert max(clusterra.clock.slept) == watch.LONGEST_PAUSE
    assert clusterra.clock.slept[-3:] == [30.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("ended", "code", "line"),
    [
        (job("FAILED", exit_code=3), 3, "Job 12 ended FAILED, exit code 3."),
        (job("FAILED", exit_signal=9), 137, "Job 12 ended FAILED, killed by signal 9."),
        (job("FAILED"), watch.JOB_FAILED, "Job 12 ended FAILED."),
        (job("OUT_OF_MEMORY", exit_code=0), watch.JOB_FAILED, "Job 12 ended OUT_OF_MEMORY, exit code 0."),
        (
            job("CANCELLED", exit_signal=15),
            watch.JOB_CANCELLED,
            "Job 12 ended CANCELLED, killed by signal 15.",
        ),
        (job("TIMEOUT", exit_code=0), watch.JOB_TIMED_OUT, "Job 12 ended TIMEOUT, exit code 0."),
    ],
)
def test_an_ending_without_success_exits_non_zero(stub, clusterra, ended, code, line):
    stub.on("GET", JOB, ended)
    result = clusterra("job", "wait", "demo", "12")
    assert (result.code, result.out) == (code, line + "\n")


def test_the_exit_codes_are_in_its_help(capsys):
    from clusterra_cli.main import main

    with pytest.raises(SystemExit):
        main(["job", "wait", "--help"])
    page = capsys.readouterr().out
    for number in ("120", "121", "122", "124", "128+S"):
        assert f"  {number} " in page


def test_a_long_retry_after_is_waited_out_and_asked_again(stub, clusterra):
    throttled = (
        429,
        {"error": {"code": "rate_limited", "message": "Too many requests."}},
        {"Retry-After": "45"},
    )
    stub.on("GET", JOB, job("RUNNING"), throttled, job("COMPLETED", exit_code=0))
    result = clusterra("job", "wait", "demo", "12")
    assert result.code == 0
    assert clusterra.clock.slept == [1.0, 45.0]


def test_a_console_that_stops_answering_for_a_while_is_asked_again(stub, clusterra):
    down = (503, {"error": {"code": "cluster_unavailable", "message": "Demo cluster does not answer."}}, {})
    # Each read retries a 5xx once at once (the client's rule), so two 503s are one failed read.
    stub.on("GET", JOB, job("RUNNING"), down, down, down, down, job("COMPLETED", exit_code=0))
    result = clusterra("job", "wait", "demo", "12")
    assert result.code == 0
    assert result.err.count("Demo cluster does not answer. Asking again") == 1


def test_it_gives_up_at_the_timeout_without_sleeping_past_it(stub, clusterra):
    stub.on("GET", JOB, job("RUNNING"))
    result = clusterra("job", "wait", "demo", "12", "--timeout", "5")
    assert result.code == watch.WAIT_TIMED_OUT
    assert result.err.endswith("clusterra: job 12 has not ended after 5 s (last seen RUNNING); it goes on.\n")
    assert sum(clusterra.clock.slept) == pytest.approx(5.0)
    assert clusterra.clock.slept == [1.0, 1.5, 2.25, pytest.approx(0.25)]


def test_a_refusal_is_not_waited_on(stub, clusterra):
    result = clusterra("job", "wait", "demo", "12")
    assert result.code == NOT_FOUND
    assert len(stub.asked) == 1


def test_an_array_task_id_goes_to_the_url_as_written(stub, clusterra):
    stub.on("GET", "/v1/clusters/demo/jobs/12_4", job("COMPLETED", exit_code=0))
    stub.on("DELETE", "/v1/clusters/demo/jobs/12_4", {"job": {"state": "CANCELLED"}, "message": "Cancelled."})
    stub.on("GET", "/v1/clusters/demo/jobs/12_4/output", {"job_id": 12, "lines": 50, "stdout": None})
    assert clusterra("job", "wait", "demo", "12_4").code == 0
    assert clusterra("job", "cancel", "demo", "12_4").code == 0
    assert clusterra("job", "output", "demo", "12_4").code == 0
    assert stub.paths() == [
        "/v1/clusters/demo/jobs/12_4",
        "/v1/clusters/demo/jobs/12_4",
        "/v1/clusters/demo/jobs/12_4/output",
    ]


HELD = (404, {"error": {"code": "not_found", "message": "Task 4 of array 12 has not started yet."}}, {})


def test_a_task_the_array_still_holds_is_waited_for(stub, clusterra):
    stub.on("GET", "/v1/clusters/demo/jobs/12_4", HELD, HELD, job("COMPLETED", exit_code=0))
    stub.on("GET", JOB, job("RUNNING"))
    result = clusterra("job", "wait", "demo", "12_4")
    assert result.code == 0, result.err
    assert "job 12_4 is PENDING (not started by the array yet); waiting." in result.err
    # The array is read between two reads of the task: that brings its tasks up to date.
    task = "/v1/clusters/demo/jobs/12_4"
    assert stub.paths() == [task, JOB, task, task]


def test_a_task_missing_from_an_ended_array_is_not_waited_for(stub, clusterra):
    stub.on("GET", "/v1/clusters/demo/jobs/12_4", HELD)
    stub.on("GET", JOB, job("COMPLETED", exit_code=0))
    result = clusterra("job", "wait", "demo", "12_4")
    assert (result.code, result.err) == (NOT_FOUND, "clusterra: Task 4 of array 12 has not started yet.\n")


@pytest.mark.parametrize("wrong", ["12x", "12_", "_4", "12_4_1", "-3"])
def test_anything_else_is_not_a_job_id(stub, clusterra, capsys, wrong):
    from clusterra_cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["job", "show", "demo", wrong])
    assert exited.value.code == USAGE
    assert "a job id is a number such as 123, or an array task such as 123_4" in capsys.readouterr().err
