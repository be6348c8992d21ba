"""Redis (the channel layer) going away and coming back: the console degrades, it does not break.

A redis-server of the test's own on a free loopback port is started and killed with SIGKILL (a crash,
not a shutdown); the shared Redis on :6379 is never touched.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from accounts import api_tokens, offboarding, posix
from accounts.models import ClusterAccount, User
from audit.models import AuditEvent
from clusterra_site import cache as degrading_cache
from clusterra_site import env
from clusterra_site.asgi import application
from clusters import headnode
from terminal import notices, transports
from terminal.transports.ssm import SessionManager, login_command
from tests.conftest import require
from tests.support.fake_headnode import FakeHeadNode
from tests.support.jobs_support import HELLO
from tests.support.redis_support import RedisServer, free_port
from tests.support.ssm_agent import REGION, TARGET, TEST_CREDENTIALS, AgentEmulator, StubbedSsm
from tests.support.terminal_support import (
    grant_terminal,
    open_page,
    session_cookie,
    ssm_cluster,
)


@pytest.fixture
def redis(settings, monkeypatch):
    require(bool(shutil.which("redis-server")), "needs redis-server (Debian package redis-server)")
    # The cache warns about an outage once a minute per process; each test's outage is its own.
    monkeypatch.setattr(degrading_cache, "_last_warning", float("-inf"))
    server = RedisServer(free_port())
    server.start()
    # The very configuration production gets from REDIS_URL, pointed at this server: when Redis goes,
    # the channel layer and the cache go together.
    settings.CHANNEL_LAYERS = {"default": env.channel_layer(server.url)}
    settings.CACHES = {"default": env.cache(server.url)}
    yield server
    server.crash()


@pytest.fixture
def head_node(monkeypatch) -> FakeHeadNode:
    node = FakeHeadNode()
    monkeypatch.setattr(headnode, "run", node)
    return node


@pytest.fixture
def cluster(db, settings, head_node, _no_connection_left_open):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60300, 60399
    return ssm_cluster(instance_id=TARGET, region=REGION)


@pytest.fixture
def person(cluster):
    person = User.objects.create(username="dana", email="dana@corp.example")
    grant_terminal(person, cluster)
    return person


class Shells:
    """Each terminal opened gets its own emulated session, answered by a stubbed StartSession."""

    def __init__(self, agent: AgentEmulator, monkeypatch, posix_name: str) -> None:
        self.agent = agent
        self.name = posix_name
        self.stubs: list[StubbedSsm] = []
        monkeypatch.setattr(transports, "ssm_manager", lambda _: self._next())
        # Session Manager's preferences are not this test's: the console's own idle limit stands. Read, they
        # would take a stubbed session's place, and whether they are read depends on what earlier tests left
        # cached (the file failed alone, and passed after the others).
        monkeypatch.setattr(transports, "idle_minutes", lambda cluster: cluster.terminal_idle_timeout)

    def _next(self) -> SessionManager:
        stub = self.stubs.pop(0)
        return SessionManager(stub.client, credentials=TEST_CREDENTIALS)

    def expect_one(self) -> None:
        session = self.agent.new_session()
        reason = f"Clusterra terminal of dana as {self.name}"
        # StubbedSsm reads the running loop: the stub is made here, on the test's loop.
        self.stubs.append(StubbedSsm(self.agent, session, command=login_command(self.name), reason=reason))


async def until(condition, timeout: float, what: str) -> float:
    """Seconds it took `condition()` to hold (AssertionError after `timeout`)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def get(client: Client, path: str, **headers):
    return sync_to_async(client.get)(path, **headers)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)  # async, reaching the database from worker threads
