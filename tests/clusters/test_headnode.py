"""clusters.headnode: one fixed command, values as arguments; local for real, SSM against a stubbed AWS."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import boto3
import pytest
from botocore.stub import Stubber

from clusters import headnode
from clusters.models import Cluster

INSTANCE = "i-0123456789abcdef0"
REGION = "eu-west-1"
COMMAND_ID = "11111111-2222-3333-4444-555555555555"
# Values a careless implementation would let a shell interpret.
NASTY = ["a b", "$(id -u)", "`id`", "'quoted'", '"dq"', ";rm -rf /", "x\ny", "*", "~", "-n"]


@pytest.fixture(autouse=True)
def _fresh():
    headnode.forget()
    yield
    headnode.forget()


def local_cluster() -> Cluster:
    return Cluster(slug="here", name="Here", transport="local")


def ssm_cluster(**fields) -> Cluster:
    return Cluster(
        slug="far",
        name="Far away",
        transport="ssm",
        ssm_instance_id=INSTANCE,
        aws_region=REGION,
        **fields,
    )


# --- local --------------------------------------------------------------------------------------


def test_it_runs_a_local_command_and_returns_its_output():
    result = headnode.run(local_cluster(), ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result == headnode.Result(3, "out\n", "err\n")
    assert not result.ok
    assert result.output() == "err"


def test_it_passes_values_as_arguments_never_through_a_shell(tmp_path):
    values = [*NASTY, f"$(touch {tmp_path}/pwned)", f"; touch {tmp_path}/pwned"]
    result = headnode.run(local_cluster(), ["printf", "%s\\0", *values])
    assert result.ok
    assert result.stdout.split("\0")[:-1] == values
    assert not (tmp_path / "pwned").exists()


def test_it_feeds_input_to_the_command():
    assert (
        headnode.run(local_cluster(), ["cat"], input=b"hello\x00\xffthere").stdout == "hello\x00\ufffdthere"
    )


def test_it_does_not_leak_the_consoles_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "do-not-leak")
    environment = headnode.run(local_cluster(), ["env"]).stdout
    assert "do-not-leak" not in environment
    assert "PATH=/usr/local/sbin" in environment


def test_a_missing_program_answers_like_a_shell_would():
    result = headnode.run(local_cluster(), ["ct-no-such-program"])
    assert result.exit_code == 127
    assert "command not found" in result.stderr


def test_a_local_command_is_stopped_at_its_timeout():
    started = time.monotonic()
    with pytest.raises(headnode.HeadNodeTimeout, match=r"did not finish within 0\.3 s"):
        headnode.run(local_cluster(), ["sh", "-c", "sleep 5 & wait"], timeout=0.3)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("argv", ["id -u", [], ["echo", 3], ["echo", "a\x00b"]])
def test_it_refuses_anything_but_a_list_of_strings(argv):
    with pytest.raises(ValueError, match="argv"):
        headnode.run(local_cluster(), argv)


def test_slurm_commands_come_from_the_clusters_slurm_folder_and_nothing_else_does(tmp_path):
    """Where Slurm is not on the PATH (ParallelCluster's /opt/slurm/bin; a chroot's release), its commands
    are called by path, also after runuser's `--`; other programs and arguments are left alone."""
    (tmp_path / "sacct").write_text('#!/bin/sh\necho this-is-sacct "$@"\n')
    (tmp_path / "sacct").chmod(0o755)
    cluster = Cluster(slug="pc", name="PC", transport="local", slurm_bin=str(tmp_path))
    assert headnode.run(cluster, ["sacct", "-j", "sacct"]).stdout == "this-is-sacct -j sacct\n"
    assert headnode._with_slurm_bin(cluster, ["runuser", "-u", "ada", "--", "sacct", "--json"]) == [
        "runuser", "-u", "ada", "--", f"{tmp_path}/sacct", "--json",
    ]  # fmt: skip
    assert headnode._with_slurm_bin(cluster, ["echo", "sbatch"]) == ["echo", "sbatch"]
    assert headnode._with_slurm_bin(local_cluster(), ["sacct"]) == ["sacct"]


