"""Every page of the console in real Chromium, at 390×844 and 1280×800: no sideways scroll, Sign out
within reach, and axe-core finding nothing serious or critical.

The pages are read from the URL map (tests/support/page_audit.py), not from a list kept by hand: a
route is visited with real objects (a job that ran on the real Slurm, a recorded terminal, a demo
link that was mailed), or named in SKIPPED with the reason it is no page, or it fails
`test_every_route_is_visited_or_skipped`. A new route whose parameters are only a cluster and a job
is visited by itself, as the person.

With CLUSTERRA_SCREENSHOTS=1 the same run saves the README's gallery into docs/screenshots/.
"""

# ruff: noqa: RUF002, RUF003 — sizes are written as people read them (390×844), not 390x844.

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core import mail
from django.core.management import call_command
from django.db import connections
from django.test import Client

from tests.conftest import REPO, require
from tests.support import live_server
from tests.support.browser import ARTIFACTS, chromium, require_browser, session_cookie
from tests.support.demo_support import LINK
from tests.support.fake_headnode import ct_email
from tests.support.jobs_support import sync_until
from tests.support.page_audit import (
    AXE,
    BLOCKING,
    DESKTOP,
    DESKTOP_SIZE,
    IMPACTS,
    PHONE,
    PHONE_SIZE,
    Auditor,
    PageResult,
    Route,
    Skip,
    Visit,
    impact_counts,
    route_keys,
    url_routes,
)

SHOTS = REPO / "docs" / "screenshots"
TAKE_SHOTS = os.environ.get("CLUSTERRA_SCREENSHOTS", "") == "1"
STEP_MS = 10_000
ROLES = ("anonymous", "person", "staff")
CLI_CALLBACK = "callback=http://127.0.0.1:5555/cb&state=s-1"

# ---- the pages ---------------------------------------------------------------------------------------
# Each route (by URL name, or pattern when it has none) is visited here, or generated below (the admin,
# routes that take only a cluster and a job), or skipped in SKIPPED. Addresses name the test's objects:
# {cluster}, {job} (the person's job, COMPLETED with output), {running} (their RUNNING job), {script}
# (the first job's script in their home), {template} (a job template), {link} (the demo link the signup
# mailed), {session} (the person's recorded terminal), {provider} (the IdP), {pk[app.model]} (the admin id
# of that model's first row).

