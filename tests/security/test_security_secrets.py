"""No secret leaks: one person's whole day, every log line and every answer scanned for keys and tokens.

The flow is real end to end: IdP sign-in, just-in-time provisioning (useradd, sacctmgr) through a
terminal, a job submitted through /v1 and run by Slurm, its output read through the API and the
page, and offboarding from the admin. Logging is at DEBUG for every logger while it runs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from access.models import Grant
from accounts.models import User
from clusterra_site.asgi import application
from clusters import tokens
from jobs.models import JobRecord
from terminal import live
from tests.conftest import require
from tests.support.fake_headnode import free_uid_block, remove_linux_user
from tests.support.fixtures_idp import sign_in
from tests.support.jobs_support import sync_until
from tests.support.terminal_support import open_page

pytestmark = [
    pytest.mark.idp,
    pytest.mark.slurm,
    pytest.mark.root,
    pytest.mark.django_db(transaction=True),
]

HOST = "127.0.0.1:8000"


def forms_of(secret: bytes) -> dict[str, bytes]:
    """The ways a key could show up in text: as it is, in base64 (both alphabets, padded or not), in hex."""
    found = {"raw": secret, "hex": secret.hex().encode()}
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        encoded = encode(secret)
        found[name] = encoded
        found[f"{name} unpadded"] = encoded.rstrip(b"=")
    return found


def token_forms(token: str) -> dict[str, bytes]:
    # The signature alone is what would let someone re-use a token, so it counts on its own.
    return {"token": token.encode(), "signature": token.rsplit(".", 1)[-1].encode()}


class Recorder:
    """Everything the console said during the flow: response bodies and headers, and log lines."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, bytes]] = []
        # Where a secret is supposed to be shown, once, to its owner: (label, the secret's name).
        self.expected: set[tuple[str, str]] = set()

    def keep(self, label: str, response: Any) -> Any:
        body = b"" if getattr(response, "streaming", False) else response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).encode()
        self.answers.append((label, body + b"\n" + headers))
        return response


def test_no_key_or_token_reaches_a_log_or_a_page(
    client, idp, settings, demo_cluster, slurm_env, caplog, capfd, monkeypatch
):
    require(os.geteuid() == 0, "needs root to create Linux users")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    login = f"ct{secrets.token_hex(4)}"
    idp.users[login] = {
        "password": f"{login}-pw",
        "claims": {"email": f"{login}@example.org", "email_verified": True, "name": "Lee Kage"},
    }
    idp._write()

    # Every logger at DEBUG, including the ones the settings quieten (botocore, urllib3).
    for name in ["", *logging.root.manager.loggerDict]:
        caplog.set_level(logging.DEBUG, logger=name)
    minted: list[str] = []
    real_mint = tokens.mint

    def recording_mint(*args: Any, **kwargs: Any) -> str:
        token = real_mint(*args, **kwargs)
        minted.append(token)
        return token

    monkeypatch.setattr(tokens, "mint", recording_mint)
    tokens.forget()
    seen = Recorder()
    api_tokens_issued: list[str] = []
    try:
        run_the_flow(client, login, demo_cluster, seen, api_tokens_issued)
    finally:
        remove_linux_user(login)

    assert minted, "the flow minted no Slurm token: it did not reach Slurm"
    assert api_tokens_issued
    secrets_to_find: dict[str, bytes] = {}
    for form, value in forms_of(slurm_env.key).items():
        secrets_to_find[f"JWT key ({form})"] = value
    for n, token in enumerate(dict.fromkeys(minted)):
        for form, value in token_forms(token).items():
            secrets_to_find[f"Slurm token {n} ({form})"] = value
    for n, raw in enumerate(api_tokens_issued):
        secrets_to_find[f"API token {n}"] = raw.encode()
        secrets_to_find[f"API token {n} (secret part)"] = raw[12:].encode()

    out, err = capfd.readouterr()
    lines = [r.getMessage() for r in caplog.records]
    lines += [str(r.args) for r in caplog.records if r.args]
    lines += [r.exc_text or "" for r in caplog.records]
    lines += (out + err).splitlines()
    found = []
    for label, text in [("log", line.encode("utf-8", "replace")) for line in lines] + seen.answers:
        for name, value in secrets_to_find.items():
            if value and value in text and (label, name.split(" (")[0]) not in seen.expected:
                found.append(f"{name} in {label}: …{_around(text, value)}…")
    print(
        f"secrets found: {len(found)} (looked for {len(secrets_to_find)} forms of {len(set(minted))} Slurm "
        f"tokens, {len(api_tokens_issued)} API tokens and the JWT key in {len(lines)} log lines and "
        f"{len(seen.answers)} answers)"
    )
    assert found == []
    assert len(caplog.records) > 50, "DEBUG logging did not reach the capture"
    # The scan does see a secret where one is meant to be: the new token on its page, shown once.
    shown = dict(seen.answers)["tokens page (new token)"]
    assert api_tokens_issued[0].encode() in shown