def test_an_unknown_transport_is_a_head_node_error():
    with pytest.raises(headnode.HeadNodeError, match="unknown transport"):
        headnode.run(Cluster(slug="x", name="X", transport="carrier-pigeon"), ["true"])


# --- the SSM command line, checked with a real shell ---------------------------------------------


def test_the_ssm_command_line_quotes_every_value_for_a_real_shell(tmp_path):
    values = [*NASTY, f"$(touch {tmp_path}/pwned)", f"; touch {tmp_path}/pwned"]
    line = headnode.ssm_command_line(["printf", "%s\\0", *values])
    out = subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout.decode()
    assert out.split("\0")[:-1] == values
    assert not (tmp_path / "pwned").exists()


def test_the_ssm_command_line_carries_input_to_stdin():
    data = b"line one\n'$(nope)'\x00\xff"
    line = headnode.ssm_command_line(["od", "-An", "-c"], input=data)
    expected = subprocess.run(["od", "-An", "-c"], input=data, capture_output=True, check=True).stdout
    assert subprocess.run(["sh", "-c", line], capture_output=True, check=True).stdout == expected


# --- SSM through a stubbed AWS -----------------------------------------------------------------


def aws_client(service: str):
    return boto3.session.Session().client(
        service, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )


@pytest.fixture
def ssm(monkeypatch):
    """A real botocore SSM client whose requests are checked against expectations, never sent."""
    client = aws_client("ssm")
    made = []

    def factory(service, region, credentials):
        made.append((service, region, credentials))
        assert service == "ssm"
        return client

    sleeps: list[float] = []
    monkeypatch.setattr(headnode, "_client", factory)
    monkeypatch.setattr(headnode, "_sleep", sleeps.append)
    with Stubber(client) as stubber:
        stubber.made = made
        stubber.sleeps = sleeps
        yield stubber
        stubber.assert_no_pending_responses()


def expect_send(stubber, line: str, *, seconds: int = 60, program: str = "useradd"):
    stubber.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID}},
        {
            "InstanceIds": [INSTANCE],
            "DocumentName": "AWS-RunShellScript",
            "Comment": f"clusterra: {program}",
            "TimeoutSeconds": max(30, seconds),
            "Parameters": {"commands": [line], "executionTimeout": [str(seconds)]},
        },
    )


def expect_invocation(stubber, **answer):
    stubber.add_response(
        "get_command_invocation",
        {"CommandId": COMMAND_ID, "InstanceId": INSTANCE, **answer},
        {"CommandId": COMMAND_ID, "InstanceId": INSTANCE},
    )


def expect_not_there_yet(stubber):
    stubber.add_client_error(
        "get_command_invocation",
        service_error_code="InvocationDoesNotExist",
        http_status_code=400,
        expected_params={"CommandId": COMMAND_ID, "InstanceId": INSTANCE},
    )


def test_it_sends_the_quoted_command_and_polls_until_it_is_done(ssm):
    argv = ["useradd", "-u", "200001", "-d", "/home/o'brien x", "o_brien"]
    expect_send(ssm, "useradd -u 200001 -d '/home/o'\"'\"'brien x' o_brien")
    expect_not_there_yet(ssm)
    expect_invocation(ssm, Status="Pending", StatusDetails="Pending", ResponseCode=-1)
    expect_invocation(ssm, Status="InProgress", StatusDetails="InProgress", ResponseCode=-1)
    expect_invocation(
        ssm,
        Status="Success",
        StatusDetails="Success",
        ResponseCode=0,
        StandardOutputContent="made\n",
        StandardErrorContent="",
    )
    result = headnode.run(ssm_cluster(), argv)
    assert result == headnode.Result(0, "made\n", "")
    assert len(ssm.sleeps) == 4
    assert ssm.made == [("ssm", REGION, None)]


def test_a_command_that_exits_non_zero_is_an_answer_not_an_error(ssm):
    expect_send(ssm, "getent passwd ctnobody", program="getent")
    expect_invocation(
        ssm,
        Status="Failed",
        StatusDetails="Failed",
        ResponseCode=2,
        StandardOutputContent="",
        StandardErrorContent="",
    )
    assert headnode.run(ssm_cluster(), ["getent", "passwd", "ctnobody"]).exit_code == 2