PAGES: list[Visit] = [
    # Anyone: the ways in.
    Visit("account_login", "anonymous", "/accounts/login/", "sign in"),
    Visit("openid_connect_login", "anonymous", "/accounts/oidc/{provider}/login/", "IdP"),
    Visit("account_inactive", "anonymous", "/accounts/inactive/", "account inactive"),
    Visit(
        "socialaccount_login_cancelled",
        "anonymous",
        "/accounts/3rdparty/login/cancelled/",
        "sign-in cancelled",
    ),
    Visit("socialaccount_login_error", "anonymous", "/accounts/3rdparty/login/error/", "sign-in error", 401),
    Visit("demo:start", "anonymous", "/demo/", "demo signup", shot="demo-signup", then="sign up"),
    Visit("demo:sent", "anonymous", "/demo/sent/", "demo link sent"),
    Visit("demo:link", "anonymous", "/demo/link/{link}/", "demo link"),
    Visit("v1-docs", "anonymous", "/v1/docs", "API docs"),
    Visit("admin:login", "anonymous", "/admin/login/", "admin sign in"),
    Visit("", "anonymous", "/no-such-page/", "404 page", 404),
    # The person: their cluster, their job, their shell, their tokens.
    Visit("home", "person", "/", "dashboard", shot="dashboard"),
    Visit(
        "jobs:submit",
        "person",
        "/clusters/{cluster}/submit/",
        "submit, previewed",
        shot="submit",
        prepare="preview",
        view="#preview",
    ),
    Visit("jobs:list", "person", "/clusters/{cluster}/jobs/", "job list", shot="jobs"),
    Visit(
        "jobs:detail",
        "person",
        "/clusters/{cluster}/jobs/{job}/",
        "job with output",
        shot="job",
        view="#stdout",
    ),
    Visit("jobs:detail", "person", "/clusters/{cluster}/jobs/{running}/", "running job"),
    Visit("jobs:cancel", "person", "/clusters/{cluster}/jobs/{running}/cancel", "cancel, asked"),
    Visit(
        "terminal:page",
        "person",
        "/clusters/{cluster}/terminal/",
        "terminal",
        shot="terminal",
        prepare="shell",
    ),
    Visit("files:browse", "person", "/clusters/{cluster}/files/", "files"),
    Visit(
        "files:edit", "person", "/clusters/{cluster}/files/edit?path={script}", "file editor", shot="editor"
    ),
    Visit("files:new", "person", "/clusters/{cluster}/files/new", "new file"),
    Visit("files:upload", "person", "/clusters/{cluster}/files/upload", "upload"),
    Visit("job_templates:list", "person", "/clusters/{cluster}/templates/", "job templates"),
    Visit(
        "job_templates:fill",
        "person",
        "/clusters/{cluster}/templates/{template}/",
        "job template, previewed",
        shot="template",
        prepare="preview as filled",
        view="#preview",
    ),
    Visit("accounts:tokens", "person", "/tokens/", "API tokens"),
    Visit("accounts:token-cli", "person", f"/tokens/cli/?{CLI_CALLBACK}", "CLI approval"),
    Visit("socialaccount_connections", "person", "/accounts/3rdparty/", "IdP connections"),
    Visit("demo:start", "person", "/demo/", "demo, signed in"),
    Visit("jobs:list", "person", "/clusters/nosuch/jobs/", "unknown cluster", 404),
    Visit("account_logout", "person", "/accounts/logout/", "sign out"),
    # Staff: the admin's own pages (each model's are generated from the registry) and recordings.
    Visit("admin:index", "staff", "/admin/", "admin", shot="admin"),
    Visit(
        "admin:accounts_user_changelist",
        "staff",
        "/admin/accounts/user/",
        "admin: delete, asked",
        prepare="ask",
    ),
    Visit("admin:app_list", "staff", "/admin/accounts/", "admin app"),
    Visit("admin:password_change", "staff", "/admin/password_change/", "admin password"),
    Visit("admin:password_change_done", "staff", "/admin/password_change/done/", "admin password done"),
    Visit(
        "admin:auth_user_password_change",
        "staff",
        "/admin/accounts/user/{pk[accounts.user]}/password/",
        "admin set password",
    ),
    Visit("terminal:replay", "staff", "/terminal/sessions/{session}/replay/", "terminal replay"),
]

# The admin's per-model pages: every changelist and change form; add, history and delete share their
# Django templates across models, so they are visited for these models only.
ADMIN_EVERY_FORM = {"accounts.user"}
ADMIN_ROUTE = re.compile(r"^admin:(?P<model>\w+)_(?P<kind>changelist|add|change|history|delete)$")

