"""The slurmrestd transport against a real HTTP server on loopback: reuse, timeouts, one retry, envelopes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clusters.slurm import (
    SlurmAuthError,
    SlurmError,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmProtocolError,
    SlurmRejected,
    SlurmUnavailable,
)
from clusters.slurm.http import Transport, close_sessions
from tests.support.fake_slurmrestd import META_38, NOT_FOUND_TEXT, TOKEN, FakeSlurmrestd, Reply


@pytest.fixture
def fake() -> Iterator[FakeSlurmrestd]:
    server = FakeSlurmrestd()
    yield server
    close_sessions()
    server.close()


def transport(fake: FakeSlurmrestd, **kwargs: Any) -> Transport:
    headers = {"X-SLURM-USER-NAME": "alice", "X-SLURM-USER-TOKEN": TOKEN}
    return Transport(fake.url, headers, **kwargs)


# --- connections -------------------------------------------------------------------------------


def test_it_reuses_one_connection_for_consecutive_requests(fake):
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": []})
    t = transport(fake)
    for _ in range(3):
        t.get("/slurm/v0.0.38/ping")
    other_user = Transport(fake.url, {"X-SLURM-USER-NAME": "bob", "X-SLURM-USER-TOKEN": "t2"})
    other_user.get("/slurm/v0.0.38/ping")
    assert len({s.client_port for s in fake.seen}) == 1
    assert fake.seen[-1].headers["X-SLURM-USER-NAME"] == "bob"


def test_it_uses_a_separate_connection_per_thread(fake):
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": []})
    transport(fake).get("/slurm/v0.0.38/ping")
    worker = threading.Thread(target=lambda: transport(fake).get("/slurm/v0.0.38/ping"))
    worker.start()
    worker.join()
    assert len({s.client_port for s in fake.seen}) == 2


def test_it_sends_both_auth_headers_and_json(fake):
    fake.reply("POST", "/slurm/v0.0.38/job/submit", body={"meta": META_38, "errors": [], "job_id": 1})
    transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={"script": "#!/bin/sh\n"})
    seen = fake.seen[0]
    assert seen.headers["X-SLURM-USER-TOKEN"] == TOKEN
    assert seen.headers["X-SLURM-USER-NAME"] == "alice"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {"script": "#!/bin/sh\n"}
    assert "Authorization" not in seen.headers


def test_it_retries_a_read_once_after_a_connection_reset(fake):
    ok = Reply(body={"meta": META_38, "errors": [], "jobs": []})
    fake.reply("GET", "/slurm/v0.0.38/jobs", Reply(reset=True), ok)
    response = transport(fake).get("/slurm/v0.0.38/jobs")
    assert response.status == 200
    assert len(fake.requests_to("/slurm/v0.0.38/jobs")) == 2


def test_it_gives_up_after_the_second_reset(fake):
    fake.reply("GET", "/slurm/v0.0.38/jobs", Reply(reset=True))
    with pytest.raises(SlurmUnavailable):
        transport(fake).get("/slurm/v0.0.38/jobs")
    assert len(fake.requests_to("/slurm/v0.0.38/jobs")) == 2


def test_it_never_retries_a_submit(fake):
    ok = Reply(body={"meta": META_38, "errors": [], "job_id": 5})
    fake.reply("POST", "/slurm/v0.0.38/job/submit", Reply(reset=True), ok)
    with pytest.raises(SlurmUnavailable):
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={"script": "x"})
    assert len(fake.requests_to("/slurm/v0.0.38/job/submit")) == 1


def test_it_times_out_on_a_server_that_does_not_answer(fake):
    fake.reply("GET", "/slurm/v0.0.38/diag", Reply(body={}, delay=2))
    started = time.monotonic()
    with pytest.raises(SlurmUnavailable) as caught:
        transport(fake, timeout=(1, 0.3)).get("/slurm/v0.0.38/diag")
    assert time.monotonic() - started < 1.5
    assert "0.3 s" in str(caught.value)
    # A read timeout is not retried: a server that is stuck stays stuck.
    assert len(fake.requests_to("/slurm/v0.0.38/diag")) == 1


def test_it_reports_a_refused_connection_as_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SlurmUnavailable) as caught:
        Transport(f"http://127.0.0.1:{port}", {}).get("/slurm/v0.0.38/ping")
    assert caught.value.status is None
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "try again later" in str(caught.value).lower()


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_failure_is_unavailable(fake, status):
    fake.reply(
        "GET", "/slurm/v0.0.38/ping", status=status, text="<html>Bad Gateway</html>", content_type="text/html"
    )
    with pytest.raises(SlurmUnavailable) as caught:
        transport(fake).get("/slurm/v0.0.38/ping")
    assert caught.value.status == status


def test_it_does_not_follow_redirects_with_the_token(fake):
    fake.routes[("GET", "/slurm/v0.0.38/ping")] = [Reply(302, text="moved")]
    with pytest.raises(SlurmProtocolError):
        transport(fake).get("/slurm/v0.0.38/ping")
    assert len(fake.seen) == 1


# --- the envelope and the error shapes of docs/slurm-dev-cluster.md ---------------------------------


def test_a_missing_header_answer_is_an_auth_error(fake):
    fake.reply("GET", "/slurm/v0.0.38/diag", status=401, text="Authentication failure")
    with pytest.raises(SlurmAuthError) as caught:
        transport(fake).get("/slurm/v0.0.38/diag")
    assert caught.value.status == 401
    assert caught.value.message == "Authentication failure"
    assert "Authentication failure" in str(caught.value)


def test_an_expired_token_is_an_auth_error_despite_http_500(fake):
    body = {
        "meta": META_38,
        "errors": [
            {
                "description": "request failed",
                "error_number": -1,
                "error": "Unspecified error",
                "source": "slurm_get_statistics",
            }
        ],
        "statistics": {"rpcs_by_message_type": [], "rpcs_by_user": []},
    }
    fake.reply("GET", "/slurm/v0.0.38/diag", status=500, body=body)
    with pytest.raises(SlurmAuthError) as caught:
        transport(fake).get("/slurm/v0.0.38/diag")
    error = caught.value
    assert error.status == 500
    assert error.errors[0].code == -1
    assert error.errors[0].source == "slurm_get_statistics"
    assert "Unspecified error" in str(error)
    assert "expired" in str(error)


def test_a_refused_token_on_partitions_uses_the_errno_shape(fake):
    body = {"meta": META_38, "errors": [{"error": "Unspecified error", "errno": -1}], "partitions": []}
    fake.reply("GET", "/slurm/v0.0.38/partitions", status=500, body=body)
    with pytest.raises(SlurmAuthError):
        transport(fake).get("/slurm/v0.0.38/partitions")


def test_a_refused_token_on_submit_is_slurmctld_hanging_up(fake):
    body = {
        "meta": META_38,
        "errors": [{"error_code": 5005, "error": "Zero Bytes were transmitted or received"}],
    }
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=500, body=body)
    with pytest.raises(SlurmAuthError, match="Zero Bytes were transmitted or received"):
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})


def test_an_unreachable_slurmctld_on_submit_is_unavailable(fake):
    body = {"errors": [{"error_code": 1800, "error": "Unable to contact slurm controller (connect failure)"}]}
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=500, body=body)
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})


def test_a_slow_unspecified_error_on_a_read_is_unavailable(fake, monkeypatch):
    # 22.05.8 took 9 s to give up on a stopped slurmctld; the threshold is shrunk to keep this fast.
    monkeypatch.setattr("clusters.slurm.errors.SLOW_ANSWER_SECONDS", 0.2)
    body = {
        "meta": META_38,
        "errors": [
            {
                "description": "Failed while looking for jobs",
                "error_number": -1,
                "error": "Unspecified error",
                "source": "slurm_load_jobs",
            }
        ],
        "jobs": [],
    }
    fake.reply("GET", "/slurm/v0.0.38/jobs", Reply(status=500, body=body, delay=0.3))
    with pytest.raises(SlurmUnavailable, match="slurmctld"):
        transport(fake).get("/slurm/v0.0.38/jobs")
    fake.reply("GET", "/slurm/v0.0.38/jobs", Reply(status=500, body=body))
    with pytest.raises(SlurmAuthError, match="Failed while looking for jobs"):
        transport(fake).get("/slurm/v0.0.38/jobs")


def test_permission_denied_keeps_slurms_words(fake):
    body = {
        "meta": META_38,
        "errors": [
            {
                "description": "unable to kill JobId=3 with signal 9: Access/permission denied",
                "error_number": 2002,
                "error": "Access/permission denied",
                "source": "slurm_kill_job",
            }
        ],
    }
    fake.reply("DELETE", "/slurm/v0.0.38/job/3", status=500, body=body)
    with pytest.raises(SlurmPermissionDenied) as caught:
        transport(fake).request("DELETE", "/slurm/v0.0.38/job/3")
    assert caught.value.codes == (2002,)
    assert "Access/permission denied" in str(caught.value)
    assert caught.value.message.startswith("unable to kill JobId=3")


def test_an_unknown_job_is_not_found(fake):
    body = {
        "meta": META_38,
        "errors": [
            {
                "description": "Unable to find JobId=999999",
                "error_number": 2017,
                "error": "Invalid job id specified",
                "source": "slurm_load_job",
            }
        ],
        "jobs": [],
    }
    fake.reply("GET", "/slurm/v0.0.38/job/999999", status=500, body=body)
    with pytest.raises(SlurmNotFound) as caught:
        transport(fake).get("/slurm/v0.0.38/job/999999")
    assert "Unable to find JobId=999999" in str(caught.value)
    assert "Invalid job id specified" in str(caught.value)


def test_an_invalid_partition_is_rejected(fake):
    body = {"meta": META_38, "errors": [{"error_code": 2000, "error": "Invalid partition name specified"}]}
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=500, body=body)
    with pytest.raises(SlurmRejected) as caught:
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})
    assert caught.value.codes == (2000,)
    assert "Invalid partition name specified" in str(caught.value)


def test_an_environment_list_is_rejected_with_the_parsers_first_words(fake):
    body = {
        "meta": META_38,
        "errors": [
            {"error": "environment must be a dictionary", "error_code": -1},
            {
                "description": 'Unable to process key "environment"',
                "error_number": -1,
                "error": "Unspecified error",
                "source": "slurm_process_option_data",
            },
            {"error_code": 9001, "error": "Failure during parsing"},
        ],
    }
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=400, body=body)
    with pytest.raises(SlurmRejected) as caught:
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})
    assert caught.value.message == "environment must be a dictionary"
    assert len(caught.value.errors) == 3


def test_a_missing_script_on_http_500_is_rejected(fake):
    body = {"meta": META_38, "errors": [{"error_code": 2009, "error": "Job script not specified"}]}
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=500, body=body)
    with pytest.raises(SlurmRejected, match="Job script not specified"):
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})


def test_an_unknown_key_names_the_key(fake):
    body = {
        "meta": META_38,
        "errors": [
            {"description": 'Unknown key "no_such_field"', "source": "hsearch_r"},
            {"error_code": 9001, "error": "Failure during parsing"},
        ],
    }
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=400, body=body)
    with pytest.raises(SlurmRejected, match="no_such_field"):
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})


def test_malformed_json_answer_in_text_is_rejected(fake):
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=400, text="Unable to parse query.")
    with pytest.raises(SlurmRejected) as caught:
        transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})
    assert caught.value.message == "Unable to parse query."


def test_an_unknown_path_is_not_found_with_status_404(fake):
    with pytest.raises(SlurmNotFound) as caught:
        transport(fake).get("/slurm/v0.0.37/ping")
    assert caught.value.status == 404
    assert caught.value.message == NOT_FOUND_TEXT


def test_304_has_an_empty_body_and_no_error(fake):
    fake.reply("GET", "/slurm/v0.0.38/jobs", status=304)
    response = transport(fake).get("/slurm/v0.0.38/jobs", {"update_time": 2_000_000_000})
    assert response.not_modified
    assert response.data == {}
    assert fake.seen[0].query == {"update_time": ["2000000000"]}


def test_errors_on_http_200_are_returned_not_raised(fake):
    body = {
        "meta": META_38,
        "errors": [{"error_code": 2015, "error": "Requested partition configuration not available now"}],
        "job_id": 9,
        "step_id": "BATCH",
        "job_submit_user_msg": "",
    }
    fake.reply("POST", "/slurm/v0.0.38/job/submit", body=body)
    response = transport(fake).request("POST", "/slurm/v0.0.38/job/submit", body={})
    assert response.status == 200
    assert response.errors[0].code == 2015
    with pytest.raises(SlurmRejected):
        response.raise_for_errors()


def test_nothing_found_from_slurmdb_is_not_an_error(fake):
    body = {"meta": META_38, "errors": [{"error_number": 9003, "error": "Nothing found"}], "jobs": []}
    fake.reply("GET", "/slurmdb/v0.0.38/jobs", body=body)
    response = transport(fake).get("/slurmdb/v0.0.38/jobs")
    assert response.errors == ()
    response.raise_for_errors()


def test_slurmdb_without_jwt_is_an_auth_error_even_on_200(fake):
    error = {"error_number": 1007, "error": "Protocol authentication error", "source": "slurmdb_jobs_get"}
    fake.reply("GET", "/slurmdb/v0.0.38/jobs", body={"meta": META_38, "errors": [error], "jobs": []})
    response = transport(fake).get("/slurmdb/v0.0.38/jobs")
    with pytest.raises(SlurmAuthError, match="Protocol authentication error"):
        response.raise_for_errors()


def test_warnings_are_kept(fake):
    body = {"errors": [], "warnings": [{"description": "No job changes since update_time[1]", "source": "x"}]}
    fake.reply("GET", "/slurm/v0.0.42/jobs", body=body)
    assert transport(fake).get("/slurm/v0.0.42/jobs").warnings == ("No job changes since update_time[1]",)


def test_a_200_that_is_not_json_is_a_protocol_error(fake):
    fake.reply("GET", "/slurm/v0.0.38/ping", text="<html>portal login</html>", content_type="text/html")
    with pytest.raises(SlurmProtocolError, match="portal login"):
        transport(fake).get("/slurm/v0.0.38/ping")


def test_it_never_logs_the_token(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="clusters.slurm")
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": []})
    fake.reply(
        "GET", "/slurm/v0.0.38/jobs", Reply(reset=True), Reply(status=401, text="Authentication failure")
    )
    t = transport(fake)
    t.get("/slurm/v0.0.38/ping")
    with pytest.raises(SlurmError) as caught:
        t.get("/slurm/v0.0.38/jobs")
    assert "GET /slurm/v0.0.38/ping -> 200" in caplog.text
    assert "GET /slurm/v0.0.38/jobs -> 401" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in str(caught.value) + repr(caught.value) + repr(t)
