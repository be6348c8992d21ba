"""Row 8, mixed load: the everyday requests of 48 signed-in people at once, against the framework's floor.

The mix is tests/support/load.py's (dashboard, job list page and its feed, a job, /v1/me, the /v1 job list
and a job, the health check, dry-run submits), sent by CLIENTS clients that each wait for an answer before
asking again (closed loop), each on one keep-alive connection. The floor is `GET /bench/floor`
(bench/floor.py): the same server process, Django and middleware, a view that does nothing; the same
clients ask it the same way. Floor and console take turns (ABBA), so drift hits both.

What is counted, and why:
- "per core" is requests per CPU-second of the server's processes (the worker and any process it
  started: utime + stime from /proc/PID/stat, all threads), over the measured window. A core is what a
  worker can use at most (one interpreter lock), and the machine's idle time says nothing about the
  console: the clients, PostgreSQL, Redis and slurmrestd run on the same cores. The machine's total busy
  time (/proc/stat) is printed beside it, with the client's own CPU.
- The client runs in a process of its own, asyncio with raw HTTP/1.1 over keep-alive sockets: 48
  `requests` threads cost ~1 ms of CPU per request in their interpreter lock, close to what the server
  spends, and would compete for the same two cores; this client costs a fraction of that.

`python -m bench.load --drive` is that client: it reads its plan (JSON) on stdin, says "ready" once its
connections are open, starts on "go" and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Measurement, Row, Series, Target

REPO = Path(__file__).resolve().parent.parent
TARGET = Target("p99_ms", 250.0)
CLIENTS = 48
# Clients that are the bench person (a Linux user here): they ask for a held job's live state and submit
# dry runs, which read the script as them; the others are people known to the console only, as in the test.
REAL_CLIENTS = 6
JOBS_EACH = 30
FIRST_JOB_ID = 80_000_000
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
# UIDs of the people without a Linux user: rows only, outside the bench's provisioning range.
LOAD_UID = 298_000
REQUEST_TIMEOUT = 10.0
# The floor's route (bench/floor.py); here, so that the client process needs no Django.
FLOOR_PATH = "/bench/floor"


@dataclass
class Visitor:
    """One client's person: a session cookie, an API token, a job to look at, a script to dry-run."""

    email: str
    cookie: str
    token: str
    job: int
    script: str | None = None


def crowd(
    cast: Any, raw: Any, script_text: str, submitted: list[int], clients: int = CLIENTS
) -> list[Visitor]:
    """The clients' people: REAL_CLIENTS are the bench person, the rest people of their own with jobs."""
    from django.test import Client

    from access.models import Grant
    from accounts import api_tokens
    from accounts.models import PosixAccount, User
    from bench.raw_slurm import PARKING, job_body
    from jobs.models import JobRecord

    cluster = cast.local_cluster
    folder = cast.script_path.rpartition("/")[0]
    # A job Slurm really holds (parked, never runs): its page asks Slurm for its live state as the person.
    held = raw.submit(job_body(script_text, name="bench-load", workdir=folder, hold=True))
    submitted.append(held)
    JobRecord.objects.create(
        cluster=cluster,
        person=cast.person,
        posix_user=cast.posix_user,
        slurm_job_id=held,
        name="bench-load",
        partition=PARKING,
        state="PENDING",
    )
    found = [
        Visitor(cast.person.email, cast.session_cookie, cast.api_token, held, cast.script_path)
        for _ in range(min(REAL_CLIENTS, clients))
    ]
    for n in range(len(found), clients):
        email, posix_user = f"load{n}@bench.invalid", f"clload{n}"
        user = User.objects.create(username=email, email=email)
        PosixAccount.objects.create(user=user, username=posix_user, uid=LOAD_UID + n, gid=LOAD_UID + n)
        Grant.objects.create(cluster=cluster, user=user, all_partitions=True)
        first = FIRST_JOB_ID + 100 * n
        JobRecord.objects.bulk_create(
            JobRecord(
                cluster=cluster,
                person=user,
                posix_user=posix_user,
                slurm_job_id=first + j,
                name=f"load-{j}",
                partition=PARKING,
                state="RUNNING" if j == JOBS_EACH - 1 else FINISHED[j % len(FINISHED)],
            )
            for j in range(JOBS_EACH)
        )
        browser = Client()
        browser.force_login(user)
        token = api_tokens.issue(user, name="bench load")[1]
        found.append(Visitor(email, browser.cookies["sessionid"].value, token, first))
    return found


