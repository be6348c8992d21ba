"""SlurmClient end to end against a loopback slurmrestd double: version detection and each operation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from clusters.slurm import (
    SUPPORTED_VERSIONS,
    ClusterInfo,
    Controller,
    JobSpec,
    SlurmAuthError,
    SlurmClient,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmProtocolError,
    SlurmRejected,
    cached_api_version,
    forget_api_version,
)
from clusters.slurm.http import close_sessions
from tests.support.fake_slurmrestd import META_38, TOKEN, FakeSlurmrestd, Reply

META_42 = {
    "plugin": {
        "type": "openapi/slurmctld",
        "name": "Slurm OpenAPI slurmctld",
        "data_parser": "data_parser/v0.0.42",
    },
    "client": {"source": "[127.0.0.1]:5000", "user": "alice", "group": "alice"},
    "slurm": {
        "version": {"major": "24", "micro": "6", "minor": "11"},
        "release": "24.11.6",
        "cluster": "demo",
    },
}
JOB_38 = {
    "job_id": 38,
    "name": "example",
    "user_name": "alice",
    "user_id": 1001,
    "group_name": "alice",
    "account": "demo",
    "partition": "debug",
    "job_state": "RUNNING",
    "state_reason": "None",
    "exit_code": 0,
    "submit_time": 1795321592,
    "start_time": 1795321593,
    "end_time": 1795321893,
    "time_limit": 5,
    "current_working_directory": "/home/alice",
    "standard_output": "/home/alice/example-%j.out",
    "standard_error": "",
    "nodes": "localhost",
    "node_count": 1,
    "cpus": 1,
    "memory_per_cpu": 500,
    "tres_req_str": "cpu=1,mem=500M,node=1,billing=1",
    "batch_host": "localhost",
    "qos": "normal",
    "array_job_id": 0,
    "array_task_id": None,
}
PARTITIONS_38 = [
    {
        "name": "cpu",
        "nodes": "localhost",
        "state": "UP",
        "flags": ["default"],
        "max_time_limit": -1,
        "maximum_nodes_per_job": -1,
        "default_time_limit": None,
        "total_cpus": 2,
        "total_nodes": 1,
        "tres": "cpu=2,mem=22899M,node=1,billing=2",
    },
    {
        "name": "gpu",
        "nodes": "localhost",
        "state": "UP",
        "flags": [],
        "max_time_limit": None,
        "total_cpus": 2,
        "total_nodes": 1,
        "tres": "cpu=2,mem=22899M,node=1,billing=2",
    },
    {
        "name": "debug",
        "nodes": "localhost",
        "state": "UP",
        "flags": [],
        "max_time_limit": 30,
        "default_time_limit": 10,
        "total_cpus": 2,
        "total_nodes": 1,
        "tres": "cpu=2,mem=22899M,node=1,billing=2",
        "qos": "",
        "priority_tier": 1,
    },
]
NODE_38 = {
    "name": "localhost",
    "state": "idle",
    "state_flags": [],
    "cpus": 2,
    "alloc_cpus": 0,
    "idle_cpus": 2,
    "real_memory": 22899,
    "alloc_memory": 0,
    "free_memory": 22919,
    "gres": "gpu:2",
    "gres_used": "gpu:0",
    "partitions": ["cpu", "gpu", "debug"],
    "tres": "cpu=2,mem=22899M,billing=2",
    "slurmd_version": "22.05.8",
    "reason": "",
}


@pytest.fixture
def fake() -> Iterator[FakeSlurmrestd]:
    server = FakeSlurmrestd()
    yield server
    close_sessions()
    server.close()


@pytest.fixture(autouse=True)
def _forget_versions():
    forget_api_version()
    yield
    forget_api_version()


def client(fake: FakeSlurmrestd, version: str | None = "v0.0.38", user: str | None = "alice") -> SlurmClient:
    return SlurmClient(fake.url, user_name=user, token=TOKEN, api_version=version)


def openapi_with(*versions: str) -> dict:
    paths = {}
    for v in versions:
        paths[f"/slurm/{v}/ping"] = {"get": {}}
        paths[f"/slurm/{v}/jobs"] = {"get": {}}
        paths[f"/slurmdb/{v}/jobs"] = {"get": {}}
    return {"openapi": "3.0.3", "info": {"version": "x"}, "paths": paths}


# --- detection --------------------------------------------------------------------------------


def test_it_picks_the_highest_version_the_document_offers(fake):
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.36", "v0.0.37", "v0.0.38"))
    assert client(fake, None).api_version == "v0.0.38"
    forget_api_version()
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.40", "v0.0.41", "v0.0.42", "v0.0.43"))
    assert client(fake, None).api_version == "v0.0.43"


def test_detection_sends_the_credentials(fake):
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.38"))
    assert client(fake, None).api_version == "v0.0.38"
    headers = fake.seen[0].headers
    assert headers["X-SLURM-USER-TOKEN"] == TOKEN
    assert headers["X-SLURM-USER-NAME"] == "alice"


def test_it_probes_pings_when_there_is_no_document(fake):
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": []})
    assert client(fake, None).api_version == "v0.0.38"
    probed = [s.path for s in fake.seen]
    assert probed == ["/openapi/v3"] + [f"/slurm/{v}/ping" for v in SUPPORTED_VERSIONS]


def test_a_ping_refused_by_slurmctld_still_proves_the_version_is_served(fake):
    expired = {
        "errors": [{"error_number": -1, "error": "Unspecified error", "description": "request failed"}]
    }
    fake.reply("GET", "/slurm/v0.0.41/ping", status=500, body=expired)
    assert client(fake, None).api_version == "v0.0.41"


def test_it_caches_the_version_per_url_until_forgotten(fake):
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.38"))
    assert client(fake, None).api_version == "v0.0.38"
    assert client(fake, None, user="bob").api_version == "v0.0.38"
    assert len(fake.requests_to("/openapi/v3")) == 1
    assert cached_api_version(fake.url + "/") == "v0.0.38"
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.40", "v0.0.41"))
    c = client(fake, None)
    c.forget_api_version()
    assert c.api_version == "v0.0.41"
    assert len(fake.requests_to("/openapi/v3")) == 2


def test_concurrent_clients_detect_once(fake):
    fake.reply("GET", "/openapi/v3", Reply(body=openapi_with("v0.0.38"), delay=0.2))
    found = []
    threads = [
        threading.Thread(target=lambda: found.append(client(fake, None).api_version)) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == ["v0.0.38"] * 8
    assert len(fake.requests_to("/openapi/v3")) == 1


def test_detection_without_headers_is_an_auth_error(fake):
    fake.reply("GET", "/openapi/v3", status=401, text="Authentication failure")
    with pytest.raises(SlurmAuthError):
        client(fake, None).info()
    assert cached_api_version(fake.url) is None


def test_a_server_with_only_old_versions_says_so(fake):
    fake.reply("GET", "/openapi/v3", body=openapi_with("v0.0.36", "v0.0.37"))
    with pytest.raises(SlurmProtocolError, match=r"offers v0\.0\.36, v0\.0\.37"):
        client(fake, None).info()


def test_an_explicit_version_skips_detection(fake):
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": []})
    client(fake, "v0.0.38").info()
    assert [s.path for s in fake.seen] == ["/slurm/v0.0.38/ping"]


def test_an_unknown_explicit_version_is_refused():
    with pytest.raises(ValueError, match=r"v0\.0\.39"):
        SlurmClient("http://127.0.0.1:1", user_name="a", token="t", api_version="v0.0.39")


def test_the_client_never_shows_its_token(fake):
    c = client(fake)
    assert TOKEN not in repr(c) + repr(c.adapter) + repr(c.adapter.transport)


# --- v0.0.38 operations, with the shapes 22.05.8 answered ----------------------------------------


def test_info_reads_ping_and_release(fake):
    pings = [{"hostname": "vm", "ping": "UP", "status": 0, "mode": "primary"}]
    fake.reply("GET", "/slurm/v0.0.38/ping", body={"meta": META_38, "errors": [], "pings": pings})
    info = client(fake).info()
    assert info == ClusterInfo("v0.0.38", "22.05.8", (Controller("vm", "UP", True),), None)
    assert info.is_up


def test_partitions_take_their_gpus_from_the_nodes_when_tres_omits_them(fake):
    fake.reply(
        "GET", "/slurm/v0.0.38/partitions", body={"meta": META_38, "errors": [], "partitions": PARTITIONS_38}
    )
    fake.reply("GET", "/slurm/v0.0.38/nodes", body={"meta": META_38, "errors": [], "nodes": [NODE_38]})
    cpu, gpu, debug = client(fake).partitions()
    assert (cpu.name, cpu.is_default, cpu.max_time_limit, cpu.state) == ("cpu", True, None, "UP")
    assert (gpu.is_default, gpu.gpus) == (False, 2)
    assert (debug.max_time_limit, debug.default_time_limit, debug.total_cpus, debug.nodes) == (
        30,
        10,
        2,
        "localhost",
    )


def test_nodes_are_upper_cased_and_count_gpus(fake):
    node = {
        **NODE_38,
        "state": "mixed",
        "state_flags": ["DRAIN"],
        "gres_used": "gpu:1(IDX:0)",
        "alloc_cpus": 1,
    }
    fake.reply("GET", "/slurm/v0.0.38/nodes", body={"meta": META_38, "errors": [], "nodes": [node]})
    (n,) = client(fake).nodes()
    assert (n.name, n.state, n.state_flags) == ("localhost", "MIXED", ("DRAIN",))
    assert (n.cpus, n.alloc_cpus, n.idle_cpus, n.real_memory) == (2, 1, 2, 22899)
    assert (n.gpus, n.gpus_used, n.partitions) == (2, 1, ("cpu", "gpu", "debug"))


def test_jobs_map_every_field(fake):
    fake.reply("GET", "/slurm/v0.0.38/jobs", body={"meta": META_38, "errors": [], "jobs": [JOB_38]})
    listing = client(fake).jobs()
    assert not listing.not_modified
    (job,) = listing.jobs
    assert (job.job_id, job.name, job.user_name, job.user_id, job.account) == (
        38,
        "example",
        "alice",
        1001,
        "demo",
    )
    assert (job.state, job.state_flags, job.state_reason) == ("RUNNING", (), "None")
    assert (job.exit_code, job.exit_signal) == (None, None)
    assert job.submit_time == datetime(2026, 11, 22, 4, 26, 32, tzinfo=UTC)
    assert job.start_time.timestamp() == 1795321593
    assert (job.time_limit, job.nodes, job.node_count, job.cpus, job.gpus) == (5, "localhost", 1, 1, 0)
    assert job.memory_mb == 500
    assert (job.working_directory, job.standard_output) == ("/home/alice", "/home/alice/example-%j.out")
    assert (job.array_job_id, job.array_task_id, job.batch_host) == (None, None, "localhost")
    assert job.tres_requested == "cpu=1,mem=500M,node=1,billing=1"


@pytest.mark.parametrize(
    ("state", "raw", "reason", "expected"),
    [
        ("COMPLETED", 0, "None", (0, None)),
        ("FAILED", 768, "NonZeroExitCode", (3, None)),
        ("CANCELLED", 15, "None", (None, 15)),
        ("CANCELLED", 9, "None", (None, 9)),
        ("FAILED", 4021, "JobLaunchFailure", (None, None)),
        ("PENDING", 0, "Priority", (None, None)),
    ],
)
def test_v0038_exit_codes_are_decoded_from_the_wait_status(fake, state, raw, reason, expected):
    job = {**JOB_38, "job_state": state, "exit_code": raw, "state_reason": reason}
    fake.reply("GET", "/slurm/v0.0.38/job/38", body={"meta": META_38, "errors": [], "jobs": [job]})
    got = client(fake).job(38)
    assert (got.exit_code, got.exit_signal) == expected
    assert got.state_reason == reason


def test_a_job_cancelled_while_pending_has_no_exit_status(fake):
    # What 22.05.8 answers for it: exit_code 0, but no node and no batch host.
    job = {
        **JOB_38,
        "job_state": "CANCELLED",
        "exit_code": 0,
        "nodes": "",
        "batch_host": "",
        "tres_alloc_str": "",
    }
    fake.reply("GET", "/slurm/v0.0.38/job/38", body={"meta": META_38, "errors": [], "jobs": [job]})
    got = client(fake).job(38)
    assert (got.state, got.exit_code, got.exit_signal) == ("CANCELLED", None, None)


def test_an_unchanged_queue_is_a_304(fake):
    fake.reply("GET", "/slurm/v0.0.38/jobs", status=304)
    listing = client(fake).jobs(update_time=2_000_000_000)
    assert listing.not_modified
    assert listing.jobs == ()
    assert listing.last_update == 2_000_000_000


def test_a_forgotten_job_is_not_found(fake):
    error = {
        "description": "Unable to find JobId=999999",
        "error_number": 2017,
        "error": "Invalid job id specified",
        "source": "slurm_load_job",
    }
    fake.reply("GET", "/slurm/v0.0.38/job/999999", status=500, body={"errors": [error], "jobs": []})
    with pytest.raises(SlurmNotFound, match="Unable to find JobId=999999"):
        client(fake).job(999999)


def test_an_empty_job_answer_is_not_found(fake):
    fake.reply("GET", "/slurm/v0.0.38/job/5", body={"meta": META_38, "errors": [], "jobs": []})
    with pytest.raises(SlurmNotFound):
        client(fake).job(5)


def test_a_job_id_is_never_spliced_into_the_path_unchecked(fake):
    with pytest.raises(ValueError, match="not a Slurm job id"):
        client(fake).job("1/../../openapi/v3")
    assert fake.seen == []


def test_submit_sends_the_v0038_body(fake):
    fake.reply(
        "POST",
        "/slurm/v0.0.38/job/submit",
        body={"meta": META_38, "errors": [], "job_id": 38, "step_id": "BATCH", "job_submit_user_msg": ""},
    )
    spec = JobSpec(
        script="#!/bin/bash\nid\n",
        working_directory="/home/alice",
        environment={"FOO": "bar"},
        name="t",
        partition="gpu",
        nodes=2,
        gpus_per_node="2",
        gpus="a100:4",
        get_user_environment=True,
    )
    result = client(fake).submit(spec)
    assert (result.job_id, result.warnings, result.user_message) == (38, (), "")
    body = fake.seen[0].json()
    assert body["script"] == "#!/bin/bash\nid\n"
    assert body["job"]["environment"] == {"FOO": "bar", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    # A string, as sbatch writes it: 22.05 takes the document's [min, max] and then ignores it.
    assert body["job"]["nodes"] == "2"
    # sbatch's own words: 22.05 reads these keys with its sbatch option parser.
    assert (body["job"]["gpus_per_node"], body["job"]["gpus"]) == ("2", "a100:4")
    assert body["job"]["get_user_environment"] == "1"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (JobSpec("#!/bin/sh\n", "/tmp", signal="B:USR1@60"), "cannot send --signal=B:USR1@60"),
        (JobSpec("#!/bin/sh\n", "/tmp", exclusive="topo"), "--exclusive=topo needs Slurm 24.05"),
        (JobSpec("#!/bin/sh\n", "/tmp", tasks_per_gpu=2), "--ntasks-per-gpu needs a GPU count"),
    ],
)
def test_what_v0038_cannot_carry_is_refused_before_it_is_sent(fake, spec, words):
    with pytest.raises(ValueError, match=words):
        client(fake).submit(spec)
    assert fake.seen == []


def test_the_console_tag_takes_the_comment_only_when_the_person_left_it_free(fake):
    fake.reply("POST", "/slurm/v0.0.38/job/submit", body={"meta": META_38, "errors": [], "job_id": 1})
    c = client(fake)
    c.submit(JobSpec("#!/bin/sh\n", "/tmp", tag="clusterra:1"))
    c.submit(JobSpec("#!/bin/sh\n", "/tmp", tag="clusterra:2", comment="mine"))
    assert [seen.json()["job"]["comment"] for seen in fake.seen] == ["clusterra:1", "mine"]


def test_a_time_limit_warning_comes_back_with_the_job_id(fake):
    body = {
        "meta": META_38,
        "errors": [{"error_code": 2015, "error": "Requested partition configuration not available now"}],
        "job_id": 9,
        "step_id": "BATCH",
        "job_submit_user_msg": "",
    }
    fake.reply("POST", "/slurm/v0.0.38/job/submit", body=body)
    result = client(fake).submit(JobSpec("#!/bin/sh\n", "/tmp", time_limit=600, partition="debug"))
    assert result.job_id == 9
    assert result.warnings == ("Requested partition configuration not available now (error 2015)",)


def test_an_invalid_partition_is_refused(fake):
    body = {"meta": META_38, "errors": [{"error_code": 2000, "error": "Invalid partition name specified"}]}
    fake.reply("POST", "/slurm/v0.0.38/job/submit", status=500, body=body)
    with pytest.raises(SlurmRejected, match="Invalid partition name specified"):
        client(fake).submit(JobSpec("#!/bin/sh\n", "/tmp", partition="nope"))


def test_cancel_sends_the_signal_and_accepts_a_second_cancel(fake):
    fake.reply("DELETE", "/slurm/v0.0.38/job/38", body={"meta": META_38, "errors": []})
    c = client(fake)
    c.cancel(38)
    c.cancel("38", signal="TERM")
    assert fake.seen[0].query == {}
    assert fake.seen[1].query == {"signal": ["TERM"]}


def test_cancelling_a_finished_job_is_not_an_error(fake):
    done = {
        "error_number": 2021,
        "error": "Job/step already completing or completed",
        "source": "slurm_kill_job",
    }
    fake.reply("DELETE", "/slurm/v0.0.38/job/38", status=500, body={"errors": [done]})
    client(fake).cancel(38)


def test_cancelling_someone_elses_job_is_denied(fake):
    denied = {
        "description": "unable to kill JobId=3 with signal 9: Access/permission denied",
        "error_number": 2002,
        "error": "Access/permission denied",
        "source": "slurm_kill_job",
    }
    fake.reply("DELETE", "/slurm/v0.0.38/job/3", status=500, body={"meta": META_38, "errors": [denied]})
    with pytest.raises(SlurmPermissionDenied, match="Access/permission denied"):
        client(fake, user="bob").cancel(3)


# --- the v0.0.40+ family's differences -------------------------------------------------------------


def nv(n: int) -> dict:
    return {"set": True, "infinite": False, "number": n}


def test_v0042_sends_token_and_name_and_the_job_in_one_object(fake):
    fake.reply("POST", "/slurm/v0.0.42/job/submit", body={"meta": META_42, "errors": [], "job_id": 7})
    spec = JobSpec(
        "#!/bin/sh\n",
        "/tmp",
        time_limit=5,
        nodes=1,
        gpus_per_node="1",
        get_user_environment=True,
        memory_per_node=100,
        comment="mine",
        tag="clusterra:7",
        exclusive="exclusive",
        signal="B:USR1@90",
        begin="now+60",
        mail_type="ALL",
    )
    assert client(fake, "v0.0.42").submit(spec).job_id == 7
    seen = fake.seen[0]
    body = seen.json()
    assert set(body) == {"job"}
    assert body["job"]["script"] == "#!/bin/sh\n"
    assert body["job"]["environment"] == ["PATH=/usr/local/bin:/usr/bin:/bin", "SLURM_GET_USER_ENV=1"]
    assert body["job"]["time_limit"] == nv(5)
    assert body["job"]["memory_per_node"] == nv(100)
    assert (body["job"]["nodes"], body["job"]["tres_per_node"]) == ("1", "gres/gpu:1")
    # The person's comment stays theirs; the console's tag rides in `extra`.
    assert (body["job"]["comment"], body["job"]["extra"]) == ("mine", "clusterra:7")
    assert body["job"]["shared"] == ["none"]
    assert (body["job"]["kill_warning_signal"], body["job"]["kill_warning_delay"]) == ("USR1", nv(90))
    assert body["job"]["kill_warning_flags"] == ["BATCH_JOB"]
    assert abs(body["job"]["begin_time"]["number"] - time.time() - 60) < 5
    assert body["job"]["mail_type"] == ["BEGIN", "END", "FAIL", "REQUEUE", "STAGE_OUT", "INVALID_DEPENDENCY"]
    assert seen.headers["X-SLURM-USER-NAME"] == "alice"


def test_v0045_without_a_user_name_sends_only_the_token(fake):
    fake.reply("GET", "/slurm/v0.0.45/ping", body={"meta": META_42, "errors": [], "pings": []})
    client(fake, "v0.0.45", user=None).info()
    assert "X-SLURM-USER-NAME" not in fake.seen[0].headers
    assert fake.seen[0].headers["X-SLURM-USER-TOKEN"] == TOKEN


def test_v0040_reads_the_job_id_from_the_deprecated_result(fake):
    body = {
        "result": {
            "job_id": 12,
            "step_id": "batch",
            "error_code": 0,
            "error": "",
            "job_submit_user_msg": "hi",
        },
        "meta": META_42,
        "errors": [],
        "warnings": [],
    }
    fake.reply("POST", "/slurm/v0.0.40/job/submit", body=body)
    result = client(fake, "v0.0.40").submit(JobSpec("#!/bin/sh\n", "/tmp"))
    assert (result.job_id, result.user_message) == (12, "hi")


def test_v0042_an_unchanged_queue_is_an_empty_200_with_a_warning(fake):
    body = {
        "jobs": [],
        "last_backfill": nv(1_700_000_000),
        "last_update": nv(1_700_000_100),
        "meta": META_42,
        "errors": [],
        "warnings": [{"description": "No job changes since update_time[1700000200]", "source": "x"}],
    }
    fake.reply("GET", "/slurm/v0.0.42/jobs", body=body)
    listing = client(fake, "v0.0.42").jobs(update_time=1_700_000_200)
    assert (listing.not_modified, listing.last_update) == (True, 1_700_000_100)
    assert fake.seen[0].query == {"update_time": ["1700000200"]}


def test_v0042_jobs_read_lists_and_verbose_exit_codes(fake):
    job = {
        "job_id": 4,
        "nodes": "n[1-2]",
        "job_state": ["COMPLETED", "COMPLETING"],
        "exit_code": {
            "status": ["ERROR"],
            "return_code": nv(3),
            "signal": {"id": {"set": False}, "name": ""},
        },
        "submit_time": nv(1_700_000_000),
        "start_time": {"set": False, "infinite": False, "number": 0},
        "time_limit": {"set": False, "infinite": True, "number": 0},
        "node_count": nv(2),
        "cpus": nv(8),
        "memory_per_node": nv(4096),
        "tres_alloc_str": "cpu=8,mem=8G,node=2,billing=8,gres/gpu=4",
        "array_job_id": nv(3),
        "array_task_id": nv(1),
    }
    body = {"jobs": [job], "last_backfill": nv(1), "last_update": nv(2), "meta": META_42, "errors": []}
    fake.reply("GET", "/slurm/v0.0.42/jobs", body=body)
    listing = client(fake, "v0.0.42").jobs()
    (got,) = listing.jobs
    assert (got.state, got.state_flags, got.exit_code, got.exit_signal) == (
        "COMPLETED",
        ("COMPLETING",),
        3,
        None,
    )
    assert got.submit_time == datetime.fromtimestamp(1_700_000_000, UTC)
    assert (got.start_time, got.time_limit) == (None, None)
    assert (got.node_count, got.cpus, got.memory_mb, got.gpus) == (2, 8, 4096, 4)
    assert (got.array_job_id, got.array_task_id) == (3, 1)
    assert listing.last_update == 2


def test_v0042_a_signalled_job_has_no_exit_status(fake):
    job = {
        "job_id": 4,
        "nodes": "n1",
        "job_state": ["CANCELLED"],
        "exit_code": {
            "status": ["SIGNALED"],
            "return_code": nv(0),
            "signal": {"id": nv(15), "name": "SIGTERM"},
        },
    }
    fake.reply("GET", "/slurm/v0.0.42/job/4", body={"jobs": [job], "meta": META_42, "errors": []})
    got = client(fake, "v0.0.42").job(4)
    assert (got.exit_code, got.exit_signal) == (None, 15)


@pytest.mark.parametrize(("code", "raises"), [(0, None), (2021, None), (2002, SlurmPermissionDenied)])
def test_v0042_cancel_reads_the_status_list(fake, code, raises):
    status = [
        {
            "error": {
                "string": "Access/permission denied" if code else "",
                "code": code,
                "message": "kill failed",
            },
            "step_id": "4",
            "job_id": nv(4),
            "federation": {"sibling": ""},
        }
    ]
    fake.reply("DELETE", "/slurm/v0.0.42/job/4", body={"status": status, "meta": META_42, "errors": []})
    if raises:
        with pytest.raises(raises, match="Access/permission denied"):
            client(fake, "v0.0.42").cancel(4)
    else:
        client(fake, "v0.0.42").cancel(4)


def test_v0042_ping_reads_responding_and_primary(fake):
    pings = [
        {
            "hostname": "ctl1",
            "pinged": "UP",
            "responding": True,
            "primary": True,
            "latency": 10,
            "mode": "primary",
        },
        {
            "hostname": "ctl2",
            "pinged": "DOWN",
            "responding": False,
            "primary": False,
            "latency": 0,
            "mode": "backup",
        },
    ]
    fake.reply("GET", "/slurm/v0.0.42/ping", body={"pings": pings, "meta": META_42, "errors": []})
    info = client(fake, "v0.0.42").info()
    assert info.controllers == (Controller("ctl1", "UP", True), Controller("ctl2", "DOWN", False))
    assert (info.slurm_release, info.cluster_name, info.api_version) == ("24.11.6", "demo", "v0.0.42")


def test_v0040_partitions_read_the_nested_shape(fake):
    partition = {
        "name": "gpu",
        "partition": {"state": ["UP"]},
        "nodes": {"configured": "gpu[01-04]", "total": 4},
        "cpus": {"total": 256},
        "maximums": {"time": {"set": False, "infinite": True, "number": 0}, "nodes": nv(2)},
        "defaults": {"time": nv(60)},
        "tres": {"configured": "cpu=256,mem=1T,node=4,billing=256,gres/gpu=16"},
    }
    fake.reply(
        "GET", "/slurm/v0.0.40/partitions", body={"partitions": [partition], "meta": META_42, "errors": []}
    )
    (p,) = client(fake, "v0.0.40").partitions()
    assert (p.name, p.state, p.is_default, p.nodes, p.total_nodes, p.total_cpus) == (
        "gpu",
        "UP",
        None,
        "gpu[01-04]",
        4,
        256,
    )
    assert (p.max_time_limit, p.default_time_limit, p.max_nodes_per_job, p.gpus) == (None, 60, 2, 16)
