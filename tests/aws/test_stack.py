"""deploy/aws/clusterra.yaml: cfn-lint clean; its head-node setup and preferences as the console needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.iam_eval import Stack, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "aws" / "clusterra.yaml"
PARAMETERS = {
    "HeadNodeInstanceId": "i-0123456789abcdef0",
    "OidcProviderArn": "arn:aws:iam::1:oidc-provider/x",
}


def test_cfn_lint_finds_nothing() -> None:
    import cfnlint.version

    done = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    findings = [line for line in done.stdout.splitlines() if line.strip()]
    resources = len(load_template(TEMPLATE)["Resources"])
    print(
        f"cfn-lint: {len(findings)} findings in deploy/aws/clusterra.yaml "
        f"({resources} resources, cfn-lint {cfnlint.version.__version__})"
    )
    for line in findings:
        print(f"  {line}")
    assert not findings
    assert done.returncode == 0, done.stderr


def test_the_head_node_setup_is_valid_shell_and_does_what_the_console_needs() -> None:
    stack = Stack(load_template(TEMPLATE), PARAMETERS)
    content = stack.properties("HeadNodeSetupDocument")["Content"]
    lines = content["mainSteps"][0]["inputs"]["runCommand"]
    script = "\n".join(lines)
    # Every parameter the association passes is one the document declares, and the other way round.
    association = stack.properties("HeadNodeSetup")
    assert set(association["Parameters"]) == set(content["parameters"])
    assert association["Targets"] == [{"Key": "InstanceIds", "Values": ["i-0123456789abcdef0"]}]
    # Run Command pastes the parameters in; with values like the defaults the script must parse.
    filled = script
    for name, values in association["Parameters"].items():
        filled = filled.replace("{{ " + name + " }}", values[0])
    assert "{{" not in filled
    checked = subprocess.run(["bash", "-n"], input=filled, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    # Session Manager's user may become console people (terminal/transports/ssm/session.py runs
    # `sudo -n -H -u PERSON -- /bin/sh -c …`): members of the group provisioning puts them in, nobody else.
    assert "ssm-user ALL=(%clusterra-people) NOPASSWD: /bin/sh" in script
    assert "/etc/sudoers.d/ssm-agent-users" in script  # the agent's own ALL=(ALL) rule is emptied
    assert "visudo -cq" in script
    # The policy folder and refusal log where the job_submit plugin reads them (README, "Slurm enforces…").
    assert 'install -d -m 0750 -o root -g "$slurm_user" "$policy_dir"' in script
    assert "disable_token_creation" in script
    assert "JobSubmitPlugins=lua" in script
    outputs = load_template(TEMPLATE)["Outputs"]
    assert stack.resolve(outputs["PolicyFile"]["Value"]) == "/etc/slurm/clusterra/policy.lua"
    assert stack.resolve(outputs["RefusalLog"]["Value"]) == "/var/log/slurm/clusterra-refusals.log"


def test_the_session_preferences_use_only_documented_inputs() -> None:
    # The inputs of a Standard_Stream session document (Session Manager's "Session document schema").
    documented = {
        "s3BucketName",
        "s3KeyPrefix",
        "s3EncryptionEnabled",
        "cloudWatchLogGroupName",
        "cloudWatchEncryptionEnabled",
        "cloudWatchStreamingEnabled",
        "kmsKeyId",
        "runAsEnabled",
        "runAsDefaultUser",
        "idleSessionTimeout",
        "maxSessionDuration",
        "shellProfile",
    }
    stack = Stack(load_template(TEMPLATE), {**PARAMETERS, "IdleSessionTimeout": "15"})
    preferences = stack.properties("SessionPreferences")
    assert preferences["Name"] == "SSM-SessionManagerRunShell"
    assert preferences["DocumentType"] == "Session"
    inputs = preferences["Content"]["inputs"]
    assert set(inputs) <= documented
    assert inputs["idleSessionTimeout"] == "15"
    assert inputs["kmsKeyId"] == stack.ref("SessionKey")
    assert inputs["cloudWatchLogGroupName"] == "/clusterra/clusterra/sessions"
    # Run As would start sessions as another user than ssm-user, whom the sudoers rule is written for.
    assert inputs["runAsEnabled"] is False