# ---------------------------------------------------------------------------------------------------------
# The client process: no Django here, only sockets.


class Connection:
    """One keep-alive HTTP/1.1 connection, opened again when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def ask(
        self, method: str, target: str, headers: str, body: bytes = b""
    ) -> tuple[int, bytes, list[str]]:
        """(status, body, Set-Cookie values) of one request on this connection."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line, _, header_block = (await self.reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        status = int(status_line.split()[1])
        fields: dict[bytes, bytes] = {}
        cookies: list[str] = []
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"set-cookie":
                cookies.append(value.strip().decode("latin-1"))
            elif name:
                fields[name] = value.strip().lower()
        if b"content-length" in fields:
            answer = await self.reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            answer = b"".join(p[:-2] for p in parts)
        else:
            answer = await self.reader.read()
            fields[b"connection"] = b"close"
        if fields.get(b"connection") == b"close":
            self.close()
        return status, answer, cookies

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _check(route: str, v: dict[str, Any], status: int, body: bytes) -> str | None:
    """What is wrong with an answer (None if nothing): its status, and that it is this person's."""
    if status != 200:
        return f"{route}: {status} {body[:200]!r}"
    if route == "GET /v1/me" and json.loads(body)["email"] != v["email"]:
        return f"{route}: someone else's answer"
    if route == "GET /v1/…/jobs/{job}" and json.loads(body)["job"]["id"] != v["job"]:
        return f"{route}: another job"
    if route == "job page" and str(v["job"]).encode() not in body:
        return f"{route}: not the job's page"
    if route == "POST /v1/…/jobs?dry_run=1" and not json.loads(body)["decision"]["allowed"]:
        return f"{route}: refused"
    return None


def _request(
    route: str, v: dict[str, Any], jar: dict[str, str], routes: dict[str, list[str]]
) -> tuple[str, str, str, bytes]:
    """(method, target, headers, body) of one request of `route` as `v`; "floor" is the floor's.

    `routes` is tests/support/load.py's ROUTES, handed over in the plan: this client process has no Django.
    """
    if route == "floor":
        return "GET", FLOOR_PATH, "", b""
    method, path, signs_in = routes[route]
    if signs_in == "session":
        headers = "Cookie: " + "; ".join(f"{name}={value}" for name, value in jar.items()) + "\r\n"
    else:
        headers = f"Authorization: Bearer {v['token']}\r\n"
    body = b""
    if method == "POST":
        headers += "Content-Type: application/json\r\n"
        body = json.dumps({"script_path": v["script"]}).encode()
    return method, path.format(job=v["job"]), headers, body


def _keep(jar: dict[str, str], set_cookies: list[str]) -> None:
    for line in set_cookies:
        pair, _, attributes = line.partition(";")
        name, _, value = pair.strip().partition("=")
        if not value or "max-age=0" in attributes.lower().replace(" ", ""):
            jar.pop(name, None)
        else:
            jar[name] = value


async def _client(
    n: int, v: dict[str, Any], plan: dict[str, Any], go: asyncio.Event, seen: dict[str, Any]
) -> None:
    host, port = plan["host"], plan["port"]
    if plan["target"] == "floor":
        routes, weights = ["floor"], [1]
    else:
        routes = [r for r in plan["mix"] if v["script"] or not r.startswith("POST")]
        weights = [plan["mix"][r] for r in routes]
    pick = random.Random(n)  # a request mix, not a secret
    if not routes:
        # Nothing in this mix for this person (dry runs alone, and no Linux user): sit it out.
        seen["ready"] += 1
        return
    connection = Connection(host, port)
    # The browser's cookies: the session, and what the console sets (the CSRF cookie), kept as a browser
    # keeps them; without it every page would mint and set a new CSRF secret.
    jar = {"sessionid": v["cookie"]}
    await connection.open()
    seen["ready"] += 1
    await go.wait()
    deadline = seen["deadline"]
    try:
        while time.monotonic() < deadline:
            route = pick.choices(routes, weights)[0]
            method, target, headers, body = _request(route, v, jar, plan["routes"])
            started = time.perf_counter()
            try:
                status, answer, cookies = await asyncio.wait_for(
                    connection.ask(method, target, headers, body), REQUEST_TIMEOUT
                )
                error = _check(route, v, status, answer) if route != "floor" else None
                if "Cookie" in headers:
                    _keep(jar, cookies)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
                connection.close()
                status, error = 0, f"{route}: no answer: {type(e).__name__}: {e}"
            seen["millis"].append((time.perf_counter() - started) * 1000)
            seen["statuses"][str(status)] = seen["statuses"].get(str(status), 0) + 1
            if error:
                seen["error_count"] += 1
                if len(seen["errors"]) < 10:
                    seen["errors"].append(error)
    finally:
        connection.close()


