"""The terminal page itself: who sees it, and what it hands to its script."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from terminal.models import TerminalPolicy
from tests.support.terminal_support import local_cluster


@pytest.fixture
def cluster(db):
    return local_cluster(name="Demo cluster")


@pytest.fixture
def client(db) -> Client:
    person = User.objects.create(username="alice", email="alice@corp.example")
    client = Client()
    client.force_login(person)
    return client


def test_it_sends_a_signed_out_person_to_sign_in(cluster):
    response = Client().get("/clusters/here/terminal/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/clusters/here/terminal/")


def test_it_renders_the_terminal_with_its_socket_and_directory(cluster, client):
    response = client.get("/clusters/here/terminal/", {"cwd": "/home/alice/run 1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-socket="/ws/clusters/here/terminal/"' in html
    assert 'data-cwd="/home/alice/run 1"' in html
    assert "Demo cluster" in html
    scripts = re.findall(r'<script src="([^"]+)"[^>]*></script>', html)
    # The terminal's own, in this order, after whatever every page loads.
    assert scripts[-3:] == [
        "/static/xterm/xterm.js",
        "/static/xterm-addon-fit/addon-fit.js",
        "/static/terminal/terminal.js",
    ]
    # Content-Security-Policy friendly: every script is a file, none is inline.
    assert html.count("<script") == len(scripts)


RECORDED = re.compile(r'<p id="recorded" class="notice recorded" role="status"( hidden)?>')


def test_a_recorded_cluster_says_so_before_the_shell_opens(cluster, client):
    TerminalPolicy.objects.create(cluster=cluster, record=True)
    html = client.get("/clusters/here/terminal/").content.decode()
    notice = RECORDED.search(html)
    assert notice is not None
    assert notice.group(1) is None  # shown
    assert "This session is recorded." in html


def test_an_unrecorded_cluster_shows_no_recording_notice(cluster, client):
    TerminalPolicy.objects.create(cluster=cluster, record=False)
    html = client.get("/clusters/here/terminal/").content.decode()
    notice = RECORDED.search(html)
    # Kept in the page, hidden, for the script to show should the shell that opens be recorded after all.
    assert notice is not None
    assert notice.group(1) == " hidden"


def test_the_page_carries_its_cluster_for_the_cluster_navigation(cluster, client):
    response = client.get("/clusters/here/terminal/")
    assert response.context["cluster"] == cluster


def test_the_script_can_tell_a_signed_out_person_from_a_dropped_connection(cluster, client):
    assert client.head("/clusters/here/terminal/").status_code == 200
    assert Client().head("/clusters/here/terminal/").status_code == 302


def test_an_unknown_cluster_is_not_found(client):
    assert client.get("/clusters/nowhere/terminal/").status_code == 404


def test_the_browser_code_is_served_from_the_npm_packages(client):
    from django.contrib.staticfiles import finders

    for path in (
        "xterm/xterm.js",
        "xterm/xterm.css",
        "xterm-addon-fit/addon-fit.js",
        "asciinema-player/asciinema-player.min.js",
    ):
        found = finders.find(path)
        assert found is not None, path
        assert "node_modules" in found
