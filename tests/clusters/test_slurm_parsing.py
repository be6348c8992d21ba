"""Slurm's values decoded the same way whichever version sent them, and errors sorted into their kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clusters.slurm import (
    JobSpec,
    SlurmAuthError,
    SlurmErrorItem,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmProtocolError,
    SlurmRejected,
    SlurmUnavailable,
)
from clusters.slurm.errors import error_for, parse_error_items
from clusters.slurm.parsing import (
    BASE_JOB_STATES,
    BASE_NODE_STATES,
    decode_verbose_exit,
    decode_wait_status,
    gpus_in_gres,
    gpus_in_tres,
    job_gpus,
    number,
    release_from_meta,
    split_state,
    timestamp,
    tres,
)

UNSPECIFIED = {
    "description": "request failed",
    "error_number": -1,
    "error": "Unspecified error",
    "source": "x",
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (5, 5),
        (0, 0),
        (None, None),
        (-1, None),
        (4294967294, None),
        (4294967295, None),
        ("12", 12),
        ("soon", None),
        (True, None),
        ({"set": True, "infinite": False, "number": 60}, 60),
        ({"set": False, "infinite": True, "number": 0}, None),
        ({"set": False, "infinite": False, "number": 0}, None),
        ({"set": True, "number": 7}, 7),
    ],
)
def test_numbers_come_plain_or_wrapped(raw, expected):
    assert number(raw) == expected


def test_timestamps_are_aware_utc_and_zero_is_none():
    assert timestamp(1_700_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert timestamp({"set": True, "infinite": False, "number": 1_700_000_000}).tzinfo is UTC
    assert timestamp(0) is None
    assert timestamp({"set": False, "infinite": False, "number": 0}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, (0, None)),
        (768, (3, None)),
        (256 * 255, (255, None)),
        (15, (None, 15)),
        (9, (None, 9)),
        (0x80 | 11, (None, 11)),  # SIGSEGV with a core dump
        (4021, (None, None)),  # Slurm's own errno for a launch failure, not a wait status
        (None, (None, None)),
    ],
)
def test_v0038_exit_codes_are_raw_wait_statuses(raw, expected):
    assert decode_wait_status(raw) == expected


def nv(n):
    return {"set": True, "infinite": False, "number": n}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"status": ["SUCCESS"], "return_code": nv(0), "signal": {"id": {"set": False}, "name": ""}},
            (0, None),
        ),
        ({"status": ["ERROR"], "return_code": nv(3)}, (3, None)),
        ({"status": ["SIGNALED"], "return_code": nv(0), "signal": {"id": nv(9), "name": "KILL"}}, (None, 9)),
        ({"status": ["CORE_DUMPED"], "signal": {"id": nv(11), "name": "SEGV"}}, (None, 11)),
        ({"status": ["PENDING"], "return_code": {"set": False}}, (None, None)),
        ({"status": ["INVALID"]}, (None, None)),
        (768, (3, None)),
    ],
)
def test_v0040_exit_codes_are_verbose_objects(raw, expected):
    assert decode_verbose_exit(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu:2", 2),
        ("gpu:0", 0),
        ("gpu:1(IDX:0)", 1),
        ("gpu:tesla:2(S:0-1)", 2),
        ("gpu:a100:2(S:0,1),mps:100", 2),
        ("gres/gpu:4", 4),
        ("gres:gpu:1", 1),
        ("gres/gpu=3", 3),
        ("gpu:a100:1,gpu:v100:2", 3),
        ("mps:100", None),
        ("", None),
        (None, None),
    ],
)
def test_gpus_are_read_from_gres_strings(text, expected):
    assert gpus_in_gres(text) == expected


def test_tres_strings_give_counts_and_megabytes():
    assert tres("cpu=4,mem=8G,node=1,billing=4,gres/gpu=2") == {
        "cpu": 4,
        "mem": 8192,
        "node": 1,
        "billing": 4,
        "gres/gpu": 2,
    }
    assert tres("cpu=2,mem=22899M,node=1,billing=2")["mem"] == 22899
    assert gpus_in_tres("cpu=2,mem=22899M") is None
    assert gpus_in_tres("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1") == 3
    assert gpus_in_tres("cpu=8,gres/gpu=3,gres/gpu:a100=3") == 3


def test_job_gpus_prefer_the_allocation_then_the_request():
    assert job_gpus({"tres_alloc_str": "cpu=1,gres/gpu=2", "tres_req_str": "cpu=1,gres/gpu=4"}, 1, 1) == 2
    # Without AccountingStorageTRES=gres/gpu the TRES strings say nothing about GPUs.
    assert (
        job_gpus({"tres_req_str": "cpu=1,mem=500M", "gres_detail": ["gpu:1(IDX:0)", "gpu:1(IDX:1)"]}, 2, 1)
        == 2
    )
    assert job_gpus({"tres_req_str": "cpu=1", "tres_per_node": "gres:gpu:2"}, 3, 1) == 6
    assert job_gpus({"tres_per_job": "gres/gpu:5"}, 2, 1) == 5
    assert job_gpus({"tres_per_task": "gres/gpu:1"}, 1, 4) == 4
    assert job_gpus({"tres_req_str": "cpu=1"}, 1, 1) == 0


def test_states_split_into_base_and_flags():
    assert split_state("RUNNING", BASE_JOB_STATES) == ("RUNNING", ())
    assert split_state("COMPLETING", BASE_JOB_STATES) == ("COMPLETING", ())
    assert split_state(["PENDING", "REQUEUED"], BASE_JOB_STATES) == ("PENDING", ("REQUEUED",))
    assert split_state(["COMPLETING", "COMPLETED"], BASE_JOB_STATES) == ("COMPLETED", ("COMPLETING",))
    assert split_state("idle", BASE_NODE_STATES, upper=True) == ("IDLE", ())
    assert split_state(["IDLE", "DRAIN"], BASE_NODE_STATES, upper=True) == ("IDLE", ("DRAIN",))
    assert split_state(None, BASE_JOB_STATES) == ("", ())


def test_release_comes_from_either_spelling_of_meta():
    assert release_from_meta({"Slurm": {"release": "22.05.8"}}) == ("22.05.8", None)
    meta = {
        "slurm": {"version": {"major": "24", "minor": "11", "micro": "6"}, "release": "", "cluster": "c1"}
    }
    assert release_from_meta(meta) == ("24.11.6", "c1")
    assert release_from_meta(None) == ("", None)


# --- JobSpec -------------------------------------------------------------------------------------


def test_a_node_range_must_rise():
    assert JobSpec("#!/bin/sh\n", "/tmp", nodes=2, max_nodes=4).max_nodes == 4
    with pytest.raises(ValueError, match="below nodes"):
        JobSpec("#!/bin/sh\n", "/tmp", nodes=3, max_nodes=2)


@pytest.mark.parametrize(
    "bad",
    [
        {"nodes": 0},
        {"time_limit": -5},
        {"cpus_per_task": 1.5},
        {"tasks_per_node": 0},
        {"memory_per_gpu": True},
        {"environment": {"A=B": "c"}},
    ],
)
def test_a_job_spec_refuses_nonsense(bad):
    with pytest.raises(ValueError, match="must be"):
        JobSpec("#!/bin/sh\n", "/tmp", **bad)


# --- errors --------------------------------------------------------------------------------------


def test_both_error_shapes_and_the_errno_one_parse():
    items = parse_error_items(
        [
            {"error": "Invalid partition name specified", "error_code": 2000},
            {
                "description": "Unable to find JobId=9",
                "error_number": 2017,
                "error": "Invalid job id",
                "source": "s",
            },
            {"error": "Unspecified error", "errno": -1},
            {"description": 'Unknown key "x"', "source": "hsearch_r"},
        ]
    )
    assert items == (
        SlurmErrorItem(2000, "Invalid partition name specified"),
        SlurmErrorItem(2017, "Invalid job id", "s", "Unable to find JobId=9"),
        SlurmErrorItem(-1, "Unspecified error"),
        SlurmErrorItem(None, 'Unknown key "x"', "hsearch_r"),
    )


def items(*raw):
    return parse_error_items(list(raw))


@pytest.mark.parametrize(
    ("status", "errors", "text", "kind"),
    [
        (401, (), "Authentication failure", SlurmAuthError),
        (500, items(UNSPECIFIED), "", SlurmAuthError),
        (500, items({"error": "Unspecified error", "errno": -1}), "", SlurmAuthError),
        (500, items({**UNSPECIFIED, "description": "Unable to find JobId=1"}), "", SlurmAuthError),
        (
            500,
            items({"error_code": 5005, "error": "Zero Bytes were transmitted or received"}),
            "",
            SlurmAuthError,
        ),
        (200, items({"error_number": 1007, "error": "Protocol authentication error"}), "", SlurmAuthError),
        (511, (), "", SlurmAuthError),
        (500, items({"error_number": 2002, "error": "Access/permission denied"}), "", SlurmPermissionDenied),
        (403, items({"error_number": 1, "error": "Operation not permitted"}), "", SlurmPermissionDenied),
        (500, items({"error_number": 2017, "error": "Invalid job id specified"}), "", SlurmNotFound),
        (404, items({"error_number": 2017, "error": "Invalid job id specified"}), "", SlurmNotFound),
        (404, (), "Unable find requested URL.", SlurmNotFound),
        (500, items({"error_code": 2000, "error": "Invalid partition name specified"}), "", SlurmRejected),
        (500, items({"error_code": 2009, "error": "Job script not specified"}), "", SlurmRejected),
        (400, (), "Unable to parse query.", SlurmRejected),
        (422, items({"error_number": 9000, "error": "Unknown Query field"}), "", SlurmRejected),
        (
            500,
            items({"error_code": 1800, "error": "Unable to contact slurm controller (connect failure)"}),
            "",
            SlurmUnavailable,
        ),
        (502, (), "", SlurmUnavailable),
        (500, (), "", SlurmProtocolError),
    ],
)
def test_each_failure_gets_its_kind(status, errors, text, kind):
    error = error_for(status, errors, text)
    assert type(error) is kind
    assert error.status == status


def test_a_slow_unspecified_error_means_slurmctld_is_unreachable():
    # 22.05 gives a refused token and an unreachable slurmctld the same body; only the wait differs.
    assert isinstance(error_for(500, items(UNSPECIFIED), elapsed=0.02), SlurmAuthError)
    slow = error_for(500, items(UNSPECIFIED), elapsed=9.01)
    assert isinstance(slow, SlurmUnavailable)
    assert "slurmctld" in str(slow)


def test_the_message_is_slurms_most_specific_text():
    error = error_for(
        400,
        items(
            {"error": "environment must be a dictionary", "error_code": -1},
            {**UNSPECIFIED, "description": 'Unable to process key "environment"'},
            {"error_code": 9001, "error": "Failure during parsing"},
        ),
    )
    assert error.message == "environment must be a dictionary"
    denied = error_for(
        500,
        items(
            {
                "description": "unable to kill JobId=3 with signal 9: Access/permission denied",
                "error_number": 2002,
                "error": "Access/permission denied",
            }
        ),
    )
    assert denied.message == "unable to kill JobId=3 with signal 9: Access/permission denied (error 2002)"
    assert str(denied) == (
        "Slurm does not allow this user to do that. Slurm said: "
        "unable to kill JobId=3 with signal 9: Access/permission denied (error 2002)."
    )