async def _drive(plan: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {"ready": 0, "millis": [], "statuses": {}, "errors": [], "error_count": 0}
    go = asyncio.Event()
    tasks = [asyncio.create_task(_client(n, v, plan, go, seen)) for n, v in enumerate(plan["visitors"])]
    while seen["ready"] < len(tasks):
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    seen["deadline"] = started + plan["seconds"]
    go.set()
    await asyncio.gather(*tasks)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    seen["seconds"] = time.monotonic() - started
    seen["client_cpu_seconds"] = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    del seen["ready"], seen["deadline"]
    return seen


def _client_main() -> None:
    plan = json.loads(sys.stdin.readline())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    seen = asyncio.run(_drive(plan))
    # Thousands of latencies: through a file, not the pipe, which the parent reads line by line.
    Path(plan["results"]).write_text(json.dumps(seen))
    print("done", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The driver: turns, CPU accounting, the row.


def machine_busy_seconds() -> float:
    """CPU-seconds all cores spent on anything but idle and I/O wait since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Turn:
    """One measured stretch of one target on one server."""

    done: int
    seconds: float
    server_cpu: float
    machine_cpu: float
    client_cpu: float
    millis: list[float]
    errors: list[str] = field(default_factory=list)
    error_count: int = 0


def turn(server: Any, target: str, visitors: list[Visitor], mix: dict[str, int], seconds: float) -> Turn:
    """One stretch of `target` ("floor" or "console") against `server`, from a client process of its own."""
    from tests.support.load import ROUTES

    host, _, port = server.base_url.removeprefix("http://").partition(":")
    plan = {
        "host": host,
        "port": int(port),
        "target": target,
        "mix": mix,
        "routes": ROUTES,
        "seconds": seconds,
        "visitors": [vars(v) for v in visitors],
    }
    results = tempfile.NamedTemporaryFile(prefix="bench-load-", suffix=".json", delete=False)  # noqa: SIM115
    results.close()
    plan["results"] = results.name
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.load", "--drive"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.write(json.dumps(plan) + "\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the load client did not start")
        server_before, machine_before = server.cpu_seconds(), machine_busy_seconds()
        child.stdin.write("go\n")
        child.stdin.flush()
        said = child.stdout.readline().strip()
        server_after, machine_after = server.cpu_seconds(), machine_busy_seconds()
        if said != "done":
            raise RuntimeError(f"the load client ended without its results ({said!r})")
        seen = json.loads(Path(results.name).read_text())
    finally:
        child.stdin.close()
        child.wait(30)
        Path(results.name).unlink(missing_ok=True)
    return Turn(
        done=len(seen["millis"]),
        seconds=seen["seconds"],
        server_cpu=server_after - server_before,
        machine_cpu=machine_after - machine_before,
        client_cpu=seen["client_cpu_seconds"],
        millis=seen["millis"],
        errors=seen["errors"],
        error_count=seen["error_count"],
    )


@contextlib.contextmanager
def _recorded(server: Any, route: str, folder: str, seconds: float) -> Iterator[None]:
    """py-spy samples the server's worker while one kind of request runs alone (nothing if no folder)."""
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / (re.sub(r"[^a-z0-9]+", "-", route.lower()).strip("-") + ".txt")
    # --gil: only the thread holding the GIL, so idle threads and waits on the database are not counted;
    # --nonblocking: the worker is never paused, at the price of a few torn samples.
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--gil",
            "--nonblocking",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(out),
            "-d",
            str(max(1, int(seconds))),
            "-p",
            str(server.pid),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.wait(seconds + 30)


def _sum(turns: list[Turn]) -> dict[str, float]:
    done = sum(t.done for t in turns)
    seconds = sum(t.seconds for t in turns)
    server_cpu = sum(t.server_cpu for t in turns)
    machine_cpu = sum(t.machine_cpu for t in turns)
    client_cpu = sum(t.client_cpu for t in turns)
    millis = sorted(m for t in turns for m in t.millis)
    cuts = statistics.quantiles(millis, n=100) if len(millis) > 1 else [float("nan")] * 99
    return {
        "requests": done,
        "seconds": round(seconds, 2),
        "per_second": round(done / seconds, 1),
        "server_cpu_s": round(server_cpu, 2),
        "server_cores": round(server_cpu / seconds, 2),
        "per_server_cpu_second": round(done / server_cpu, 1) if server_cpu else None,
        "server_cpu_ms_each": round(server_cpu / done * 1000, 3) if done else None,
        "machine_cores": round(machine_cpu / seconds, 2),
        "per_machine_cpu_second": round(done / machine_cpu, 1) if machine_cpu else None,
        "client_cpu_ms_each": round(client_cpu / done * 1000, 3) if done else None,
        "p50_ms": round(cuts[49], 2),
        "p99_ms": round(cuts[98], 2),
        "errors": sum(t.error_count for t in turns),
    }


def run(
    servers: list[Any],
    visitors: list[Visitor],
    *,
    seconds: float,
    rounds: int,
    by_route: float = 0.0,
    profile: str = "",
    number: int = 8,
) -> Row:
    """Floor and console on each server, in turns (ABBA per round, servers interleaved); one row."""
    from tests.support.load import MIX

    turns: dict[tuple[str, str], list[Turn]] = {}
    for r in range(rounds):
        order = ("floor", "console") if r % 2 == 0 else ("console", "floor")
        for server in servers:
            for target in order:
                turns.setdefault((server.kind, target), []).append(
                    turn(server, target, visitors, MIX, seconds)
                )
    row = Row(number, "mixed load")
    errors = [e for ts in turns.values() for t in ts for e in t.errors]
    if errors:
        wrong = sum(t.error_count for ts in turns.values() for t in ts)
        row.error = f"{wrong} wrong answers, e.g. {errors[:3]}"
    info: dict[str, Any] = {"clients": len(visitors), "seconds_each_turn": seconds, "rounds": rounds}
    for index, server in enumerate(servers):
        console, floor = (turns[(server.kind, t)] for t in ("console", "floor"))
        c, f = _sum(console), _sum(floor)
        fraction = c["per_second"] / f["per_second"]
        info[server.kind] = {"console": c, "floor": f, "fraction_of_floor": round(fraction, 3)}
        key = f"{number}{'abcdefgh'[index]}" if len(servers) > 1 else str(number)
        row.measurements.append(
            Measurement(
                key,
                f"mixed load, {len(visitors)} clients ({server.kind})",
                Series("mixed load", [m / 1000 for t in console for m in t.millis]),
                Series(f"GET {FLOOR_PATH}", [m / 1000 for t in floor for m in t.millis]),
                TARGET,
            )
        )
        row.remarks.append(
            f"row {key} ({server.kind}): console {c['per_second']:.0f} req/s = {fraction:.2f}"
            f" of the floor's {f['per_second']:.0f}; per server CPU-second {c['per_server_cpu_second']} vs "
            f"{f['per_server_cpu_second']}; server CPU {c['server_cpu_ms_each']} ms/request vs "
            f"{f['server_cpu_ms_each']} ms (server used {c['server_cores']} vs {f['server_cores']} cores); "
            f"machine {c['per_machine_cpu_second']} req/busy CPU-second ({c['machine_cores']} cores busy); "
            f"client {c['client_cpu_ms_each']} ms CPU/request; p50/p99 {c['p50_ms']}/{c['p99_ms']} ms "
            f"(floor {f['p50_ms']}/{f['p99_ms']} ms)"
        )
    if by_route:
        # Each kind of request alone for a short turn, on the first server: where the CPU goes.
        from tests.support.load import MIX

        server = servers[0]
        costs = {}
        for route in MIX:
            with _recorded(server, route, profile, by_route):
                t = turn(server, "console", visitors, {route: 1}, by_route)
            costs[route] = round(t.server_cpu / max(1, t.done) * 1000, 2)
        info["server_cpu_ms_by_route"] = costs
        row.remarks.append(
            f"row {number} ({server.kind}), server CPU ms per request of each kind alone: "
            + ", ".join(f"{route} {ms}" for route, ms in costs.items())
        )
    row.info = info
    return row


if __name__ == "__main__":
    if sys.argv[1:] == ["--drive"]:
        _client_main()
    else:
        sys.exit("usage: python -m bench.load --drive (the load client; row 8 of bench.run starts it)")
