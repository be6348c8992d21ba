"""The mixed load of many signed-in people (tests/faults/test_load.py), for every test that measures one.

Each of CLIENTS clients is a person of their own, with a session cookie for the pages and an API token
for /v1, and sends a mix of everyday requests (dashboard, job list and its live feed, a job, /v1/me, the
/v1 job list and a job, the health check, dry-run submits). Every answer must have its expected status and
show that person's own data (no 5xx, no one else's jobs).
"""

from __future__ import annotations

import itertools
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from access.models import Grant
from accounts import api_tokens
from accounts.models import PosixAccount, User
from jobs.models import JobRecord
from tests.support.browser import session_cookie
from tests.support.jobs_support import Person

CLIENTS = 48
# People with a Linux user on the cluster (from the session's pool of ten): their job pages ask Slurm
# for a live state as them, and they submit dry runs, which read the script as them on the head node.
# The others use the console's own records only, as most people looking at a list do.
REAL_PEOPLE = 6
# Bounds of the run: whichever comes first.
REQUESTS = 4_000
SECONDS = 20.0
# An answer slower than this is an error, not a slow answer.
REQUEST_TIMEOUT = 10.0
JOBS_EACH = 30
# Above Slurm's largest job id (MaxJobId is below 67,108,864): these records are never someone's real job.
FIRST_JOB_ID = 80_000_000
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
# UIDs of the people without a Linux user: rows only, in the console's range, beside the pool's block.
LOAD_UID = 298_000
HELD_JOB = ["-p", "debug", "-t", "1", "-J", "ct-load", "-o", "/dev/null", "--wrap", "true"]

# Each kind of request: its method, its path ({job}: one of the person's jobs) and how it signs in (the
# session cookie of a browser, or the API token of the CLI). bench/load.py sends the same requests.
ROUTES = {
    "dashboard": ("GET", "/", "session"),
    "job list page": ("GET", "/clusters/demo/jobs/", "session"),
    "job list feed": ("GET", "/clusters/demo/jobs/data?page=1", "session"),
    "job page": ("GET", "/clusters/demo/jobs/{job}/", "session"),
    "GET /v1/me": ("GET", "/v1/me", "token"),
    "GET /v1/…/jobs": ("GET", "/v1/clusters/demo/jobs?per_page=20", "token"),
    "GET /v1/…/jobs/{job}": ("GET", "/v1/clusters/demo/jobs/{job}", "token"),
    "healthz": ("GET", "/healthz", "session"),
    "POST /v1/…/jobs?dry_run=1": ("POST", "/v1/clusters/demo/jobs?dry_run=1", "token"),
}
# How often each request comes, out of the weights' sum; dry runs only from people with a Linux user.
MIX = {
    "dashboard": 10,
    "job list page": 14,
    "job list feed": 14,
    "job page": 10,
    "GET /v1/me": 10,
    "GET /v1/…/jobs": 14,
    "GET /v1/…/jobs/{job}": 12,
    "healthz": 4,
    "POST /v1/…/jobs?dry_run=1": 12,
}


@dataclass
class Visitor:
    """One person, at a browser and with the CLI: who they are, their sign-ins, their jobs."""

    email: str
    cookie: str
    token: str
    job_ids: set[int]
    newest: int
    finished: int
    # A job Slurm really holds for them, held so it never runs (people with a Linux user only).
    held: int | None = None
    script: str | None = None


