"""clusters.turns: at most `count` requests run at once, first come first served, and a request waiting on
a head node or on slurmrestd lets another run meanwhile."""

from __future__ import annotations

import threading
import time

import pytest

from clusters import headnode
from clusters.models import Cluster
from clusters.slurm.http import Transport, close_sessions
from clusters.turns import Turns, waiting_elsewhere
from tests.support.fake_slurmrestd import META_38, TOKEN, FakeSlurmrestd, Reply

WAIT = 5.0


def soon(check, seconds: float = WAIT) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


def in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_no_more_than_count_hold_a_turn_at_once():
    turns = Turns(3)
    lock = threading.Lock()
    holding, most = [0], [0]

    def request():
        with turns.taken():
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
            time.sleep(0.02)
            with lock:
                holding[0] -= 1

    threads = [in_thread(request) for _ in range(12)]
    for thread in threads:
        thread.join(WAIT)
    assert most[0] == 3
    assert holding[0] == 0


def test_turns_go_to_the_longest_waiting_first():
    turns = Turns(1)
    order: list[int] = []
    release = threading.Event()

    def first():
        with turns.taken():
            release.wait(WAIT)

    def later(n: int):
        with turns.taken():
            order.append(n)

    holder = in_thread(first)
    assert soon(lambda: turns._free == 0)
    waiting = []
    for n in range(5):
        waiting.append(in_thread(lambda n=n: later(n)))
        assert soon(lambda n=n: len(turns._waiting) == n + 1)
    release.set()
    for thread in [holder, *waiting]:
        thread.join(WAIT)
    assert order == [0, 1, 2, 3, 4]


def test_a_turn_given_back_while_waiting_elsewhere_is_not_given_back_twice():
    turns = Turns(2)
    with turns.taken():
        with waiting_elsewhere():
            pass
        assert turns._free == 2  # given back in the middle; the end of the block gives nothing more
    assert turns._free == 2


def test_waiting_elsewhere_outside_a_request_does_nothing():
    with waiting_elsewhere():
        pass


def _another_request_runs_while(call) -> None:
    """With one turn: while one request is inside `call`, a second request gets the turn and finishes."""
    turns = Turns(1)
    calling, call_done, second_done = threading.Event(), threading.Event(), threading.Event()

    def slow():
        with turns.taken():
            calling.set()
            call()
            call_done.set()

    def quick():
        with turns.taken():
            second_done.set()

    first = in_thread(slow)
    assert calling.wait(WAIT)
    second = in_thread(quick)
    assert second_done.wait(WAIT)
    assert not call_done.is_set(), "the second request waited for the first one's call to end"
    first.join(WAIT)
    second.join(WAIT)
    assert turns._free == 1


def test_a_head_node_command_lets_another_request_run_meanwhile():
    _another_request_runs_while(lambda: headnode.run(Cluster(slug="here", transport="local"), ["sleep", "1"]))


@pytest.fixture
def fake():
    server = FakeSlurmrestd()
    yield server
    close_sessions()
    server.close()


def test_a_slurmrestd_call_lets_another_request_run_meanwhile(fake):
    pong = {"meta": META_38, "errors": [], "pings": []}
    fake.reply("GET", "/slurm/v0.0.38/ping", Reply(body=pong, delay=1))
    slurm = Transport(fake.url, {"X-SLURM-USER-NAME": "alice", "X-SLURM-USER-TOKEN": TOKEN})
    _another_request_runs_while(lambda: slurm.get("/slurm/v0.0.38/ping"))
