"""What every IAM policy of deploy/aws/clusterra.yaml allows and denies, as written in the template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.iam_eval import (
    ALLOWED,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    Principal,
    Stack,
    decide,
    load_template,
)

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "clusterra.yaml"
ACCOUNT, REGION = "111122223333", "eu-west-1"
HEAD = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
ISSUER = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
PARAMETERS = {
    "ConsoleTrust": "both",
    "OidcProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}",
    "OidcIssuer": ISSUER,
    "HeadNodeInstanceId": HEAD,
    "RecordingsBucketName": "clusterra-recordings",
    "JobSubmitPluginS3Uri": "s3://clusterra-artifacts/slurm/job_submit.lua",
}


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(load_template(TEMPLATE), PARAMETERS, account=ACCOUNT, region=REGION, stack_name="clusterra")


def _person(stack: Stack, posix: str, email: str) -> Principal:
    # What the console's AssumeRole gives a person's terminal: session name, source identity, session tags.
    return stack.session_of(
        "TerminalRole",
        f"clusterra-{posix}",
        **{
            "aws:SourceIdentity": email,
            "aws:PrincipalTag/clusterra:person": email,
            "aws:PrincipalTag/clusterra:posix-user": posix,
        },
    )


def _instance(instance: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"


def _document(name: str) -> str:
    # AWS-owned documents have no account in their ARN; the preferences document is the account's own.
    owner = ACCOUNT if name == "SSM-SessionManagerRunShell" else ""
    return f"arn:aws:ssm:{REGION}:{owner}:document/{name}"


@dataclass
class Row:
    expectation: str
    want: str  # "allowed" or "denied"
    got: str

    @property
    def met(self) -> bool:
        return (self.got == ALLOWED) == (self.want == "allowed")


def _start_session(who: Principal, instance: str, document: str | None) -> str:
    """StartSession is authorised on the target and on the document (the default one when none is named)."""
    context = {"ssm:SessionDocumentAccessCheck": "true"}
    answers = [
        decide(who, "ssm:StartSession", _instance(instance), context=context),
        decide(who, "ssm:StartSession", _document(document or "SSM-SessionManagerRunShell"), context=context),
    ]
    return next((a for a in answers if a != ALLOWED), ALLOWED)


def _session(stack: Stack, posix: str, suffix: str = "0a1b2c3d4e5f67890") -> tuple[str, dict[str, str]]:
    """A session's ARN and the system tag Session Manager puts on it (role id:role session name)."""
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/clusterra-{posix}-{suffix}"
    tag = f"{stack.role_id('TerminalRole')}:clusterra-{posix}"
    return arn, {"ssm:resourceTag/aws:ssmmessages:session-id": tag}


def _assume(stack: Stack, who: Principal, **request: Any) -> str:
    """The console's AssumeRole for a person: each action of the call must pass the terminal role's trust."""
    trust = stack.trust_policy("TerminalRole")
    role = stack.get_att("TerminalRole", "Arn")
    actions = ["sts:AssumeRole"]
    if any(k.startswith("aws:RequestTag/") for k in request):
        actions.append("sts:TagSession")
    if "sts:SourceIdentity" in request:
        actions.append("sts:SetSourceIdentity")
    # STS authorises each action of the call on its own; all of them must pass.
    answers = [
        decide(who, a, role, context=request, resource_policy=trust, resource_kind="trust") for a in actions
    ]
    return next((a for a in answers if a != ALLOWED), ALLOWED)


def _for_person(posix: str, email: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "sts:RoleSessionName": f"clusterra-{posix}",
        "sts:SourceIdentity": email,
        "aws:RequestTag/clusterra:person": email,
        "aws:RequestTag/clusterra:posix-user": posix,
        "aws:TagKeys": ["clusterra:person", "clusterra:posix-user"],
    }
    request.update(overrides)
    return {k: v for k, v in request.items() if v is not None}


