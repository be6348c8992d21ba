"""templates/base.html: one stylesheet, a skip link, the header's links on every page, the cluster's own."""

from __future__ import annotations

import re

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils.html import escape

from accounts import api_tokens
from clusters.models import Cluster
from tests.conftest import REPO

pytestmark = pytest.mark.django_db


@pytest.fixture
def lin(django_user_model):
    return django_user_model.objects.create_user("lin", "lin@example.org", "pw-lin-123456")


def page_for(user, **context) -> str:
    request = RequestFactory().get("/")
    request.user = user
    return render_to_string("base.html", context, request=request)


def test_every_page_has_one_stylesheet_a_skip_link_and_a_main(client, lin):
    client.force_login(lin)
    html = client.get("/tokens/").content.decode()

    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', html) == ["/static/ui/console.css"]
    assert '<link rel="icon" href="/static/ui/favicon.svg" type="image/svg+xml">' in html
    assert '<script src="/static/ui/format.js" defer></script>' in html
    assert '<a class="skip" href="#main">' in html
    assert '<main id="main"' in html
    assert "<style" not in html
    assert " style=" not in html
    assert html.count("<h1") == 1


def test_the_header_has_the_person_and_sign_out_in_the_row_and_in_the_phone_menu(lin):
    lin.is_staff = True
    html = page_for(lin)

    assert '<a class="brand" href="/">' in html
    menu = re.search(r'<details class="menu">(.*?)</details>', html, re.S).group(1)
    row = html.split('<details class="menu">')[0]
    for part in (row, menu):
        assert re.search(r'<span class="person"[^>]*>lin</span>', part)
        assert 'href="/admin/"' in part
        assert re.search(
            r'<form method="post" action="/accounts/logout/"[^>]*>.*?Sign out</button>', part, re.S
        )
        assert 'href="/tokens/"' in part


def test_no_person_no_menu(rf):
    from django.contrib.auth.models import AnonymousUser

    html = page_for(AnonymousUser())
    assert "<details" not in html
    assert "Sign out" not in html
    assert 'href="/accounts/login/">Sign in</a>' in html


def test_a_page_about_a_cluster_links_to_its_jobs_submit_and_terminal(lin):
    html = page_for(lin, cluster=Cluster(slug="c1", name="Cluster One"))

    nav = re.search(r'<nav class="cluster-nav" aria-label="Cluster One">(.*?)</nav>', html, re.S).group(1)
    links = re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)
    assert links[:4] == [
        ("/#cluster-c1", "Dashboard"),
        ("/clusters/c1/jobs/", "Jobs"),
        ("/clusters/c1/submit/", "Submit"),
        ("/clusters/c1/terminal/", "Terminal"),
    ]
    assert "cluster-nav" not in page_for(lin)


def test_the_current_page_is_marked_in_the_cluster_nav(client, lin):
    Cluster.objects.create(slug="c1", name="Cluster One", slurmrestd_url="http://127.0.0.1:9")
    client.force_login(lin)
    # A job that is not there: the job page's refusal still has the cluster's navigation.
    html = client.get("/clusters/c1/jobs/404/").content.decode()

    assert '<a href="/clusters/c1/jobs/" aria-current="page">Jobs</a>' in html
    assert '<a href="/clusters/c1/terminal/">Terminal</a>' in html


def test_messages_are_notices_read_out_as_status(client, lin):
    token, _ = api_tokens.issue(lin, name="laptop", by=lin)
    client.force_login(lin)
    html = client.post(f"/tokens/{token.pk}/revoke", follow=True).content.decode()

    # The prefix is the token's own (base64url: it may hold - and _), so it is matched as written.
    said = f'<p class="notice ok" role="status">API token {escape(token.prefix)}… (laptop) is revoked.</p>'
    assert said in html


def test_nothing_points_at_the_old_stylesheets():
    old = ("css/console.css", "jobs/jobs.css")
    roots = [REPO / "templates", *REPO.glob("*/templates"), REPO / "tests"]
    found = [
        str(path.relative_to(REPO))
        for root in roots
        for path in root.rglob("*")
        if path.suffix in {".html", ".py"}
        and path.name != "test_layout.py"
        and any(name in path.read_text() for name in old)
    ]
    assert found == []
    assert not (REPO / "static" / "css" / "console.css").exists()
    assert not (REPO / "jobs" / "static" / "jobs" / "jobs.css").exists()