@dataclass
class Tally:
    """What the clients saw, added to under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    millis: list[float] = field(default_factory=list)
    by_route: dict[str, list[float]] = field(default_factory=dict)
    routes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def add(self, route: str, status: int, millis: float, error: str | None) -> None:
        with self.lock:
            self.millis.append(millis)
            self.by_route.setdefault(route, []).append(millis)
            self.routes[route] += 1
            self.statuses[status] += 1
            if error:
                self.errors.append(f"{route}: {error}")


def records(person: User, posix_user: str, first_id: int) -> list[int]:
    """JOBS_EACH jobs of the person in the database, newest last; mostly finished, as a real list is."""
    cluster_id = Grant.objects.filter(user=person).values_list("cluster_id", flat=True).get()
    JobRecord.objects.bulk_create(
        JobRecord(
            cluster_id=cluster_id,
            person=person,
            posix_user=posix_user,
            slurm_job_id=first_id + n,
            name=f"load-{n}",
            partition=("cpu", "gpu", "debug")[n % 3],
            state="RUNNING" if n == JOBS_EACH - 1 else FINISHED[n % len(FINISHED)],
        )
        for n in range(JOBS_EACH)
    )
    return [first_id + n for n in range(JOBS_EACH)]


def held_job(person: Person) -> int:
    """A job the person submits with sbatch in their own shell, held: Slurm keeps it and never runs it."""
    out = subprocess.run(
        ["runuser", "-u", person.name, "--", "sbatch", "--parsable", "--hold", *HELD_JOB],
        cwd=person.home,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().split(";")[0])


def visitors(demo_cluster, people) -> list[Visitor]:
    found = []
    for n in range(CLIENTS):
        first_id = FIRST_JOB_ID + 100 * n
        if n < REAL_PEOPLE:
            real = people()
            user, posix_user, token = real.user, real.name, real.token
        else:
            # Mapped to a POSIX account, as everyone who signed in is, but without a Linux user here.
            email, posix_user = f"load{n}@clusterra.test", f"ctload{n}"
            user = User.objects.create(username=email, email=email)
            PosixAccount.objects.create(user=user, username=posix_user, uid=LOAD_UID + n, gid=LOAD_UID + n)
            Grant.objects.create(cluster=demo_cluster, user=user, all_partitions=True)
            token = api_tokens.issue(user, name="load")[1]
        ids = records(user, posix_user, first_id)
        visitor = Visitor(user.email, session_cookie(user), token, set(ids), ids[-1], ids[0])
        if n < REAL_PEOPLE:
            visitor.held = held_job(real)
            JobRecord.objects.create(
                cluster=demo_cluster,
                person=user,
                posix_user=posix_user,
                slurm_job_id=visitor.held,
                name="ct-load",
                partition="debug",
                state="PENDING",
            )
            visitor.job_ids.add(visitor.held)
            visitor.script = real.script("load.sh", "#!/bin/bash\n#SBATCH -p debug -t 1\ntrue\n")
        found.append(visitor)
    return found


def ask(browser: requests.Session, cli: requests.Session, base: str, v: Visitor, route: str):
    """Send one request of `route` as `v`: the response, and what is wrong with it (None if nothing)."""
    job = v.held or v.finished
    method, path, signs_in = ROUTES[route]
    body = {"json": {"script_path": v.script}} if method == "POST" else {}
    r = (browser if signs_in == "session" else cli).request(
        method, base + path.format(job=job), timeout=REQUEST_TIMEOUT, **body
    )

    def mine(answer: dict) -> bool:
        return {j["id"] for j in answer["jobs"]} <= v.job_ids

    if r.status_code != 200:
        return r, f"{r.status_code} {r.text[:300]}"
    if route == "dashboard":
        right = "Demo cluster" in r.text and "no access" not in r.text
    elif route == "job list page":
        right = f'data-job="{max(v.job_ids)}"' in r.text
    elif route == "job list feed":
        right = mine(r.json())
    elif route == "job page":
        right = str(job) in r.text
    elif route == "GET /v1/me":
        right = r.json()["email"] == v.email
    elif route == "GET /v1/…/jobs":
        right = mine(r.json()) and r.json()["total"] == len(v.job_ids)
    elif route == "GET /v1/…/jobs/{job}":
        right = r.json()["job"]["id"] == job
    elif route == "healthz":
        # People are not staff: they are told up or degraded, no cluster's details.
        right = r.json()["ok"] and "clusters" not in r.json()
    else:
        right = r.json()["dry_run"] and r.json()["decision"]["allowed"]
    return r, None if right else f"200 with someone else's or a wrong answer: {r.text[:300]}"


def drive(
    base: str,
    v: Visitor,
    seed: int,
    budget: itertools.count,
    deadline: float,
    tally: Tally,
    requests_max: int,
) -> None:
    """One client: its own connections (keep-alive, as a browser and the CLI hold them), until the bounds."""
    routes = [r for r in MIX if v.script or not r.startswith("POST")]
    weights = [MIX[r] for r in routes]
    pick = random.Random(seed)  # a request mix, not a secret
    with requests.Session() as browser, requests.Session() as cli:
        browser.cookies.set("sessionid", v.cookie)
        cli.headers["Authorization"] = f"Bearer {v.token}"
        while time.monotonic() < deadline and next(budget) < requests_max:
            route = pick.choices(routes, weights)[0]
            started = time.perf_counter()
            try:
                response, error = ask(browser, cli, base, v, route)
                status = response.status_code
            except requests.RequestException as e:
                status, error = 0, f"no answer: {e}"
            tally.add(route, status, (time.perf_counter() - started) * 1000, error)


@dataclass
class Held:
    """What one load run did: its count, pace and latency."""

    done: int
    seconds: float
    p50: float
    p99: float
    slowest: float
    tally: Tally

    @property
    def per_second(self) -> float:
        return self.done / self.seconds


def warm_up(base: str, v: Visitor) -> None:
    """One request of each kind, unmeasured: the first request of a route compiles its templates."""
    for route in MIX:
        with requests.Session() as browser, requests.Session() as cli:
            browser.cookies.set("sessionid", v.cookie)
            cli.headers["Authorization"] = f"Bearer {v.token}"
            _, error = ask(browser, cli, base, v, route)
        assert error is None, f"{route}: {error}"


def run(base: str, crowd: list[Visitor], *, seconds: float = SECONDS, requests_max: int = REQUESTS) -> Held:
    """Every visitor as a client thread of its own against `base`, until the bounds."""
    tally = Tally()
    budget = itertools.count()
    started = time.monotonic()
    deadline = started + seconds
    clients = [
        threading.Thread(
            target=drive, args=(base, v, n, budget, deadline, tally, requests_max), name=f"client {n}"
        )
        for n, v in enumerate(crowd)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(seconds + REQUEST_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    assert not any(client.is_alive() for client in clients), "a client did not finish within its bounds"
    cuts = statistics.quantiles(tally.millis, n=100)
    return Held(len(tally.millis), elapsed, cuts[49], cuts[98], max(tally.millis), tally)


def check(held: Held) -> None:
    """No wrong answer, every status 200, every kind of request part of the load, and enough of them."""
    tally = held.tally
    assert not tally.errors, f"{len(tally.errors)} wrong answers, e.g.:\n" + "\n".join(tally.errors[:10])
    assert set(tally.statuses) == {200}, tally.statuses
    assert set(tally.routes) == set(MIX), tally.routes
    assert held.done >= 500, f"only {held.done} requests were answered in {held.seconds:.0f} s"
