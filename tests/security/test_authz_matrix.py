"""Who gets what: every URL and WebSocket route, for every kind of person, against one table of answers.

The routes are read from the URL configuration itself, so a route added without a row here fails
`test_every_route_has_a_row` with its name. The cluster is offline (slurmrestd on a closed port) and
provisioning is stopped before it touches Linux, so a request the policy lets through ends at
the cluster: 502 in the API, a page that says so, or a terminal closed with `unreachable`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from access.models import Grant
from accounts import api_tokens
from accounts.models import ApiToken, PosixAccount, User
from accounts.provisioning import ProvisioningError
from clusterra_site.asgi import application
from clusterra_site.routing import websocket_urlpatterns
from clusters.models import Cluster
from jobs.models import JobRecord
from terminal.models import TerminalSession
from tests.support.terminal_support import open_page

ROLES = ("anonymous", "no_grant", "granted", "others_job", "deactivated", "staff")
JOB_ID = 4242

# --- the table ----------------------------------------------------------------------------------
# route (as the URL configuration spells it) → (method, URL with the test's objects, expected
# status per role, in ROLES order). "others_job" is a granted person asking for the job of "granted";
# on routes without a job they are simply another granted person. 302 is a redirect to sign in
# unless the row's comment says otherwise. /v1 takes the person's API token instead of a session.

G, OTHER, D, S = ROLES[2:]


@dataclass(frozen=True)
class Route:
    pattern: str
    name: str


def url_routes() -> list[Route]:
    """Every URL pattern, with its full route and namespaced name, by walking the resolver."""

    def walk(resolver: URLResolver, prefix: str, namespace: str) -> list[Route]:
        found = []
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                found += walk(entry, prefix + str(entry.pattern), inner)
            elif isinstance(entry, URLPattern):
                found.append(Route(prefix + str(entry.pattern), namespace + (entry.name or "")))
        return found

    return walk(get_resolver(), "", "")


def websocket_routes() -> list[Route]:
    return [Route("ws:" + str(p.pattern), p.name or "") for p in websocket_urlpatterns]


# --- the people and their things -----------------------------------------------------------------


@dataclass
class World:
    cluster: Cluster
    people: dict[str, User | None]
    tokens: dict[str, str]
    job: JobRecord
    session: TerminalSession
    spare_token: ApiToken
    clients: dict[tuple[str, bool], Client] = field(default_factory=dict)


@pytest.fixture
def world(db, tmp_path, monkeypatch) -> World:
    key = tmp_path / "jwt.key"
    key.write_bytes(b"k" * 32)
    cluster = Cluster.objects.create(
        slug="demo", name="Demo", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref=str(key)
    )

    def no_provisioning(person: Any, cluster: Cluster, **kwargs: Any) -> Any:
        raise ProvisioningError(f"{cluster.name} did not answer (stopped by the test).", code="unreachable")

    monkeypatch.setattr("accounts.provisioning.ready_account", no_provisioning)
    people: dict[str, User | None] = {"anonymous": None}
    for n, role in enumerate(ROLES[1:], start=1):
        person = User.objects.create_user(
            role, f"{role}@example.org", None, is_staff=role == S, is_superuser=role == S
        )
        PosixAccount.objects.create(user=person, username=f"ct{role[:6]}", uid=250000 + n, gid=250000 + n)
        if role in (G, OTHER):
            Grant.objects.create(cluster=cluster, user=person, all_partitions=True, terminal=True)
        people[role] = person
    tokens = {role: api_tokens.issue(p, name="matrix")[1] for role, p in people.items() if p is not None}
    people[D].is_active = False
    people[D].save()
    owner = people[G]
    job = JobRecord.objects.create(
        cluster=cluster,
        person=owner,
        posix_user=owner.posix_account.username,
        slurm_job_id=JOB_ID,
        name="mine",
        partition="debug",
        state="RUNNING",
    )
    session = TerminalSession.objects.create(
        person=owner, cluster_slug=cluster.slug, posix_user=owner.posix_account.username
    )
    spare, _ = api_tokens.issue(owner, name="to revoke")
    cache.clear()
    return World(cluster, people, tokens, job, session, spare)


def client_for(world: World, role: str, api: bool, *, fresh: bool = False) -> Client:
    """One client per role (signing in costs a session write); `fresh` for a request that signs out."""
    key = (role, api)
    if not fresh and key in world.clients:
        return world.clients[key]
    client = _new_client(world, role, api)
    if not fresh:
        world.clients[key] = client
    return client


def _new_client(world: World, role: str, api: bool) -> Client:
    if api:
        token = world.tokens.get(role)
        return Client(HTTP_AUTHORIZATION=f"Bearer {token}") if token else Client()
    client = Client()
    person = world.people[role]
    if person is not None:
        # force_login would refuse nothing: a deactivated person's session is what offboarding leaves.
        client.force_login(person) if person.is_active else _stale_session(client, person)
    return client


def _stale_session(client: Client, person: User) -> None:
    person.is_active = True
    client.force_login(person)
    person.is_active = False
    person.save(update_fields=["is_active"])


def status_of(world: World, role: str, method: str, url: str) -> int:
    url = url.format(job=JOB_ID, session=world.session.pk, token=world.spare_token.pk)
    client = client_for(world, role, api=url.startswith("/v1/"), fresh="logout" in url)
    body = '{"script_path": "/home/someone/run.sh"}' if method == "post" and url.startswith("/v1/") else None
    if body is not None:
        return client.post(url, body, content_type="application/json").status_code
    return getattr(client, method)(url).status_code


#                                                                      anon  none grant other deact staff
MATRIX: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {
    "": [("get", "/", (302, 200, 200, 200, 302, 200))],
    "healthz": [("get", "/healthz", (200, 200, 200, 200, 200, 200))],
    # Sign-in pages are for everyone; an unknown IdP is 404 whoever asks.
    "accounts/login/": [("get", "/accounts/login/", (200, 302, 302, 302, 200, 302))],
    "accounts/logout/": [("get", "/accounts/logout/", (302, 200, 200, 200, 302, 200))],
    "accounts/inactive/": [("get", "/accounts/inactive/", (200, 200, 200, 200, 200, 200))],
    "accounts/oidc/<str:provider_id>/login/callback/": [
        ("get", "/accounts/oidc/nosuch/login/callback/", (404, 404, 404, 404, 404, 404))
    ],
    # SCIM answers IdPs with a bearer token only: no session, staff's included, gets anything.
    "scim/v2/ServiceProviderConfig": [
        ("get", "/scim/v2/ServiceProviderConfig", (401, 401, 401, 401, 401, 401))
    ],
    "scim/v2/ResourceTypes": [("get", "/scim/v2/ResourceTypes", (401, 401, 401, 401, 401, 401))],
    "scim/v2/ResourceTypes/<str:name>": [
        ("get", "/scim/v2/ResourceTypes/User", (401, 401, 401, 401, 401, 401))
    ],
    "scim/v2/Schemas": [("get", "/scim/v2/Schemas", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Schemas/<str:urn>": [
        ("get", "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", (401, 401, 401, 401, 401, 401))
    ],
    "scim/v2/.search": [("post", "/scim/v2/.search", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Users/.search": [("post", "/scim/v2/Users/.search", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Groups/.search": [("post", "/scim/v2/Groups/.search", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Users": [("get", "/scim/v2/Users", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Users/<str:resource_id>": [
        ("get", "/scim/v2/Users/00000000-0000-0000-0000-000000000000", (401, 401, 401, 401, 401, 401))
    ],
    "scim/v2/Groups": [("get", "/scim/v2/Groups", (401, 401, 401, 401, 401, 401))],
    "scim/v2/Groups/<str:resource_id>": [
        ("delete", "/scim/v2/Groups/00000000-0000-0000-0000-000000000000", (401, 401, 401, 401, 401, 401))
    ],
    "scim/v2/^(?P<rest>.*)$": [("get", "/scim/v2/Anything", (401, 401, 401, 401, 401, 401))],
    # The IdP's server-to-server logout: no session needed or used, only a signed token (none here).
    "accounts/oidc/<str:provider_id>/backchannel-logout/": [
        ("get", "/accounts/oidc/nosuch/backchannel-logout/", (405, 405, 405, 405, 405, 405)),
        ("post", "/accounts/oidc/nosuch/backchannel-logout/", (400, 400, 400, 400, 400, 400)),
    ],
    "accounts/oidc/^(?P<provider_id>[^/]+)/login/": [
        ("get", "/accounts/oidc/nosuch/login/", (404, 404, 404, 404, 404, 404))
    ],
    # allauth's own callback, shadowed by ours at the same address (the row above answers).
    "accounts/oidc/^(?P<provider_id>[^/]+)/login/callback/": [
        ("get", "/accounts/oidc/nosuch/login/callback/", (404, 404, 404, 404, 404, 404))
    ],
    "accounts/3rdparty/login/cancelled/": [
        ("get", "/accounts/3rdparty/login/cancelled/", (200, 200, 200, 200, 200, 200))
    ],
    "accounts/3rdparty/login/error/": [
        ("get", "/accounts/3rdparty/login/error/", (401, 401, 401, 401, 401, 401))
    ],
    # Without a sign-in in progress there is nothing to sign up for.
    "accounts/3rdparty/signup/": [("get", "/accounts/3rdparty/signup/", (302, 302, 302, 302, 302, 302))],
    "accounts/3rdparty/": [("get", "/accounts/3rdparty/", (302, 200, 200, 200, 302, 200))],
    # allauth's old addresses: permanent redirects to the 3rdparty/ ones.
    "accounts/social/login/cancelled/": [("get", "/accounts/social/login/cancelled/", (301,) * 6)],
    "accounts/social/login/error/": [("get", "/accounts/social/login/error/", (301,) * 6)],
    "accounts/social/signup/": [("get", "/accounts/social/signup/", (301,) * 6)],
    "accounts/social/connections/": [("get", "/accounts/social/connections/", (301,) * 6)],
    # The demo is closed here (no CLUSTERRA_DEMO_CLUSTER): 404, or back to the start; a bad link is 400.
    "demo/": [("get", "/demo/", (404,) * 6)],
    "demo/sent/": [("get", "/demo/sent/", (302,) * 6)],
    "demo/join/": [("get", "/demo/join/", (405,) * 6)],
    "demo/link/<str:token>/": [("get", "/demo/link/not-a-link/", (400,) * 6)],
    # The terminal page shows to anyone signed in; the socket (WS_MATRIX) asks the policy.
    "clusters/<slug:slug>/terminal/": [("get", "/clusters/demo/terminal/", (302, 200, 200, 200, 302, 200))],
    # Recordings: administrators only (this one was not recorded: 404 even for them).
    "terminal/sessions/<int:pk>/replay/": [
        ("get", "/terminal/sessions/{session}/replay/", (302, 403, 403, 403, 302, 200))
    ],
    "terminal/sessions/<int:pk>/recording.cast": [
        ("get", "/terminal/sessions/{session}/recording.cast", (302, 403, 403, 403, 302, 404))
    ],
    "clusters/<slug:slug>/submit/": [("get", "/clusters/demo/submit/", (302, 403, 200, 200, 302, 200))],
    "clusters/<slug:slug>/jobs/": [("get", "/clusters/demo/jobs/", (302, 403, 200, 200, 302, 200))],
    "clusters/<slug:slug>/jobs/data": [("get", "/clusters/demo/jobs/data", (302, 403, 200, 200, 302, 200))],
    # Someone else's job is 404, the same as no job; staff may look at every job.
    "clusters/<slug:slug>/jobs/<jobid:job_id>/": [
        ("get", "/clusters/demo/jobs/{job}/", (302, 404, 200, 404, 302, 200))
    ],
    # Only the owner may cancel (302 back to the job page, which says the cluster did not answer); a GET
    # only asks first, and only the owner is asked.
    "clusters/<slug:slug>/jobs/<jobid:job_id>/cancel": [
        ("get", "/clusters/demo/jobs/{job}/cancel", (302, 404, 200, 404, 302, 404)),
        ("post", "/clusters/demo/jobs/{job}/cancel", (302, 404, 302, 404, 302, 404)),
    ],
    # A person's files: a grant to submit or to open the terminal (staff have none here), then their
    # account, which the offline cluster stops (502); a path is never looked at before both.
    "clusters/<slug:slug>/files/": [("get", "/clusters/demo/files/", (302, 403, 502, 502, 302, 403))],
    "clusters/<slug:slug>/files/edit": [
        ("get", "/clusters/demo/files/edit?path=/home/ctgrante/a.sh", (302, 403, 502, 502, 302, 403)),
        ("post", "/clusters/demo/files/edit?path=/home/ctgrante/a.sh", (302, 403, 502, 502, 302, 403)),
    ],
    "clusters/<slug:slug>/files/new": [("post", "/clusters/demo/files/new", (302, 403, 502, 502, 302, 403))],
    "clusters/<slug:slug>/files/upload": [
        ("post", "/clusters/demo/files/upload", (302, 403, 502, 502, 302, 403))
    ],
    "clusters/<slug:slug>/files/download": [
        ("get", "/clusters/demo/files/download?path=/home/ctgrante/a.sh", (302, 403, 502, 502, 302, 403))
    ],
    # Job templates: listed to whoever may see the cluster; one that does not exist is 404 after that.
    "clusters/<slug:slug>/templates/": [("get", "/clusters/demo/templates/", (302, 403, 200, 200, 302, 200))],
    "clusters/<slug:slug>/templates/<slug:template>/": [
        ("get", "/clusters/demo/templates/nosuch/", (302, 403, 404, 404, 302, 404)),
        ("post", "/clusters/demo/templates/nosuch/", (302, 403, 404, 404, 302, 404)),
    ],
    "tokens/": [("get", "/tokens/", (302, 200, 200, 200, 302, 200))],
    # The owner's token: revoked (302 back to the list); anyone else's attempt is 404.
    "tokens/<int:pk>/revoke": [("post", "/tokens/{token}/revoke", (302, 404, 302, 404, 302, 404))],
    "tokens/cli/": [
        ("get", "/tokens/cli/?callback=http://127.0.0.1:5555/cb&state=s-1", (302, 200, 200, 200, 302, 200))
    ],
    # /v1: no token or a deactivated person's token is 401; the cluster being offline is 502.
    "v1/me": [("get", "/v1/me", (401, 200, 200, 200, 401, 200))],
    "v1/clusters": [("get", "/v1/clusters", (401, 200, 200, 200, 401, 200))],
    "v1/clusters/<slug:id>/partitions": [
        ("get", "/v1/clusters/demo/partitions", (401, 403, 502, 502, 401, 502))
    ],
    "v1/clusters/<slug:id>/quota": [("get", "/v1/clusters/demo/quota", (401, 403, 200, 200, 401, 200))],
    "v1/clusters/<slug:id>/jobs": [
        ("get", "/v1/clusters/demo/jobs", (401, 403, 200, 200, 401, 200)),
        # Staff without a grant may look but not submit: refused before an account is made for them.
        ("post", "/v1/clusters/demo/jobs", (401, 403, 502, 502, 401, 403)),
    ],
    "v1/clusters/<slug:id>/jobs/<jobid:job_id>": [
        ("get", "/v1/clusters/demo/jobs/{job}", (401, 404, 200, 404, 401, 200)),
        ("delete", "/v1/clusters/demo/jobs/{job}", (401, 404, 502, 404, 401, 404)),
    ],
    "v1/clusters/<slug:id>/jobs/<jobid:job_id>/output": [
        ("get", "/v1/clusters/demo/jobs/{job}/output", (401, 404, 200, 404, 401, 200))
    ],
    "v1/openapi.json": [("get", "/v1/openapi.json", (200,) * 6)],
    "v1/docs": [("get", "/v1/docs", (200,) * 6)],
    "v1/^(?P<rest>.*)$": [("get", "/v1/nowhere", (404,) * 6)],
    # The admin's own doors; every other admin URL is in ADMIN_FAMILY below.
    "admin/login/": [("get", "/admin/login/", (200, 200, 200, 200, 200, 302))],
    "admin/logout/": [("post", "/admin/logout/", (302, 302, 302, 302, 302, 200))],
}

# Every other admin URL: everyone but staff is sent to the admin's sign-in page. Staff get a page;
# for the made-up object id the test uses, a redirect inside the admin or 404; 403 to add or delete
# what the admin keeps read-only (the audit log, usage, tokens, terminal sessions) and to the
# autocomplete endpoint asked nothing.
ADMIN_NON_STAFF = 302
ADMIN_FOR_STAFF = {200, 301, 302, 403, 404}

# The terminal socket: a close code before accept, or the "closed" message's code after it.
# "unreachable" is a person the policy let in, stopped at provisioning by the offline cluster.
WS_MATRIX: dict[str, tuple[str, ...]] = {
    "ws:ws/clusters/<slug:slug>/terminal/": (
        "4401",
        "closed:no_grant",
        "closed:unreachable",
        "closed:unreachable",
        "4401",
        "closed:no_grant",
    ),
}


def admin_url(pattern: str) -> str:
    """A concrete URL for an admin pattern: a made-up object id, the first app of an app index."""
    url = re.sub(r"<path:object_id>|<path:content_type_id>|<id>", "999999", pattern)
    url = re.sub(r"\(\?P<app_label>([a-z_]+)[^)]*\)", r"\1", url)
    url = url.replace("(?P<url>.*)", "nowhere/").replace("^", "").replace("$", "")
    assert not re.search(r"[<(]", url), f"no concrete URL for {pattern}"
    return "/" + url


def is_admin_family(pattern: str) -> bool:
    return pattern.startswith("admin/") and pattern not in MATRIX


def test_every_route_has_a_row():
    missing = [
        f"{r.pattern} (name {r.name!r})"
        for r in url_routes()
        if r.pattern not in MATRIX and not is_admin_family(r.pattern)
    ]
    missing += [r.pattern for r in websocket_routes() if r.pattern not in WS_MATRIX]
    assert not missing, (
        "routes without a row in tests/security/test_authz_matrix.py (say who may use them): "
        + ", ".join(missing)
    )
    stale = set(MATRIX) - {r.pattern for r in url_routes()}
    stale |= set(WS_MATRIX) - {r.pattern for r in websocket_routes()}
    assert not stale, f"rows for routes that no longer exist: {sorted(stale)}"


def test_every_route_answers_every_role_as_the_table_says(world):
    wrong, cells, requests = [], 0, 0
    for route in url_routes():
        if is_admin_family(route.pattern):
            url = admin_url(route.pattern)
            for role in ROLES:
                client = client_for(world, role, api=False)
                answer = client.get(url)
                requests += 1
                if role == S:
                    ok = answer.status_code in ADMIN_FOR_STAFF
                else:
                    ok = answer.status_code == ADMIN_NON_STAFF and answer["Location"].startswith(
                        "/admin/login/"
                    )
                if not ok:
                    wrong.append(f"{role:12} GET {url}: {answer.status_code}")
            cells += len(ROLES)
            continue
        for method, url, statuses in MATRIX[route.pattern]:
            for role, expected in zip(ROLES, statuses, strict=True):
                got = status_of(world, role, method, url)
                requests += 1
                if got != expected:
                    wrong.append(f"{role:12} {method.upper()} {url}: {got}, the table says {expected}")
        cells += len(ROLES)
    # The figure the issue asks for, in its words.
    print(f"routes × roles covered: {cells} ({requests} requests)")  # noqa: RUF001
    assert not wrong, "answers that differ from the table:\n" + "\n".join(wrong)
    assert requests >= 900


def socket_outcome(world: World, role: str) -> str:
    """How the terminal socket ends for this person: the close code before accept, or the closing reason."""
    client = client_for(world, role, api=False, fresh=True)
    cookie = client.cookies["sessionid"].value if "sessionid" in client.cookies else None

    async def knock() -> str:
        async with open_page(application, world.cluster.slug, cookie=cookie) as (connected, code, page):
            if not connected:
                return str(code)
            closed = await page.until_control("closed", timeout=10)
            return f"closed:{closed['code']}"

    return async_to_sync(knock)()


@pytest.mark.django_db(transaction=True)
def test_the_terminal_socket_answers_every_role_as_the_table_says(world):
    (route,) = websocket_routes()
    got = tuple(socket_outcome(world, role) for role in ROLES)
    print(f"routes × roles covered (WebSocket): {len(ROLES)}")  # noqa: RUF001
    assert got == WS_MATRIX[route.pattern]