@pytest.mark.asyncio
async def test_redis_dying_degrades_the_console_and_offboarding_still_closes_every_terminal(
    redis, agent, cluster, person, head_node, monkeypatch
):
    name = await sync_to_async(lambda: posix.ensure_account(person).username)()
    shells = Shells(agent, monkeypatch, name)
    _, api_token = await sync_to_async(api_tokens.issue)(person)
    browser = Client()
    await sync_to_async(browser.force_login)(person)
    staff = Client()
    await sync_to_async(staff.force_login)(
        await sync_to_async(User.objects.create)(
            username="ct-staff", email="ct-staff@corp.example", is_staff=True
        )
    )
    cookie = await session_cookie(person)

    shells.expect_one()
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, before):
        await before.connected()
        await before.run("echo before-$((1+1))", "before-2")
        assert notices.deaf_listeners() == 0

        redis.crash()
        # The open terminal notices (its channel-layer receive fails) and carries on; the worker lives.
        await until(lambda: notices.deaf_listeners() >= 1, 5, "the consumer noticed Redis is gone")
        await before.run("echo during-$((2+2))", "during-4")

        pages = [
            (await get(browser, path)).status_code for path in ("/", f"/clusters/{cluster.slug}/terminal/")
        ]
        me = await get(browser, "/v1/me", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        health = await get(Client(), "/healthz")
        assert pages == [200, 200]
        assert me.status_code == 200, me.content
        assert health.status_code == 200
        assert health.json() == {"ok": True, "degraded": ["channel_layer"]}
        # The details are staff's.
        body = (await get(staff, "/healthz")).json()
        assert (body["ok"], body["degraded"], body["channel_layer"]["ok"]) == (True, ["channel_layer"], False)
        assert body["channel_layer"]["backend"] == "redis"
        assert "cannot be reached" in body["channel_layer"]["detail"]
        assert body["database"]["ok"] is True

        # A terminal opened while Redis is down opens too, watched through the database.
        shells.expect_one()
        async with open_page(application, cluster.slug, cookie=cookie) as (_, _, during):
            await during.connected()
            await during.run("echo opened-$((3+3))", "opened-6")

            offboarded_at = time.monotonic()
            result = await sync_to_async(offboarding.offboard)(person, by="test", reason="left the company")
            closed = [
                await page.until_control("closed", timeout=notices.CHECK_SECONDS + 3)
                for page in (before, during)
            ]
            seconds = time.monotonic() - offboarded_at
            await during.until_closed()
        await before.until_closed()

    assert [c["code"] for c in closed] == ["offboarded", "offboarded"]
    assert (
        closed[0]["reason"]
        == "Your access to the console was removed (left the company), so this terminal was closed."
    )
    # Offboarding did everything it could, and says what it could not.
    await sync_to_async(person.refresh_from_db)()
    assert person.is_active is False
    assert await sync_to_async(api_tokens.authenticate)(api_token) is None
    assert name in head_node.locked
    account = await sync_to_async(ClusterAccount.objects.get)(account__user=person)
    assert account.state == ClusterAccount.State.LOCKED
    assert [p for p in result.problems if "live terminals could not be told to close" in p]
    told = await sync_to_async(AuditEvent.objects.get)(action="offboard.terminals")
    assert told.outcome == "error"
    assert "channel layer is unreachable" in told.message
    finished = await sync_to_async(AuditEvent.objects.get)(action="offboard.finished")
    assert finished.outcome == "error"
    print(
        f"faults survived: Redis down — pages 200, API 200, healthz 200 degraded, the open terminal kept, "
        f"a new one opened, offboarding completed and closed both in {seconds:.1f} s (database check)"
    )


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)  # async, reaching the database from worker threads
@pytest.mark.asyncio
async def test_when_redis_comes_back_empty_terminals_join_again_and_hear_offboarding_at_once(
    redis, agent, cluster, person, monkeypatch
):
    monkeypatch.setattr(notices, "RETRY_FIRST", 0.05)
    monkeypatch.setattr(notices, "RETRY_MAX", 0.2)
    # The database check runs once when Redis goes, then not for a minute: a close within a second
    # afterwards can only have come through the layer.
    monkeypatch.setattr(notices, "CHECK_SECONDS", 60.0)
    name = await sync_to_async(lambda: posix.ensure_account(person).username)()
    shells = Shells(agent, monkeypatch, name)
    cookie = await session_cookie(person)
    layer = get_channel_layer()
    # A listener that joined and then only waits (never receives) never sees Redis fail; coming back
    # must put it in its group again all the same.
    bystander = object()
    bystander_channel = await layer.new_channel()
    assert await notices.join(layer, "person-bystander", bystander_channel, bystander)

    shells.expect_one()
    try:
        async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
            await page.connected()
            redis.crash()
            await until(lambda: notices.deaf_listeners() >= 1, 5, "the consumer noticed Redis is gone")
            redis.start()  # the same port, and nothing remembered: every group is gone
            await until(lambda: notices.deaf_listeners() == 0, 5, "the consumer joined its group again")
            await page.run("echo back-$((4+4))", "back-8")

            result = await sync_to_async(offboarding.offboard)(person, by="test", reason="contract ended")
            closed = await page.until_control("closed", timeout=1)
            assert result.ok, result.problems
            assert closed["code"] == "offboarded"

        await layer.group_send("person-bystander", {"type": "offboard.close", "reason": "x"})
        async with asyncio.timeout(2):
            assert (await layer.receive(bystander_channel))["reason"] == "x"
    finally:
        await notices.leave(layer, "person-bystander", bystander_channel, bystander)


@pytest.mark.redis
@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db
def test_job_submission_does_not_need_redis(redis, ada, client):
    redis.crash()
    path = ada.script("hello.sh", HELLO)

    r = client.post(
        "/v1/clusters/demo/jobs",
        json.dumps({"script_path": path}),
        content_type="application/json",
        **ada.auth,
    )

    assert r.status_code == 201, r.content
    assert client.get("/healthz").json()["degraded"] == ["channel_layer"]
    print(f"faults survived: Redis down — job {r.json()['job']['id']} submitted to the real Slurm (201)")


@pytest.mark.redis
def test_sign_in_works_while_redis_is_down_and_the_throttle_counts_again_after(db, redis, settings, caplog):
    """The throttle's counters are in the cache: without Redis they are not counted, sign-in is not a 500."""
    settings.SOCIALACCOUNT_ONLY = False
    User.objects.create_user("root", "root@corp.example", "pw-root-123456", is_staff=True)
    redis.crash()

    wrong = Client().post("/accounts/login/", {"login": "root", "password": "nope"})
    right = Client().post("/accounts/login/", {"login": "root", "password": "pw-root-123456"})
    admin = Client().post(
        "/admin/login/", {"username": "root", "password": "pw-root-123456", "next": "/admin/"}
    )

    assert wrong.status_code == 200
    assert b"not correct" in wrong.content or b"incorrect" in wrong.content
    assert (right.status_code, admin.status_code) == (302, 302)
    assert "the cache (Redis) cannot be reached" in caplog.text

    redis.start()
    for _ in range(5):
        assert Client().post("/accounts/login/", {"login": "root", "password": "nope"}).status_code == 200
    # 5 failures in 5 minutes per user name, counted again now that Redis is back: the name is locked.
    locked = Client().post(
        "/admin/login/", {"username": "root", "password": "pw-root-123456", "next": "/admin/"}
    )
    assert locked.status_code == 429
    print("faults survived: Redis down — password sign-in 302, wrong password 200, throttle counts after")
