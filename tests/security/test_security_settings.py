"""The security checklist in production: deploy checks, CSP, cookies and HSTS, throttling, CSRF, Origin."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client

from accounts import api_tokens
from accounts.models import ApiToken, User
from terminal.consumer import same_origin
from tests.conftest import REPO

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery-7"


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment a real deployment runs with: behind TLS, a real secret key, no debug."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERRA_", "DJANGO_"))}
    return env | {
        "CLUSTERRA_SECURE": "1",
        "CLUSTERRA_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "CLUSTERRA_ALLOWED_HOSTS": "console.example.org",
        "CLUSTERRA_TRUSTED_ORIGINS": "https://console.example.org",
        "CLUSTERRA_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "clusterra_site.settings",
        # Production's Redis has a password (check --deploy warns without one: clusterra.W010).
        "REDIS_URL": "redis://:a-long-redis-password@127.0.0.1:6379/0",
        **extra,
    }


def test_check_deploy_is_clean_in_production_settings(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=REPO,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNING" not in output, output
    assert "security.W" not in output, output


def test_cookies_are_secure_and_hsts_is_on_in_production(tmp_path):
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k) for k in ("
        "'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SECURE_SSL_REDIRECT', "
        "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_CONTENT_TYPE_NOSNIFF', "
        "'X_FRAME_OPTIONS', 'DEBUG', 'SECURE_PROXY_SSL_HEADER')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert values["SESSION_COOKIE_SECURE"]
    assert values["CSRF_COOKIE_SECURE"]
    assert values["SESSION_COOKIE_HTTPONLY"]
    assert values["SECURE_SSL_REDIRECT"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"]
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert values["DEBUG"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_a_secure_request_gets_hsts_and_secure_cookies(settings):
    settings.SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.CSRF_COOKIE_SECURE = settings.SESSION_COOKIE_SECURE = True
    person = User.objects.create_user("sam", "sam@example.org", PASSWORD, is_staff=True)
    client = Client()
    page = client.get("/admin/login/", secure=True)
    assert page.headers["Strict-Transport-Security"].startswith("max-age=31536000; includeSubDomains")
    assert page.cookies["csrftoken"]["secure"]
    signed_in = client.post(
        "/admin/login/",
        {"username": person.username, "password": PASSWORD, "next": "/admin/"},
        secure=True,
    )
    assert signed_in.status_code == 302
    assert signed_in.cookies["sessionid"]["secure"]
    assert signed_in.cookies["sessionid"]["httponly"]


# --- Content-Security-Policy --------------------------------------------------------------------


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/admin/login/", "/v1/docs", "/v1/me", "/nowhere"])
def test_every_response_carries_the_policy(client, path):
    policy = directives(client.get(path).headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert "'unsafe-eval'" not in " ".join(" ".join(v) for v in policy.values())


def test_only_the_replay_page_may_run_webassembly(client, rf):
    from terminal.models import TerminalSession

    staff = User.objects.create_superuser("root-admin", "admin@example.org", PASSWORD)
    session = TerminalSession.objects.create(person=staff, cluster_slug="here", posix_user="x")
    client.force_login(staff)
    replay = directives(
        client.get(f"/terminal/sessions/{session.pk}/replay/").headers["Content-Security-Policy"]
    )
    assert replay["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert "'wasm-unsafe-eval'" not in client.get("/").headers["Content-Security-Policy"]


def test_the_cli_hand_off_may_post_only_to_its_loopback_address(client):
    person = User.objects.create_user("lin", "lin@example.org", PASSWORD)
    client.force_login(person)
    page = client.post("/tokens/cli/", {"callback": "http://127.0.0.1:5555/cb", "state": "s-1"})
    assert directives(page.headers["Content-Security-Policy"])["form-action"] == [
        "'self'",
        "http://127.0.0.1:5555",
    ]
    assert "form-action" not in client.get("/tokens/").headers["Content-Security-Policy"]


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def template_files() -> list[Path]:
    roots = [REPO / "templates", *REPO.glob("*/templates")]
    return sorted(p for root in roots for p in root.rglob("*.html") if ".venv" not in p.parts)


def test_no_template_of_ours_has_an_inline_script_or_handler():
    files = template_files()
    assert len(files) > 20
    found = [
        f"{path.relative_to(REPO)}: {m.group(0)}"
        for path in files
        for pattern in (INLINE_SCRIPT, EVENT_HANDLER, JAVASCRIPT_URL)
        for m in pattern.finditer(path.read_text())
    ]
    assert found == [], "inline scripts break under the CSP; move them to a static file"


# --- CSRF on every form -------------------------------------------------------------------------

# Forms that post to somewhere other than the console, where a CSRF token of ours means nothing and
# would leak to the other side: the hand-off of a new token to the CLI's loopback address.
FOREIGN_FORMS = {("accounts/cli_login.html", 'action="{{ callback }}"')}
FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.IGNORECASE | re.DOTALL)


def test_every_post_form_in_our_templates_carries_the_csrf_token():
    checked, missing = 0, []
    for path in template_files():
        name = str(path.relative_to(path.parents[len(path.relative_to(REPO).parts) - 2]))
        for m in FORM.finditer(path.read_text()):
            attrs, body = m.group(1), m.group(2)
            if 'method="post"' not in attrs.lower():
                continue
            if any(name.endswith(t) and marker in attrs for t, marker in FOREIGN_FORMS):
                continue
            checked += 1
            if "{% csrf_token %}" not in body:
                missing.append(f"{path.relative_to(REPO)}: <form{attrs}>")
    assert checked >= 8
    assert missing == []


# Every POST the pages send, with what happens without a CSRF token: Django's 403 before the view runs.
POST_PAGES = [
    "/accounts/logout/",
    "/accounts/login/",
    "/admin/login/",
    "/tokens/",
    "/tokens/1/revoke",
    "/tokens/cli/",
    "/clusters/demo/submit/",
    "/clusters/demo/jobs/1/cancel",
    "/demo/",
]


@pytest.mark.parametrize("path", POST_PAGES)
def test_a_post_without_the_csrf_token_is_refused(path):
    person = User.objects.create_user("lin", "lin@example.org", PASSWORD)
    client = Client(enforce_csrf_checks=True)
    client.force_login(person)
    assert client.post(path, {"name": "x"}).status_code == 403


def test_v1_is_exempt_because_it_takes_no_cookie(client):
    person = User.objects.create_user("lin", "lin@example.org", PASSWORD)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(person)
    # A session cookie alone does not authenticate /v1: a cross-site POST has nothing to ride on.
    assert strict.post("/v1/clusters/demo/jobs", "{}", content_type="application/json").status_code == 401


# --- login throttling ---------------------------------------------------------------------------


@pytest.fixture
def fresh_limits(settings):
    # A fast hasher: the limits are under test here, not PBKDF2's 0.5 s per attempt.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


def test_the_admin_login_is_throttled_per_user_name(fresh_limits):
    User.objects.create_user("sam", "sam@example.org", PASSWORD, is_staff=True)
    codes = []
    for n in range(7):
        # A new address each time: the per-name limit alone must stop a spread-out guesser.
        client = Client(REMOTE_ADDR=f"127.0.1.{n + 1}")
        codes.append(client.post("/admin/login/", {"username": "sam", "password": f"guess-{n}"}).status_code)
    assert codes[:5] == [200] * 5, codes
    assert codes[5:] == [429, 429], codes
    # The right password is refused too while the name is locked: the guesser cannot tell.
    locked = Client(REMOTE_ADDR="127.0.2.1").post("/admin/login/", {"username": "sam", "password": PASSWORD})
    assert locked.status_code == 429


def test_the_admin_login_is_throttled_per_address(fresh_limits):
    codes = [
        Client(REMOTE_ADDR="127.0.3.1")
        .post("/admin/login/", {"username": f"who-{n}", "password": "x"})
        .status_code
        for n in range(12)
    ]
    assert codes == [200] * 10 + [429, 429]


def test_a_right_admin_password_does_not_use_up_attempts(fresh_limits):
    User.objects.create_user("sam", "sam@example.org", PASSWORD, is_staff=True)
    for n in range(8):
        client = Client(REMOTE_ADDR=f"127.0.4.{n + 1}")
        assert client.post("/admin/login/", {"username": "sam", "password": PASSWORD}).status_code == 302


def test_the_console_login_is_throttled_per_user_name(fresh_limits, settings):
    from allauth.account import app_settings

    settings.SOCIALACCOUNT_ONLY = False  # password sign-in on /accounts/login/ (CLUSTERRA_LOCAL_LOGIN=1)
    User.objects.create_user("lin", "lin@example.org", PASSWORD)
    assert app_settings.RATE_LIMITS["login_failed"] == "10/m/ip,5/300s/key"
    codes = []
    for n in range(7):
        client = Client(REMOTE_ADDR=f"127.0.5.{n + 1}")
        r = client.post("/accounts/login/", {"login": "lin", "password": f"guess-{n}"})
        codes.append((r.status_code, "Too many failed login attempts" in r.content.decode()))
    # allauth answers a locked name with its form and a sentence, not a bare status.
    assert [locked for _, locked in codes] == [False] * 5 + [True] * 2, codes
    # Both doors share the counter of a name.
    assert (
        Client(REMOTE_ADDR="127.0.6.1")
        .post("/admin/login/", {"username": "lin", "password": "x"})
        .status_code
        == 429
    )


# --- the WebSocket Origin check -----------------------------------------------------------------


def scope(origin: str | None, host: str = "console.example.org") -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"headers": headers}


@pytest.mark.parametrize(
    ("origin", "secure", "allowed"),
    [
        ("https://console.example.org", True, True),
        ("http://console.example.org", True, False),  # a downgraded page behind TLS
        ("https://console.example.org:8443", True, False),  # another service on the same host
        ("https://evil.example", True, False),
        ("https://console.example.org.evil.example", True, False),
        ("null", True, False),  # sandboxed frames and file: pages
        (None, True, False),  # no Origin at all: not a browser page of ours
        ("", True, False),
        ("http://console.example.org", False, True),
        ("ws://console.example.org", False, False),
        ("https://trusted.example.org", True, True),  # CSRF_TRUSTED_ORIGINS, as Django's CSRF check
    ],
)
def test_the_terminal_socket_checks_the_origin(settings, origin, secure, allowed):
    settings.SECURE = secure
    settings.CSRF_TRUSTED_ORIGINS = ["https://trusted.example.org"]
    assert same_origin(scope(origin)) is allowed


# --- API tokens at rest -------------------------------------------------------------------------


def test_the_raw_api_token_is_nowhere_in_the_database(django_db_blocker):
    from django.db import connection

    person = User.objects.create_user("lin", "lin@example.org", PASSWORD)
    _, raw = api_tokens.issue(person, name="laptop")
    assert api_tokens.authenticate(raw) == person
    secret_part = raw[api_tokens.VISIBLE_CHARS :]
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names come from the schema
            for row in cursor.fetchall():
                text = " ".join(str(v) for v in row)
                if raw in text or secret_part in text:
                    found.append(table)
    assert found == []
    row = ApiToken.objects.get(user=person)
    assert row.digest == api_tokens.digest(raw)
    assert row.prefix == raw[: api_tokens.VISIBLE_CHARS]


@pytest.mark.parametrize(("value", "starts"), [("600", True), ("5", False), ("soon", False)])
def test_the_submit_confirmation_window_comes_from_the_environment(tmp_path, value, starts):
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CLUSTERRA_SUBMIT_CONFIRM_SECONDS)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=production_env(tmp_path, CLUSTERRA_SUBMIT_CONFIRM_SECONDS=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if starts:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == value
    else:
        # The console refuses to start, naming the setting, rather than release budgets of queued jobs.
        assert done.returncode != 0
        assert "CLUSTERRA_SUBMIT_CONFIRM_SECONDS" in done.stderr