def _around(text: bytes, value: bytes) -> str:
    at = text.index(value)
    return text[max(0, at - 40) : at + 20].decode("utf-8", "replace")


def run_the_flow(client: Client, login: str, cluster: Any, seen: Recorder, issued: list[str]) -> None:
    # 1. Sign in at the IdP.
    signed_in = sign_in(client, login, f"{login}-pw")
    seen.keep("sign-in callback", signed_in.console)
    assert signed_in.console.status_code == 302
    person = User.objects.get(email=f"{login}@example.org")
    Grant.objects.create(cluster=cluster, user=person, all_partitions=True, terminal=True)
    seen.keep("dashboard", client.get("/"))

    # 2. Provisioned just in time by opening a terminal (and use the shell a little).
    seen.keep("terminal page", client.get(f"/clusters/{cluster.slug}/terminal/"))
    cookie = client.cookies["sessionid"].value
    screen = async_to_sync(use_a_terminal)(cluster.slug, cookie)
    seen.answers.append(("terminal screen", screen))
    home = Path(f"/home/{login}")
    assert home.is_dir()

    # 3. An API token, made on its page: the one answer that shows it, once.
    made = seen.keep("tokens page (new token)", client.post("/tokens/", {"name": "laptop", "days": 7}))
    raw = re.search(rb"ct_[A-Za-z0-9_-]{30,}", made.content).group(0).decode()
    issued.append(raw)
    seen.expected.add(("tokens page (new token)", "API token 0"))
    seen.keep("tokens page", client.get("/tokens/"))
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    seen.keep("GET /v1/me", api.get("/v1/me"))
    seen.keep("GET /v1/clusters", api.get("/v1/clusters"))
    seen.keep("GET partitions", api.get(f"/v1/clusters/{cluster.slug}/partitions"))

    # 4. A job through /v1, run by Slurm, its output read back.
    script = home / "leak-check.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --job-name=ct-leak\n#SBATCH --time=1\n#SBATCH --partition=debug\n"
        'echo "ran as $(id -un)"; env | grep -ci slurm_jwt || true\n'
    )
    uid = home.stat().st_uid
    os.chown(script, uid, uid)
    script.chmod(0o755)
    body = {"script_path": str(script)}
    dry = seen.keep(
        "dry run", api.post(f"/v1/clusters/{cluster.slug}/jobs?dry_run=1", body, "application/json")
    )
    assert dry.status_code == 200, dry.content
    queued = seen.keep("submit", api.post(f"/v1/clusters/{cluster.slug}/jobs", body, "application/json"))
    assert queued.status_code == 201, queued.content
    job_id = queued.json()["job"]["id"]
    record = sync_until(JobRecord.objects.get(slurm_job_id=job_id), {"COMPLETED", "FAILED"}, seconds=40)
    seen.keep("GET job", api.get(f"/v1/clusters/{cluster.slug}/jobs/{job_id}"))
    out = seen.keep("GET output", api.get(f"/v1/clusters/{cluster.slug}/jobs/{job_id}/output"))
    assert f"ran as {record.posix_user}" in out.json()["stdout"]["text"], out.content
    seen.keep("job page", client.get(f"/clusters/{cluster.slug}/jobs/{job_id}/"))
    seen.keep("job list", client.get(f"/clusters/{cluster.slug}/jobs/"))
    seen.keep("job list data", client.get(f"/clusters/{cluster.slug}/jobs/data"))
    seen.keep("GET quota", api.get(f"/v1/clusters/{cluster.slug}/quota"))
    seen.keep("healthz", client.get("/healthz"))

    # 5. Offboarded from the admin; everything they held stops working.
    admin = Client()
    admin.force_login(User.objects.create_superuser("ct-admin", "ct-admin@example.org", None))
    done = admin.post(
        "/admin/accounts/user/",
        {"action": "offboard_selected", "_selected_action": [person.pk], "post": "yes"},
        follow=True,
    )
    seen.keep("admin offboard", done)
    seen.keep("admin audit", admin.get("/admin/audit/auditevent/"))
    person.refresh_from_db()
    assert not person.is_active
    assert seen.keep("GET /v1/me after", api.get("/v1/me")).status_code == 401


async def use_a_terminal(slug: str, cookie: str) -> bytes:
    async with open_page(application, slug, cookie=cookie, host=HOST, origin=f"http://{HOST}") as (
        connected,
        code,
        page,
    ):
        assert connected, code
        await page.connected(timeout=30)
        await page.run("echo shell-$((6*7))", "shell-42")
        await page.control({"type": "close"})
        await page.until_closed(timeout=5)
    for terminal in live.running():
        await terminal.end("closed", "test over")
    await asyncio.sleep(0)
    return bytes(page.screen)


def test_the_forms_cover_what_a_leak_would_look_like():
    key = b"\x00\xffsecret"
    forms = forms_of(key)
    assert forms["base64"] == b"AP9zZWNyZXQ="
    assert forms["base64url unpadded"] == b"AP9zZWNyZXQ"
    assert token_forms("a.b.sig")["signature"] == b"sig"