def _table(stack: Stack) -> list[Row]:
    ann = _person(stack, "ann", "ann@example.org")
    bob = _person(stack, "bob", "bob@example.org")
    ann_b = _person(stack, "ann-b", "ann.b@example.org")
    console = stack.session_of("ConsoleRole", "clusterra-console")
    head = stack.session_of("HeadNodeRole", HEAD)
    key_policy = stack.key_policy("SessionKey")
    key = stack.get_att("SessionKey", "Arn")
    secret = stack.ref("SlurmJwtKey")
    recordings = stack.ref("RecordingsLogGroup")
    sessions_group = stack.ref("SessionLogGroup")

    def kms(who: Principal, action: str, **context: str) -> str:
        return decide(who, action, key, context=context, resource_policy=key_policy, resource_kind="kms")

    def ssm_context(session: str, target: str = HEAD) -> dict[str, str]:
        return {
            "kms:EncryptionContext:aws:ssm:SessionId": session,
            "kms:EncryptionContext:aws:ssm:TargetId": target,
        }

    ann_session, ann_tag = _session(stack, "ann")
    bob_session, bob_tag = _session(stack, "bob")
    ann_b_session, ann_b_tag = _session(stack, "ann-b")
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group"
    workload = Principal(
        arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/web-identity",
        account=ACCOUNT,
        federated=PARAMETERS["OidcProviderArn"],
    )
    trust_console = stack.trust_policy("ConsoleRole")
    console_arn = stack.get_att("ConsoleRole", "Arn")

    def web_identity(sub: str) -> str:
        context = {f"{ISSUER}:aud": "sts.amazonaws.com", f"{ISSUER}:sub": sub}
        return decide(
            workload,
            "sts:AssumeRoleWithWebIdentity",
            console_arn,
            context=context,
            resource_policy=trust_console,
            resource_kind="trust",
        )

    ec2 = Principal(arn="ec2.amazonaws.com", account=ACCOUNT, service="ec2.amazonaws.com")
    other_role = stack.session_of("HeadNodeRole", "someone")
    cw = Principal(arn="logs", account=ACCOUNT, service=f"logs.{REGION}.amazonaws.com")

    rows = [
        # the person's terminal role
        (
            "ann starts a shell on the head node (AWS-StartInteractiveCommand)",
            "allowed",
            _start_session(ann, HEAD, "AWS-StartInteractiveCommand"),
        ),
        (
            "ann opens SSH through Session Manager (AWS-StartSSHSession)",
            "denied",
            _start_session(ann, HEAD, "AWS-StartSSHSession"),
        ),
        (
            "ann forwards a port (AWS-StartPortForwardingSession)",
            "denied",
            _start_session(ann, HEAD, "AWS-StartPortForwardingSession"),
        ),
        ("ann starts the default shell document (none named)", "denied", _start_session(ann, HEAD, None)),
        (
            "ann starts a shell on another instance",
            "denied",
            _start_session(ann, OTHER, "AWS-StartInteractiveCommand"),
        ),
        (
            "ann terminates her own session clusterra-ann-*",
            "allowed",
            decide(ann, "ssm:TerminateSession", ann_session, context=ann_tag),
        ),
        (
            "ann resumes her own session clusterra-ann-*",
            "allowed",
            decide(ann, "ssm:ResumeSession", ann_session, context=ann_tag),
        ),
        (
            "ann terminates bob's session",
            "denied",
            decide(ann, "ssm:TerminateSession", bob_session, context=bob_tag),
        ),
        (
            "ann resumes bob's session",
            "denied",
            decide(ann, "ssm:ResumeSession", bob_session, context=bob_tag),
        ),
        (
            "bob terminates ann's session",
            "denied",
            decide(bob, "ssm:TerminateSession", ann_session, context=ann_tag),
        ),
        (
            "ann resumes the session of ann-b (same name prefix)",
            "denied",
            decide(ann, "ssm:ResumeSession", ann_b_session, context=ann_b_tag),
        ),
        (
            "ann-b terminates her own session",
            "allowed",
            decide(ann_b, "ssm:TerminateSession", ann_b_session, context=ann_b_tag),
        ),
        (
            "ann runs a command as root (ssm:SendCommand AWS-RunShellScript)",
            "denied",
            decide(ann, "ssm:SendCommand", _document("AWS-RunShellScript")),
        ),
        ("ann reads the Slurm JWT key", "denied", decide(ann, "secretsmanager:GetSecretValue", secret)),
        (
            "ann gets the data key of her session on the head node",
            "allowed",
            kms(ann, "kms:GenerateDataKey", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890")),
        ),
        (
            "ann gets the data key of bob's session",
            "denied",
            kms(ann, "kms:GenerateDataKey", **ssm_context("clusterra-bob-0a1b2c3d4e5f67890")),
        ),
        (
            "ann decrypts with the session key",
            "denied",
            kms(ann, "kms:Decrypt", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890")),
        ),
        # becoming the terminal role
        (
            "the console assumes the terminal role for ann (source identity, both tags)",
            "allowed",
            _assume(stack, console, **_for_person("ann", "ann@example.org")),
        ),
        (
            "the console assumes it without a source identity",
            "denied",
            _assume(stack, console, **_for_person("ann", "ann@example.org", **{"sts:SourceIdentity": None})),
        ),
        (
            "the console assumes it without the clusterra:posix-user tag",
            "denied",
            _assume(
                stack,
                console,
                **_for_person(
                    "ann",
                    "ann@example.org",
                    **{"aws:RequestTag/clusterra:posix-user": None, "aws:TagKeys": ["clusterra:person"]},
                ),
            ),
        ),
        (
            "the console assumes it with an extra session tag",
            "denied",
            _assume(
                stack,
                console,
                **_for_person(
                    "ann",
                    "ann@example.org",
                    **{
                        "aws:RequestTag/team": "x",
                        "aws:TagKeys": ["clusterra:person", "clusterra:posix-user", "team"],
                    },
                ),
            ),
        ),
        (
            "the console assumes it under a session name not clusterra-*",
            "denied",
            _assume(
                stack, console, **_for_person("ann", "ann@example.org", **{"sts:RoleSessionName": "ann"})
            ),
        ),
        (
            "another role of the account assumes the terminal role",
            "denied",
            _assume(stack, other_role, **_for_person("ann", "ann@example.org")),
        ),
        # the console's role
        (
            "the console opens a session itself",
            "denied",
            _start_session(console, HEAD, "AWS-StartInteractiveCommand"),
        ),
        (
            "the console runs AWS-RunShellScript on the head node",
            "allowed",
            "allowed"
            if all(
                decide(console, "ssm:SendCommand", r) == ALLOWED
                for r in (_instance(HEAD), _document("AWS-RunShellScript"))
            )
            else IMPLICIT_DENY,
        ),
        (
            "the console runs a command on another instance",
            "denied",
            decide(console, "ssm:SendCommand", _instance(OTHER)),
        ),
        (
            "the console runs another command document (AWS-RunPowerShellScript)",
            "denied",
            decide(console, "ssm:SendCommand", _document("AWS-RunPowerShellScript")),
        ),
        (
            "the console reads the Slurm JWT key",
            "allowed",
            decide(console, "secretsmanager:GetSecretValue", secret),
        ),
        (
            "the console reads another secret",
            "denied",
            decide(
                console,
                "secretsmanager:GetSecretValue",
                f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/database-AbCdEf",
            ),
        ),
        (
            "the console gets a data key for a session on the head node",
            "allowed",
            kms(console, "kms:GenerateDataKey", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890")),
        ),
        (
            "the console gets a data key for another target",
            "denied",
            kms(console, "kms:GenerateDataKey", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890", OTHER)),
        ),
        (
            "the console gets a data key without the session's context",
            "denied",
            kms(console, "kms:GenerateDataKey"),
        ),
        (
            "the console streams a recording to its log group",
            "allowed",
            decide(console, "logs:PutLogEvents", f"{logs}:{recordings}:log-stream:demo/42"),
        ),
        (
            "the console writes into Session Manager's own log group",
            "denied",
            decide(console, "logs:PutLogEvents", f"{logs}:{sessions_group}:log-stream:clusterra-ann-0a1b"),
        ),
        (
            "the console keeps a recording in S3 under the prefix",
            "allowed",
            decide(console, "s3:PutObject", "arn:aws:s3:::clusterra-recordings/recordings/demo/42.cast"),
        ),
        (
            "the console writes elsewhere in that bucket",
            "denied",
            decide(console, "s3:PutObject", "arn:aws:s3:::clusterra-recordings/other/x"),
        ),
        (
            "the console's workload becomes the console role (web identity)",
            "allowed",
            web_identity(PARAMETERS.get("OidcSubject", "system:serviceaccount:clusterra:clusterra")),
        ),
        (
            "another workload of that platform becomes the console role",
            "denied",
            web_identity("system:serviceaccount:default:default"),
        ),
        (
            "an EC2 instance profile becomes the console role (ConsoleTrust=both)",
            "allowed",
            decide(ec2, "sts:AssumeRole", console_arn, resource_policy=trust_console, resource_kind="trust"),
        ),
        # the head node
        (
            "the head node decrypts its session's data key",
            "allowed",
            kms(head, "kms:Decrypt", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890")),
        ),
        ("the head node decrypts without the session's context", "denied", kms(head, "kms:Decrypt")),
        (
            "the head node decrypts another target's data key",
            "denied",
            kms(head, "kms:Decrypt", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890", OTHER)),
        ),
        (
            "the head node makes data keys",
            "denied",
            kms(head, "kms:GenerateDataKey", **ssm_context("clusterra-ann-0a1b2c3d4e5f67890")),
        ),
        (
            "the head node reads the Slurm JWT key (to install it)",
            "allowed",
            decide(head, "secretsmanager:GetSecretValue", secret),
        ),
        (
            "the head node starts sessions",
            "denied",
            _start_session(head, HEAD, "AWS-StartInteractiveCommand"),
        ),
        (
            "the head node fetches the job_submit plugin",
            "allowed",
            decide(head, "s3:GetObject", "arn:aws:s3:::clusterra-artifacts/slurm/job_submit.lua"),
        ),
        # the key and the log groups
        (
            "CloudWatch Logs encrypts the stack's session log group",
            "allowed",
            decide(
                cw,
                "kms:GenerateDataKey",
                key,
                context={"kms:EncryptionContext:aws:logs:arn": f"{logs}:{sessions_group}"},
                resource_policy=key_policy,
                resource_kind="kms",
            ),
        ),
        (
            "CloudWatch Logs uses the key for another log group",
            "denied",
            decide(
                cw,
                "kms:GenerateDataKey",
                key,
                context={"kms:EncryptionContext:aws:logs:arn": f"{logs}:/other"},
                resource_policy=key_policy,
                resource_kind="kms",
            ),
        ),
    ]
    return [Row(e, w, "allowed" if g == ALLOWED else g) for e, w, g in rows]


def test_every_expectation_of_the_iam_table_is_met(stack: Stack) -> None:
    rows = _table(stack)
    met = sum(r.met for r in rows)
    print(f"IAM table: {len(rows)} expectations, {met} met")
    width = max(len(r.expectation) for r in rows)
    for r in rows:
        print(f"  {'met ' if r.met else 'FAIL'}  {r.expectation:<{width}}  want {r.want:<7}  got {r.got}")
    assert len(rows) >= 15
    assert met == len(rows), [r for r in rows if not r.met]


def test_the_table_reads_the_template_as_deployed(stack: Stack) -> None:
    # The policies are the template's own, resolved: the head node and the document in the ARNs, the policy
    # variable left for IAM, and the trust policy's web identity keys named after the issuer.
    statements = {s["Sid"]: s for p in stack.identity_policies("TerminalRole") for s in p["Statement"]}
    assert statements["StartAShellOnTheHeadNode"]["Resource"] == [
        _instance(HEAD),
        f"arn:aws:ssm:{REGION}::document/AWS-StartInteractiveCommand",
    ]
    assert statements["OnlyTheirOwnSessions"]["Resource"] == (
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:session/clusterra-${{aws:PrincipalTag/clusterra:posix-user}}-*"
    )
    trust = stack.trust_policy("ConsoleRole")
    assert [s["Sid"] for s in trust["Statement"]] == ["ConsoleWebIdentity", "ConsoleInstance"]
    assert f"{ISSUER}:sub" in trust["Statement"][0]["Condition"]["StringEquals"]
    # With the web identity only, an instance cannot become the console's role.
    only_oidc = Stack(
        load_template(TEMPLATE), {**PARAMETERS, "ConsoleTrust": "web-identity"}, account=ACCOUNT
    )
    ec2 = Principal(arn="ec2.amazonaws.com", account=ACCOUNT, service="ec2.amazonaws.com")
    answer = decide(
        ec2,
        "sts:AssumeRole",
        only_oidc.get_att("ConsoleRole", "Arn"),
        resource_policy=only_oidc.trust_policy("ConsoleRole"),
        resource_kind="trust",
    )
    assert answer == IMPLICIT_DENY


def test_the_evaluator_follows_aws_evaluation_rules() -> None:
    """AWS's documented rules, each checked on a policy made for it (so the table above can be trusted)."""
    allow_all = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    deny_s3 = {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    who = Principal(arn="arn:aws:sts::1:assumed-role/r/s", account="1", role_arn="arn:aws:iam::1:role/r")
    who.policies = [allow_all, deny_s3]
    assert decide(who, "s3:GetObject", "arn:aws:s3:::b/k") == EXPLICIT_DENY  # deny beats allow
    assert decide(who, "SQS:SendMessage", "arn:aws:sqs:eu-west-1:1:q") == ALLOWED  # actions ignore case
    who.policies = []
    assert decide(who, "s3:GetObject", "arn:aws:s3:::b/k") == IMPLICIT_DENY  # nothing allows
    who.policies = [{"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]}]
    assert decide(who, "iam:CreateUser", "*") == IMPLICIT_DENY
    assert decide(who, "ec2:RunInstances", "*") == ALLOWED
    # Resource wildcards stay within one ARN part; policy variables come from the request.
    who.policies = [
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::b/${aws:PrincipalTag/team}/*",
                }
            ]
        }
    ]
    who.context = {"aws:PrincipalTag/team": "blue"}
    assert decide(who, "s3:GetObject", "arn:aws:s3:::b/blue/x") == ALLOWED
    assert decide(who, "s3:GetObject", "arn:aws:s3:::b/red/x") == IMPLICIT_DENY
    who.context = {}
    assert decide(who, "s3:GetObject", "arn:aws:s3:::b/blue/x") == IMPLICIT_DENY  # a missing variable

    # Conditions: a missing key fails a positive operator, passes a negated one and ...IfExists.
    def with_condition(block: dict) -> Principal:
        return Principal(
            arn="a",
            account="1",
            policies=[
                {"Statement": [{"Effect": "Allow", "Action": "x:Y", "Resource": "*", "Condition": block}]}
            ],
        )

    assert decide(with_condition({"StringEquals": {"k": "v"}}), "x:Y", "*") == IMPLICIT_DENY
    assert decide(with_condition({"StringNotEquals": {"k": "v"}}), "x:Y", "*") == ALLOWED
    assert decide(with_condition({"StringEqualsIfExists": {"k": "v"}}), "x:Y", "*") == ALLOWED
    assert decide(with_condition({"StringEquals": {"K": "v"}}), "x:Y", "*", context={"k": "v"}) == ALLOWED
    assert (
        decide(with_condition({"StringEquals": {"k": "V"}}), "x:Y", "*", context={"k": "v"}) == IMPLICIT_DENY
    )
    assert (
        decide(with_condition({"StringLike": {"k": ["a*", "b*"]}}), "x:Y", "*", context={"k": "bc"})
        == ALLOWED
    )
    assert decide(with_condition({"Null": {"k": "true"}}), "x:Y", "*") == ALLOWED
    assert decide(with_condition({"Null": {"k": "false"}}), "x:Y", "*") == IMPLICIT_DENY
    assert decide(with_condition({"Bool": {"k": "true"}}), "x:Y", "*", context={"k": "True"}) == ALLOWED
    # Sets: ForAllValues holds for an empty or missing set; ForAnyValue needs one match.
    all_of = with_condition({"ForAllValues:StringEquals": {"t": ["a", "b"]}})
    assert decide(all_of, "x:Y", "*", context={"t": ["a"]}) == ALLOWED
    assert decide(all_of, "x:Y", "*", context={"t": ["a", "c"]}) == IMPLICIT_DENY
    assert decide(all_of, "x:Y", "*") == ALLOWED
    any_of = with_condition({"ForAnyValue:StringEquals": {"t": ["a"]}})
    assert decide(any_of, "x:Y", "*", context={"t": ["c", "a"]}) == ALLOWED
    assert decide(any_of, "x:Y", "*") == IMPLICIT_DENY
    # Two keys in a block: both must hold.
    both = with_condition({"StringEquals": {"a": "1", "b": "2"}})
    assert decide(both, "x:Y", "*", context={"a": "1"}) == IMPLICIT_DENY
    assert decide(both, "x:Y", "*", context={"a": "1", "b": "2"}) == ALLOWED
    # A KMS key policy that names only the account delegates: the identity policy must allow too.
    key_policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::1:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        ]
    }
    assert decide(who, "kms:Decrypt", "k", resource_policy=key_policy, resource_kind="kms") == IMPLICIT_DENY
    who.policies = [allow_all]
    assert decide(who, "kms:Decrypt", "k", resource_policy=key_policy, resource_kind="kms") == ALLOWED
    # ...and an identity policy alone does not open a key whose policy does not allow it.
    assert (
        decide(who, "kms:Decrypt", "k", resource_policy={"Statement": []}, resource_kind="kms")
        == IMPLICIT_DENY
    )
    # An operator the evaluator does not know fails loudly rather than answering.
    with pytest.raises(NotImplementedError):
        decide(with_condition({"DateGreaterThan": {"k": "2020"}}), "x:Y", "*", context={"k": "2021"})


def test_moto_cross_check_of_the_console_policy(stack: Stack) -> None:
    """moto's IAM policy simulator, where moto has one, must agree with the evaluator on the same policy."""
    import json

    import moto

    policy = json.dumps(stack.identity_policies("ConsoleRole")[0])
    cases = [
        ("ssm:SendCommand", _instance(HEAD), ALLOWED),
        ("ssm:SendCommand", _instance(OTHER), IMPLICIT_DENY),
        ("secretsmanager:GetSecretValue", stack.ref("SlurmJwtKey"), ALLOWED),
        ("ssm:StartSession", _instance(HEAD), IMPLICIT_DENY),
    ]
    console = stack.session_of("ConsoleRole", "clusterra-console")
    for action, resource, want in cases:
        assert decide(console, action, resource) == want
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        try:
            answer = iam.simulate_custom_policy(
                PolicyInputList=[policy],
                ActionNames=[c[0] for c in cases],
                ResourceArns=[c[1] for c in cases],
            )
        except NotImplementedError:
            print(f"IAM table cross-check: moto {moto.__version__} does not implement simulate_custom_policy")
            return
    decisions = {
        (r["EvalActionName"], r["EvalResourceName"]): r["EvalDecision"] for r in answer["EvaluationResults"]
    }
    for action, resource, want in cases:
        moto_says = decisions[(action, resource)]
        assert (moto_says == "allowed") == (want == ALLOWED), (action, resource, moto_says)
    print(f"IAM table cross-check: moto {moto.__version__} agrees on {len(cases)} requests")