SKIPPED: dict[str, Skip] = {
    "healthz": Skip("JSON for load balancers and monitors", "not-html", url="/healthz"),
    "admin:logout": Skip("signing out of the admin is a POST", "post-only", "staff", "/admin/logout/"),
    "admin:autocomplete": Skip("JSON for the admin's select boxes"),
    "admin:jsi18n": Skip("the admin's JavaScript catalogue", "not-html", "staff", "/admin/jsi18n/"),
    "admin:view_on_site": Skip("a redirect to an object's page on the site"),
    "admin/(?P<url>.*)$": Skip("any other admin address: a redirect, or the 404 page (visited as itself)"),
    "accounts/oidc/<str:provider_id>/login/callback/": Skip(
        "the IdP's return address: with no sign-in under way it shows the sign-in error page (visited)"
    ),
    "accounts/oidc/^(?P<provider_id>[^/]+)/login/callback/": Skip("allauth's callback, shadowed by ours"),
    "oidc_backchannel_logout": Skip(
        "the IdP posts logout tokens here, server to server",
        "post-only",
        url="/accounts/oidc/{provider}/backchannel-logout/",
    ),
    "socialaccount_signup": Skip("needs a sign-in under way at the IdP; otherwise redirects to sign in"),
    "accounts/social/login/cancelled/": Skip("allauth's old address: a permanent redirect to 3rdparty/"),
    "accounts/social/login/error/": Skip("allauth's old address: a permanent redirect to 3rdparty/"),
    "accounts/social/signup/": Skip("allauth's old address: a permanent redirect to 3rdparty/"),
    "accounts/social/connections/": Skip("allauth's old address: a permanent redirect to 3rdparty/"),
    "demo:join": Skip("the demo link page's button posts here", "post-only", url="/demo/join/"),
    "jobs:list-data": Skip(
        "the JSON the job list polls", "not-html", "person", "/clusters/{cluster}/jobs/data"
    ),
    "accounts:token-revoke": Skip(
        "the token list's Revoke posts here", "post-only", "person", "/tokens/{pk[accounts.apitoken]}/revoke"
    ),
    "files:download": Skip(
        "the file itself, as an attachment",
        "not-html",
        "person",
        "/clusters/{cluster}/files/download?path={script}",
    ),
    "terminal:recording": Skip(
        "the asciicast file the replay page plays",
        "not-html",
        "staff",
        "/terminal/sessions/{session}/recording.cast",
    ),
}
# Whole families that answer machines, not people.
SKIPPED_FAMILIES = {
    "v1/": "the JSON API (its page is v1/docs, visited)",
    "scim/v2/": "SCIM: JSON for IdPs, with a bearer token",
}
# What a new route's parameters are filled with when it is visited without a row in PAGES.
FILLABLE = {"slug": "{cluster}", "job_id": "{job}"}


def admin_models() -> dict[str, str]:
    """`app_model` as the admin's URL names spell it → `app.model`, for every registered model."""
    return {f"{m._meta.app_label}_{m._meta.model_name}": m._meta.label_lower for m in admin.site._registry}


def admin_page(key: str, route: Route, models: dict[str, str]) -> Visit | Skip | None:
    if route.name == "admin:" and route.pattern.endswith("<path:object_id>/"):
        return Skip("a redirect to the object's change form")
    found = ADMIN_ROUTE.match(route.name)
    if not found or found["model"] not in models:
        return None
    label, kind = models[found["model"]], found["kind"]
    base = "/" + route.pattern.split("<", 1)[0]
    if kind == "changelist":
        return Visit(key, "staff", base, f"admin: {label} list")
    if kind == "change":
        return Visit(key, "staff", f"{base}{{pk[{label}]}}/change/", f"admin: {label} change")
    if label not in ADMIN_EVERY_FORM:
        return Skip(f"the same admin template as {sorted(ADMIN_EVERY_FORM)[0]}'s {kind} page (visited)")
    if kind == "add":
        return Visit(key, "staff", base, f"admin: {label} add")
    return Visit(key, "staff", f"{base}{{pk[{label}]}}/{kind}/", f"admin: {label} {kind}")


def filled(key: str, route: Route) -> Visit | None:
    """A route of one of our apps that takes nothing but a cluster and a job: visited as the person."""
    if ":" not in route.name or not set(route.params) <= set(FILLABLE):
        return None
    url = "/" + route.pattern
    for name in route.params:
        url = re.sub(rf"<(\w+:)?{name}>", FILLABLE[name], url)
    return Visit(key, "person", url, route.name)


