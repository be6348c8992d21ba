"""The real test IdP (npm oidc-provider on loopback), a console provider pointing at it, a login driver.

Loaded for every test by tests/conftest.py; the tests import `sign_in` and the constants from here.

The console side runs in the test process through Django's test client; the person's
browser at the IdP is a requests session. allauth's own calls to the IdP (discovery,
token, userinfo, keys) are real HTTP from the test process to the node process.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from tests.conftest import REPO, require

IDP_SCRIPT = REPO / "tests" / "support" / "idp" / "idp.mjs"
IDP_PACKAGE = REPO / "node_modules" / "oidc-provider" / "package.json"
NODE_MIN = (20, 19)

PROVIDER_ID = "testidp"
CLIENT_ID = "clusterra-test"
CLIENT_SECRET = "clusterra-test-secret"
CONSOLE = "http://testserver"
CALLBACK = f"{CONSOLE}/accounts/oidc/{PROVIDER_ID}/login/callback/"
AFTER_LOGOUT = f"{CONSOLE}/accounts/login/"


def default_users() -> dict[str, Any]:
    """People at the IdP; tests change them through LoopbackIdp.set_user."""

    def person(login: str, groups: list[str], **extra: Any) -> dict[str, Any]:
        claims = {
            "email": f"{login}@example.org",
            "email_verified": True,
            "name": f"{login.title()} Example",
            "preferred_username": login,
            "groups": groups,
        }
        return {"password": f"{login}-pw", "claims": claims, **extra}

    return {
        "alice": person("alice", ["hpc-users", "gpu"]),
        "bob": person("bob", ["hpc-users"]),
        "mallory": person("mallory", [], refuse="mallory is not assigned to Clusterra"),
    }


@dataclass
class LoopbackIdp:
    issuer: str
    users_file: Path
    users: dict[str, Any] = field(default_factory=default_users)
    # Logout tokens the IdP sent to the console's back-channel logout URI, oldest first.
    logout_tokens: list[str] = field(default_factory=list)

    def next_logout_token(self, timeout: float = 5.0) -> str:
        """The next logout token the IdP posts (it sends them before it answers the logout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logout_tokens:
                return self.logout_tokens.pop(0)
            time.sleep(0.05)
        raise AssertionError(f"the IdP sent no logout token within {timeout:g} s")

    def reset(self) -> None:
        self.users = default_users()
        self._write()
        self.logout_tokens.clear()

    def set_user(self, login: str, **changes: Any) -> None:
        """Change a person at the IdP: password=, refuse=, or claims such as groups=."""
        user = self.users[login]
        for key, value in changes.items():
            if key in {"password", "refuse"}:
                user[key] = value
            else:
                user["claims"][key] = value
        self._write()

    def environ(self, provider_id: str = PROVIDER_ID, **variables: str) -> dict[str, str]:
        """The CLUSTERRA_OIDC_* variables an operator would set to use this IdP."""
        prefix = "CLUSTERRA_OIDC_" + provider_id.upper().replace("-", "_") + "_"
        return {
            "CLUSTERRA_OIDC_PROVIDERS": provider_id,
            prefix + "ISSUER": self.issuer,
            prefix + "CLIENT_ID": CLIENT_ID,
            prefix + "CLIENT_SECRET": CLIENT_SECRET,
            prefix + "NAME": "Test IdP",
            prefix + "SCOPES": "openid profile email groups",
            **{prefix + k: v for k, v in variables.items()},
        }

    def _write(self) -> None:
        # The IdP may read the file at any moment: replace it whole, never half-written.
        scratch = self.users_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.users))
        os.replace(scratch, self.users_file)


