"""What one API submit costs the database: a ceiling on its queries and exactly one commit.

Issue 22 (bench row 1): a submit spent most of its time in ~33 queries and ~8 separate commits
(claim, completion, ledger attach, audit events, the token's last_used). The submit is one
transaction now (jobs.submit); these tests fail when a change adds a commit or lets the query
count creep back up. They run on the real Slurm and through the real /v1 route with the test
client, with real transactions (a test wrapped in one would hide every commit).

A commit is counted where PostgreSQL makes one durable: the end of an outermost atomic block, or a
write sent while no transaction is open (autocommit).
"""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from access.models import Usage
from audit.models import AuditEvent
from jobs.models import JobRecord
from tests.support.jobs_support import HELLO

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db(transaction=True)]

# Measured on 2026-12-08: 10 statements, 7 of them the request's and jobs' own (the token, the cluster,
# the person's account, BEGIN, the JobRecord, the audit row, COMMIT); the other 3 are the policy's (the
# rules' version under the transaction, the reservation and the person's groups for it; the reservation is
# written with its job id once Slurm answers, so no attach follows it). This person holds no quota: each
# quota adds the hold's row lock and its use, read together (2 statements; tests/access/test_policy_held.py
# counts reserve's decision). Was 28 statements and 8 commits, then 11 with a separate attach. Both ceilings
# are today's counts: a change that adds a statement to every submit has to say why here.
MOST_QUERIES = 10
MOST_OWN = 7
# The policy's statements: its tables, the person's groups it reads, and its nested atomic blocks.
_POLICY = re.compile(
    r'"access_|"accounts_user_groups"|^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b'
)
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


class Cost:
    """Queries (CaptureQueriesContext) and commits of the default connection while it is entered."""

    def __init__(self) -> None:
        self.queries = CaptureQueriesContext(connection)
        self.commits = 0

    def __enter__(self) -> Cost:
        self.queries.__enter__()
        self._wrapper = connection.execute_wrapper(self._autocommitted)
        self._wrapper.__enter__()
        self._commit = connection.commit
        connection.commit = self._counted_commit
        return self

    def __exit__(self, *exc) -> None:
        del connection.commit  # the class's method again
        self._wrapper.__exit__(*exc)
        self.queries.__exit__(*exc)

    def _counted_commit(self) -> None:
        self.commits += 1
        self._commit()

    def _autocommitted(self, execute, sql, params, many, context):
        if not connection.in_atomic_block and _WRITE.match(sql):
            self.commits += 1
        return execute(sql, params, many, context)

    def listing(self) -> str:
        return "\n".join(f"{i + 1:2}. {q['sql'][:160]}" for i, q in enumerate(self.queries.captured_queries))


def _submit(client, person, path: str, **headers):
    return client.post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": path, "time_limit": 2, "options": {"hold": True}}),
        content_type="application/json",
        **person.auth,
        **headers,
    )


def test_a_submit_is_one_commit_and_a_handful_of_queries(client, ada):
    path = ada.script("cost.sh", HELLO)
    # The first submit fills what a running console already has: the partitions, the token's last_used.
    first = _submit(client, ada, path)
    assert first.status_code == 201, first.content

    with Cost() as cost:
        r = _submit(client, ada, path)

    assert r.status_code == 201, r.content
    assert cost.commits == 1, cost.listing()
    assert len(cost.queries) <= MOST_QUERIES, f"{len(cost.queries)} queries:\n{cost.listing()}"
    own = [q for q in cost.queries.captured_queries if not _POLICY.search(q["sql"])]
    assert len(own) <= MOST_OWN, f"{len(own)} of jobs' own:\n{cost.listing()}"
    job_id = r.json()["job"]["id"]
    record = JobRecord.objects.get(cluster__slug="demo", slurm_job_id=job_id)
    assert (record.state, record.ledger) == ("PENDING", JobRecord.Ledger.RESERVED)
    assert Usage.objects.get(pk=record.reservation_id).job_id == job_id
    # One audit row says the submit happened, with what was decided.
    events = AuditEvent.objects.filter(action="job.submit", target=f"job {job_id}")
    assert [(e.outcome, e.details["decision"]) for e in events] == [("allowed", "ok")]


def test_an_idempotent_replay_writes_nothing(client, ada):
    path = ada.script("again.sh", HELLO)
    first = _submit(client, ada, path, HTTP_IDEMPOTENCY_KEY="cost-replay-1")
    assert first.status_code == 201, first.content

    with Cost() as cost:
        again = _submit(client, ada, path, HTTP_IDEMPOTENCY_KEY="cost-replay-1")

    assert again.status_code == 200, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    assert cost.commits == 0, cost.listing()