def plan() -> tuple[list[Visit], dict[str, Skip], list[str], list[str]]:
    """The visits and skips for every route; then routes with neither, and rows for routes now gone."""
    routes = route_keys(url_routes())
    models = admin_models()
    visits = list(PAGES)
    skips: dict[str, Skip] = {}
    visited = {v.route for v in PAGES}
    unplanned = []
    for key, route in routes.items():
        if key in visited:
            continue
        if key in SKIPPED:
            skips[key] = SKIPPED[key]
            continue
        family = next(
            (why for prefix, why in SKIPPED_FAMILIES.items() if route.pattern.startswith(prefix)), ""
        )
        if family and key != "v1-docs":
            skips[key] = Skip(family)
            continue
        page = admin_page(key, route, models) if route.pattern.startswith("admin/") else filled(key, route)
        if isinstance(page, Visit):
            visits.append(page)
        elif isinstance(page, Skip):
            skips[key] = page
        else:
            unplanned.append(f"{route.pattern} (name {route.name!r}, parameters {list(route.params)})")
    stale = sorted({v.route for v in PAGES if v.route} - set(routes)) + sorted(set(SKIPPED) - set(routes))
    return visits, skips, unplanned, stale


def test_every_route_is_visited_or_skipped():
    visits, _, unplanned, stale = plan()

    assert not unplanned, (
        "routes neither visited nor skipped by tests/browser/test_every_page.py: add a Visit to PAGES "
        "(with the objects its address needs) or a Skip to SKIPPED saying why it is no page:\n"
        + "\n".join(unplanned)
    )
    assert not stale, f"PAGES or SKIPPED name routes that no longer exist: {stale}"
    assert {v.role for v in visits} == set(ROLES)
    assert len(visits) >= 40


def test_the_readme_shows_every_screenshot_the_walk_takes():
    shots = sorted({v.shot for v in PAGES if v.shot})
    readme = (REPO / "README.md").read_text()

    for shot in shots:
        for size in ("desktop", "phone"):
            path = f"docs/screenshots/{shot}-{size}.png"
            assert (REPO / path).is_file(), f"{path} is missing: CLUSTERRA_SCREENSHOTS=1 takes it"
            assert (REPO / path).stat().st_size < 200_000, f"{path} is over 200 KB"
            assert f'src="{path}"' in readme, f"the README's Screenshots table does not show {path}"


# ---- the checks themselves ------------------------------------------------------------------------------
# Two pages served by the test under the console's own Content-Security-Policy: one that fails every check,
# one that passes them with Sign out inside a <details> menu, as the console's phone navigation does.

BAD_PAGE = """<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width">
<title>Wide</title></head><body><header><nav><a href="/">Home</a>
<form method="post" action="/accounts/logout/" style="position:absolute; left:1000px">
<button>Sign out</button></form>
</nav></header><main><h1>Wide</h1><table class="data"><tr><td style="white-space:nowrap">
a row of a table far wider than a phone, a row of a table far wider than a phone, a row of a table</td></tr>
</table><input name="script_path"></main></body></html>"""

GOOD_PAGE = """<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width">
<title>Fine</title></head><body><header><nav><details><summary>Menu</summary>
<form method="post" action="/accounts/logout/"><button>Sign out</button></form></details></nav></header>
<main><h1>Fine</h1><label>Script path <input name="script_path"></label></main></body></html>"""


