"""Fuzzing /v1 from its own OpenAPI document: schemathesis through the console's WSGI handler.

Every operation gets generated requests (valid and not) with a real API token; each answer must be
no 5xx and match the document (status code, content type, headers, body schema). The cluster is
offline and provisioning stops before Linux, so a request the policy lets through ends at the
documented 502; nothing is queued and no user is made.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, Phase, given
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from access.models import Grant, Quota
from accounts import api_tokens
from accounts.models import PosixAccount, User
from accounts.provisioning import ProvisioningError
from clusterra_site.api import document
from clusters.models import Cluster
from jobs.models import JobRecord

pytestmark = pytest.mark.django_db

OFFLINE_CODES = {"cluster_unavailable", "account_unreachable"}
# At least 1,000 requests in all, within a time bound: examples per operation, and seconds overall.
EXAMPLES_PER_OPERATION = 120
TIME_BUDGET_SECONDS = 100
# No 5xx is checked below rather than by schemathesis' not_a_server_error, for one exception: the
# documented 502 of a cluster that did not answer (the test's cluster is offline on purpose).
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_target(db, tmp_path, monkeypatch, settings) -> Iterator[dict[str, Any]]:
    # One token sends a thousand requests in under two minutes: the rate limit (tested on its own in
    # test_api_rate_limit.py) would answer most of them 429 and leave the routes behind it unfuzzed.
    settings.CLUSTERRA_API_RATE = "100000/min"
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    cluster = Cluster.objects.create(
        slug="demo", name="Demo", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )

    def no_provisioning(person: Any, cluster: Cluster, **kwargs: Any) -> Any:
        raise ProvisioningError(f"{cluster.name} did not answer (stopped by the test).", code="unreachable")

    monkeypatch.setattr("accounts.provisioning.ready_account", no_provisioning)
    person = User.objects.create_user("fuzz", "fuzz@example.org", None)
    PosixAccount.objects.create(user=person, username="ctfuzz", uid=251000, gid=251000)
    Grant.objects.create(cluster=cluster, user=person, all_partitions=True, terminal=True)
    Quota.objects.create(cluster=cluster, user=person, gpu_hours=10, cpu_hours=100, max_walltime=600)
    for n, state in enumerate(("RUNNING", "COMPLETED", "PENDING")):
        JobRecord.objects.create(
            cluster=cluster,
            person=person,
            posix_user="ctfuzz",
            slurm_job_id=n + 1,
            name=f"job-{n}",
            partition="debug",
            state=state,
            stdout_path=f"/home/ctfuzz/slurm-{n + 1}.out",
            stderr_path=f"/home/ctfuzz/slurm-{n + 1}.out",
        )
    _, token = api_tokens.issue(person, name="fuzz")
    # Django's own test client keeps the test's database connection open between requests; a WSGI
    # call from outside would close it at the end of each request (and with it the test transaction).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"token": token}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_every_operation_answers_as_documented(fuzz_target):
    # In process, through Django's WSGI handler (the whole middleware stack, no socket): a live
    # server would spend most of the time budget on the loopback round trips, not on the console.
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())
    headers = {"Authorization": f"Bearer {fuzz_target['token']}"}
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    sent: dict[str, int] = {}
    failures: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        sent[operation.label] = 0
        fuzz_one(operation, headers, deadline, sent, failures)

    # schemathesis leaves out the operation that serves the document it was loaded from; it is
    # checked here instead: it answers without a token and is a valid OpenAPI 3.1 document.
    own = Client().get("/v1/openapi.json")
    sent["GET /openapi.json"] = 1
    assert own.status_code == 200
    assert own["Content-Type"] == "application/json"
    validate(own.json())

    total = sum(sent.values())
    print(f"requests fuzzed: {total} over {len(sent)} operations ({sent})")
    assert not failures, f"{len(failures)} answers broke the document:\n" + "\n".join(failures[:20])
    documented = {
        f"{m.upper()} {path}"
        for path, item in document()["paths"].items()
        for m in item
        if m in ("get", "post", "put", "patch", "delete")
    }
    assert set(sent) == documented
    assert total >= 1000, f"only {total} requests within {TIME_BUDGET_SECONDS} s"


def fuzz_one(
    operation: Any,
    headers: dict[str, str],
    deadline: float,
    sent: dict[str, int],
    failures: list[str],
) -> None:
    """Generated requests for one operation, each answer checked against the document."""
    label = operation.label

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def fuzz(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        # Random slugs and ids mostly find nothing (404); two requests in three go to the test's
        # cluster and jobs instead, so the policy, the job lookups and the 502 paths are fuzzed too.
        params = case.path_parameters or {}
        if "id" in params and sent[label] % 3:
            params["id"] = "demo"
            if "job_id" in params:
                params["job_id"] = 1 + sent[label] % 4  # 4: no such job
        response = case.call(headers=headers)
        sent[label] += 1
        if response.status_code >= 500 and not offline_cluster(response):
            failures.append(
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (
            AssertionError,
            BaseExceptionGroup,
        ) as e:  # schemathesis' FailureGroup is a BaseExceptionGroup
            failures.append(f"{case.method} {case.formatted_path}: {type(e).__name__}: {str(e)[:600]}")

    fuzz()


def offline_cluster(response: Any) -> bool:
    """The documented 502: the cluster (offline in this test) did not answer, in the API's error shape."""
    if response.status_code != 502:
        return False
    try:
        return response.json()["error"]["code"] in OFFLINE_CODES
    except (ValueError, KeyError, TypeError):
        return False
