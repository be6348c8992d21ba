"""Session Manager preferences are honoured: a shorter idle timeout there becomes the terminal's idle limit.

GetDocument is answered by botocore's Stubber with the shape AWS documents for SSM-SessionManagerRunShell.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from clusters.models import Cluster
from terminal import transports
from terminal.transports.ssm import SessionManager
from terminal.transports.ssm.session import Preferences
from tests.support.ssm_agent import REGION, TARGET

DOCUMENT = {"Name": "SSM-SessionManagerRunShell", "DocumentFormat": "JSON"}


def stubbed(answer: dict | None = None, *, error: str = "") -> tuple[SessionManager, Stubber]:
    client = boto3.client("ssm", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    if error:
        stubber.add_client_error("get_document", service_error_code=error, expected_params=DOCUMENT)
    else:
        content = {
            "schemaVersion": "1.0",
            "description": "Document to hold regional settings for Session Manager",
            "sessionType": "Standard_Stream",
            "inputs": answer,
        }
        stubber.add_response(
            "get_document",
            {"Name": DOCUMENT["Name"], "Content": json.dumps(content), "DocumentFormat": "JSON"},
            expected_params=DOCUMENT,
        )
    stubber.activate()
    return SessionManager(client), stubber


@pytest.fixture
def cluster():
    transports.forget()
    yield Cluster(
        slug="aws",
        name="AWS",
        transport="ssm",
        ssm_instance_id=TARGET,
        aws_region=REGION,
        terminal_idle_timeout=20,
    )
    transports.forget()


def test_the_accounts_preferences_are_read():
    manager, stubber = stubbed(
        {
            "s3BucketName": "",
            "cloudWatchLogGroupName": "/aws/ssm/sessions",
            "kmsKeyId": "alias/session",
            "idleSessionTimeout": "15",
            "maxSessionDuration": "120",
            "runAsEnabled": False,
        }
    )
    assert manager.preferences() == Preferences(
        idle_minutes=15, max_minutes=120, kms_key_id="alias/session", log_group="/aws/ssm/sessions"
    )
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("inputs", "error", "expected"),
    [
        ({"idleSessionTimeout": "5"}, "", 5),  # theirs is shorter: theirs
        ({"idleSessionTimeout": "60"}, "", 20),  # the console's is shorter: the console's
        ({}, "", 20),  # saved without an idle timeout: Session Manager's default (20)
        (None, "InvalidDocument", 20),  # never saved: the default again
        (None, "AccessDeniedException", 20),  # not readable: the console's stands
    ],
)
def test_the_idle_limit_is_the_shorter_of_the_two(cluster, monkeypatch, inputs, error, expected):
    manager, stubber = stubbed(inputs, error=error)
    monkeypatch.setattr(transports, "ssm_manager", lambda _: manager)
    assert transports.idle_minutes(cluster) == expected
    # Read once, then kept for a while: a second terminal asks AWS nothing.
    assert transports.idle_minutes(cluster) == expected
    stubber.assert_no_pending_responses()


def test_a_shorter_default_is_not_forced_on_a_cluster_with_a_shorter_limit(cluster, monkeypatch):
    cluster.terminal_idle_timeout = 10
    manager, _ = stubbed(None, error="InvalidDocument")
    monkeypatch.setattr(transports, "ssm_manager", lambda _: manager)
    assert transports.idle_minutes(cluster) == 10


def test_a_local_cluster_asks_no_one():
    local = Cluster(slug="here", name="Here", transport="local", terminal_idle_timeout=7)
    assert transports.idle_minutes(local) == 7