@pytest.mark.browser
def test_the_checks_catch_a_sideways_page_an_unreachable_sign_out_and_an_unlabelled_input():
    require_browser()
    require(AXE.exists(), f"axe-core is missing ({AXE}): npm ci")
    from playwright.sync_api import sync_playwright

    from clusterra_site.security import BASE_POLICY

    csp = "; ".join(f"{name} {' '.join(sources)}" for name, sources in BASE_POLICY.items())
    base = "http://console.test"
    pages = {"/bad": BAD_PAGE, "/good": GOOD_PAGE}

    def serve(route: Any) -> None:
        path = route.request.url.removeprefix(base)
        headers = {"Content-Security-Policy": csp}
        route.fulfill(status=200, body=pages[path], content_type="text/html; charset=utf-8", headers=headers)

    with sync_playwright() as playwright:
        browser = chromium(playwright)
        try:
            context = browser.new_context(viewport=PHONE, device_scale_factor=1)
            context.route(f"{base}/*", serve)
            auditor = Auditor(base)
            auditor.serve_axe(context)  # registered last: Playwright asks it first
            page = context.new_page()
            found = {}
            for path in pages:
                page.goto(base + path)
                found[path] = PageResult(Visit("", "person", path, path))
                auditor.check(page, found[path], PHONE_SIZE, signed_in=True)
        finally:
            browser.close()

    bad, good = found["/bad"], found["/good"]
    assert any("scrolls sideways" in p and "table.data" in p for p in bad.problems), bad.problems
    assert any("no Sign out" in p for p in bad.problems), bad.problems
    assert "label" in {v.rule for v in bad.violations[PHONE_SIZE] if v.impact in BLOCKING}
    assert good.problems == []
    assert good.sign_out == {PHONE_SIZE: "in the menu"}
    assert not [v.rule for v in good.violations[PHONE_SIZE] if v.impact in BLOCKING]


# ---- the test's objects --------------------------------------------------------------------------------


class Database:
    """The ORM from one thread of its own: Playwright's sync API runs an event loop in the test's thread,
    where Django refuses database calls."""

    def __init__(self) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orm")

    def __call__(self, work: Callable[[], Any]) -> Any:
        return self.thread.submit(work).result()

    def close(self) -> None:
        self.thread.submit(connections.close_all).result()
        self.thread.shutdown()


class Rows:
    """`{pk[app.model]}`: the admin id of the first row of that model; a model with none is an error."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def __getitem__(self, label: str) -> str:
        from django.apps import apps

        row = self.database(lambda: apps.get_model(label).objects.order_by("pk").first())
        if row is None:
            raise LookupError(f"no {label} row to open: make one in the test's setup")
        return quote(row.pk)


class Objects(dict):
    """The values the addresses name, each made when first asked for (the link exists only after signup)."""

    def __init__(self, database: Database, makers: dict[str, Callable[[], Any]]) -> None:
        super().__init__(pk=Rows(database))
        self.database, self.makers = database, makers

    def __missing__(self, key: str) -> Any:
        self[key] = value = self.database(self.makers[key])
        return value


def submit(person: Any, name: str, body: str) -> Any:
    """A job of the person's, submitted through /v1 to the real Slurm; its record."""
    from jobs.models import JobRecord

    script = person.script(
        name, f"#!/bin/bash\n#SBATCH --job-name={name[:-3]}\n#SBATCH --partition=debug\n{body}"
    )
    answer = Client(**person.auth).post(
        "/v1/clusters/demo/jobs", json.dumps({"script_path": script}), content_type="application/json"
    )
    assert answer.status_code == 201, answer.content
    return JobRecord.objects.get(person=person.user, slurm_job_id=answer["Location"].rsplit("/", 1)[1])


def run_jobs(person: Any) -> tuple[str, str]:
    """One job COMPLETED with its output, one RUNNING (the list and the Cancel confirmation show both)."""
    done = submit(
        person,
        "every_page.sh",
        "#SBATCH --time=2\n"
        'echo "hello from $(id -un)"\nfor n in 1 2 3; do echo "step_$n of a long_named job"; done\n',
    )
    running = submit(person, "every_page_long.sh", "#SBATCH --time=10\necho started\nsleep 600\n")
    sync_until(done, {"COMPLETED"})
    sync_until(running, {"RUNNING"})
    return str(done.slurm_job_id), str(running.slurm_job_id)


