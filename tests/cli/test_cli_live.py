"""The `clusterra` command against a live console (Django's live server on 127.0.0.1), run as a real process.

Each answer is compared with what the API gives for the same request: the CLI adds
no words of its own to a refusal, it prints the console's sentence.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from access.models import Grant
from clusterra_cli import client as cli_client
from clusterra_cli.login import browser_login
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.conftest import REPO
from tests.support.jobs_support import squeue, sync_until


@pytest.fixture
def cli(live_server, tmp_path):
    """Run `clusterra ARGS…` in a fresh process with its own config folder; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERRA_", "DJANGO"))}
    env.update(
        {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "CLUSTERRA_URL": live_server.url}
    )

    def run(*args: str, token: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
        extra = {"CLUSTERRA_TOKEN": token} if token else {}
        return subprocess.run(
            [sys.executable, "-m", "clusterra_cli.main", *args],
            capture_output=True,
            text=True,
            env=env | extra,
            cwd=REPO,
            input=stdin,
            timeout=120,
        )

    run.config = tmp_path / "config" / "clusterra" / "config.json"
    return run


def api(live_server, person, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"{live_server.url}/v1{path}",
        headers={"Authorization": f"Bearer {person.token}"},
        timeout=60,
        **kwargs,
    )


def test_the_cli_never_imports_django():
    code = (
        "import sys, clusterra_cli.main, clusterra_cli.client, clusterra_cli.config, clusterra_cli.login, "
        "clusterra_cli.watch; "
        "server = ('django', 'jobs', 'accounts', 'clusters', 'access'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in server); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PATH": os.environ["PATH"]})


def test_help_documents_the_exit_codes(cli):
    result = cli("--help")
    assert result.returncode == 0
    for code, words in cli_client.EXIT_CODES.items():
        assert f"{code}  {words}" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_without_a_token_it_says_to_log_in_and_exits_3(cli):
    result = cli("clusters")
    assert result.returncode == cli_client.NOT_SIGNED_IN
    assert "run `clusterra login` first" in result.stderr


