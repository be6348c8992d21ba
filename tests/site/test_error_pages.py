"""The console's own 404 and 500 pages: styled like the rest, with a way back to the dashboard."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.views import defaults

pytestmark = pytest.mark.django_db


@pytest.fixture
def lin(django_user_model):
    return django_user_model.objects.create_user("lin", "lin@example.org", "pw-lin-123456")


@pytest.mark.parametrize(
    "path", ["/clusters/nowhere/jobs/", "/clusters/nowhere/submit/", "/clusters/nowhere/terminal/"]
)
def test_an_unknown_cluster_is_the_console_s_404_page_with_a_way_home(client, lin, settings, path):
    settings.DEBUG = False  # Django draws 404.html only when not debugging
    client.force_login(lin)

    response = client.get(path)

    assert response.status_code == 404
    assert [t.name for t in response.templates][:2] == ["404.html", "base.html"]
    html = response.content.decode()
    assert "<h1>There is nothing here</h1>" in html
    assert f"<code>{path}</code>" in html
    assert '<a class="btn btn-primary" href="/">Go to the dashboard</a>' in html
    assert '<link rel="stylesheet" href="/static/ui/console.css">' in html
    assert "Sign out" in html  # the header is the signed-in one: the person is still at home here
    assert "Not Found" not in html


def test_an_unknown_address_is_the_same_page_for_anyone(client):
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>There is nothing here</h1>" in html
    assert 'href="/accounts/login/">Sign in</a>' in html


def test_the_500_page_stands_on_its_own():
    # Django draws it with no request and no context: it must need neither.
    response = defaults.server_error(RequestFactory().get("/clusters/c1/jobs/"))

    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Something went wrong on our side</h1>" in html
    assert '<link rel="stylesheet" href="/static/ui/console.css">' in html
    assert '<a class="btn btn-primary" href="/">Go to the dashboard</a>' in html