def admin_rows(person: Any) -> None:
    """A row of each model the admin shows that the walk does not make by itself."""
    from allauth.account.models import EmailAddress
    from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
    from django.contrib.auth.models import Group

    from accounts import scim
    from accounts.models import IdpGroup

    app = SocialApp.objects.create(
        provider="openid_connect",
        provider_id="company",
        name="Company sign-in",
        client_id="clusterra",
        settings={"server_url": "https://idp.example.org"},
    )
    account = SocialAccount.objects.create(user=person.user, provider="company", uid=person.name)
    SocialToken.objects.create(app=app, account=account, token="not-a-real-token")
    EmailAddress.objects.create(user=person.user, email=person.user.email, verified=True, primary=True)
    group = Group.objects.create(name="researchers")
    IdpGroup.objects.create(group=group, provider="company", claim_value="researchers")
    scim.issue_token("Company IdP")


def job_template(cluster: Any) -> str:
    """A template an administrator wrote: a locked time limit, a partition and a greeting to fill in."""
    from job_templates.models import JobTemplate, TemplateField

    template = JobTemplate.objects.create(
        cluster=cluster,
        name="Greeting",
        slug="greeting",
        description="Says hello as you, from a compute node.",
        body="#!/bin/bash\n#SBATCH --job-name=greeting\n#SBATCH --partition={{ partition }}\n"
        '#SBATCH --time={{ time_limit }}\nGREETING={{ greeting }}\necho "$GREETING from $(id -un)"\n',
    )
    Kind = TemplateField.Kind
    for order, (name, label, kind, default, locked) in enumerate(
        [
            ("partition", "Partition", Kind.PARTITION, "debug", False),
            ("time_limit", "Time limit", Kind.TIME_LIMIT, "2", True),
            ("greeting", "Greeting", Kind.TEXT, "hello", False),
        ]
    ):
        TemplateField.objects.create(
            template=template, name=name, label=label, kind=kind, default=default, locked=locked, order=order
        )
    return template.slug


# ---- steps some pages need -------------------------------------------------------------------------------


def preview(page: Any, objects: Objects) -> int:
    page.fill("[name=script_path]", objects["script"])
    with page.expect_navigation() as answer:
        page.click("button[value=preview]")
    page.wait_for_selector("#preview")
    return answer.value.status


def preview_as_filled(page: Any, objects: Objects) -> int:
    with page.expect_navigation() as answer:
        page.click("button[value=preview]")
    page.wait_for_selector("#preview")
    return answer.value.status


def ask_to_delete(page: Any, objects: Objects) -> int:
    """The admin's bulk action asks first: the person's row, "Delete selected", Go (nothing is deleted)."""
    email = objects["person"].email
    page.locator("#result_list tr", has_text=email).locator("input.action-select").check()
    page.select_option("select[name=action]", "delete_selected")
    with page.expect_navigation() as answer:
        page.click("button[name=index]")
    page.wait_for_selector("input[name=post][value=yes]", state="attached")  # the question, not a result
    return answer.value.status


def shell(page: Any, objects: Objects) -> None:
    page.wait_for_selector("#status[data-state=connected]")
    page.locator(".xterm-helper-textarea").focus()
    page.keyboard.type("ls -a ~ && cat slurm-*.out")
    page.keyboard.press("Enter")
    page.wait_for_timeout(700)


def sign_up(page: Any, objects: Objects) -> None:
    page.fill("input[name=email]", ct_email())
    with page.expect_navigation():
        page.locator("form:has(input[name=email]) button").first.click()


STEPS: dict[str, Callable[[Any, Objects], Any]] = {
    "preview": preview,
    "preview as filled": preview_as_filled,
    "shell": shell,
    "ask": ask_to_delete,
    "sign up": sign_up,
}


# ---- the walk ---------------------------------------------------------------------------------------------