class LogoutCatcher:
    """An HTTP receiver on loopback standing in for the console's back-channel logout URI."""

    def __init__(self) -> None:
        tokens: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                tokens.extend(parse_qs(body).get("logout_token", []))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.tokens = tokens
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def idp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackIdp]:
    """One IdP process for the session; `idp` resets its people for each test."""
    node = shutil.which("node")
    require(node is not None, "node is not installed (the test IdP needs Node.js >= 20.19)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
    require(numbers >= NODE_MIN, f"node {version.strip()} is too old for oidc-provider (needs >= 20.19)")
    require(IDP_PACKAGE.exists(), "the npm package oidc-provider is missing: run `npm ci` at the repo root")

    folder = tmp_path_factory.mktemp("idp")
    idp = LoopbackIdp(issuer="", users_file=folder / "users.json")
    idp.reset()
    catcher = LogoutCatcher()
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [CALLBACK],
            "post_logout_redirect_uris": [AFTER_LOGOUT],
            # The console under test is Django's test client, which the IdP cannot reach: its logout
            # tokens go to a catcher, and the tests hand them to the console.
            "backchannel_logout_uri": catcher.url,
            "grant_types": ["authorization_code", "refresh_token"],
            "backchannel_logout_session_required": True,
        }
    ]
    env = {
        **os.environ,
        "IDP_PORT": "0",
        "IDP_CLIENTS": json.dumps(clients),
        "IDP_USERS_FILE": str(idp.users_file),
    }
    log = (folder / "idp.log").open("w+")
    process = subprocess.Popen(
        [node, str(IDP_SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        idp.issuer = _wait_until_ready(process, log, timeout=15)
        idp.logout_tokens = catcher.tokens
        yield idp
    finally:
        catcher.close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        log.close()


@pytest.fixture
def idp(idp_server: LoopbackIdp, settings: Any) -> LoopbackIdp:
    """The test IdP with its default people, configured as the console's only sign-in provider."""
    from accounts import oidc

    idp_server.reset()
    settings.SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers(idp_server.environ())
    return idp_server


@dataclass
class SignIn:
    """How a sign-in went: the IdP's last page if it kept the person there, else the console's answer."""

    console: Any = None
    idp_page: requests.Response | None = None
    browser: requests.Session = field(default_factory=requests.Session)


def sign_in(client: Any, login: str, password: str, *, browser: requests.Session | None = None) -> SignIn:
    """Click "Sign in with Test IdP", fill the IdP's form if it shows one, and come back to the console."""
    result = SignIn(browser=browser or requests.Session())
    start = client.post(f"/accounts/oidc/{PROVIDER_ID}/login/")
    assert start.status_code == 302, start.content
    back, page = _browse(result.browser, "GET", start["Location"])
    if back is None:
        form = _form_of(page)
        back, page = _browse(
            result.browser,
            "POST",
            urljoin(page.url, form.action),
            data={"username": login, "password": password},
        )
    if back is None:
        result.idp_page = page
        return result
    parts = urlsplit(back)
    result.console = client.get(f"{parts.path}?{parts.query}")
    return result


def confirm_idp_logout(browser: requests.Session, url: str) -> str:
    """Follow the console's logout redirect at the IdP, say yes, and return where the IdP sends us."""
    page = browser.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.text
    form = _form_of(page)
    answer = browser.post(
        urljoin(page.url, form.action), data={**form.hidden, "logout": "yes"}, allow_redirects=False
    )
    assert answer.is_redirect, answer.text
    return answer.headers["Location"]


def _browse(
    browser: requests.Session, method: str, url: str, **kwargs: Any
) -> tuple[str | None, requests.Response]:
    """Follow redirects at the IdP until it shows a page, or sends the browser back to the console."""
    response = browser.request(method, url, allow_redirects=False, timeout=10, **kwargs)
    for _hop in range(10):
        if not response.is_redirect:
            return None, response
        target = urljoin(response.url, response.headers["Location"])
        if target.startswith(CONSOLE + "/"):
            return target, response
        response = browser.get(target, allow_redirects=False, timeout=10)
    raise AssertionError(f"too many redirects at the IdP, last {response.url}")


@dataclass
class _Form:
    action: str = ""
    hidden: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.form is None:
            self.form = _Form(action=values.get("action", ""))
        elif tag == "input" and self.form is not None and values.get("type") == "hidden":
            self.form.hidden[values.get("name", "")] = values.get("value", "")


def _form_of(page: requests.Response) -> _Form:
    parser = _FormParser()
    parser.feed(page.text)
    assert parser.form is not None, f"no form on {page.url} ({page.status_code}): {page.text[:500]}"
    return parser.form


def _wait_until_ready(process: subprocess.Popen, log: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = process.stdout.readline()
                if line.startswith("IDP_READY "):
                    return line.split()[1]
                if not line:
                    break  # the process ended
    process.kill()
    log.seek(0)
    raise RuntimeError(f"the test IdP did not start: {log.read()[-2000:]}")