def test_a_console_that_does_not_answer_exits_7(cli):
    result = cli("clusters", "--url", "http://127.0.0.1:9", token="ct_x")
    assert result.returncode == cli_client.UNREACHABLE
    assert "does not answer" in result.stderr


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_login_with_a_token_stores_it_privately_and_refuses_a_bad_one(cli, ada):
    bad = cli("login", "--token", "ct_wrong")
    assert bad.returncode == cli_client.NOT_SIGNED_IN
    assert "The API token is not valid" in bad.stderr
    assert not cli.config.exists()

    good = cli("login", "--token", "-", stdin=ada.token + "\n")
    assert good.returncode == 0, good.stderr
    assert f"as {ada.user.username}" in good.stdout
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.parent.stat().st_mode) == 0o700
    assert json.loads(cli.config.read_text())["token"] == ada.token
    whoami = cli("whoami", "--json")
    assert json.loads(whoami.stdout)["posix_account"]["username"] == ada.name
    assert cli("logout").returncode == 0
    assert not cli.config.exists()


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_login_through_the_browser_hands_the_token_to_a_loopback_address(live_server, client, ada):
    printed: list[str] = []
    box: dict = {}
    thread = threading.Thread(
        target=lambda: box.setdefault(
            "token", browser_login(live_server.url, open_browser=False, say=printed.append, wait=30)
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not printed and time.monotonic() < deadline:
        time.sleep(0.05)
    link = urlsplit(printed[0].split(": ", 1)[1])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert link.path == "/tokens/cli/"
    assert query["callback"].startswith("http://127.0.0.1:")
    # The browser: the person approves, the page posts the new token to the command.
    client.force_login(ada.user)
    page = client.post("/tokens/cli/", query).content.decode()
    fields = dict(re.findall(r'name="(token|state|url)" value="([^"]*)"', page))
    wrong = requests.post(query["callback"], data={**fields, "state": "forged"}, timeout=10)
    assert wrong.status_code == 400
    answer = requests.post(query["callback"], data=fields, timeout=10)
    assert answer.status_code == 200
    thread.join(10)
    assert box["token"] == fields["token"]
    me = requests.get(
        f"{live_server.url}/v1/me", headers={"Authorization": f"Bearer {box['token']}"}, timeout=10
    )
    assert me.json()["username"] == ada.user.username


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_submit_list_show_output_cancel_give_the_same_answers_as_the_api(cli, live_server, ada):
    path = ada.script(
        "cli.sh", "#!/bin/bash\n#SBATCH -J ct-cli\n#SBATCH -p debug -t 2\necho printed by $(id -un)\n"
    )

    clusters = cli("clusters", "--json", token=ada.token)
    assert json.loads(clusters.stdout) == api(live_server, ada, "GET", "/clusters").json()
    partitions = cli("partitions", "demo", token=ada.token)
    assert partitions.returncode == 0
    assert re.search(r"^debug\s+UP\s", partitions.stdout, re.M)
    assert "cpu*" in partitions.stdout

    dry = cli("job", "submit", "demo", path, "--dry-run", "--json", token=ada.token)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True
    assert squeue(ada.name) == []

    submitted = cli("job", "submit", "demo", path, "--cpus-per-task", "2", token=ada.token)
    assert submitted.returncode == 0, submitted.stderr
    record = JobRecord.objects.get(person=ada.user)
    assert f"Submitted job {record.slurm_job_id}." in submitted.stdout
    assert "This job may run on partition debug of Demo cluster" in submitted.stdout
    assert re.search(r"cpus\s+2\s+\(request\)", submitted.stdout) is None  # cpus is a total: no source line
    assert record.cpus == 2

    sync_until(record, {"COMPLETED"})
    listing = json.loads(cli("job", "list", "demo", "--json", token=ada.token).stdout)
    from_api = api(live_server, ada, "GET", "/clusters/demo/jobs").json()
    for answer in (listing, from_api):
        answer.pop("update_time")
        for item in answer["jobs"]:
            item.pop("elapsed_seconds"), item.pop("elapsed")
    assert listing == from_api
    table = cli("job", "list", "demo", token=ada.token).stdout
    assert re.search(rf"^{record.slurm_job_id}\s+ct-cli\s+debug\s+COMPLETED", table, re.M)

    shown = cli("job", "show", "demo", str(record.slurm_job_id), token=ada.token)
    assert re.search(r"^state\s+COMPLETED", shown.stdout, re.M)
    output = cli("job", "output", "demo", str(record.slurm_job_id), token=ada.token)
    assert output.stdout == f"printed by {ada.name}\n"

    finished = cli("job", "cancel", "demo", str(record.slurm_job_id), token=ada.token)
    from_api = api(live_server, ada, "DELETE", f"/clusters/demo/jobs/{record.slurm_job_id}").json()
    assert finished.returncode == cli_client.FAILED
    assert finished.stderr.strip() == f"clusterra: {from_api['error']['message']}"


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_refusals_print_the_consoles_sentence_with_their_exit_codes(cli, live_server, people):
    ada, bob = people(quota={"max_walltime": 5}), people()
    path = ada.script("long.sh", "#!/bin/sh\n#SBATCH -t 10\nsleep 1\n")

    denied = cli("job", "submit", "demo", "--script-path", path, token=ada.token)
    from_api = api(live_server, ada, "POST", "/clusters/demo/jobs", json={"script_path": path}).json()
    assert denied.returncode == cli_client.DENIED
    assert denied.stderr.strip() == f"clusterra: {from_api['error']['message']}"
    assert "your quota allows at most 5 minutes per job" in denied.stderr
    assert squeue(ada.name) == []

    wait = bob.script("wait.sh", "#!/bin/sh\n#SBATCH -p debug -t 5\nsleep 60\n")
    job_id = json.loads(cli("job", "submit", "demo", wait, "--json", token=bob.token).stdout)["job"]["id"]
    foreign = cli("job", "cancel", "demo", str(job_id), token=ada.token)
    assert foreign.returncode == cli_client.NOT_FOUND
    assert foreign.stderr.strip() == f"clusterra: You have no job {job_id} on Demo cluster."
    assert str(job_id) in squeue(bob.name)

    cancelled = cli("job", "cancel", "demo", str(job_id), "--json", token=bob.token)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["message"] == f"Job {job_id} was cancelled."
    quota = json.loads(cli("quota", "demo", "--json", token=ada.token).stdout)
    assert quota == api(live_server, ada, "GET", "/clusters/demo/quota").json()
    assert cli("quota", "demo", token=ada.token).stdout.startswith("you, per month, renews ")


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_without_a_cluster_named_it_takes_the_only_one_then_the_default(cli, live_server, ada, tmp_path):
    path = ada.script("fails.sh", "#!/bin/bash\n#SBATCH -p debug -t 2\necho about to fail\nexit 3\n")
    submitted = cli("job", "submit", "--script-path", path, "--json", token=ada.token)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job"]["id"]
    assert JobRecord.objects.get(person=ada.user, slurm_job_id=job_id).cluster.slug == "demo"

    waited = cli("job", "wait", str(job_id), token=ada.token)
    assert waited.returncode == 3, waited.stderr
    assert waited.stdout == f"Job {job_id} ended FAILED, exit code 3.\n"
    shown = api(live_server, ada, "GET", f"/clusters/demo/jobs/{job_id}").json()["job"]
    assert (shown["state"], shown["exit_code"]) == ("FAILED", 3)

    # A second cluster the person may use: now the command has to be told which, or have a default.
    key = tmp_path / "second.key"
    key.write_bytes(b"k" * 32)
    second = Cluster.objects.create(
        slug="second", name="Second cluster", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )
    Grant.objects.create(cluster=second, user=ada.user, all_partitions=True)
    several = cli("job", "list", token=ada.token)
    assert several.returncode == cli_client.USAGE
    assert several.stderr == (
        "clusterra: you may use 2 clusters (demo, second): name one (--cluster ID), "
        "or set a default (clusterra config set cluster ID).\n"
    )
    assert cli("config", "set", "cluster", "Demo cluster", token=ada.token).returncode == 0
    assert cli("config", "get", "cluster").stdout == "demo\n"
    listed = json.loads(cli("job", "list", "--json", token=ada.token).stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    elsewhere = json.loads(cli("job", "list", "--cluster", "second", "--json", token=ada.token).stdout)
    assert elsewhere["total"] == 0


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_follow_prints_the_output_as_it_grows_and_wait_gives_the_ending(cli, live_server, ada):
    path = ada.script(
        "count.sh",
        "#!/bin/bash\n#SBATCH -p debug -t 2\n"
        "for i in 1 2 3 4; do echo line $i; sleep 1; done\necho said >&2\n",
    )
    job_id = json.loads(cli("job", "submit", "demo", path, "--json", token=ada.token).stdout)["job"]["id"]
    followed = cli("job", "output", str(job_id), "--follow", token=ada.token)
    assert followed.returncode == 0, followed.stderr
    # Slurm writes stderr into the stdout file unless told otherwise: one stream, each line once.
    assert followed.stdout == "line 1\nline 2\nline 3\nline 4\nsaid\n"
    waited = cli("job", "wait", str(job_id), "--json", token=ada.token)
    assert waited.returncode == 0
    assert json.loads(waited.stdout)["job"]["state"] == "COMPLETED"

    long = ada.script("long.sh", "#!/bin/bash\n#SBATCH -p debug -t 2\nsleep 60\n")
    long_id = json.loads(cli("job", "submit", "demo", long, "--json", token=ada.token).stdout)["job"]["id"]
    gave_up = cli("job", "wait", str(long_id), "--timeout", "1", token=ada.token)
    assert gave_up.returncode == 124
    assert f"job {long_id} has not ended after 1 s" in gave_up.stderr
    assert cli("job", "cancel", str(long_id), token=ada.token).returncode == 0
    cancelled = cli("job", "wait", str(long_id), token=ada.token)
    assert (cancelled.returncode, cancelled.stdout.split(",")[0]) == (121, f"Job {long_id} ended CANCELLED")


# Needs the server side of issue 17 item 5 (`script` and `options` in POST /v1/clusters/{id}/jobs).
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_an_inline_script_with_sbatch_options_is_queued_held(cli, live_server, ada):
    script = "#!/bin/bash\n#SBATCH -p debug -t 2\necho inline\n"
    held = cli(
        "job", "submit", "--script", "-", "--option", "job-name=ct-inline", "--hold", "--json",
        stdin=script,
        token=ada.token,
    )  # fmt: skip
    assert held.returncode == 0, held.stderr
    job_id = json.loads(held.stdout)["job"]["id"]
    shown = api(live_server, ada, "GET", f"/clusters/demo/jobs/{job_id}").json()["job"]
    assert (shown["state"], shown["reason"], shown["name"]) == ("PENDING", "JobHeldUser", "ct-inline")
    from_path = ada.script("inline.sh", script)
    dry_inline = cli("job", "submit", "--script", "-", "--dry-run", "--json", stdin=script, token=ada.token)
    dry_path = cli("job", "submit", from_path, "--dry-run", "--json", token=ada.token)
    assert json.loads(dry_inline.stdout)["decision"] == json.loads(dry_path.stdout)["decision"]
    assert cli("job", "cancel", str(job_id), token=ada.token).returncode == 0


# Needs the server side of issue 17 item 3 (array task ids such as 123_4 in the /v1 job routes).
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_an_array_tasks_id_is_taken_by_wait_show_output_and_cancel(cli, live_server, ada):
    path = ada.script(
        "array.sh",
        "#!/bin/bash\n#SBATCH -p debug -t 2\n#SBATCH --array=0-1\n"
        'echo task $SLURM_ARRAY_TASK_ID\n[ "$SLURM_ARRAY_TASK_ID" = 1 ] && sleep 60\nexit 0\n',
    )
    submitted = cli("job", "submit", path, "--json", token=ada.token)
    assert submitted.returncode == 0, submitted.stderr
    array_id = json.loads(submitted.stdout)["job"]["id"]
    first, second = f"{array_id}_0", f"{array_id}_1"
    assert cli("job", "wait", first, "--timeout", "60", token=ada.token).returncode == 0
    assert cli("job", "output", first, token=ada.token).stdout == "task 0\n"
    shown = cli("job", "show", first, "--json", token=ada.token)
    assert json.loads(shown.stdout) == api(live_server, ada, "GET", f"/clusters/demo/jobs/{first}").json()
    cancelled = cli("job", "cancel", second, token=ada.token)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cli("job", "wait", second, "--timeout", "60", token=ada.token).returncode == 121