def visit_page(page: Any, auditor: Auditor, visit: Visit, objects: Objects) -> PageResult:
    from playwright.sync_api import Error as PlaywrightError

    result = PageResult(visit)
    started = time.monotonic()
    try:
        result.url = visit.url.format_map(objects)
        page.set_viewport_size(DESKTOP)
        response = page.goto(auditor.base + result.url)
        result.status = response.status if response else 0
        if visit.prepare:
            result.status = STEPS[visit.prepare](page, objects) or result.status
        if result.status != visit.status:
            result.problems.append(f"answered {result.status}, expected {visit.status}")
        kind = response.headers.get("content-type", "") if response else ""
        if "text/html" not in kind:
            result.problems.append(f"not a page: {kind or 'no answer'}")
            return result
        for size, viewport in ((DESKTOP_SIZE, DESKTOP), (PHONE_SIZE, PHONE)):
            page.set_viewport_size(viewport)
            auditor.check(page, result, size, signed_in=visit.role != "anonymous")
            if visit.shot and TAKE_SHOTS:
                screenshot(page, visit, "phone" if viewport is PHONE else "desktop")
        if visit.then:
            STEPS[visit.then](page, objects)
    except (PlaywrightError, LookupError, KeyError) as e:
        result.problems.append(f"could not be checked: {str(e).splitlines()[0]}")
    result.seconds = time.monotonic() - started
    return result


def screenshot(page: Any, visit: Visit, size: str) -> None:
    """The window as a person sees it, with `visit.view` near its top and no input focused."""
    page.evaluate(
        """(selector) => {
          document.activeElement && document.activeElement.blur();
          const shown = selector && document.querySelector(selector);
          if (shown) window.scrollTo(0, shown.getBoundingClientRect().top + window.scrollY - 100);
        }""",
        visit.view,
    )
    page.screenshot(path=str(SHOTS / f"{visit.shot}-{size}.png"))
    page.evaluate("window.scrollTo(0, 0)")


def check_skip(context: Any, base: str, key: str, skip: Skip, objects: Objects) -> str:
    """Proves what a skip says, where it can be proved; an empty string when it holds."""
    url = skip.url.format_map(objects)
    answer = context.request.get(base + url, max_redirects=0)
    kind = answer.headers.get("content-type", "")
    if skip.check == "post-only" and answer.status != 405:
        return f"{key}: SKIPPED says POST only, but GET {url} answers {answer.status} {kind}"
    if skip.check == "not-html" and "text/html" in kind:
        return f"{key}: SKIPPED says no page, but GET {url} answers {answer.status} {kind}"
    return ""


def report(results: list[PageResult]) -> list[str]:
    """One block per page that failed: its problems, and its serious and critical axe findings."""
    lines = []
    for result in results:
        found = list(result.problems)
        for size, violations in result.violations.items():
            for v in violations:
                if v.impact in BLOCKING:
                    nodes = "; ".join(f"{target} {html}" for target, html in v.nodes[:3])
                    more = f" (+{len(v.nodes) - 3} more)" if len(v.nodes) > 3 else ""
                    found.append(f"{size}: axe {v.impact} {v.rule} ({v.help}): {nodes}{more}")
        if found:
            lines.append(result.name)
            lines += [f"    {line}" for line in found]
    return lines