def test_input_travels_base64_encoded_in_the_command(ssm):
    line = headnode.ssm_command_line(["tee", "/tmp/x"], input=b"secret'stuff")
    assert "c2VjcmV0J3N0dWZm" in line
    expect_send(ssm, line, program="tee")
    expect_invocation(ssm, Status="Success", StatusDetails="Success", ResponseCode=0)
    headnode.run(ssm_cluster(), ["tee", "/tmp/x"], input=b"secret'stuff")


@pytest.mark.parametrize(
    ("details", "error", "words"),
    [
        ("Undeliverable", headnode.HeadNodeError, "not managed by SSM"),
        ("DeliveryTimedOut", headnode.HeadNodeError, "did not pick the command up"),
        ("ExecutionTimedOut", headnode.HeadNodeTimeout, "did not finish within 60 s"),
    ],
)
def test_an_instance_that_cannot_run_it_is_a_head_node_error(ssm, details, error, words):
    expect_send(ssm, "true", program="true")
    status = "TimedOut" if "TimedOut" in details else "Failed"
    expect_invocation(ssm, Status=status, StatusDetails=details, ResponseCode=-1)
    with pytest.raises(error, match=words) as caught:
        headnode.run(ssm_cluster(), ["true"])
    assert "Far away" in str(caught.value)


def test_a_refused_send_is_a_head_node_error(ssm):
    ssm.add_client_error("send_command", service_error_code="InvalidInstanceId", http_status_code=400)
    with pytest.raises(headnode.HeadNodeError, match="InvalidInstanceId"):
        headnode.run(ssm_cluster(), ["true"])


def test_it_gives_up_and_cancels_after_the_deadline(ssm, monkeypatch):
    clock = iter(range(0, 10_000, 40))
    monkeypatch.setattr(headnode, "_clock", lambda: next(clock))
    expect_send(ssm, "sleep 100", program="sleep", seconds=30)
    for _ in range(2):
        expect_invocation(ssm, Status="InProgress", StatusDetails="InProgress", ResponseCode=-1)
    ssm.add_response("cancel_command", {}, {"CommandId": COMMAND_ID, "InstanceIds": [INSTANCE]})
    with pytest.raises(headnode.HeadNodeTimeout, match="still InProgress"):
        headnode.run(ssm_cluster(), ["sleep", "100"], timeout=30)


def test_it_assumes_the_clusters_role_with_the_web_identity(ssm, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("web-identity-jwt\n")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    role = "arn:aws:iam::123456789012:role/clusterra-headnode"
    sts = aws_client("sts")
    ssm_client = ssm.client
    made = []

    def factory(service, region, credentials):
        made.append((service, credentials["AccessKeyId"] if credentials else None))
        return sts if service == "sts" else ssm_client

    monkeypatch.setattr(headnode, "_client", factory)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with Stubber(sts) as sts_stub:
        sts_stub.add_response(
            "assume_role_with_web_identity",
            {
                "Credentials": {
                    "AccessKeyId": "ASIAEXAMPLE0000001",
                    "SecretAccessKey": "s" * 40,
                    "SessionToken": "session",
                    "Expiration": expires,
                }
            },
            {
                "RoleArn": role,
                "RoleSessionName": "clusterra-far",
                "WebIdentityToken": "web-identity-jwt",
                "DurationSeconds": 3600,
            },
        )
        for _ in range(2):
            expect_send(ssm, "true", program="true")
            expect_invocation(ssm, Status="Success", StatusDetails="Success", ResponseCode=0)
        cluster = ssm_cluster(ssm_role_arn=role)
        headnode.run(cluster, ["true"])
        # The second command reuses the credentials: one AssumeRole call only.
        headnode.run(cluster, ["true"])
        sts_stub.assert_no_pending_responses()
    assert made == [("sts", None), ("ssm", "ASIAEXAMPLE0000001"), ("ssm", "ASIAEXAMPLE0000001")]


def test_a_role_without_a_web_identity_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    cluster = ssm_cluster(ssm_role_arn="arn:aws:iam::123456789012:role/x")
    with pytest.raises(headnode.HeadNodeError, match="AWS_WEB_IDENTITY_TOKEN_FILE"):
        headnode.run(cluster, ["true"])
