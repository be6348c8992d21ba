"""The terminal page itself: who sees it, and what it hands to its script."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
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
    scripts = re.findall(r'<script src="([^"]+)"></script>', html)
    assert scripts == [
        "/static/xterm/xterm.js",
        "/static/xterm-addon-fit/addon-fit.js",
        "/static/terminal/terminal.js",
    ]
    # Content-Security-Policy friendly: every script is a file, none is inline.
    assert html.count("<script") == len(scripts)


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