def save_artifact(results: list[PageResult]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pages = [
        {
            "page": r.visit.label,
            "route": r.visit.route,
            "role": r.visit.role,
            "url": r.url,
            "status": r.status,
            "problems": r.problems,
            "widths": r.widths,
            "sign_out": r.sign_out,
            "seconds": round(r.seconds, 2),
            "axe": {
                size: [{"rule": v.rule, "impact": v.impact, "help": v.help, "nodes": v.nodes} for v in found]
                for size, found in r.violations.items()
            },
        }
        for r in results
    ]
    (ARTIFACTS / "every-page.json").write_text(json.dumps(pages, indent=1, ensure_ascii=False))


@pytest.mark.browser
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_every_page_fits_a_phone_and_passes_axe(demo_settings, demo_cluster, people, settings, tmp_path):
    require_browser()
    require(AXE.exists(), f"axe-core is missing ({AXE}): npm ci")
    from playwright.sync_api import sync_playwright

    from clusters.models import Cluster
    from terminal.models import TerminalPolicy, TerminalSession

    started = time.monotonic()
    visits, skips, unplanned, stale = plan()
    assert not unplanned, "see test_every_route_is_visited_or_skipped"
    assert not stale, "see test_every_route_is_visited_or_skipped"

    # The demo as `make demo` sets it up: local terminals, recorded; the demo's group seeded.
    Cluster.objects.filter(pk=demo_cluster.pk).update(transport=Cluster.Transport.LOCAL)
    TerminalPolicy.objects.create(cluster=demo_cluster, record=True)
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    call_command("seed_demo", cluster="demo", stdout=io.StringIO())
    person = people(quota={"cpu_hours": 10, "max_running_jobs": 4})
    staff = type(person.user).objects.create_user(
        "ct-staff@clusterra.test", "ct-staff@clusterra.test", None, is_staff=True, is_superuser=True
    )
    admin_rows(person)
    template = job_template(demo_cluster)
    job, running = run_jobs(person)
    database = Database()
    objects = Objects(
        database,
        {
            "cluster": lambda: "demo",
            "person": lambda: person.user,
            "job": lambda: job,
            "running": lambda: running,
            "provider": lambda: "company",
            "template": lambda: template,
            "script": lambda: str(person.home / "every_page.sh"),
            "link": lambda: LINK.search(mail.outbox[-1].body).group(1).split("/")[3],
            "session": lambda: (
                TerminalSession.objects.filter(person=person.user).exclude(recording="").latest("pk").pk
            ),
        },
    )
    cookies = {role: session_cookie(user) for role, user in (("person", person.user), ("staff", staff))}
    if TAKE_SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)

    results: list[PageResult] = []
    wrong_skips: list[str] = []
    with live_server.in_this_process() as base, sync_playwright() as playwright:
        auditor = Auditor(base)
        browser = chromium(playwright)
        try:
            # The person first: their terminal is the recording staff replay.
            for role in ("person", "anonymous", "staff"):
                context = browser.new_context(viewport=DESKTOP, device_scale_factor=1)
                context.set_default_timeout(STEP_MS)
                if role in cookies:
                    context.add_cookies([{"name": "sessionid", "value": cookies[role], "url": base}])
                auditor.serve_axe(context)
                page = context.new_page()
                for visit in (v for v in visits if v.role == role):
                    results.append(visit_page(page, auditor, visit, objects))
                # Leaving the terminal ends its shell; the recording is complete once the page is gone.
                page.close()
                for key, skip in skips.items():
                    if skip.check and skip.role == role:
                        wrong_skips += [w for w in [check_skip(context, base, key, skip, objects)] if w]
                context.close()
        finally:
            browser.close()
            database.close()
    save_artifact(results)

    pages = len(results)
    counts = impact_counts(results)
    blocking = sum(counts[i] for i in BLOCKING)
    sideways = [r for r in results if max(r.widths.get(PHONE_SIZE, (0, 0, 0))[:2]) > PHONE["width"]]
    signed_in = [r for r in results if r.visit.role != "anonymous"]
    reached = [r for r in signed_in if len(r.sign_out) == 2 and all(r.sign_out.values())]
    print(
        f"axe: {blocking} serious or critical violations on {pages} pages ({PHONE_SIZE} and {DESKTOP_SIZE}); "
        f"minor/moderate: {counts['minor'] + counts['moderate']}"
    )
    scrolling = f"{len(sideways)} scroll" if sideways else "none scrolls"
    print(
        f"phone: {pages} pages, {scrolling} sideways at {PHONE_SIZE}; Sign out within reach on "
        f"{len(reached)} of {len(signed_in)} signed-in pages ({time.monotonic() - started:.0f} s in all)"
    )
    by_impact = ", ".join(f"{i} {counts[i]}" for i in IMPACTS)
    failures = report(results) + wrong_skips
    if failures:
        # The whole list, by page, so each owner finds theirs (also in test-artifacts/every-page.json).
        pytest.fail(f"findings (axe elements by impact: {by_impact}):\n" + "\n".join(failures), pytrace=False)
